"""Batched, differentiable STMG forward for gate training: masked (multiplicative) compute.

Under `vmap`/batching a `lax.cond` becomes a `select` that runs both branches, so training does not
pretend to skip anything: every residual branch runs densely and the generator's decisions mix
the fresh branch output with the cached one,

    M_b   = gate * bin_mask_b                        (per sample, per bin; hard 0/1 forward)
    r     = M * branch(x_t) + (1 - M) * r_{t-1}      (M upsampled from bins to pixels)
    out   = ReLU(shortcut(x_t) + r)                  (identity, or the 1x1 projection)

which is exactly what the streaming path computes for the bins it recomputes (see
`tests/test_stmg_streaming.py`, which checks the streaming step against this function).

Training pairs: (frame t-1, frame t). The cache r_{t-1} and the reference inputs x_{t-1} come from
a dense pass of the frozen network on frame t-1 (`dense_trace`, under stop_gradient), i.e. we train
as if frame t-1 had been a key frame; longer error accumulation is bounded at inference by the
key-frame refresh and the per-bin reference inputs.

Gates: straight-through Gumbel-sigmoid (`gumbel_sigmoid_st`): forward hard = [sigmoid((l + g)/tau)
>= threshold] with logistic noise g = log u - log(1 - u) (training only), backward the gradient of
the soft sigmoid (the identity through the threshold). The thresholds are the streaming config's,
so eval-mode decisions (no noise, tau = 1) are the ones streaming inference makes.

Cost: the fraction of the gateable blocks' dense branch FLOPs that the masks select,
sum_i F_i * mean_b(M_i,b) / sum_i F_i per sample (halo overhead of partial compute and the
granularity of capacity levels are not modelled).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from stmg_jax.config import SegNetConfig, StreamConfig, check_input_size
from stmg_jax.distortion import from_bins
from stmg_jax.generator import MaskGenerator, generator_inputs
from stmg_jax.model import SegNet, block_specs, branch_flops, gateable_blocks, stage_ends


def gumbel_sigmoid_st(logits: jax.Array, key: jax.Array | None, tau: float = 1.0,
                      threshold: float = 0.5) -> jax.Array:
    """Straight-through Gumbel-sigmoid: hard 0/1 forward, d sigmoid((l + g)/tau) backward.

    key None: no noise (evaluation / inference decisions).
    """
    if key is not None:
        u = jax.random.uniform(key, logits.shape, minval=1e-6, maxval=1 - 1e-6)
        logits = logits + jnp.log(u) - jnp.log1p(-u)
    soft = jax.nn.sigmoid(logits / tau)
    hard = (soft >= threshold).astype(soft.dtype)
    return hard + (soft - jax.lax.stop_gradient(soft))  # exactly `hard` forward


def _bins_to_pixels(m: jax.Array, grid: tuple[int, int], hw: tuple[int, int]) -> jax.Array:
    """(B, n) -> (B, h, w, 1): each bin's value over its pixels."""
    gh, gw = grid
    h, w = hw
    b = m.shape[0]
    tiles = jnp.broadcast_to(m[:, :, None, None, None], (b, gh * gw, h // gh, w // gw, 1))
    return jax.vmap(lambda t: from_bins(t, grid))(tiles)


def dense_trace(net_config: SegNetConfig, net_vars, frames: jax.Array, gated: list[int] | None = None):
    """Dense pass that records the gated blocks' inputs and branch outputs.

    frames (B, H, W, 3) -> (logits (B, H, W, K), inputs {'block_<i>': (B, H_i, W_i, Cin)},
    branches {'block_<i>': (B, h_i, w_i, C)}); gated: block indices (default: identity blocks).
    """
    net = SegNet(net_config)
    gated = gateable_blocks(net_config) if gated is None else gated
    ends = stage_ends(net_config)
    x = net.apply(net_vars, frames, method=SegNet.stem)
    inputs, branches, feats = {}, {}, []
    for i in range(len(block_specs(net_config))):
        if i in gated:
            r = net.apply(net_vars, i, x, method=SegNet.branch)
            inputs[f"block_{i}"], branches[f"block_{i}"] = x, r
            x = jax.nn.relu(net.apply(net_vars, i, x, method=SegNet.shortcut) + r)
        else:
            x = net.apply(net_vars, i, x, method=SegNet.block)
        if i in ends:
            feats.append(x)
    return net.apply(net_vars, feats, frames.shape[1:3], method=SegNet.decode), inputs, branches


def masked_forward(net_config: SegNetConfig, stream_config: StreamConfig, params, prev: jax.Array,
                   cur: jax.Array, key: jax.Array | None = None, tau: float = 1.0, masks=None,
                   generator: MaskGenerator = MaskGenerator()):
    """STMG on frame `cur` given frame `prev`, batched, with masked compute.

    params: {'net': SegNet variables, 'gen': init_generators(...)}; prev, cur (B, H, W, 3).
    key: PRNG key for the Gumbel noise (None: deterministic decisions). masks: optional
    {'block_<i>': (B, n)} effective recompute masks M that replace the generator's decisions.
    Returns (logits (B, H, W, K), aux) with aux = {masks: {name: (B, n)} effective M,
    gate_prob / bin_prob: {name: (B,) / (B, n)}, cost: (B,) fraction of gated branch FLOPs}.
    """
    check_input_size(cur.shape[1], cur.shape[2], stream_config)
    net = SegNet(net_config)
    nv = params["net"]
    gated = gateable_blocks(net_config, stream_config.gate_downsampling)
    _, prev_inputs, prev_branches = dense_trace(net_config, nv, prev, gated)
    prev_inputs = jax.lax.stop_gradient(prev_inputs)
    prev_branches = jax.lax.stop_gradient(prev_branches)
    ends, specs = stage_ends(net_config), block_specs(net_config)
    hh, ww = cur.shape[1:3]
    flops = {f"block_{i}": branch_flops(net_config, i, hh, ww) for i in gated}
    x = net.apply(nv, cur, method=SegNet.stem)
    feats, out_masks, gate_probs, bin_probs, cost = [], {}, {}, {}, 0.0
    total = sum(flops[f"block_{i}"] for i in gated)
    for i, (s, *_rest) in enumerate(specs):
        if i in gated:
            name, grid = f"block_{i}", stream_config.bin_grid[s]
            d, pooled, change = jax.vmap(lambda a, b: generator_inputs(a, b, grid))(x, prev_inputs[name])
            gate_logit, bin_logits = generator.apply(params["gen"][name], d, pooled, change)
            gate_probs[name], bin_probs[name] = jax.nn.sigmoid(gate_logit), jax.nn.sigmoid(bin_logits)
            if masks is not None:
                m = jnp.asarray(masks[name], x.dtype)
            else:
                if key is not None:
                    key, k1, k2 = jax.random.split(key, 3)
                else:
                    k1 = k2 = None
                g = gumbel_sigmoid_st(gate_logit, k1, tau, stream_config.gate_threshold)
                b = gumbel_sigmoid_st(bin_logits, k2, tau, stream_config.bin_threshold)
                m = g[:, None] * b
            out_masks[name] = m
            cost = cost + flops[name] * jnp.mean(m, axis=1) / total
            fresh = net.apply(nv, i, x, method=SegNet.branch)          # (B, h, w, C)
            mp = _bins_to_pixels(m, grid, fresh.shape[1:3])
            r = mp * fresh + (1 - mp) * prev_branches[name]
            x = jax.nn.relu(net.apply(nv, i, x, method=SegNet.shortcut) + r)
        else:
            x = net.apply(nv, i, x, method=SegNet.block)
        if i in ends:
            feats.append(x)
    logits = net.apply(nv, feats, (hh, ww), method=SegNet.decode)
    return logits, dict(masks=out_masks, gate_prob=gate_probs, bin_prob=bin_probs, cost=cost)
