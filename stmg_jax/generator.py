"""The Spatial-Temporal Mask Generator (STMG): distortion + features -> block gate and bin mask.

One small generator per gateable block (separate parameters, `init_generators`). Inputs for a
block whose input is x (H, W, C) and whose cache was computed from ref (H, W, C), with a (gh, gw)
bin grid of n = gh * gw bins (`generator_inputs`):

  d        (n,)    per-bin distortion (`distortion.bin_distortion`)
  pooled   (n, C)  mean of x per bin
  change   (n, C)  mean of |x - ref| per bin, divided by mean |x| (per-channel distortion)

Outputs: gate logit () — run the block or reuse its cached branch output — and bin logits (n,) —
which bins a running block recomputes. Design:

  bin_logit  = a_bin  * (d_b - t_bin)          + MLP_bin([d_b, pooled_b, change_b])
  gate_logit = a_gate * (max_b d_b - t_gate)   + MLP_gate([mean d, max d, mean_b pooled_b, mean_b change_b])

with learned slopes a (init `slope_init`) and thresholds t (init `threshold_init`) and MLPs of one
hidden layer (`hidden` units, ReLU) whose output layer is zero-initialised. So an untrained
generator is exactly "recompute where the normalised distortion exceeds `threshold_init`",
a sensible streaming policy before gate training, and training only has to learn corrections.
Leading batch axes are allowed on every input (the training path uses (B, n) / (B, n, C)).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from stmg_jax.config import SegNetConfig, StreamConfig
from stmg_jax.distortion import bin_change, bin_means
from stmg_jax.model import block_specs, gateable_blocks


def generator_inputs(x: jax.Array, ref: jax.Array, grid: tuple[int, int]) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(d (n,), pooled (n, C), change (n, C)) for one frame; x, ref (H, W, C).

    x is a block input, post-ReLU (>= 0) in this network (the stem and every block end in a ReLU),
    so mean |x| is the mean of the bin means: the normaliser costs no second pass over the map."""
    pooled = bin_means(x, grid)
    change = bin_change(x, ref, grid, mean_abs_x=jnp.mean(pooled))
    return jnp.mean(change, axis=-1), pooled, change  # d = `distortion.bin_distortion`


class MaskGenerator(nn.Module):
    """Per-block generator; __call__(d (..., n), pooled (..., n, C), change (..., n, C)) ->
    (gate_logit (...,), bin_logits (..., n))."""

    hidden: int = 16
    slope_init: float = 100.0
    threshold_init: float = 0.05

    @nn.compact
    def __call__(self, d, pooled, change):
        a_bin = self.param("bin_slope", nn.initializers.constant(self.slope_init), ())
        t_bin = self.param("bin_threshold", nn.initializers.constant(self.threshold_init), ())
        a_gate = self.param("gate_slope", nn.initializers.constant(self.slope_init), ())
        t_gate = self.param("gate_threshold", nn.initializers.constant(self.threshold_init), ())
        z = jnp.concatenate([d[..., None], pooled, change], axis=-1)
        h = nn.relu(nn.Dense(self.hidden, name="bin_hidden")(z))
        bin_logits = a_bin * (d - t_bin) + nn.Dense(1, kernel_init=nn.initializers.zeros,
                                                    name="bin_out")(h)[..., 0]
        dmax = jnp.max(d, axis=-1)
        zmean = jnp.mean(z, axis=-2)  # [mean d, mean pooled, mean change] in one reduction
        zg = jnp.concatenate([zmean[..., :1], dmax[..., None], zmean[..., 1:]], axis=-1)
        hg = nn.relu(nn.Dense(self.hidden, name="gate_hidden")(zg))
        gate_logit = a_gate * (dmax - t_gate) + nn.Dense(1, kernel_init=nn.initializers.zeros,
                                                         name="gate_out")(hg)[..., 0]
        return gate_logit, bin_logits


def init_generators(key: jax.Array, net: SegNetConfig, stream: StreamConfig,
                    generator: MaskGenerator = MaskGenerator()) -> dict[str, dict]:
    """{'block_<i>': variables} for every gateable block i (feature widths from the config).

    One jit for all blocks (op-by-op initialisation compiles a PRNG kernel per parameter shape).
    """
    def init(key):
        out = {}
        for i in gateable_blocks(net, stream.gate_downsampling):
            s, c, _, _ = block_specs(net)[i]  # the generator sees the block's input (c = its width)
            n = stream.bin_grid[s][0] * stream.bin_grid[s][1]
            key, sub = jax.random.split(key)
            out[f"block_{i}"] = generator.init(sub, jnp.zeros((n,)), jnp.zeros((n, c)), jnp.zeros((n, c)))
        return out
    return jax.jit(init)(key)
