"""Token and frame selection: EVEREST's redundancy-robust selection and the baselines.

All functions are pure, jit-able and shape-static: counts are Python ints computed from ratios with
the official release's own expressions (`release_count`), token sets are int32 index arrays (never
boolean masks), and every returned index set is sorted ascending in (t, h, w) token order.

Shapes: B clips, T' time steps, L = H'*W' spatial positions, N = T'*L tokens, D channels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from everest_jax.config import DISTANCES, ModelConfig, release_count
from everest_jax.targets import patchify


def motion_scores(embeddings: jax.Array, distance: str = "l2") -> jax.Array:
    """Redundancy scores of every token from its tubelet embedding.

    Args:
      embeddings: (B, T', L, D) patch embeddings *before* position embeddings, L row-major (h, w).
      distance: 'l2' (EVEREST), 'l1', or 'cosine' (1 - cosine similarity).
    Returns:
      (B, T'*L) float32: the distance of each token to the co-located token one time step
      earlier; time step 0 copies step 1's score. No gradient flows through the scores.
    """
    if embeddings.ndim != 4 or embeddings.shape[1] < 2:
        raise ValueError(f"motion_scores needs (B, T', L, D) with T' >= 2, got {embeddings.shape}")
    e = lax.stop_gradient(embeddings).astype(jnp.float32)
    now, before = e[:, 1:], e[:, :-1]
    if distance == "l2":
        d = jnp.sqrt(jnp.sum(jnp.square(now - before), axis=-1))  # (B, T'-1, L)
    elif distance == "l1":
        d = jnp.sum(jnp.abs(now - before), axis=-1)
    elif distance == "cosine":
        norms = jnp.linalg.norm(now, axis=-1) * jnp.linalg.norm(before, axis=-1)
        d = 1.0 - jnp.sum(now * before, axis=-1) / jnp.maximum(norms, 1e-12)
    else:
        raise ValueError(f"distance={distance!r} must be one of {DISTANCES[:3]}")
    d = jnp.concatenate([d[:, :1], d], axis=1)  # (B, T', L)
    return d.reshape(d.shape[0], -1)


def token_scores(video: jax.Array, embeddings: jax.Array, config: ModelConfig) -> jax.Array:
    """(B, N) selection scores as `config` asks: the larger, the earlier a token is kept.

    `selection_distance` 'l2' / 'l1' / 'cosine' compares patch embeddings (B, T', L, D);
    'pixel' compares the raw tubelet pixels of `video` (B, T, H, W, C) by mean absolute
    difference (the criterion of run-length tokenization, RLT). `selection_order='ascending'`
    negates the scores, so the least-changing tokens are kept (an ablation).
    """
    if config.selection_distance == "pixel":
        pixels = patchify(lax.stop_gradient(video).astype(jnp.float32), config.tubelet_size, config.patch_size)
        b, n = pixels.shape[:2]
        steps = config.grid[0]
        scores = motion_scores(pixels.reshape(b, steps, n // steps, -1), "l1") / pixels[0, 0].size
    else:
        scores = motion_scores(embeddings, config.selection_distance)
    return -scores if config.selection_order == "ascending" else scores


def _sorted(idx: jax.Array) -> jax.Array:
    return jnp.sort(idx, axis=-1).astype(jnp.int32)


def _random_order(rng: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """(B, n) independent random permutations of range(n), one per row."""
    return jnp.argsort(jax.random.uniform(rng, shape), axis=-1)


def pretrain_token_split(rng: jax.Array, scores: jax.Array, keep_ratio: float = 0.3,
                         visible_ratio: float = 0.1) -> tuple[jax.Array, jax.Array]:
    """EVEREST pre-training masks.

    Keeps the top K = release_count(keep_ratio, N) tokens by score, shuffles them per clip and
    splits the shuffled set into V = release_count(visible_ratio, N) encoder-visible tokens and
    K-V reconstruction targets. The other N-K tokens are neither encoded nor reconstructed.

    Args:
      rng: PRNG key for the per-clip shuffle.
      scores: (B, N) token scores, e.g. from `motion_scores`.
    Returns:
      visible_idx (B, V) and target_idx (B, K-V), int32, each sorted ascending.
    """
    b, n = scores.shape
    keep, visible = release_count(keep_ratio, n), release_count(visible_ratio, n)
    if not 0 < visible < keep <= n:
        raise ValueError(f"keep_ratio={keep_ratio}, visible_ratio={visible_ratio} give K={keep}, V={visible} "
                         f"of N={n}; need 0 < V < K <= N")
    _, kept = lax.top_k(scores, keep)  # (B, K)
    shuffled = jnp.take_along_axis(kept, _random_order(rng, (b, keep)), axis=1)
    return _sorted(shuffled[:, :visible]), _sorted(shuffled[:, visible:])


def finetune_token_keep(scores: jax.Array, keep_ratio: float = 0.6) -> jax.Array:
    """Deterministic fine-tuning / inference selection: the top release_count(keep_ratio, N) tokens.

    Args:
      scores: (B, N).
    Returns:
      keep_idx (B, K) int32 sorted ascending.
    """
    n = scores.shape[1]
    keep = release_count(keep_ratio, n)
    if not 0 < keep <= n:
        raise ValueError(f"keep_ratio={keep_ratio} keeps {keep} of N={n} tokens")
    return _sorted(lax.top_k(scores, keep)[1])


def tube_mask(rng: jax.Array, batch: int, grid: tuple[int, int, int],
              mask_ratio: float = 0.9) -> tuple[jax.Array, jax.Array]:
    """VideoMAE tube masking: one random spatial mask per clip, repeated over all time steps.

    Masks int(mask_ratio*L) positions per time step.
    Returns:
      visible_idx (B, T'*(L-m)) and masked_idx (B, T'*m), int32, sorted ascending.
    """
    steps, h, w = grid
    positions = h * w
    masked = int(mask_ratio * positions)
    order = _random_order(rng, (batch, positions))
    offsets = (jnp.arange(steps) * positions)[None, :, None]  # (1, T', 1)

    def tube(pos):  # (B, m) spatial positions -> (B, T'*m) token indices, ascending
        return (jnp.sort(pos, axis=-1)[:, None, :] + offsets).reshape(batch, -1).astype(jnp.int32)

    return tube(order[:, masked:]), tube(order[:, :masked])


def random_mask(rng: jax.Array, batch: int, num_tokens: int,
                mask_ratio: float = 0.9) -> tuple[jax.Array, jax.Array]:
    """Random space-time masking (ST-MAE): int(mask_ratio*N) tokens masked per clip.

    Returns:
      visible_idx (B, N-m) and masked_idx (B, m), int32, sorted ascending.
    """
    masked = int(mask_ratio * num_tokens)
    order = _random_order(rng, (batch, num_tokens))
    return _sorted(order[:, masked:]), _sorted(order[:, :masked])


def pretrain_masks(rng: jax.Array, scores: jax.Array, config: ModelConfig) -> tuple[jax.Array, jax.Array]:
    """(visible_idx, target_idx) for the masking strategy named by `config.masking`."""
    batch = scores.shape[0]
    if config.masking == "everest":
        return pretrain_token_split(rng, scores, config.pretrain_keep_ratio, config.visible_ratio)
    if config.masking == "tube":
        return tube_mask(rng, batch, config.grid, config.mask_ratio)
    return random_mask(rng, batch, config.num_tokens, config.mask_ratio)


# ---- information-intensive frame selection (paper section; not in the official code) --------


def frame_pair_scores(scores: jax.Array, num_steps: int, keep_ratio: float = 0.3) -> jax.Array:
    """How many of each time step's tokens survive redundancy-robust selection.

    Args:
      scores: (B, T'*L) token scores of a clip of candidate frames (one time step = one frame
        pair for tubelet size 2).
      num_steps: T'.
    Returns:
      (B, T') float32 counts of the top release_count(keep_ratio, N) tokens per time step.
    """
    b, n = scores.shape
    keep = release_count(keep_ratio, n)
    _, kept = lax.top_k(scores, keep)
    step = kept // (n // num_steps)  # (B, K)
    return jax.nn.one_hot(step, num_steps, dtype=jnp.float32).sum(axis=1)


def sample_frame_pairs(rng: jax.Array, pair_scores: jax.Array, num_pairs: int) -> jax.Array:
    """Draw `num_pairs` pairs per clip without replacement, with probability proportional to score.

    Gumbel-top-k: the top k of log(score) + Gumbel noise is a draw of k items without replacement
    from the Plackett-Luce distribution with weights `score`. Pairs with score 0 are only taken
    when fewer than `num_pairs` pairs score above 0.

    Args:
      pair_scores: (B, P) non-negative scores.
    Returns:
      (B, num_pairs) int32 pair indices in temporal (ascending) order.
    """
    if num_pairs > pair_scores.shape[1]:
        raise ValueError(f"cannot draw {num_pairs} pairs without replacement from {pair_scores.shape[1]}")
    logits = jnp.where(pair_scores > 0, jnp.log(jnp.maximum(pair_scores, 1e-30)), -1e4)
    gumbel = jax.random.gumbel(rng, pair_scores.shape, dtype=jnp.float32)
    return _sorted(lax.top_k(logits + gumbel, num_pairs)[1])


def gather_frame_pairs(video: jax.Array, pair_idx: jax.Array, tubelet_size: int = 2) -> jax.Array:
    """Frames of the chosen pairs, in order.

    Args:
      video: (B, T, H, W, C) candidate frames, T = P * tubelet_size.
      pair_idx: (B, k) sorted pair indices.
    Returns:
      (B, k * tubelet_size, H, W, C).
    """
    frames = (pair_idx[:, :, None] * tubelet_size + jnp.arange(tubelet_size)).reshape(pair_idx.shape[0], -1)
    return jnp.take_along_axis(video, frames[:, :, None, None, None], axis=1)
