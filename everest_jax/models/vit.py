"""The one ViT block of the project, its stack, and the fixed sinusoidal position table.

Used by the EVEREST/VideoMAE encoder and decoder alike. Parameters carry logical axis names
(`embed`, `heads`, `kv`, `mlp`, `norm`, `layers`) and activations logical constraints
(`activation_batch`, `activation_length`, `activation_embed`); a mesh and rules from the config
decide how they are sharded. Outside a rules context both are no-ops.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from everest_jax.models.attention import dot_product_attention

ACTIVATION = ("activation_batch", "activation_length", "activation_embed")


def logical(init, axes):
    return nn.with_logical_partitioning(init, axes)


xavier = nn.initializers.xavier_uniform


def layer_norm(eps: float, dtype: Any, name: str | None = None) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, dtype=dtype, name=name,
                        scale_init=logical(nn.initializers.ones, ("norm",)),
                        bias_init=logical(nn.initializers.zeros, ("norm",)))


@functools.lru_cache(maxsize=None)
def sincos_table(num_positions: int, dim: int) -> np.ndarray:
    """(num_positions, dim) float32: pos / 10000^(2*floor(j/2)/dim), sin on even j, cos on odd j."""
    pos = np.arange(num_positions, dtype=np.float64)[:, None]
    j = np.arange(dim)
    angle = pos / np.power(10000.0, 2 * (j // 2) / dim)
    table = np.where(j % 2 == 0, np.sin(angle), np.cos(angle))
    return table.astype(np.float32)


class HeadsDense(nn.Module):
    """Linear map between (..., D) and per-head (..., H, hd) features, either way round.

    kernel (D, H, hd) with logical axes ('embed', 'heads', 'kv') for `split`, (H, hd, D) with
    ('heads', 'kv', 'embed') for merging back. Written out (instead of nn.DenseGeneral) so the
    initializer sees the real 3-D shape, which logical sharding constraints need.
    """

    num_heads: int
    head_dim: int
    split: bool = True
    use_bias: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        if self.split:
            shape, axes = (x.shape[-1], self.num_heads, self.head_dim), ("embed", "heads", "kv")
            init, eq = xavier(in_axis=0, out_axis=(1, 2)), "...d,dhk->...hk"
            bias_shape, bias_axes = (self.num_heads, self.head_dim), ("heads", "kv")
        else:
            d = self.num_heads * self.head_dim
            shape, axes = (self.num_heads, self.head_dim, d), ("heads", "kv", "embed")
            init, eq = xavier(in_axis=(0, 1), out_axis=2), "...hk,hkd->...d"
            bias_shape, bias_axes = (d,), ("embed",)
        kernel = self.param("kernel", logical(init, axes), shape)
        bias = self.param("bias", logical(nn.initializers.zeros, bias_axes), bias_shape) if self.use_bias else None
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        y = jnp.einsum(eq, x, kernel)
        return y + bias if bias is not None else y


class Attention(nn.Module):
    """Multi-head self-attention with biases on q and v only (VideoMAE). (B, N, D) -> (B, N, D)."""

    num_heads: int
    dtype: Any = jnp.float32
    implementation: str | None = None  # attention.dot_product_attention's: None (auto), "blocked", "xla", "cudnn"

    @nn.compact
    def __call__(self, x):
        h, hd = self.num_heads, x.shape[-1] // self.num_heads
        q = HeadsDense(h, hd, True, True, self.dtype, name="query")(x)  # (B, N, H, hd)
        k = HeadsDense(h, hd, True, False, self.dtype, name="key")(x)
        v = HeadsDense(h, hd, True, True, self.dtype, name="value")(x)
        out = dot_product_attention(q, k, v, self.implementation)
        return HeadsDense(h, hd, False, True, self.dtype, name="out")(out)


class Mlp(nn.Module):
    """Linear -> exact GELU -> Linear. (B, N, D) -> (B, N, D)."""

    hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        d = x.shape[-1]
        y = nn.Dense(self.hidden, dtype=self.dtype, name="fc1",
                     kernel_init=logical(xavier(), ("embed", "mlp")),
                     bias_init=logical(nn.initializers.zeros, ("mlp",)))(x)
        y = nn.with_logical_constraint(nn.gelu(y, approximate=False),
                                       ("activation_batch", "activation_length", "activation_mlp"))
        return nn.Dense(d, dtype=self.dtype, name="fc2",
                        kernel_init=logical(xavier(), ("mlp", "embed")),
                        bias_init=logical(nn.initializers.zeros, ("embed",)))(y)


def drop_path(rng: jax.Array, x: jax.Array, rate) -> jax.Array:
    """Stochastic depth: zero whole examples of a residual branch with probability `rate`."""
    keep = 1.0 - rate
    mask = jax.random.bernoulli(rng, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, 0).astype(x.dtype)


class Block(nn.Module):
    """Pre-norm transformer block. (B, N, D) -> (B, N, D).

    `drop_rate` is a call argument (possibly traced) so a scanned stack can give each layer its
    own stochastic-depth rate.
    """

    num_heads: int
    mlp_dim: int
    eps: float = 1e-6
    deterministic: bool = True
    dtype: Any = jnp.float32
    attention: str | None = None  # Attention.implementation

    @nn.compact
    def __call__(self, x, drop_rate=0.0):
        x = nn.with_logical_constraint(x, ACTIVATION)

        def residual(y):
            if self.deterministic or (isinstance(drop_rate, float) and drop_rate == 0.0):
                return y
            return drop_path(self.make_rng("dropout"), y, drop_rate)

        x = x + residual(Attention(self.num_heads, self.dtype, self.attention, name="attn")(
            layer_norm(self.eps, self.dtype, "norm1")(x)))
        x = x + residual(Mlp(self.mlp_dim, self.dtype, name="mlp")(
            layer_norm(self.eps, self.dtype, "norm2")(x)))
        return nn.with_logical_constraint(x, ACTIVATION)


class _ScannedBlock(Block):
    """Block with the (carry, x) -> (carry, y) signature nn.scan needs."""

    def __call__(self, x, drop_rate):  # pytype: disable=signature-mismatch
        return super().__call__(x, drop_rate), None


class Transformer(nn.Module):
    """`depth` blocks with linearly increasing drop-path rates. (B, N, D) -> (B, N, D).

    Parameters are `block_{i}` per layer, or one `blocks` subtree stacked on a leading `layers`
    axis when `scan` is set (`stack_blocks` converts between the layouts). `remat` recomputes
    each block's activations in the backward pass.
    """

    depth: int
    num_heads: int
    mlp_dim: int
    eps: float = 1e-6
    drop_path: float = 0.0
    remat: bool = False
    scan: bool = False
    dtype: Any = jnp.float32
    attention: str | None = None  # Attention.implementation

    @nn.compact
    def __call__(self, x, deterministic: bool = True):
        rates = np.linspace(0.0, self.drop_path, self.depth) if self.depth > 1 else np.zeros(1)
        kwargs = dict(num_heads=self.num_heads, mlp_dim=self.mlp_dim, eps=self.eps,
                      deterministic=deterministic, dtype=self.dtype, attention=self.attention)
        if self.scan:
            block = nn.remat(_ScannedBlock) if self.remat else _ScannedBlock
            stack = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                            in_axes=0, length=self.depth, metadata_params={nn.PARTITION_NAME: "layers"})
            x, _ = stack(**kwargs, name="blocks")(x, jnp.asarray(rates, jnp.float32))
            return x
        block = nn.remat(Block) if self.remat else Block
        for i in range(self.depth):
            x = block(**kwargs, name=f"block_{i}")(x, float(rates[i]))
        return x


def stack_blocks(tree: dict) -> dict:
    """Per-layer params {'block_0': ..., 'block_{n-1}': ...} -> scanned {'blocks': stacked}.

    Applies to every Transformer subtree found in `tree` (recursively).
    """
    if not isinstance(tree, dict):
        return tree
    if "block_0" in tree:
        depth = sum(1 for k in tree if k.startswith("block_"))
        layers = [tree[f"block_{i}"] for i in range(depth)]
        rest = {k: v for k, v in tree.items() if not k.startswith("block_")}
        return {**rest, "blocks": jax.tree.map(lambda *xs: np.stack(xs), *layers)}
    return {k: stack_blocks(v) for k, v in tree.items()}
