"""VA-RED² layers: the frozen-affine 3-D conv and the soft-modulated `RedConv`.

Tensors are channels-last: x (B, T, H, W, C); kernels (kt, kh, kw, C_in, C_out).

A choice (p_t, p_c) of a `RedConv` computes the conv only at every 2**p_t-th output time step
(temporal stride x 2**p_t) and only the first C_out / 2**p_c output channels (kernel slice
W[..., :C_out / 2**p_c]); the other channels come from a learned 1x1x1 map of the computed ones
(`recon_<p_c>`, (c, C_out - c)) and the other time steps from linear interpolation between the
computed ones (after the last computed frame: a copy of it). Then the per-channel affine.
"""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

DIMS = ("NDHWC", "DHWIO", "NDHWC")
DIMS_2D = ("NHWC", "HWIO", "NHWC")
MASKED = -1e9  # logit of a choice that cannot apply to a layer


def conv3d(x: jax.Array, w: jax.Array, stride, padding) -> jax.Array:
    """x (B, T, H, W, Cin), w (kt, kh, kw, Cin, Cout) -> (B, T', H', W', Cout); padding ((pt,pt),(ph,ph),(pw,pw)).

    The factors of a (2+1)D conv run as 2-D convs, 3-4x faster than XLA:CPU's 3-D conv (fwd + bwd):
    a 1 x kh x kw kernel over the frames (time folded into the batch), a kt x 1 x 1 kernel over
    (T, H*W) (space folded into the width; spatial strides taken by slicing first)."""
    (kt, kh, kw), (st, sh, sw), (pt, ph, pw) = w.shape[:3], tuple(stride), tuple(padding)
    b, c, o = x.shape[0], x.shape[-1], w.shape[-1]
    if kt == 1 and pt == (0, 0):
        x = x[:, ::st]
        t = x.shape[1]
        y = jax.lax.conv_general_dilated(x.reshape(b * t, *x.shape[2:]), w[0], (sh, sw), (ph, pw),
                                         dimension_numbers=DIMS_2D)
        return y.reshape(b, t, *y.shape[1:])
    if kh == kw == 1 and ph == pw == (0, 0):
        x = x[:, :, ::sh, ::sw]
        h, wd = x.shape[2:4]
        y = jax.lax.conv_general_dilated(x.reshape(b, x.shape[1], h * wd, c), w[:, 0], (st, 1), (pt, (0, 0)),
                                         dimension_numbers=DIMS_2D)
        return y.reshape(b, y.shape[1], h, wd, o)
    return jax.lax.conv_general_dilated(x, w, tuple(stride), tuple(padding), dimension_numbers=DIMS)


def conv_out(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


def interpolate_time(y: jax.Array, s: int) -> jax.Array:
    """Frames y (B, n, H, W, C) at time positions 0, s, .., (n-1)s -> (B, n*s, H, W, C): linear
    interpolation between neighbours; positions after the last computed frame copy it."""
    if s == 1:
        return y
    nxt = jnp.concatenate([y[:, 1:], y[:, -1:]], axis=1)
    phases = [y if r == 0 else (1 - r / s) * y + (r / s) * nxt for r in range(s)]
    out = jnp.stack(phases, axis=2)
    return out.reshape(y.shape[0], y.shape[1] * s, *y.shape[2:])


def available(t_out: int, c_out: int, levels_t: int, levels_c: int) -> tuple[list[bool], list[bool]]:
    """Static availability of each temporal choice (t_out divisible by 2**p_t) and each channel
    choice (c_out divisible by 2**p_c)."""
    return ([t_out % 2 ** p == 0 for p in range(levels_t + 1)],
            [c_out % 2 ** p == 0 for p in range(levels_c + 1)])


def gate_input(x: jax.Array, norm: bool = False, motion: bool = False) -> jax.Array:
    """x (B, T, H, W, C) -> the gate's input (B, C), or (B, 2C) with `motion`: the mean over
    (T, H, W), then the mean of |x[:, t+1] - x[:, t]| (zeros if T = 1); `norm` standardises each
    part over its channels."""
    parts = [jnp.mean(x, axis=(1, 2, 3))]
    if motion and x.shape[1] > 1:
        # Σ_t |x[t+1] - x[t]| as elementwise adds (B, H, W, C), then the spatial mean: the same
        # value as one mean over (T, H, W), which XLA:CPU runs as a slow reduction (README: 3.7x
        # slower at R(2+1)D-18 16x112²; at 8x32² the reduction is slightly faster)
        t = x.shape[1]
        total = functools.reduce(jnp.add, (jnp.abs(x[:, i + 1] - x[:, i]) for i in range(t - 1)))
        parts.append(jnp.mean(total, axis=(1, 2)) / (t - 1))
    elif motion:
        parts.append(jnp.zeros_like(parts[0]))
    if norm:
        parts = [(p - p.mean(-1, keepdims=True)) * jax.lax.rsqrt(p.var(-1, keepdims=True) + 1e-6) for p in parts]
    return jnp.concatenate(parts, -1)


def _largest_available(p: int, avail: list[bool]) -> int:
    p = min(p, len(avail) - 1)
    while not avail[p]:
        p -= 1
    return p


class RedConv(nn.Module):
    """Conv + affine with the VA-RED² soft-modulation gate. Same `kernel`/`scale`/`bias` params as
    a plain conv + affine, plus `gate` (Dense hidden -> ReLU -> Dense(levels_t+1) `temporal`, Dense(levels_c+1)
    `channel`) and `recon_<p>` (c_out/2**p, c_out - c_out/2**p) for p = 1..levels_c.

    `vared=False`: the plain conv + per-channel affine ("frozen BatchNorm"; no gate params). Otherwise `__call__(x, mode, ...)`
    returns (y (B, T', H', W', features), {"t": (B, levels_t+1), "c": (B, levels_c+1)} weights).
    """

    in_features: int
    features: int
    kernel: tuple[int, int, int]
    stride: tuple[int, int, int] = (1, 1, 1)
    padding: tuple[int, int, int] = (0, 0, 0)
    scale_init: float = 1.0
    vared: bool = True
    levels_t: int = 1
    levels_c: int = 1
    gate_hidden: int = 8
    gate_norm: bool = False  # standardise the pooled gate input over its channels
    gate_motion: bool = False  # also feed the gate the pooled |x[t+1] - x[t]| (a motion cue; not in the paper)
    edge_time: bool = False  # pad time by repeating the edge frames instead of zeros
    branch_callback: Callable | None = None  # test/diagnostic hook: called (layer, p_t, p_c) by each executed branch

    def setup(self):
        self.w = self.param("kernel", nn.initializers.variance_scaling(2.0, "fan_in", "normal"),
                            (*self.kernel, self.in_features, self.features))
        self.scale = self.param("scale", nn.initializers.constant(self.scale_init), (self.features,))
        self.bias = self.param("bias", nn.initializers.zeros, (self.features,))
        if self.vared:
            self.gate_hidden_dense = nn.Dense(self.gate_hidden, name="gate_hidden")
            self.gate_t = nn.Dense(self.levels_t + 1, name="gate_t")
            self.gate_c = nn.Dense(self.levels_c + 1, name="gate_c")
            self.recon = {p: self.param(f"recon_{p}", nn.initializers.lecun_normal(),
                                        (self.features // 2 ** p, self.features - self.features // 2 ** p))
                          for p in range(1, self.levels_c + 1) if self.features % 2 ** p == 0}

    # -- pieces -------------------------------------------------------------------------------
    def t_out(self, t_in: int) -> int:
        return conv_out(t_in, self.kernel[0], self.stride[0], self.padding[0])

    def availability(self, t_in: int) -> tuple[list[bool], list[bool]]:
        return available(self.t_out(t_in), self.features, self.levels_t if self.vared else 0,
                         self.levels_c if self.vared else 0)

    def branch(self, x: jax.Array, p_t: int, p_c: int) -> jax.Array:
        """Output of choice (p_t, p_c) (statically available): (B, T, H, W, Cin) -> (B, T', H', W', Cout)."""
        s, c = 2 ** p_t, self.features // 2 ** p_c
        stride = (self.stride[0] * s, *self.stride[1:])
        return self.finish(self.conv(x, self.w[..., :c], stride), p_t, p_c)

    def conv(self, x: jax.Array, w: jax.Array, stride) -> jax.Array:
        """The conv with this layer's padding (`edge_time`: time padded by repeating the edge frames)."""
        pad = [(p, p) for p in self.padding]
        if self.edge_time and self.padding[0]:
            x = jnp.pad(x, ((0, 0), pad[0], (0, 0), (0, 0), (0, 0)), mode="edge")
            pad[0] = (0, 0)
        return conv3d(x, w, stride, pad)

    def finish(self, y: jax.Array, p_t: int, p_c: int) -> jax.Array:
        """The computed part y (B, T'/2**p_t, H', W', C_out/2**p_c) -> the layer output: channel
        reconstruction, time interpolation, affine."""
        if p_c > 0:
            y = jnp.concatenate([y, jnp.einsum("bthwc,cd->bthwd", y, self.recon[p_c])], axis=-1)
        y = interpolate_time(y, 2 ** p_t)
        if self.branch_callback is not None:
            jax.debug.callback(functools.partial(self.branch_callback, "/".join(self.scope.path), p_t, p_c))
        return y * self.scale + self.bias

    def gate_logits(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x (B, T, H, W, Cin) -> masked temporal (B, levels_t+1) and channel (B, levels_c+1) logits."""
        at, ac = self.availability(x.shape[1])
        h = nn.relu(self.gate_hidden_dense(gate_input(x, self.gate_norm, self.gate_motion)))
        lt = jnp.where(jnp.asarray(at), self.gate_t(h), MASKED)
        lc = jnp.where(jnp.asarray(ac), self.gate_c(h), MASKED)
        return lt, lc

    def mixture(self, x: jax.Array, wt: jax.Array, wc: jax.Array) -> jax.Array:
        """Σ_{t,c} wt[:, t] wc[:, c] branch(t, c) over the available choices, from one full conv.

        Choice (p_t, p_c)'s conv output is the full output's every 2**p_t-th step and first
        C_out/2**p_c channels (the same kernel slice at stride x 2**p_t); reconstruction and
        interpolation are linear and commute (one acts on channels, the other on time), and the
        weights sum to 1 under the shared affine, so the sum is
        affine(Σ_t wt[t] interp_t(M[::2**t])) with M = Σ_c wc[c] recon_c(full[..., :C_out/2**c]):
        one conv, K_c reconstructions, K_t interpolations (unavailable choices have weight 0)."""
        at, ac = self.availability(x.shape[1])
        col = lambda w: w[:, None, None, None, None]  # noqa: E731 - (B,) -> broadcast over (B, T, H, W, C)
        full = self.conv(x, self.w, self.stride)
        m = col(wc[:, 0]) * full
        for pc in range(1, len(ac)):
            if ac[pc]:
                y = full[..., :self.features // 2 ** pc]
                m = m + col(wc[:, pc]) * jnp.concatenate([y, jnp.einsum("bthwc,cd->bthwd", y, self.recon[pc])], -1)
        out = col(wt[:, 0]) * m
        for pt in range(1, len(at)):
            if at[pt]:
                out = out + col(wt[:, pt]) * interpolate_time(m[:, ::2 ** pt], 2 ** pt)
        if self.branch_callback is not None:  # (layer, -1, -1): every choice computed
            jax.debug.callback(functools.partial(self.branch_callback, "/".join(self.scope.path), -1, -1))
        return out * self.scale + self.bias

    # -- forward ------------------------------------------------------------------------------
    def __call__(self, x: jax.Array, mode: str = "soft", tau: float = 1.0, deterministic: bool = True,
                 forced: tuple[int, int] | None = None):
        if not self.vared:
            return self.branch(x, 0, 0)
        at, ac = self.availability(x.shape[1])
        b = x.shape[0]
        if forced is not None:
            pt, pc = _largest_available(forced[0], at), _largest_available(forced[1], ac)
            y = self.branch(x, pt, pc)
            return y, {"t": jnp.broadcast_to(jax.nn.one_hot(pt, len(at)), (b, len(at))),
                       "c": jnp.broadcast_to(jax.nn.one_hot(pc, len(ac)), (b, len(ac)))}
        lt, lc = self.gate_logits(x)
        if mode == "soft":
            if deterministic:
                wt, wc = jax.nn.softmax(lt / tau), jax.nn.softmax(lc / tau)
            else:
                kt, kc = jax.random.split(self.make_rng("gumbel"))
                wt = jax.nn.softmax((lt + jax.random.gumbel(kt, lt.shape)) / tau)
                wc = jax.nn.softmax((lc + jax.random.gumbel(kc, lc.shape)) / tau)
            return self.mixture(x, wt, wc), {"t": wt, "c": wc}
        if mode != "hard":
            raise ValueError(f"mode={mode!r} must be 'soft' or 'hard'")
        it, ic = jnp.argmax(lt, -1), jnp.argmax(lc, -1)
        wt, wc = jax.nn.one_hot(it, len(at)), jax.nn.one_hot(ic, len(ac))
        if b > 1:  # honest batched path: every available branch runs, one-hot selects per example
            return self.mixture(x, wt, wc), {"t": wt, "c": wc}
        combos = [(pt, pc) for pt in range(len(at)) for pc in range(len(ac)) if at[pt] and ac[pc]]
        table = [0] * (len(at) * len(ac))
        for i, (pt, pc) in enumerate(combos):
            table[pt * len(ac) + pc] = i
        index = jnp.asarray(table)[it[0] * len(ac) + ic[0]]
        branches = [functools.partial(lambda v, pt, pc: self.branch(v, pt, pc), pt=pt, pc=pc) for pt, pc in combos]
        return jax.lax.switch(index, branches, x), {"t": wt, "c": wc}
