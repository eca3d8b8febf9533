"""Quickstart: a short EVEREST pre-training run of the tiny model on the synthetic videos (CPU).

    python -m everest_jax.main --config configs/quickstart.py --workdir /tmp/everest_quickstart
    python -m everest_jax.main --config configs/quickstart.py:masking=tube --workdir /tmp/videomae
    python -m everest_jax.main --config configs/quickstart.py:job=finetune --workdir /tmp/ft

`arg` is a comma-separated list of key=value: job (pretrain|finetune), masking
(everest|tube|random), size (tiny|S|B|L|H).
"""

import ml_collections


def parse_arg(arg, **defaults):
    out = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        if key not in out:
            raise ValueError(f"unknown config argument {key!r}; known: {sorted(out)}")
        out[key] = value
    return ml_collections.ConfigDict(out)


def get_config(arg=None):
    a = parse_arg(arg, job="pretrain", masking="everest", size="tiny")
    config = ml_collections.ConfigDict()
    config.job = a.job
    config.seed = 0

    config.model = ml_collections.ConfigDict(dict(
        size=a.size, num_frames=8, image_size=(32, 32), tubelet_size=2, patch_size=8,
        masking=a.masking, pretrain_keep_ratio=0.3, visible_ratio=0.1, mask_ratio=0.9,
        finetune_keep_ratio=0.6, num_classes=4 if a.job == "finetune" else 0, drop_path=0.0,
        dtype="float32", remat=False, scan=False))

    config.data = ml_collections.ConfigDict(dict(
        name="synthetic", num_examples=256, num_classes=4, camera_pan=False))

    config.batch_size = 8
    config.total_steps = 30
    config.warmup_steps = 5
    config.log_every = 5
    config.normalize_targets = True  # VideoMAE norm_pix_loss
    config.label_smoothing = 0.0

    config.optimizer = ml_collections.ConfigDict(dict(
        base_lr=1e-3,  # scaled by batch_size / 256, as the official recipes
        min_lr=1e-5, b1=0.9, b2=0.95 if a.job == "pretrain" else 0.999, weight_decay=0.05))
    return config
