"""Optimizer of the official recipes: AdamW, warmup + cosine per step, lr scaled by batch / 256,
weight decay off biases/norms/mask token, layer-wise lr decay, clipping and accumulation."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from everest_jax.fields import Float, Int

# The optimizer section of every method's run config (lr = base_lr * batch / 256).
FIELDS = {
    "base_lr": Float(0, lo_open=True), "warmup_lr": Float(0), "min_lr": Float(0), "b1": Float(0, 1, hi_open=True),
    "b2": Float(0, 1, hi_open=True), "weight_decay": Float(0), "layer_decay": Float(0, 1, lo_open=True),
    "grad_clip_norm": Float(0), "grad_accum_steps": Int(1),  # grad_clip_norm 0: no clipping
}


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """A settled optimizer section (fields as in `FIELDS`; checked there before this is built)."""

    base_lr: float = 1e-3
    warmup_lr: float = 1e-6
    min_lr: float = 1e-5
    b1: float = 0.9
    b2: float = 0.95
    weight_decay: float = 0.05
    layer_decay: float = 1.0
    grad_clip_norm: float = 0.0
    grad_accum_steps: int = 1

    @classmethod
    def from_section(cls, section) -> "OptimizerConfig":
        return cls(**(section.to_dict() if hasattr(section, "to_dict") else dict(section)))


def learning_rate_schedule(opt: OptimizerConfig, global_batch: int, total_steps: int,
                           warmup_steps: int) -> optax.Schedule:
    """Linear warmup from warmup_lr to base_lr, cosine to min_lr; all three scaled by batch/256."""
    scale = global_batch / 256
    return optax.warmup_cosine_decay_schedule(
        init_value=opt.warmup_lr * scale, peak_value=opt.base_lr * scale, warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1), end_value=opt.min_lr * scale)


def weight_decay_mask(params: Any) -> Any:
    """True for weight matrices; biases, norms and the mask token are not decayed.

    (Position tables are fixed sin-cos constants here, not parameters.) A stacked (scanned) bias
    is 2-D, so the test is on the name, not only the rank.
    """
    def decay(path, x):
        name = jax.tree_util.keystr(path)
        return x.ndim >= 2 and not re.search(r"mask_token|'bias'|'scale'", name)
    return jax.tree_util.tree_map_with_path(decay, params)


def layer_decay_scales(params: Any, depth: int, decay: float) -> Any:
    """Layer-wise lr decay (BEiT/VideoMAE fine-tuning): scale = decay**(depth + 1 - layer_id).

    layer_id is 0 for the patch embedding, i + 1 for encoder block i and depth + 1 (scale 1) for
    everything after the blocks (norms, head). Scanned blocks get a (depth, 1, ...) scale array.
    """
    def scale(path, x):
        name = jax.tree_util.keystr(path)
        if "patch_embed" in name:
            return np.float32(decay ** (depth + 1))
        m = re.search(r"'block_(\d+)'", name)
        if m and "encoder" in name:
            return np.float32(decay ** (depth - int(m.group(1))))
        if "'blocks'" in name and "encoder" in name:
            ids = np.arange(depth, dtype=np.float32)
            return (decay ** (depth - ids)).reshape((depth,) + (1,) * (x.ndim - 1)).astype(np.float32)
        return np.float32(1.0)
    return jax.tree_util.tree_map_with_path(scale, params)


def scale_by_tree(scales: Any) -> optax.GradientTransformation:
    """Multiply each update by its entry of `scales` (a tree of arrays broadcastable to it)."""
    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype), updates, scales), state
    return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def make_optimizer(opt: OptimizerConfig, params: Any, schedule: optax.Schedule,
                   encoder_depth: int) -> optax.GradientTransformation:
    parts = []
    if opt.grad_clip_norm:
        parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
    parts.append(optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=1e-8, weight_decay=opt.weight_decay,
                             mask=weight_decay_mask(params)))
    if opt.layer_decay and opt.layer_decay < 1.0:
        parts.append(scale_by_tree(layer_decay_scales(params, encoder_depth, opt.layer_decay)))
    tx = optax.chain(*parts)
    if opt.grad_accum_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=opt.grad_accum_steps)
    return tx
