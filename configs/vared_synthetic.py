"""VA-RED² on the synthetic motion videos, CPU-sized (a few minutes on 2 cores).

    python -m vared_jax.main --config configs/vared_synthetic.py:vared=false --workdir /tmp/r21d
    python -m vared_jax.main --config configs/vared_synthetic.py --workdir /tmp/vared \\
        --config.init_from=/tmp/r21d/final

`arg` (comma-separated key=value): job (train|evaluate), vared (true: the VA-RED² network, false:
the dense R(2+1)D), size (small|18), budget (target FLOPs / dense), static (true: a fifth class
whose shape does not move, so that the data has clips with and without motion), input_dependent
(true: the README's input-dependent recipe, beyond the paper: time padded with the edge frames and
each gate fed its input's standardised motion cue; set it for the dense run too, same backbone).

    python -m vared_jax.main --config configs/vared_synthetic.py:vared=false,static=true,input_dependent=true ...
"""

import ml_collections

from configs.common import classifier_config, parse_arg
from vared_jax.model import INPUT_DEPENDENT


def get_config(arg=None):
    a = parse_arg(arg, job="train", vared=True, size="small", budget=0.65, static=False, input_dependent=False)
    c = classifier_config(a.job)
    # 8 frames of 32x32: the stages see 8, 4, 2, 1 time steps (temporal choices where T is even).
    c.clip = ml_collections.ConfigDict(dict(num_frames=8, image_size=(32, 32)))
    widths = dict(small=((16, 32, 64, 128), (1, 1, 1, 1), (16, 16)), **{"18": ((64, 128, 256, 512), (2, 2, 2, 2), (45, 64))})
    w, blocks, stem = widths[a.size]
    c.model = ml_collections.ConfigDict(dict(
        num_classes=5 if a.static else 4, widths=w, blocks_per_stage=blocks, stem_widths=stem, residual_scale_init=0.0,
        temporal_levels=1, channel_levels=1, gate_reduction=4, gate_min_hidden=8, gate_norm=False,
        gate_motion=False, temporal_padding="zeros"))
    if a.input_dependent:
        c.model.update(INPUT_DEPENDENT)
    c.vared = ml_collections.ConfigDict(dict(
        enabled=a.vared, budget=a.budget, flops_weight=2.0, tau_start=5.0, tau_end=0.5, train_backbone=True,
        flops_penalty="squared"))
    c.data.update(name="synthetic", num_examples=4096, num_eval_examples=256, num_classes=c.model.num_classes,
                  static_class=a.static)
    c.batch_size = 32
    c.total_steps = 300
    c.warmup_steps = 10
    c.log_every = 20
    c.checkpoint.every_steps = 100
    c.optimizer.update(base_lr=8e-3, min_lr=1e-5, b2=0.999, weight_decay=0.05)  # lr = base_lr * batch / 256
    c.label_smoothing = 0.1
    c.eval.batch_size = 16
    return c
