"""STMG on Cityscapes sequences (19 classes): ResNet-18 + SwiftNet decoder (width 128), frames at
512x1024 (half resolution), pairs (t-1, t) ending at each gtFine frame; 255 is ignored.

    python -m stmg_jax.main --config configs/stmg_cityscapes.py --workdir DIR \
        --config.data.root=/data/cityscapes   # holds leftImg8bit_sequence/ and gtFine/

Layout and labels: `stmg_jax.data.CityscapesSequences`. Training schedule in the spirit of
SwiftNet (AdamW here; batch 8, 20k dense steps); the gate phase trains only the generators with
the network frozen. Needs an accelerator; every field can be overridden on the command line.
"""

from configs.stmg_real import real_config


def get_config(arg=None):
    """Argument (key=value): root, the dataset folder (or --config.data.root=...)."""
    # stage maps at 512x1024: 128x256, 64x128, 32x64, 16x32
    return real_config(arg, "cityscapes", 19, (512, 1024), ((8, 16), (8, 16), (4, 8), (2, 4)),
                            dense_steps=20_000, gate_steps=2_000, warmup_steps=500)
