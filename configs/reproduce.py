"""The reproduction study's runs (benchmarks/reproduce.py): the data splits, the pre-training recipe,
the ONE fine-tuning recipe and the linear probe shared by every method, the methods and the sizes.

    python -m everest_jax.main --config configs/reproduce.py:job=pretrain,size=mini --workdir /tmp/pre
    python -m everest_jax.main --config configs/reproduce.py:job=finetune,size=mini --workdir /tmp/ft \\
        --config.init_from=/tmp/pre

`arg` (comma-separated key=value): job (pretrain|finetune), size (tiny|mini), regime (low_label|
same_split), epochs (pre-training epochs, default: the regime's), quick (0|1: the toy setting of
`reproduce.py --quick`). The study sets `seed` and a method's model overrides on top.

Two regimes (8 frames of 32x32, static textured backgrounds in both):
  low_label   8 classes (4 directions x 2 speed bands, wrap-around motion): pre-training on
              PRETRAIN_EXAMPLES unlabelled clips of synthetic_seed 1; fine-tuning and the linear
              probe on LABELLED_PER_CLASS clips per class (balanced) of synthetic_seed 2; test
              TEST_EXAMPLES clips (balanced) of synthetic_seed 2 + inputs.EVAL_SEED_OFFSET.
  same_split  the papers' protocol (VideoMAE and EVEREST pre-train on the training videos of
              UCF101 / HMDB51 / Kinetics, then fine-tune on the same videos with their labels) on
              the quickstart's data (4 directions, one speed band, no wrap): pre-training and
              fine-tuning on the same PRETRAIN_EXAMPLES clips of synthetic_seed 1; test
              TEST_EXAMPLES clips of synthetic_seed 1 + inputs.EVAL_SEED_OFFSET.
The generator seeds of the pre-training, labelled and test splits differ wherever the splits do,
so those are disjoint; none depends on the run's seed.
"""

import ml_collections

from configs.common import base_config, parse_arg

# Encoder / decoder shapes on top of ModelConfig(size="tiny") (width 64, depth 2, 2 heads; decoder 32 wide).
SIZES = {
    "tiny": {},
    "mini": dict(width=128, depth=4, num_heads=4, decoder_width=64, decoder_heads=2),
}
# Pre-training variant -> model overrides. EVEREST keeps rho_pre = 30 % of tokens (10 % visible).
PRETRAIN = {
    "everest": dict(masking="everest"),
    "videomae_tube": dict(masking="tube"),  # 90 % tube masking
    "random": dict(masking="random"),  # 90 % random space-time masking
    "everest_ascending": dict(masking="everest", selection_order="ascending"),  # the least-moving tokens
    "everest_l1": dict(masking="everest", selection_distance="l1"),
    "everest_cosine": dict(masking="everest", selection_distance="cosine"),
    "everest_pixel": dict(masking="everest", selection_distance="pixel"),  # RLT's raw-pixel criterion
    "everest_rho0.2": dict(masking="everest", pretrain_keep_ratio=0.2),
    "everest_rho0.5": dict(masking="everest", pretrain_keep_ratio=0.5),
}
# Method -> (the pre-training variant whose encoder it fine-tunes, None: from scratch; fine-tuning
# model overrides). Every other fine-tuning setting is the shared recipe below.
METHODS = {
    **{name: (name, {}) for name in PRETRAIN},
    "scratch": (None, {}),
    "everest_ft_all_tokens": ("everest", dict(finetune_keep_ratio=1.0)),
}
MAIN_METHODS = ("everest", "videomae_tube", "random", "scratch")  # every size; the rest are ablations
QUICK_METHODS = ("everest", "videomae_tube", "scratch")

# Regime -> its data. low_label: 4 directions x 2 speed bands (travel 15-30 % or 45-60 % of the
# frame per clip), so that motion, not appearance, separates the classes; wrap-around motion from
# anywhere, so that no single frame tells anything about the class. same_split: the quickstart's
# videos (4 directions, travel 30-60 %), on which 1000 EVEREST pre-training steps were seen to help
# fine-tuning on many labels (README). Static backgrounds in both: with a 0.25 px/frame drift the
# tiny model learnt nothing in 300 steps even from 4096 labelled clips (12.5 % = chance; 28 %
# without drift), so drift stays off here.
REGIMES = {
    "low_label": dict(num_classes=8, num_speeds=2, min_travel=0.15, max_travel=0.6, wrap=True),
    "same_split": dict(num_classes=4, num_speeds=1, min_travel=0.3, max_travel=0.6, wrap=False),
}
NUM_CLASSES = REGIMES["low_label"]["num_classes"]
# Pre-training epochs of the PRETRAIN_EXAMPLES clips (batch 32). low_label: 2 epochs = 256 steps,
# what the ~2 h default allows on 2 CPU cores; short: after 256 steps the pooled encoder feature is
# nearly one constant vector (its clip-dependent share 1.7 %, random init 7 %). same_split: 8
# epochs = 1024 steps, as the quickstart's 1000 (100 steps hurt fine-tuning there, 1000 helped).
PRETRAIN_EXAMPLES = 4096
PRETRAIN_EPOCHS = {"low_label": 2, "same_split": 8}
LABELLED_PER_CLASS, TEST_EXAMPLES = 10, 400
# The linear probe: L2-regularised multinomial logistic regression on standardised mean-pooled
# encoder features (all tokens), full batch, L-BFGS for a fixed number of iterations.
PROBE = dict(steps=100, l2=1e-3)
QUICK_PROBE = dict(steps=5, l2=1e-3)


def model_config(size: str, pretrain: bool, num_classes: int = NUM_CLASSES) -> ml_collections.ConfigDict:
    """8 frames of 32x32 in 2x4x4 tubelets: 4 x 8 x 8 = 256 tokens (as configs/quickstart.py)."""
    return ml_collections.ConfigDict(dict(
        size="tiny", **SIZES[size], num_frames=8, image_size=(32, 32), tubelet_size=2, patch_size=4,
        masking="everest", selection_distance="l2", selection_order="descending", pretrain_keep_ratio=0.3,
        visible_ratio=0.1, mask_ratio=0.9, finetune_keep_ratio=0.6, num_classes=0 if pretrain else num_classes,
        drop_path=0.0, dtype="float32", remat=False, scan=False))


def get_config(arg=None):
    a = parse_arg(arg, job="pretrain", size="tiny", regime="low_label", epochs=0, quick=False)
    if a.job not in ("pretrain", "finetune"):
        raise ValueError(f"configs/reproduce.py: job={a.job!r} must be pretrain or finetune")
    if a.size not in SIZES:
        raise ValueError(f"configs/reproduce.py: size={a.size!r} must be one of {sorted(SIZES)}")
    if a.regime not in REGIMES:
        raise ValueError(f"configs/reproduce.py: regime={a.regime!r} must be one of {sorted(REGIMES)}")
    pretrain, data = a.job == "pretrain", REGIMES[a.regime]
    c = base_config(a.job)
    c.model = model_config(a.size, pretrain, data["num_classes"])
    c.data.update(name="synthetic", **data, background_drift=0.0, balanced_labels=True, camera_pan=False)
    c.mesh.num_devices = 1  # a CPU study: one device, no simulated-device sharding overhead
    c.checkpoint.update(every_steps=100, keep=1)
    c.log_every = 25
    c.optimizer.update(min_lr=8e-5, layer_decay=1.0)
    if pretrain:
        c.data.update(synthetic_seed=1, num_examples=PRETRAIN_EXAMPLES)
        c.batch_size = 32
        c.total_steps = (a.epochs or PRETRAIN_EPOCHS[a.regime]) * PRETRAIN_EXAMPLES // c.batch_size
        c.warmup_steps = c.total_steps // 10
        c.optimizer.update(base_lr=1.6e-2, b2=0.95)  # 2e-3 at batch 32 (lr = base_lr * batch / 256)
    else:
        # The one fine-tuning recipe of every method (scratch included) in a regime: plain AdamW
        # (layer_decay 1: a lower lr for early layers would handicap scratch), token selection
        # rho = 0.6 (EVEREST's fine-tuning; the ft_all_tokens ablation uses 1.0). low_label: 30
        # epochs of the labelled split; same_split: 300 steps of 32 (2.3 epochs), as the quickstart.
        if a.regime == "low_label":
            c.data.update(synthetic_seed=2, num_examples=LABELLED_PER_CLASS * data["num_classes"])
            c.batch_size, c.total_steps, c.warmup_steps = 16, 150, 15
        else:
            c.data.update(synthetic_seed=1, num_examples=PRETRAIN_EXAMPLES)
            c.batch_size, c.total_steps, c.warmup_steps = 32, 300, 30
        c.data.num_eval_examples = TEST_EXAMPLES
        c.optimizer.update(base_lr=1.6e-2, b2=0.999)  # lr = base_lr * batch / 256
        c.label_smoothing = 0.1
        # One clip of the training length, one crop: the speed classes are defined per clip length.
        c.eval.update(num_clips=1, num_crops=1, batch_size=50)
    if a.quick:  # a toy setting that runs end to end in seconds: checks bookkeeping, not accuracy
        # The tiny model made shallower and its clips smaller (2 x 4 x 4 = 32 tokens): compiling,
        # not computing, is what a few steps cost.
        c.model.update(width=32, depth=1, num_heads=2, decoder_width=16, decoder_depth=1, decoder_heads=1,
                       num_frames=4, image_size=(16, 16))
        c.data.update(num_examples=16 if pretrain else 2 * data["num_classes"], num_eval_examples=16)
        c.batch_size = 8
        c.total_steps, c.warmup_steps, c.log_every = 2, 0, 2
        c.checkpoint.update(every_steps=1000, async_save=False)  # only the final step's
        c.eval.batch_size = 16
    return c
