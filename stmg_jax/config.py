"""STMG configuration: the dense network (`SegNetConfig`) and the streaming policy (`StreamConfig`).

Both are frozen dataclasses, so modules can hold them and `jax.jit` can treat them as static.
Every check that depends on the input size (total stride 32, bin grids dividing each stage's
feature map) is in `check_input_size`, which the dense model and the streaming step call before
anything is traced; errors are the library's one `ConfigError` (a `ValueError`) naming the offending field.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

from everest_jax.config import ConfigError
from everest_jax.fields import Float, Is

__all__ = ["ConfigError", "SegNetConfig", "StreamConfig", "check_input_size"]

TOTAL_STRIDE = 32  # stem conv /2, max-pool /2, stages 2-4 /2 each


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


@dataclasses.dataclass(frozen=True)
class SegNetConfig:
    """The dense segmentation network: ResNet-18-style encoder + SwiftNet-style ladder decoder.

    Fields:
      num_classes: output channels of the logits.
      widths: channels of the 4 encoder stages (ResNet-18: 64, 128, 256, 512). The stem has
        `widths[0]` channels.
      blocks_per_stage: BasicBlocks per stage (ResNet-18: 2, 2, 2, 2; ResNet-34: 3, 4, 6, 3).
      decoder_width: channels of the ladder decoder (SwiftNet uses 128).
      residual_scale_init: initial value of the per-channel scale after the last conv of every
        residual branch. The network has no batch statistics (see `model.py`), so following
        SkipInit/Fixup the default 0 starts every block as the identity, which trains stably
        without normalisation. Tests use 1.0 so that every branch contributes.
    """

    num_classes: int = 19
    widths: tuple[int, ...] = (64, 128, 256, 512)
    blocks_per_stage: tuple[int, ...] = (2, 2, 2, 2)
    decoder_width: int = 128
    residual_scale_init: float = 0.0

    def __post_init__(self):
        if not _is_int(self.num_classes) or self.num_classes < 1:
            raise ConfigError(f"num_classes={self.num_classes!r} must be a positive int")
        for name in ("widths", "blocks_per_stage"):
            v = getattr(self, name)
            if (not isinstance(v, (tuple, list)) or len(v) != 4
                    or not all(_is_int(s) and s >= 1 for s in v)):
                raise ConfigError(f"{name}={v!r} must be 4 positive ints (one per stage)")
            object.__setattr__(self, name, tuple(int(s) for s in v))
        if not _is_int(self.decoder_width) or self.decoder_width < 1:
            raise ConfigError(f"decoder_width={self.decoder_width!r} must be a positive int")
        if not Float().ok(self.residual_scale_init):
            raise ConfigError(f"residual_scale_init={self.residual_scale_init!r} must be a number")


@dataclasses.dataclass(frozen=True)
class StreamConfig:
    """The streaming (batch-1, per-frame) policy of STMG.

    Fields:
      bin_grid: spatial bins per gateable block, as (rows, cols) used for every stage or as 4
        such pairs, one per stage (stage i's feature map is input / 2**(i + 2)). Each must divide
        its stage's feature map exactly (checked by `check_input_size`, error names
        `bin_grid[stage]`).
      capacities: fractions of a block's bins that partial compute can recompute; each gives a
        static k = max(1, ceil(f * bins)); duplicates are merged and the full level (all bins)
        is always added and runs the branch densely (no halo overhead). A block that runs picks
        the smallest level whose k covers the bins its mask selects (`lax.switch`).
      gate_threshold: a gateable block runs when sigmoid(gate logit) >= this (and at least one bin
        is selected). 0 forces every block on; > 1 forces every block off (except key frames).
      bin_threshold: a bin is selected for recompute when sigmoid(bin logit) >= this. 0 selects
        every bin (so every running block takes the full level).
      key_every: every `key_every`-th frame (frame 0, N, 2N, ...) is a key frame: every block
        runs densely and every cache is refreshed. 0: only frame 0 (the caches start empty).
      stem_threshold: the stem (7x7 conv + max-pool) is recomputed only on the bins (of stage 0's
        grid, on its output) within whose receptive field some input pixel changed, against the
        pixels the cached output was computed from, by at least this (mean over channels of
        |x - ref|, relative to the frame's mean |x|; `distortion.peak_change`); cache elsewhere.
        0: always dense.
      decoder_threshold: the same for the decoder's stride-4 end (blend conv + classifier), on its input.
      key_distortion: a frame whose pixel distortion (mean |f_t - f_{t-1}| / mean |f_t|, see
        `distortion.py`) is at least this is also a key frame (scene cut, large camera motion).
        `inf` disables it.
      gate_downsampling: also gate the stride-2 (projection-shortcut) blocks' residual branches
        (bins are those of the block's output map; the input patch of an output bin spans
        2 * (bin + 1) + 3 input pixels per side, see `distortion.gather_with_halo`). Default off:
        only identity-shortcut blocks are gated.
    """

    bin_grid: Any = (4, 4)
    capacities: tuple[float, ...] = (0.25, 0.5)
    gate_threshold: float = 0.5
    bin_threshold: float = 0.5
    key_every: int = 30
    stem_threshold: float = 0.05
    decoder_threshold: float = 0.05
    key_distortion: float = float("inf")
    gate_downsampling: bool = False

    def __post_init__(self):
        g = self.bin_grid
        pair = lambda p: isinstance(p, (tuple, list)) and len(p) == 2 and all(_is_int(s) and s >= 1 for s in p)
        if pair(g):
            grids = (tuple(int(s) for s in g),) * 4
        elif isinstance(g, (tuple, list)) and len(g) == 4 and all(pair(p) for p in g):
            grids = tuple(tuple(int(s) for s in p) for p in g)
        else:
            raise ConfigError(f"bin_grid={g!r} must be (rows, cols) of positive ints or 4 such pairs "
                              "(one per stage)")
        object.__setattr__(self, "bin_grid", grids)
        if not isinstance(self.capacities, (tuple, list)) or not all(
                isinstance(f, numbers.Real) and 0 < f <= 1 for f in self.capacities):
            raise ConfigError(f"capacities={self.capacities!r} must be fractions in (0, 1]")
        object.__setattr__(self, "capacities", tuple(float(f) for f in self.capacities))
        for name in ("stem_threshold", "decoder_threshold"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Real) or isinstance(v, bool) or not v >= 0:
                raise ConfigError(f"{name}={v!r} must be a number >= 0")
        if not _is_int(self.key_every) or self.key_every < 0:
            raise ConfigError(f"key_every={self.key_every!r} must be an int >= 0")
        rules = {"gate_threshold": Float(0), "bin_threshold": Float(0),  # > 1: never (see above)
                 "key_distortion": Float(0, lo_open=True, also=(float("inf"),)), "gate_downsampling": Is(bool)}
        for name, rule in rules.items():
            if not rule.ok(getattr(self, name)):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be {rule.describe()}")

    def levels(self, num_bins: int) -> tuple[int, ...]:
        """Static bin counts of the capacity levels for a block with `num_bins` bins, ascending;
        the last is always `num_bins` (dense)."""
        import math
        ks = {min(num_bins, max(1, math.ceil(f * num_bins))) for f in self.capacities}
        ks.add(num_bins)
        return tuple(sorted(ks))


def check_input_size(height: int, width: int, stream: StreamConfig | None = None,
                     field: str = "input") -> None:
    """Refuse an input size the network or the bin grids cannot take; the error names the field.

    `height`, `width`: of the input frame. Every stage's feature map is (H / 2**(s+2), W / 2**(s+2))
    for s = 0..3, so the input must be divisible by 32, and `stream.bin_grid[s]` must divide
    stage s's map.
    """
    for name, v in (("height", height), ("width", width)):
        if not _is_int(v) or v < TOTAL_STRIDE or v % TOTAL_STRIDE:
            raise ConfigError(f"{field} {name} {v!r} is not a positive multiple of {TOTAL_STRIDE} "
                              "(the network's total stride)")
    if stream is None:
        return
    for s, (gh, gw) in enumerate(stream.bin_grid):
        fh, fw = height // 2 ** (s + 2), width // 2 ** (s + 2)
        if fh % gh or fw % gw:
            raise ConfigError(f"bin_grid[{s}]=({gh}, {gw}) does not divide stage {s}'s feature map "
                              f"{fh}x{fw} (input {height}x{width})")
