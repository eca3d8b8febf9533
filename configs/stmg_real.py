"""Shared shape of the real-dataset STMG configs (stmg_cityscapes.py, stmg_camvid.py): the
synthetic config's schedule and stream policy with a ResNet-18 + SwiftNet-width (128) decoder,
sized for an accelerator."""

from configs.common import parse_arg
from configs.stmg_synthetic import get_config as synthetic_config


def real_config(arg, source: str, num_classes: int, image_size: tuple[int, int], bin_grid, dense_steps: int,
                gate_steps: int, warmup_steps: int):
    c = synthetic_config()
    c.net.update(num_classes=num_classes, widths=(64, 128, 256, 512), decoder_width=128)
    c.stream.bin_grid = bin_grid
    c.data.update(source=source, root=parse_arg(arg, root="").root, image_size=image_size)
    c.update(batch_size=8, dense_steps=dense_steps, gate_steps=gate_steps, warmup_steps=warmup_steps, log_every=100)
    c.optimizer.base_lr = 4e-3
    return c
