"""STMG on CamVid sequences (11 classes, void ignored): ResNet-18 + SwiftNet decoder, frames at
384x480 (CamVid's 720x960 halved, rounded to multiples of 32), pairs (t-1, t) ending at each
labelled frame.

    python -m stmg_jax.main --config configs/stmg_camvid.py --workdir DIR \
        --config.data.root=/data/camvid   # holds train/, trainannot/, val/, valannot/, sequences/

Layout and labels: `stmg_jax.data.CamVidSequences`. Needs an accelerator; every field can be
overridden on the command line.
"""

from configs.stmg_synthetic import get_config as synthetic_config


def get_config(arg=None):
    del arg
    c = synthetic_config()
    c.net.update(num_classes=11, widths=(64, 128, 256, 512), decoder_width=128)
    # stage maps at 384x480: 96x120, 48x60, 24x30, 12x15
    c.stream.bin_grid = ((8, 8), (4, 4), (2, 2), (1, 1))
    c.data.update(source="camvid", root="", image_size=(384, 480))
    c.batch_size = 8
    c.dense_steps = 10_000
    c.gate_steps = 1_000
    c.warmup_steps = 300
    c.optimizer.base_lr = 4e-3
    c.log_every = 100
    return c
