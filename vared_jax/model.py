"""R(2+1)D backbone (torchvision `r2plus1d_18` layout) and its VA-RED² version, plus analytic FLOPs.

Input `video` (B, T, H, W, 3) float (normalised) -> logits (B, num_classes); channels-last.

  stem:   conv 1x7x7 /(1,2,2) pad (0,3,3) 3 -> stem_widths[0], affine, ReLU,
          conv 3x1x1 pad (1,0,0) -> stem_widths[1], affine, ReLU
  stages: 4 stages of BasicBlocks (widths[s], blocks_per_stage[s]); the first block of stages
          2-4 has stride 2 in T, H, W and a 1x1x1 /2 conv + affine projection shortcut.
          block: h = ReLU(a(conv1_t(ReLU(a(conv1_s(x))))));  h = a(conv2_t(ReLU(a(conv2_s(h)))))
          out = ReLU(h + shortcut(x)); each (2+1)D unit: spatial 1x3x3 /(1,s,s) to midplanes =
          (in*out*27)//(in*9 + 3*out) (computed once per block from its in/out widths, used by
          both units, as torchvision), temporal 3x1x1 /(s,1,1) to out.
  head:   global average pool, Dense `fc`.

Parameter names: `stem_s`, `stem_t`, `layer<s>_<b>_{conv1_s,conv1_t,conv2_s,conv2_t,proj}`
(each {kernel (kt,kh,kw,in,out), scale, bias}), `fc`. `VaRedR2Plus1D` has the same names plus,
inside each gated conv, `gate_hidden`, `gate_t`, `gate_c` and `recon_<p>`: `dense_params` strips
those, so one tree serves both networks.

Decisions (where the paper is silent):
  * No BatchNorm statistics: every conv is followed by a per-channel affine (a frozen BN;
    `convert.py` folds torchvision's BN into it); the last affine of each residual branch
    (`conv2_t`) starts at `residual_scale_init` (0: SkipInit).
  * Gated convs: `stem_t` and both factors of both (2+1)D units of every block. Not gated: the
    stem's 1x7x7 conv (3 input channels, nothing to save on the channel side worth a gate),
    the 1x1x1 projection shortcuts and `fc`.
  * Gate input: global average pool of the conv's own input (`gate_norm`: standardised over its
    channels, no parameters; off by default). `gate_motion` (off by default; our addition, not in
    the paper) appends the pooled |x[t+1] - x[t]| per channel, so that a gate can see how much
    its input changes over time, which the mean alone does not show; hidden = max(C_in // gate_reduction,
    gate_min_hidden); separate Dense heads for the temporal and the channel logits.
  * Temporal padding: zeros (torchvision's). `temporal_padding="edge"` (our option) repeats the
    first / last frame instead, so that a clip constant in time has features constant in time in
    every layer, and every temporal reduction is exact on it (with zeros the first and last steps
    differ from the others, and the interpolated last step loses that).
  * Temporal reduction by 2**p_t multiplies the conv's temporal stride; the output at the
    skipped steps is linear interpolation between computed neighbours, copying the last
    computed one at the end. Available only where T_out % 2**p_t == 0 (else its logit is masked
    to -1e9, statically per layer and input length).
  * Channel reduction by 2**p_c: kernel slice W[..., :C_out/2**p_c]; the rest from a learned
    1x1x1 map `recon_<p_c>` (lecun-normal init) of the computed channels, applied before the
    temporal interpolation (they commute: both are linear, one over time, one over channels),
    so it runs on the computed frames only; the affine then applies to all C_out channels.
    Available only where C_out % 2**p_c == 0 (e.g. torchvision's midplanes 230 allow p_c <= 1).
  * Soft mode: out = Σ_{t,c} w_t[t] w_c[c] branch(t, c), w = softmax((logits + Gumbel) / tau)
    (rng stream "gumbel"), or softmax(logits / tau) with `deterministic=True`.
  * Hard mode: per-example argmax. Batch 1: one `lax.switch` per gated conv over its available
    (p_t, p_c) branches, so only the chosen one executes. Batch > 1: every available branch runs
    and the one-hot selects per example (same outputs, no savings); `infer_per_example` runs
    examples one by one (`lax.map`) through the batch-1 switch instead.
  * Forced choices ((p_t, p_c) for all gated convs, or {layer name: (p_t, p_c)} with (0, 0) for
    the others): a choice unavailable at a layer falls back, per factor, to the largest
    available one below it (ultimately 0 = full compute); gates are not evaluated.
  * FLOPs: 2 x multiply-adds of every conv (reduced branches: at their computed frames and
    channels), the 1x1 reconstruction and `fc`; gate Dense layers in `expected_flops`.
    Every kernel tap counts, padding included (the usual convention); `exclude_padding=True`
    counts only taps inside the input, as XLA does. Affines, ReLUs, pooling, the residual adds
    and the interpolation (3 FLOPs per interpolated value) are not counted: XLA's cost analysis
    is 1-5 % above the exclude_padding count (tested) at 8x32x32 and 8x64x64 clips.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from everest_jax.errors import ConfigError
from vared_jax.layers import RedConv, available, conv_out, _largest_available

# The model options of the input-dependent recipe (beyond the paper; README): time padded with the
# edge frames, each gate fed its input's standardised motion cue. A dense backbone takes them too.
INPUT_DEPENDENT = {"temporal_padding": "edge", "gate_motion": True, "gate_norm": True}


def _pos_ints(v: Any, n: int) -> bool:
    return (isinstance(v, (tuple, list)) and len(v) == n
            and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in v))


@dataclasses.dataclass(frozen=True)
class R2Plus1DConfig:
    """R(2+1)D network and VA-RED² gate settings.

    Fields: num_classes; widths (4 stage widths); blocks_per_stage (4); stem_widths (spatial,
    temporal conv of the stem); residual_scale_init (initial scale of each branch's last affine);
    temporal_levels K_t and channel_levels K_c (VA-RED² choices 0..K, each in 0..2);
    gate_reduction and gate_min_hidden (gate hidden width max(C_in // r, min)); gate_norm (standardise
    the pooled gate input over its channels, no parameters); gate_motion (also feed each gate the
    pooled absolute temporal difference of its input); temporal_padding ("zeros" as torchvision, or
    "edge": repeat the first / last frame).
    """

    num_classes: int = 400
    widths: tuple[int, ...] = (64, 128, 256, 512)
    blocks_per_stage: tuple[int, ...] = (2, 2, 2, 2)
    stem_widths: tuple[int, int] = (45, 64)
    residual_scale_init: float = 0.0
    temporal_levels: int = 1
    channel_levels: int = 1
    gate_reduction: int = 4
    gate_min_hidden: int = 8
    gate_norm: bool = False
    gate_motion: bool = False
    temporal_padding: str = "zeros"

    def __post_init__(self):
        for name, n in (("widths", 4), ("blocks_per_stage", 4), ("stem_widths", 2)):
            v = getattr(self, name)
            if not _pos_ints(v, n):
                raise ConfigError(f"{name}={v!r} must be {n} positive ints")
            object.__setattr__(self, name, tuple(int(s) for s in v))
        for name in ("num_classes", "gate_reduction", "gate_min_hidden"):
            if not _pos_ints((getattr(self, name),), 1):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be a positive int")
        for name in ("temporal_levels", "channel_levels"):
            v = getattr(self, name)
            if not (isinstance(v, numbers.Integral) and not isinstance(v, bool) and 0 <= v <= 2):
                raise ConfigError(f"{name}={v!r} must be 0, 1 or 2")
        for name in ("gate_norm", "gate_motion"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}={getattr(self, name)!r} must be true or false")
        if self.temporal_padding not in ("zeros", "edge"):
            raise ConfigError(f"temporal_padding={self.temporal_padding!r} must be 'zeros' or 'edge'")
        if not isinstance(self.residual_scale_init, numbers.Real) or isinstance(self.residual_scale_init, bool):
            raise ConfigError(f"residual_scale_init={self.residual_scale_init!r} must be a number")

    @classmethod
    def r2plus1d_18(cls, num_classes: int = 400, **kw) -> "R2Plus1DConfig":
        """torchvision `r2plus1d_18`."""
        return cls(num_classes=num_classes, **kw)

    @classmethod
    def small(cls, num_classes: int = 10, widths=(16, 32, 64, 128), blocks_per_stage=(1, 1, 1, 1),
              stem_widths=(16, 16), **kw) -> "R2Plus1DConfig":
        """A variant that trains on 2 CPU cores in minutes."""
        return cls(num_classes=num_classes, widths=widths, blocks_per_stage=blocks_per_stage,
                   stem_widths=stem_widths, **kw)


def r2plus1d_18(num_classes: int = 400, **kw) -> R2Plus1DConfig:
    return R2Plus1DConfig.r2plus1d_18(num_classes, **kw)


def small(num_classes: int = 10, **kw) -> R2Plus1DConfig:
    return R2Plus1DConfig.small(num_classes, **kw)


def midplanes(cin: int, cout: int) -> int:
    return (cin * cout * 27) // (cin * 9 + 3 * cout)


def block_specs(config: R2Plus1DConfig) -> list[tuple[str, int, int, int]]:
    """(name `layer<s>_<b>`, in, out, stride) of every block."""
    specs, cin = [], config.stem_widths[1]
    for s, (w, n) in enumerate(zip(config.widths, config.blocks_per_stage)):
        for b in range(n):
            stride = 2 if (b == 0 and s > 0) else 1
            specs.append((f"layer{s + 1}_{b}", cin, w, stride))
            cin = w
    return specs


# ---------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------

class _Net(nn.Module):
    config: R2Plus1DConfig
    vared: bool = False
    branch_callback: Callable | None = None

    def _conv(self, name, cin, cout, kernel, stride=(1, 1, 1), padding=(0, 0, 0), scale_init=1.0):
        c = self.config
        hidden = max(cin // c.gate_reduction, c.gate_min_hidden)
        return RedConv(cin, cout, kernel, stride, padding, scale_init, vared=self.vared,
                       levels_t=c.temporal_levels, levels_c=c.channel_levels, gate_hidden=hidden,
                       gate_norm=c.gate_norm, gate_motion=c.gate_motion, edge_time=c.temporal_padding == "edge",
                       branch_callback=self.branch_callback, name=name)

    @nn.compact
    def _forward(self, video, mode, tau, deterministic, forced):
        c = self.config
        if video.ndim != 5 or video.shape[-1] != 3:
            raise ValueError(f"video must be (B, T, H, W, 3), got {video.shape}")
        choices: dict[str, dict[str, jax.Array]] = {}

        def run(conv, x):
            if not self.vared:
                return conv(x)
            f = forced.get(conv.name, (0, 0)) if isinstance(forced, dict) else forced
            y, ch = conv(x, mode, tau, deterministic, f)
            choices[conv.name] = ch
            return y

        s0, s1 = c.stem_widths
        x = nn.relu(RedConv(3, s0, (1, 7, 7), (1, 2, 2), (0, 3, 3), vared=False, name="stem_s")(video))
        x = nn.relu(run(self._conv("stem_t", s0, s1, (3, 1, 1), padding=(1, 0, 0)), x))
        for name, cin, cout, st in block_specs(c):
            mid = midplanes(cin, cout)
            sub = lambda n: f"{name}_{n}"
            h = nn.relu(run(self._conv(sub("conv1_s"), cin, mid, (1, 3, 3), (1, st, st), (0, 1, 1)), x))
            h = nn.relu(run(self._conv(sub("conv1_t"), mid, cout, (3, 1, 1), (st, 1, 1), (1, 0, 0)), h))
            h = nn.relu(run(self._conv(sub("conv2_s"), cout, mid, (1, 3, 3), (1, 1, 1), (0, 1, 1)), h))
            h = run(self._conv(sub("conv2_t"), mid, cout, (3, 1, 1), (1, 1, 1), (1, 0, 0),
                               c.residual_scale_init), h)
            if st != 1 or cin != cout:
                x = RedConv(cin, cout, (1, 1, 1), (st, st, st), vared=False, name=sub("proj"))(x)
            x = nn.relu(h + x)
        logits = nn.Dense(c.num_classes, name="fc")(jnp.mean(x, axis=(1, 2, 3)))
        return logits, choices


class R2Plus1D(_Net):
    """Dense R(2+1)D: `__call__(video (B, T, H, W, 3)) -> logits (B, num_classes)`."""

    vared: bool = False

    def __call__(self, video: jax.Array) -> jax.Array:
        return self._forward(video, "soft", 1.0, True, None)[0]


class VaRedR2Plus1D(_Net):
    """VA-RED² R(2+1)D: `__call__(video, mode="soft"|"hard", tau=1.0, deterministic=True,
    forced=None) -> (logits (B, num_classes), choices {layer: {"t": (B, K_t+1), "c": (B, K_c+1)}})`.

    choices hold the weights used (Gumbel-softmax / softmax in soft mode, one-hots in hard or
    forced mode); feed them to `expected_flops`. Soft non-deterministic mode needs
    `rngs={"gumbel": key}`. `forced`: (p_t, p_c) for every gated conv or {layer: (p_t, p_c)}.
    """

    vared: bool = True

    def __call__(self, video: jax.Array, mode: str = "soft", tau: float = 1.0, deterministic: bool = True,
                 forced: tuple[int, int] | dict[str, tuple[int, int]] | None = None):
        return self._forward(video, mode, tau, deterministic, forced)


def dense_params(params: dict) -> dict:
    """A VA-RED² param tree without its gate and reconstruction params: the dense network's tree."""
    def strip(tree):
        return {k: strip(v) if isinstance(v, dict) else v for k, v in tree.items()
                if not (k.startswith("gate_") or k.startswith("recon_"))}
    return strip(dict(params))


def merge_params(vared_params: dict, backbone: dict) -> dict:
    """`vared_params` (e.g. a fresh init) with every backbone weight replaced from `backbone`
    (a dense tree, e.g. `convert.from_torchvision`); gate and reconstruction params are kept."""
    def merge(a, b, path):
        out = dict(a)
        for k, v in b.items():
            if k not in a:
                raise KeyError(f"backbone param {path}{k} is not in the VA-RED² tree")
            out[k] = merge(a[k], v, f"{path}{k}/") if isinstance(v, dict) else v
        return out
    return merge(dict(vared_params), dict(backbone), "")


def infer_per_example(model: VaRedR2Plus1D, variables: dict, video: jax.Array):
    """Hard-mode inference one example at a time (`lax.map` over the batch, each a batch-1 forward
    whose switches execute only the chosen branches) -> (logits (B, n), choices (B, ...))."""
    def one(v):
        logits, ch = model.apply(variables, v[None], mode="hard")
        return logits[0], jax.tree.map(lambda a: a[0], ch)
    return jax.lax.map(one, video)


# ---------------------------------------------------------------------------------------------
# FLOPs (analytic; one multiply-add = 2 FLOPs; per example)
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One conv of the network at a given input size: shapes are (T, H, W) per example."""

    name: str
    cin: int
    cout: int
    kernel: tuple[int, int, int]
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    gated: bool
    avail_t: tuple[bool, ...]
    avail_c: tuple[bool, ...]
    gate_hidden: int = 0
    gate_motion: bool = False
    stride: tuple[int, int, int] = (1, 1, 1)
    padding: tuple[int, int, int] = (0, 0, 0)


def conv_specs(config: R2Plus1DConfig, input_shape) -> list[ConvSpec]:
    """Every conv (and `fc` as a 1x1x1 conv on a 1x1x1 map) for a clip (T, H, W) (or (B, T, H, W, 3))."""
    t, h, w = tuple(input_shape)[-4:-1] if len(input_shape) == 5 else tuple(input_shape)
    c, out = config, []

    def add(name, shape, cin, cout, k, s, p, gated):
        o = tuple(conv_out(n, kk, ss, pp) for n, kk, ss, pp in zip(shape, k, s, p))
        at, ac = available(o[0], cout, c.temporal_levels if gated else 0, c.channel_levels if gated else 0)
        hid = max(cin // c.gate_reduction, c.gate_min_hidden) if gated else 0
        out.append(ConvSpec(name, cin, cout, k, shape, o, gated, tuple(at), tuple(ac), hid,
                            gated and c.gate_motion, s, p))
        return o

    x = add("stem_s", (t, h, w), 3, c.stem_widths[0], (1, 7, 7), (1, 2, 2), (0, 3, 3), False)
    x = add("stem_t", x, c.stem_widths[0], c.stem_widths[1], (3, 1, 1), (1, 1, 1), (1, 0, 0), True)
    for name, cin, cout, st in block_specs(c):
        mid = midplanes(cin, cout)
        hs = add(f"{name}_conv1_s", x, cin, mid, (1, 3, 3), (1, st, st), (0, 1, 1), True)
        hs = add(f"{name}_conv1_t", hs, mid, cout, (3, 1, 1), (st, 1, 1), (1, 0, 0), True)
        hs = add(f"{name}_conv2_s", hs, cout, mid, (1, 3, 3), (1, 1, 1), (0, 1, 1), True)
        hs = add(f"{name}_conv2_t", hs, mid, cout, (3, 1, 1), (1, 1, 1), (1, 0, 0), True)
        if st != 1 or cin != cout:
            add(f"{name}_proj", x, cin, cout, (1, 1, 1), (st, st, st), (0, 0, 0), False)
        x = hs
    add("fc", (1, 1, 1), config.widths[3], config.num_classes, (1, 1, 1), (1, 1, 1), (0, 0, 0), False)
    return out


def _taps(n_in: int, n_out: int, k: int, s: int, p: int, exclude_padding: bool) -> int:
    """(output position, kernel tap) pairs along one axis; with `exclude_padding` only those
    reading inside the input (XLA's convention)."""
    if not exclude_padding:
        return n_out * k
    return sum(0 <= o * s - p + j < n_in for o in range(n_out) for j in range(k))


def branch_flops(spec: ConvSpec, p_t: int = 0, p_c: int = 0, exclude_padding: bool = False) -> int:
    """FLOPs of choice (p_t, p_c) of one conv: the conv at T_out/2**p_t frames and C_out/2**p_c
    channels, plus the 1x1 reconstruction of the other channels at those frames.

    Default: every kernel tap counts (the usual convention, as in the paper); `exclude_padding`
    counts only taps that read inside the input, as XLA's cost analysis does."""
    t, h, w = spec.out_shape
    frames, c = t // 2 ** p_t, spec.cout // 2 ** p_c
    strides = (spec.stride[0] * 2 ** p_t, *spec.stride[1:])
    taps = 1
    for n_in, n_out, k, s, p in zip(spec.in_shape, (frames, h, w), spec.kernel, strides, spec.padding):
        taps *= _taps(n_in, n_out, k, s, p, exclude_padding)
    f = 2 * taps * spec.cin * c
    return f + 2 * c * (spec.cout - c) * frames * h * w


def gate_flops(spec: ConvSpec) -> int:
    """FLOPs of a conv's gate: its two Dense layers, plus with `gate_motion` the temporal
    difference, abs and sum (3 per input value after the first frame); the pooling is not counted."""
    if not spec.gated:
        return 0
    k = len(spec.avail_t) + len(spec.avail_c)
    t, h, w = spec.in_shape
    motion = 3 * (t - 1) * h * w * spec.cin if spec.gate_motion else 0
    return 2 * ((1 + spec.gate_motion) * spec.cin * spec.gate_hidden + spec.gate_hidden * k) + motion


def dense_flops(config: R2Plus1DConfig, input_shape) -> int:
    """FLOPs of the dense network per clip (every conv at full compute, projections, fc)."""
    return sum(branch_flops(s) for s in conv_specs(config, input_shape))


def fixed_flops(config: R2Plus1DConfig, input_shape, forced, include_gates: bool = False,
                exclude_padding: bool = False) -> int:
    """FLOPs per clip with static choices `forced` ((p_t, p_c) or {layer: (p_t, p_c)}), with the
    same per-layer fallback as the model."""
    total = 0
    for s in conv_specs(config, input_shape):
        if not s.gated:
            total += branch_flops(s, exclude_padding=exclude_padding)
            continue
        f = forced.get(s.name, (0, 0)) if isinstance(forced, dict) else forced
        total += branch_flops(s, _largest_available(f[0], list(s.avail_t)),
                              _largest_available(f[1], list(s.avail_c)), exclude_padding)
        total += gate_flops(s) if include_gates else 0
    return total


def flops_table(config: R2Plus1DConfig, input_shape) -> tuple[int, dict[str, np.ndarray]]:
    """(FLOPs of the ungated layers, {gated layer: (K_t+1, K_c+1) FLOPs of each choice incl. the
    gate; unavailable choices 0})."""
    fixed, table = 0, {}
    for s in conv_specs(config, input_shape):
        if not s.gated:
            fixed += branch_flops(s)
            continue
        tab = np.zeros((len(s.avail_t), len(s.avail_c)), np.float64)
        for pt, a in enumerate(s.avail_t):
            for pc, b in enumerate(s.avail_c):
                if a and b:
                    tab[pt, pc] = branch_flops(s, pt, pc) + gate_flops(s)
        table[s.name] = tab
    return fixed, table


def expected_flops(config: R2Plus1DConfig, input_shape, choices: dict) -> jax.Array:
    """Differentiable expected FLOPs per clip, normalised to `dense_flops`: (B,).

    Σ_layers Σ_{t,c} w_t[t] w_c[c] flops(t, c) (+ gates + ungated layers), with `choices` as
    returned by `VaRedR2Plus1D` (weights or one-hots)."""
    fixed, table = flops_table(config, input_shape)
    dense = float(dense_flops(config, input_shape))  # normalised on the host: R(2+1)D-18 counts > 2**31
    total = jnp.float32(fixed / dense)
    for name, tab in table.items():
        ch = choices[name]
        total = total + jnp.einsum("bt,tc,bc->b", ch["t"], jnp.asarray(tab / dense, jnp.float32), ch["c"])
    return total
