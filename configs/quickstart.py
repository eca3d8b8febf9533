"""Quickstart: the tiny model on the synthetic videos, a few minutes on 2 CPU cores.

    python -m everest_jax.main --config configs/quickstart.py --workdir /tmp/everest_quickstart
    python -m everest_jax.main --config configs/quickstart.py:masking=tube --workdir /tmp/videomae
    python -m everest_jax.main --config configs/quickstart.py:job=finetune --workdir /tmp/ft \\
        --config.init_from=/tmp/everest_quickstart

`arg` (comma-separated key=value): job (pretrain|finetune|evaluate), masking (everest|tube|random),
size (tiny|S|B|L|H).
"""

import ml_collections

from configs.common import base_config, parse_arg


def get_config(arg=None):
    a = parse_arg(arg, job="pretrain", masking="everest", size="tiny")
    pretrain = a.job == "pretrain"
    c = base_config(a.job)
    # 8 frames of 32x32 in 4x4 patches: 4 x 8 x 8 = 256 tokens. (With 8x8 patches the shapes
    # move less than a patch per time step and the tiny model learns the direction only by luck.)
    c.model = ml_collections.ConfigDict(dict(
        size=a.size, num_frames=8, image_size=(32, 32), tubelet_size=2, patch_size=4,
        masking=a.masking, pretrain_keep_ratio=0.3, visible_ratio=0.1, mask_ratio=0.9,
        finetune_keep_ratio=0.6, num_classes=0 if pretrain else 4, drop_path=0.0,
        dtype="float32", remat=False, scan=False))
    c.data.update(name="synthetic", num_examples=16384, num_eval_examples=256, num_classes=4, camera_pan=False)
    c.batch_size = 32
    # Pre-training: 1000 steps (~4 min on 2 CPU cores). Its first few hundred steps only teach the
    # encoder to add one large constant vector to every token (after 100 steps the clip-dependent
    # part of its mean-pooled output is 2.6 % of its norm, 6.8 % at initialisation) and fine-tuning
    # from there learns worse than from scratch (43 % vs 88 +- 4 % top-1, measured); after 1000
    # steps fine-tuning from it reaches 93.4 +- 1.4 % (3 seeds; README).
    c.total_steps = 1000 if pretrain else 300
    c.warmup_steps = 10
    c.log_every = 100 if pretrain else 20
    c.checkpoint.every_steps = 250 if pretrain else 50
    c.optimizer.base_lr = 1.6e-2  # 2e-3 at batch 32 (lr = base_lr * batch / 256)
    c.optimizer.min_lr = 8e-5
    c.optimizer.b2 = 0.95 if pretrain else 0.999
    # The official fine-tuning recipe decays lr by 0.75 per layer from a pre-trained encoder; the
    # quickstart fine-tunes the tiny model from scratch, where that only slows it down.
    c.optimizer.layer_decay = 1.0
    c.label_smoothing = 0.0 if pretrain else 0.1
    c.eval.batch_size = 16
    return c
