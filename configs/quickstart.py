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
    c.model = ml_collections.ConfigDict(dict(
        size=a.size, num_frames=8, image_size=(32, 32), tubelet_size=2, patch_size=8,
        masking=a.masking, pretrain_keep_ratio=0.3, visible_ratio=0.1, mask_ratio=0.9,
        finetune_keep_ratio=0.6, num_classes=0 if pretrain else 4, drop_path=0.0 if pretrain else 0.1,
        dtype="float32", remat=False, scan=False))
    c.data = ml_collections.ConfigDict(dict(
        name="synthetic", num_examples=512, num_eval_examples=64, num_classes=4, camera_pan=False))
    c.batch_size = 16
    c.total_steps = 100 if pretrain else 150
    c.warmup_steps = 10
    c.log_every = 10
    c.checkpoint.every_steps = 50
    c.optimizer.base_lr = 1.6e-2  # 1e-3 at batch 16 (lr = base_lr * batch / 256)
    c.optimizer.min_lr = 1e-4
    c.optimizer.b2 = 0.95 if pretrain else 0.999
    c.optimizer.layer_decay = 1.0 if pretrain else 0.75
    c.label_smoothing = 0.0 if pretrain else 0.1
    return c
