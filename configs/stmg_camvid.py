"""STMG on CamVid sequences (11 classes, void ignored): ResNet-18 + SwiftNet decoder, frames at
384x480 (CamVid's 720x960 halved, rounded to multiples of 32), pairs (t-1, t) ending at each
labelled frame.

    python -m stmg_jax.main --config configs/stmg_camvid.py --workdir DIR \
        --config.data.root=/data/camvid   # holds train/, trainannot/, val/, valannot/, sequences/

Layout and labels: `stmg_jax.data.CamVidSequences`. Needs an accelerator; every field can be
overridden on the command line.
"""

from configs.stmg_real import real_config


def get_config(arg=None):
    """Argument (key=value): root, the dataset folder (or --config.data.root=...)."""
    # stage maps at 384x480: 96x120, 48x60, 24x30, 12x15
    return real_config(arg, "camvid", 11, (384, 480), ((8, 8), (4, 4), (2, 2), (1, 1)),
                            dense_steps=10_000, gate_steps=1_000, warmup_steps=300)
