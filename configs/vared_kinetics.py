"""VA-RED² R(2+1)D-18 on Kinetics-400 or Mini-Kinetics-200 list files (VideoMAE-style 'path label').

    python -m vared_jax.main --config configs/vared_kinetics.py:dataset=mini --workdir gs://.../vared_mini \\
        --config.data.root=/data/kinetics --config.data.train_list=mini_train.csv \\
        --config.data.eval_list=mini_val.csv --config.init_from=r2plus1d_18-91a641e6.pth

`arg`: dataset (k400|mini), vared (true|false), budget (target FLOPs / dense), job (train|evaluate).

The paper trains the VA-RED² network from the dense backbone's weights and reports R(2+1)D-18 at
about 0.6-0.8 of the dense FLOPs without an accuracy loss. Choices made here where its text gives
no number (written down, not tuned): 16 frames at stride 4 (the torchvision r2plus1d_18 Kinetics
clip), 112x112 crops of videos resized to short side 128, AdamW (this library's optimizer; the
paper's backbones were trained with SGD), lr 1e-3 at batch 64 with 5 warm-up epochs' worth of
steps and cosine decay, 40 epochs of the train list, Gumbel temperature 5 -> 0.5 geometrically,
FLOPs weight 2.0, K_t = K_c = 1 (choices: full, half the time steps, half the channels, both).
`init_from` may name torchvision's r2plus1d_18 KINETICS400_V1 state dict (`.pth`; read without
unpickling code); with 200 classes its head is left fresh.
"""

import ml_collections

from configs.common import classifier_config, parse_arg

TRAIN_VIDEOS = {"k400": 240_436, "mini": 121_215}  # clips in the usual train lists


def get_config(arg=None):
    a = parse_arg(arg, job="train", dataset="k400", vared=True, budget=0.7)
    classes = {"k400": 400, "mini": 200}[a.dataset]
    c = classifier_config(a.job)
    c.clip = ml_collections.ConfigDict(dict(num_frames=16, image_size=(112, 112)))
    c.model = ml_collections.ConfigDict(dict(
        num_classes=classes, widths=(64, 128, 256, 512), blocks_per_stage=(2, 2, 2, 2), stem_widths=(45, 64),
        residual_scale_init=0.0, temporal_levels=1, channel_levels=1, gate_reduction=4, gate_min_hidden=8,
        gate_norm=False, gate_motion=False, temporal_padding="zeros"))
    c.vared = ml_collections.ConfigDict(dict(
        enabled=a.vared, budget=a.budget, flops_weight=2.0, tau_start=5.0, tau_end=0.5, train_backbone=True,
        flops_penalty="squared"))
    c.data.update(name="videos", num_classes=classes, sampling="stride", stride=4, short_side=128,
                  flip=True, rand_augment=False, erase_prob=0.0, num_workers=8, read_threads=4)
    c.batch_size = 64
    steps_per_epoch = TRAIN_VIDEOS[a.dataset] // c.batch_size
    c.total_steps = 40 * steps_per_epoch
    c.warmup_steps = 5 * steps_per_epoch
    c.log_every = 100
    c.eval_every = 5 * steps_per_epoch
    c.checkpoint.every_steps = 1000
    c.optimizer.update(base_lr=4e-3, min_lr=1e-6, b2=0.999, weight_decay=1e-4)  # lr = 4e-3 * 64 / 256 = 1e-3
    c.label_smoothing = 0.0
    c.eval.update(num_clips=10, num_crops=3, crop_extent=1.0, batch_size=8)
    return c
