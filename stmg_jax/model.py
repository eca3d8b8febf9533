"""The dense segmentation network: ResNet-18/34-style encoder + SwiftNet-style ladder decoder.

Layout (input (N, H, W, 3), H and W multiples of 32):

  stem:   conv 7x7 /2 (pad 3) + affine + ReLU, max-pool 3x3 /2 (pad 1)  -> (N, H/4, W/4, widths[0])
  stages: 4 stages of BasicBlocks; stage s in 0..3 works at stride 2**(s+2) with widths[s]
          channels; the first block of stages 1..3 has stride 2 and a 1x1 projection shortcut.
  decoder (SwiftNet ladder): 1x1 lateral conv of each stage's output to `decoder_width`; from the
          deepest: up = 2x bilinear upsample(top) + lateral(s); top = ReLU(affine(conv3x3(up)));
          logits = 1x1 conv at H/4, bilinear upsample x4 -> (N, H, W, num_classes).

Design choices:
  * No BatchNorm. Every conv is followed by a per-channel affine (scale, bias) — a "frozen
    BatchNorm" — which behaves identically at train and test time and, crucially for STMG, is
    *local*: the value of a pixel depends only on its receptive field. GroupNorm/BatchNorm/LayerNorm
    compute statistics over the whole feature map, so recomputing a few bins would change the
    statistics (partial compute would no longer equal dense compute) and a cached region would be
    normalised with stale statistics. Without batch statistics the last affine of each residual
    branch is initialised to `residual_scale_init` (default 0: SkipInit/Fixup), so the untrained
    network starts as identity blocks and trains stably.
  * BasicBlock: out = ReLU(shortcut(x) + branch(x)), branch = affine(conv3x3(ReLU(affine(conv3x3(x))))),
    shortcut = identity, or affine(conv1x1 /stride) when the stride or the width changes.
  * Gateable blocks (STMG may skip them or recompute only some bins) are by default exactly the
    blocks with an identity shortcut (stride 1, same width): stage 0's blocks and every non-first
    block of the other stages (5 of 8 in ResNet-18). Their branch output is cached and reused as
    out = ReLU(x_t + cached_branch). With StreamConfig.gate_downsampling the stride-2 blocks are
    gated too: their cheap 1x1 projection shortcut always runs on the current frame and only the
    residual branch (cached at the output resolution) is reused: out = ReLU(proj(x_t) + cached).
  * STMG also recomputes the stem and the decoder's stride-4 end (its last, most expensive blend
    conv and the 1x1 classifier) only on bins whose input changed (`streaming.py`); the other
    decoder convs always run.

`SegNet` exposes the pieces so that the streaming path can run blocks one by one with
`model.apply(variables, ..., method=...)`: `stem`, `block`, `branch` (with a `padding` and an
optional mask between its two convs, which partial compute needs), `shortcut`, `decode` =
`upsample_logits(blend_head(decode_ladder(feats)), (H, W))`, and `stem_patches` (the stem on
gathered patches).
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from stmg_jax.config import SegNetConfig, check_input_size


def _pad(p: int) -> tuple[tuple[int, int], tuple[int, int]]:
    return ((p, p), (p, p))


class ConvAffine(nn.Module):
    """k x k conv (no bias) followed by a per-channel affine y * scale + bias ("frozen BatchNorm").

    x (N, H, W, in_features) -> (N, H', W', features); `padding` (pixels on every side) is given
    at call time so the same weights can run SAME-padded on a whole map (padding=k//2) or VALID on
    a gathered patch with its halo (padding=0).
    """

    in_features: int
    features: int
    kernel: int
    stride: int = 1
    scale_init: float = 1.0

    def setup(self):
        self.w = self.param("kernel", nn.initializers.variance_scaling(2.0, "fan_in", "normal"),
                            (self.kernel, self.kernel, self.in_features, self.features))
        self.scale = self.param("scale", nn.initializers.constant(self.scale_init), (self.features,))
        self.bias = self.param("bias", nn.initializers.zeros, (self.features,))

    def __call__(self, x: jax.Array, padding: int | None = None) -> jax.Array:
        p = self.kernel // 2 if padding is None else padding
        y = jax.lax.conv_general_dilated(x, self.w, (self.stride, self.stride), _pad(p),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y * self.scale + self.bias


def conv_flops(h_out: int, w_out: int, c_in: int, c_out: int, kernel: int) -> int:
    """FLOPs of one conv: 2 * k*k * c_in * c_out * h_out * w_out (one multiply-add = 2 FLOPs).

    Affines, ReLUs, additions, pooling and resizing are not counted (they are < 1% of the convs).
    """
    return 2 * kernel * kernel * c_in * c_out * h_out * w_out


class BasicBlock(nn.Module):
    """ResNet BasicBlock: out = ReLU(shortcut(x) + branch(x)); x (N, H, W, in_features)."""

    in_features: int
    features: int
    stride: int = 1
    residual_scale_init: float = 0.0

    @property
    def gateable(self) -> bool:
        return self.stride == 1 and self.in_features == self.features

    def setup(self):
        self.conv1 = ConvAffine(self.in_features, self.features, 3, self.stride)
        self.conv2 = ConvAffine(self.features, self.features, 3, 1, scale_init=self.residual_scale_init)
        if not self.gateable:
            self.proj = ConvAffine(self.in_features, self.features, 1, self.stride)

    def branch(self, x: jax.Array, padding: int | None = None, mid_mask: jax.Array | None = None) -> jax.Array:
        """The residual branch. x (N, H, W, Cin) -> (N, H', W', C).

        padding=None: SAME (1 pixel) for both convs. padding=0: VALID, for a patch carrying a
        2-pixel halo: (N, h+4, w+4, C) -> (N, h, w, C). `mid_mask` (N, h+2, w+2, 1) multiplies the
        first conv's activations before the second conv; partial compute uses it to zero the halo
        positions that lie outside the image (where the dense network's second conv sees zero
        padding, not the first conv's output).
        """
        h = nn.relu(self.conv1(x, padding))
        if mid_mask is not None:
            h = h * mid_mask
        return self.conv2(h, padding)

    def shortcut(self, x: jax.Array) -> jax.Array:
        return x if self.gateable else self.proj(x)

    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.relu(self.shortcut(x) + self.branch(x))


def _upsample_axis(x: jax.Array, factor: int, axis: int) -> jax.Array:
    n = x.shape[axis]
    xp = jnp.concatenate([jax.lax.slice_in_dim(x, 0, 1, axis=axis), x,
                          jax.lax.slice_in_dim(x, n - 1, n, axis=axis)], axis=axis)  # edge-clamped
    phases = []
    for p in range(factor):  # output s*j + p samples input coordinate j + (p + 0.5) / s - 0.5
        src = (p + 0.5) / factor - 0.5
        lo = math.floor(src)
        frac = src - lo
        a = jax.lax.slice_in_dim(xp, lo + 1, lo + 1 + n, axis=axis)
        b = jax.lax.slice_in_dim(xp, lo + 2, lo + 2 + n, axis=axis)
        phases.append((1 - frac) * a + frac * b)
    out = jnp.stack(phases, axis=axis + 1)
    return out.reshape(*x.shape[:axis], n * factor, *x.shape[axis + 1:])


def upsample(x: jax.Array, factor: int) -> jax.Array:
    """Bilinear upsampling by an integer factor: (N, H, W, C) -> (N, H*f, W*f, C).

    Equals `jax.image.resize(x, ..., "bilinear")` (half-pixel centres, edges clamped; tested), but
    as two separable 2-tap interpolations per output phase instead of `resize`'s dense (out, in)
    interpolation matrices, whose matmuls cost O(H^2) per column: at 512x512 frames they took more
    time on CPU than the decoder's stride-4 convolution.
    """
    if factor == 1:
        return x
    return _upsample_axis(_upsample_axis(x, factor, 1), factor, 2)


class SegNet(nn.Module):
    """Dense segmentation network; `__call__`: (N, H, W, 3) float -> logits (N, H, W, num_classes).

    `block_specs` (static, from the config) lists (stage, in_features, features, stride) per block;
    `gateable_blocks` the indices of identity-shortcut blocks; `stage_ends` the index of each
    stage's last block (whose output feeds a decoder lateral).
    """

    config: SegNetConfig

    @property
    def block_specs(self) -> list[tuple[int, int, int, int]]:
        return block_specs(self.config)

    def setup(self):
        c = self.config
        self.stem_conv = ConvAffine(3, c.widths[0], 7, 2)
        self.blocks = [BasicBlock(cin, cout, stride, c.residual_scale_init)
                       for _, cin, cout, stride in self.block_specs]
        d = c.decoder_width
        self.laterals = [ConvAffine(w, d, 1) for w in c.widths]
        self.blends = [ConvAffine(d, d, 3) for _ in c.widths[:-1]]
        self.head = ConvAffine(d, c.num_classes, 1)

    def stem(self, x: jax.Array) -> jax.Array:
        """(N, H, W, 3) -> (N, H/4, W/4, widths[0])."""
        x = nn.relu(self.stem_conv(x, 3))
        return nn.max_pool(x, (3, 3), (2, 2), _pad(1))

    def stem_patches(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        """The stem on gathered input patches (partial compute): x (k, 4bh+7, 4bw+7, 3) with its
        halo (zeros outside the image) -> (k, bh, bw, widths[0]). The conv runs VALID, giving the
        (2bh+1, 2bw+1) conv outputs the pooled bin needs; `mask` (k, 2bh+1, 2bw+1, 1) zeroes those
        outside the image. After the ReLU every value is >= 0 and every pool window holds at least
        one inside position, so zeros there act as the dense max-pool's -inf padding."""
        x = nn.relu(self.stem_conv(x, 0)) * mask
        return nn.max_pool(x, (3, 3), (2, 2), "VALID")

    def block(self, i: int, x: jax.Array) -> jax.Array:
        return self.blocks[i](x)

    def branch(self, i: int, x: jax.Array, padding: int | None = None,
               mid_mask: jax.Array | None = None) -> jax.Array:
        return self.blocks[i].branch(x, padding, mid_mask)

    def shortcut(self, i: int, x: jax.Array) -> jax.Array:
        return self.blocks[i].shortcut(x)

    def decode(self, feats: Sequence[jax.Array], out_hw: tuple[int, int]) -> jax.Array:
        """feats: the 4 stage outputs (N, H/2**(s+2), W/2**(s+2), widths[s]) -> (N, H, W, classes)."""
        return upsample_logits(self.blend_head(self.decode_ladder(feats)), out_hw)

    def decode_ladder(self, feats: Sequence[jax.Array]) -> jax.Array:
        """The decoder up to the input of its last (stride-4) blend: (N, H/4, W/4, decoder_width)."""
        top = self.laterals[3](feats[3])
        for s in (2, 1, 0):
            lat = self.laterals[s](feats[s])
            up = upsample(top, lat.shape[1] // top.shape[1])
            if s == 0:
                return up + lat
            top = self.blend(s, up + lat)

    def blend(self, s: int, x: jax.Array, padding: int | None = None) -> jax.Array:
        """ReLU(affine(conv3x3(x))) of decoder level s; padding=0 on patches with a 1-pixel halo."""
        return nn.relu(self.blends[s](x, padding))

    def blend_head(self, x: jax.Array, padding: int | None = None) -> jax.Array:
        """The decoder's stride-4 end: its last blend and the 1x1 classifier, (N, H/4, W/4, d) ->
        logits at stride 4 (N, H/4, W/4, classes); padding=0 on patches with a 1-pixel halo
        (k, bh+2, bw+2, d) -> (k, bh, bw, classes)."""
        return self.head(self.blend(0, x, padding))

    def features(self, x: jax.Array) -> list[jax.Array]:
        """The 4 stage outputs of the dense encoder."""
        check_input_size(x.shape[1], x.shape[2])
        h = self.stem(x)
        feats = []
        ends = stage_ends(self.config)
        for i in range(len(self.blocks)):
            h = self.blocks[i](h)
            if i in ends:
                feats.append(h)
        return feats

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.decode(self.features(x), x.shape[1:3])


def upsample_logits(logits: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
    """Bilinear upsampling of stride-4 logits (N, h, w, classes) to (N, H, W, classes)."""
    factor = out_hw[0] // logits.shape[1]
    if (logits.shape[1] * factor, logits.shape[2] * factor) != tuple(out_hw):
        raise ValueError(f"upsample_logits: output size {tuple(out_hw)} is not an integer multiple (the same "
                         f"for H and W) of the logits' {logits.shape[1:3]}")
    return upsample(logits, factor)


def block_specs(config: SegNetConfig) -> list[tuple[int, int, int, int]]:
    """(stage, in_features, features, stride) of every block, in order."""
    specs, cin = [], config.widths[0]
    for s, (w, n) in enumerate(zip(config.widths, config.blocks_per_stage)):
        for b in range(n):
            stride = 2 if (b == 0 and s > 0) else 1
            specs.append((s, cin, w, stride))
            cin = w
    return specs


def gateable_blocks(config: SegNetConfig, downsampling: bool = False) -> list[int]:
    """Indices of the blocks STMG may skip: the identity-shortcut blocks (stride 1, same width),
    and with `downsampling` (StreamConfig.gate_downsampling) the projection-shortcut blocks too
    (their 1x1 projection shortcut then always runs; only the residual branch is gated)."""
    return [i for i, (_, cin, cout, stride) in enumerate(block_specs(config))
            if downsampling or (stride == 1 and cin == cout)]


def branch_flops(config: SegNetConfig, i: int, height: int, width: int) -> int:
    """FLOPs of block i's residual branch (two 3x3 convs, no projection) for an input frame of
    (height, width)."""
    s, cin, cout, _ = block_specs(config)[i]
    h, w = height // 2 ** (s + 2), width // 2 ** (s + 2)
    return conv_flops(h, w, cin, cout, 3) + conv_flops(h, w, cout, cout, 3)


def region_flops(config: SegNetConfig, height: int, width: int) -> dict[str, int]:
    """Dense FLOPs of the two non-block layers STMG recomputes per bin: {'stem': the 7x7 conv,
    'decoder': the stride-4 end (`SegNet.blend_head`: 3x3 blend d -> d and 1x1 head d -> classes)}."""
    d, h, w = config.decoder_width, height // 4, width // 4
    return {"stem": conv_flops(height // 2, width // 2, 3, config.widths[0], 7),
            "decoder": conv_flops(h, w, d, d, 3) + conv_flops(h, w, d, config.num_classes, 1)}


def stage_ends(config: SegNetConfig) -> list[int]:
    """Index of the last block of each stage."""
    return [sum(config.blocks_per_stage[:s + 1]) - 1 for s in range(4)]


def dense_flops(config: SegNetConfig, height: int, width: int) -> dict[str, int]:
    """Analytical FLOPs (see `conv_flops`) of one dense frame: {'stem', 'block_<i>', 'decoder', 'total'}.

    For a block, 'block_<i>' counts its branch plus its projection shortcut if any.
    """
    out = {"stem": conv_flops(height // 2, width // 2, 3, config.widths[0], 7)}
    for i, (s, cin, cout, stride) in enumerate(block_specs(config)):
        h, w = height // 2 ** (s + 2), width // 2 ** (s + 2)
        f = conv_flops(h, w, cin, cout, 3) + conv_flops(h, w, cout, cout, 3)
        if stride != 1 or cin != cout:
            f += conv_flops(h, w, cin, cout, 1)
        out[f"block_{i}"] = f
    d, dec = config.decoder_width, 0
    for s in range(4):
        h, w = height // 2 ** (s + 2), width // 2 ** (s + 2)
        dec += conv_flops(h, w, config.widths[s], d, 1)
        if s < 3:
            dec += conv_flops(h, w, d, d, 3)
    dec += conv_flops(height // 4, width // 4, d, config.num_classes, 1)
    out["decoder"] = dec
    out["total"] = sum(out.values())
    return out
