"""Reconstruction targets and loss (VideoMAE `norm_pix_loss`, exactly as the release)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from everest_jax.data.normalize import IMAGENET_MEAN, IMAGENET_STD


def patchify(video: jax.Array, tubelet_size: int, patch_size: int) -> jax.Array:
    """(B, T, H, W, C) -> (B, N, t*p*p, C), tokens in (t, h, w) order, pixels in (t, p, p) order."""
    b, t, h, w, c = video.shape
    tt, p = tubelet_size, patch_size
    x = video.reshape(b, t // tt, tt, h // p, p, w // p, p, c)
    x = x.transpose(0, 1, 3, 5, 2, 4, 6, 7)  # (B, T', H', W', t, p, p, C)
    return x.reshape(b, (t // tt) * (h // p) * (w // p), tt * p * p, c)


def tubelet_targets(video: jax.Array, tubelet_size: int, patch_size: int, normalize: bool = True,
                    imagenet_normalized: bool = True) -> jax.Array:
    """Per-token pixel targets, (B, T, H, W, C) -> (B, N, t*p*p*C) float32 in (t, p, p, c) order.

    Undoes the ImageNet normalisation of the input (when `imagenet_normalized`), then, with
    `normalize`, standardises each tubelet per channel over its t*p*p pixels with the unbiased
    variance: (x - mean) / (sqrt(var) + 1e-6).
    """
    x = jax.lax.stop_gradient(video).astype(jnp.float32)
    if imagenet_normalized:
        x = x * jnp.asarray(IMAGENET_STD) + jnp.asarray(IMAGENET_MEAN)
    x = patchify(x, tubelet_size, patch_size)  # (B, N, P, C)
    if normalize:
        mean = x.mean(axis=-2, keepdims=True)
        var = x.var(axis=-2, keepdims=True, ddof=1)
        x = (x - mean) / (jnp.sqrt(var) + 1e-6)
    return x.reshape(x.shape[0], x.shape[1], -1)


def reconstruction_loss(pred: jax.Array, video: jax.Array, target_idx: jax.Array, tubelet_size: int,
                        patch_size: int, normalize: bool = True) -> jax.Array:
    """Mean squared error over the target tokens only.

    Args:
      pred: (B, M, t*p*p*C) decoder predictions for `target_idx` (B, M).
      video: (B, T, H, W, C) the ImageNet-normalised input clip.
    """
    targets = tubelet_targets(video, tubelet_size, patch_size, normalize)
    targets = jnp.take_along_axis(targets, target_idx[:, :, None], axis=1)
    return jnp.mean(jnp.square(pred - targets))
