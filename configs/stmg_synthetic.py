"""STMG on the synthetic moving-shape videos (2 classes: background, shape), CPU-sized.

Dense training first (`dense_steps`), then the gates with the network frozen (`gate_steps`).
Fields: net -> stmg_jax.config.SegNetConfig, stream -> StreamConfig, gates: loss weights, the
FLOPs budget (fraction of the gateable blocks' branch FLOPs) and the generators' optimizer,
optimizer: the dense phase's (everest_jax.optim fields), mesh: everest_jax.sharding mesh.

Arguments (key=value, as every config): `side` (64, 128 or 256; default 64) and `network`
(quarter or resnet18). `--config configs/stmg_synthetic.py:side=128` trains 128x128 frames with
finer stage-0/1 bin grids (bins of 16 input pixels at stage 0), where partial compute's halo costs
less than on the 64x64 grid; `:side=128,network=resnet18` trains the full-width ResNet-18 +
SwiftNet decoder (widths 64-512, decoder 128, the Cityscapes/CamVid network) instead of the
quarter-width CPU-sized default (widths 16-128, decoder 32).
"""

import ml_collections

from configs.common import parse_arg


# frame side -> bins per stage (stage s's map is side / 2**(s+2))
BIN_GRIDS = {64: ((4, 4), (4, 4), (2, 2), (1, 1)),
             128: ((8, 8), (4, 4), (2, 2), (1, 1)),
             256: ((16, 16), (8, 8), (4, 4), (2, 2))}
# network name -> (encoder widths, decoder width)
NETWORKS = {"quarter": ((16, 32, 64, 128), 32), "resnet18": ((64, 128, 256, 512), 128)}


def get_config(arg=None):
    a = parse_arg(arg, side=64, network="quarter")
    if a.side not in BIN_GRIDS or a.network not in NETWORKS:
        raise ValueError(f"configs/stmg_synthetic.py:{arg}: side must be one of {sorted(BIN_GRIDS)} and "
                         f"network one of {sorted(NETWORKS)}")
    side, (widths, decoder_width) = a.side, NETWORKS[a.network]
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.init_from = ""  # an STMG checkpoint directory (e.g. a run's dense/): skip dense training
    c.log_every = 50  # 0: no per-step metrics
    c.eval_every = 0  # evaluate every N steps of each phase (0: at each phase's end only)
    c.nonfinite = "stop"  # or "skip": leave the state untouched and count the step
    c.checkpoint = ml_collections.ConfigDict(dict(every_steps=50, keep=2, async_save=True))
    c.net = ml_collections.ConfigDict(dict(
        num_classes=2, widths=widths, blocks_per_stage=(2, 2, 2, 2), decoder_width=decoder_width,
        residual_scale_init=0.0))
    c.stream = ml_collections.ConfigDict(dict(
        bin_grid=BIN_GRIDS[side], capacities=(0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875), gate_threshold=0.5,
        bin_threshold=0.5, stem_threshold=0.05, decoder_threshold=0.2, key_every=30, key_distortion=float("inf"),
        gate_downsampling=True))
    c.data = ml_collections.ConfigDict(dict(
        source="synthetic", root="", num_examples=4096, num_eval_examples=256, num_frames=8, image_size=(side, side), seed=0,
        camera_pan=False))
    c.batch_size = 16
    c.dense_steps = 300
    c.gate_steps = 100
    c.warmup_steps = 10
    c.optimizer = ml_collections.ConfigDict(dict(
        base_lr=3.2e-2, warmup_lr=1e-6, min_lr=1e-4, b1=0.9, b2=0.999, weight_decay=1e-4,
        layer_decay=1.0, grad_clip_norm=1.0, grad_accum_steps=1))  # lr = base_lr * batch / 256
    c.gates = ml_collections.ConfigDict(dict(
        budget=0.15, ce_weight=1.0, distill_weight=1.0, budget_weight=10.0, tau=1.0,
        optimizer=ml_collections.ConfigDict(dict(
            base_lr=1.6e-1, warmup_lr=1e-6, min_lr=1e-4, b1=0.9, b2=0.999, weight_decay=0.0,
            layer_decay=1.0, grad_clip_norm=1.0, grad_accum_steps=1))))
    c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=1, tensor=1, num_devices=1))
    return c
