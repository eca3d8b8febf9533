"""The official EVEREST / VideoMAE recipes for UCF101, HMDB51, Kinetics-400 and SSv2.

One function builds every dataset config (`configs/ucf101.py`, `hmdb51.py`, `k400.py`,
`ssv2.py` only name their dataset). Config argument, comma-separated key=value:

  job       pretrain | finetune | evaluate
  method    everest (motion-token selection; fine-tuning keeps rho = 0.6 of the tokens)
            | videomae (tube masking 90 %; fine-tuning on all tokens)
  size      S | B | L
  source    videos (list files under data.root) | tfds
  local     0 | 1: the small switch — tiny model, 8 frames of 64², batch 8, 200 steps, one
            decoding thread: checks a data tree and the whole job on a workstation in minutes
  batch     global batch (default: 256 pre-training, 64 fine-tuning); the learning rate follows
            it (lr = 1e-3 x batch / 256, as in the recipe)

    python -m everest_jax.main --config configs/ucf101.py:job=pretrain,size=B --workdir gs://b/ucf_pre \\
        --config.data.root=/data/ucf101/videos --config.data.train_list=/data/ucf101/train.csv

Recipe (SPEC / the official scripts): pre-training AdamW (0.9, 0.95), wd 0.05, lr 1e-3 x
batch/256, warmup 40 epochs from 1e-6, cosine to 1e-5, no drop path, multi-scale crop, 16 frames
at stride 4 (UCF101, K400) / 2 (HMDB51) / 16 segments (SSv2). Fine-tuning AdamW (0.9, 0.999),
wd 0.05, layer-wise lr decay 0.75, warmup 5 epochs, min lr 1e-6, drop path 0.1, label smoothing
0.1, RandAugment m7-n4-mstd0.5, random erasing 0.25, mixup/cutmix off, flip except on SSv2 (its
labels name directions); testing with 5 x 3 views (UCF101, K400), 10 x 3 (HMDB51), 2 x 3 (SSv2).
Epoch counts: UCF101 3200 / 100 and HMDB51 4800 / 50 (EVEREST); K400 800 / 75 and SSv2 800 / 40
(VideoMAE ViT-B). Steps are epochs x train videos / batch, with the videos counted below; if your
list holds another number, set total_steps and warmup_steps (or `videos=`) to match.
"""

import ml_collections

from configs.common import base_config, parse_arg

# Train videos of the standard splits (UCF101/HMDB51 split 1; the K400 and SSv2 train lists
# VideoMAE uses), classes, sampling, epochs and test views.
DATASETS = {
    "ucf101": dict(num_classes=101, train_videos=9537, sampling="stride", stride=4, flip=True,
                   pretrain_epochs=3200, finetune_epochs=100, test_clips=5, test_crops=3,
                   tfds_name="ucf101/ucf101_1_256"),
    "hmdb51": dict(num_classes=51, train_videos=3570, sampling="stride", stride=2, flip=True,
                   pretrain_epochs=4800, finetune_epochs=50, test_clips=10, test_crops=3, tfds_name=""),
    "k400": dict(num_classes=400, train_videos=240_436, sampling="stride", stride=4, flip=True,
                 pretrain_epochs=800, finetune_epochs=75, test_clips=5, test_crops=3, tfds_name="kinetics400"),
    "ssv2": dict(num_classes=174, train_videos=168_913, sampling="segment", stride=2, flip=False,
                 pretrain_epochs=800, finetune_epochs=40, test_clips=2, test_crops=3, tfds_name=""),
}
PRETRAIN_WARMUP_EPOCHS, FINETUNE_WARMUP_EPOCHS = 40, 5


def get_recipe(dataset: str, arg=None) -> ml_collections.ConfigDict:
    a = parse_arg(arg, job="pretrain", method="everest", size="B", source="videos", local=False, batch=0, videos=0)
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {sorted(DATASETS)}")
    for key, allowed in (("job", ("pretrain", "finetune", "evaluate")), ("method", ("everest", "videomae")),
                         ("size", ("S", "B", "L")), ("source", ("videos", "tfds"))):
        if a[key] not in allowed:
            raise ValueError(f"config argument {key}={a[key]!r} must be one of {allowed}")
    d = DATASETS[dataset]
    pretrain = a.job == "pretrain"
    everest = a.method == "everest"
    c = base_config(a.job)
    c.dataset = dataset
    c.method = a.method

    c.model = ml_collections.ConfigDict(dict(
        size=a.size, num_frames=16, image_size=(224, 224), tubelet_size=2, patch_size=16,
        masking="everest" if everest else "tube", pretrain_keep_ratio=0.3, visible_ratio=0.1, mask_ratio=0.9,
        finetune_keep_ratio=0.6 if everest else 1.0, num_classes=0 if pretrain else d["num_classes"],
        drop_path=0.0 if pretrain else 0.1, dtype="bfloat16", remat=False, scan=True))
    c.data.update(name=a.source, num_classes=d["num_classes"], sampling=d["sampling"], stride=d["stride"],
                  flip=d["flip"], tfds_name=d["tfds_name"] if a.source == "tfds" else "",
                  eval_split="test", num_workers=8, read_threads=4)
    c.eval.update(num_clips=d["test_clips"], num_crops=d["test_crops"], batch_size=8)

    c.batch_size = a.batch or (256 if pretrain else 64)
    videos = a.videos or d["train_videos"]
    steps_per_epoch = max(videos // c.batch_size, 1)
    epochs = d["pretrain_epochs"] if pretrain else d["finetune_epochs"]
    warmup = PRETRAIN_WARMUP_EPOCHS if pretrain else FINETUNE_WARMUP_EPOCHS
    c.total_steps = epochs * steps_per_epoch
    c.warmup_steps = warmup * steps_per_epoch
    c.log_every = 100
    c.eval_every = 0 if pretrain else 10 * steps_per_epoch
    c.checkpoint.update(every_steps=1000, keep=3)
    o = c.optimizer
    o.base_lr, o.warmup_lr = 1e-3, 1e-6
    o.min_lr = 1e-5 if pretrain else 1e-6
    o.b1, o.b2, o.weight_decay = 0.9, 0.95 if pretrain else 0.999, 0.05
    o.layer_decay = 1.0 if pretrain else 0.75
    c.label_smoothing = 0.0 if pretrain else 0.1
    c.mixup.update(mixup_alpha=0.0, cutmix_alpha=0.0)

    if a.local:
        c.model.update(size="tiny", num_frames=8, image_size=(64, 64), patch_size=8, dtype="float32", scan=False)
        c.data.update(num_workers=0, read_threads=1)
        c.eval.update(num_clips=min(d["test_clips"], 2), batch_size=4)
        c.batch_size = a.batch or 8
        c.total_steps, c.warmup_steps, c.log_every, c.eval_every = 200, 10, 10, 0
        c.checkpoint.every_steps = 50
    return c
