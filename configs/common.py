"""Pieces shared by the experiment configs: argument parsing and the default run settings."""

import ml_collections


def parse_arg(arg, **defaults):
    """'a=1,b=x' -> ConfigDict with the defaults overridden; unknown keys are refused."""
    out = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, _, value = item.partition("=")
        if key not in out:
            raise ValueError(f"unknown config argument {key!r}; known: {sorted(out)}")
        default = defaults[key]
        out[key] = type(default)(value in ("1", "true", "True")) if isinstance(default, bool) else type(default)(value)
    return ml_collections.ConfigDict(out)


def base_config(job: str) -> ml_collections.ConfigDict:
    """EVEREST's run settings: `classifier_config` plus pre-training targets, mixup/cutmix and
    the transformer's sharding rules; experiments fill in model, data and the recipe."""
    c = classifier_config(job)
    c.normalize_targets = True  # VideoMAE norm_pix_loss
    c.mixup = ml_collections.ConfigDict(dict(mixup_alpha=0.0, cutmix_alpha=0.0, switch_prob=0.5))
    c.sharding_rules = ()  # () = everest_jax.sharding.DEFAULT_RULES
    return c


def classifier_config(job: str) -> ml_collections.ConfigDict:
    """Run settings of every video-classification method (EVEREST, VA-RED²): the training core's
    fields (`everest_jax.trainer.RUN_FIELDS`), the data and the multi-view evaluation."""
    c = ml_collections.ConfigDict()
    c.job = job
    c.seed = 0
    c.batch_size = 8  # global, over all processes and devices
    c.total_steps = 100
    c.warmup_steps = 10
    c.log_every = 10
    c.eval_every = 0  # fine-tuning: evaluate every N steps (0: at the end only)
    c.eval_at_end = True
    c.init_from = ""  # a pre-training workdir, a run's final/, or a converted checkpoint
    c.label_smoothing = 0.0
    c.nonfinite = "stop"  # or "skip": leave the state untouched and count the step
    c.optimizer = ml_collections.ConfigDict(dict(
        base_lr=1e-3, warmup_lr=1e-6, min_lr=1e-5, b1=0.9, b2=0.95, weight_decay=0.05,
        layer_decay=1.0, grad_clip_norm=0.0, grad_accum_steps=1))
    # Mesh axis sizes (one may be -1: the rest of the devices); num_devices 0 = all devices.
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, num_devices=0))
    c.checkpoint = ml_collections.ConfigDict(dict(every_steps=50, keep=3, async_save=True))
    c.eval = ml_collections.ConfigDict(dict(num_clips=2, num_crops=3, crop_extent=1.25, batch_size=8))
    c.data = ml_collections.ConfigDict(dict(
        name="synthetic",  # synthetic | videos (list files) | tfds
        num_classes=4,
        # synthetic: procedural moving shapes, labels = motion direction (x speed band with num_speeds > 1;
        # with static_class the last class does not move;
        # see everest_jax.data.synthetic). The videos depend on synthetic_seed (eval: + an offset),
        # not on the run's seed, so runs with other seeds see the same dataset.
        num_examples=1024, num_eval_examples=256, camera_pan=False, synthetic_seed=0, num_speeds=1,
        min_travel=0.3, max_travel=0.6, background_drift=0.0, balanced_labels=False, wrap=False, static_class=False,
        # videos: VideoMAE-style list files ('path label' per line or CSV), paths relative to root
        root="", train_list="", eval_list="",
        # tfds: e.g. tfds_name="ucf101/ucf101_1_256"
        tfds_name="", train_split="train", eval_split="test", tfds_data_dir="",
        # sampling and augmentation of real videos (fine-tuning adds RandAugment, flip, erasing);
        # sampling="candidate": 2*candidate_alpha*tau frames spread over the whole video (synthetic:
        # longer clips) from which the pre-training step chooses tau frame pairs (frame selection)
        sampling="stride", stride=4, short_side=0, flip=True, rand_augment=True, erase_prob=0.25,
        candidate_alpha=1.5,
        # reading: decoding worker processes, threads per process, share of bad videos tolerated
        num_workers=0, read_threads=2, max_bad_fraction=0.1))
    return c
