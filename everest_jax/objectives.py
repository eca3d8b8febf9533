"""Loss functions of the pre-training and fine-tuning jobs, and mixup/cutmix for the latter."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

from everest_jax import selection
from everest_jax.config import ModelConfig
from everest_jax.models import Classifier, PretrainingModel, TubeletEmbed
from everest_jax.targets import reconstruction_loss


def select_frames(params: Any, config: ModelConfig, candidates: jax.Array, rng: jax.Array) -> tuple[jax.Array, jax.Array]:
    """EVEREST's information-intensive frame selection, on device, with the model's own embedding.

    The candidates' tubelets are embedded with the encoder's `patch_embed`; each tubelet step
    (a frame pair for tubelet size 2) scores the number of its tokens that survive
    redundancy-robust selection (`selection.frame_pair_scores` at `pretrain_keep_ratio`), and
    tau = config.grid[0] steps are drawn without replacement in proportion to the score
    (Gumbel-top-k), kept in temporal order. No gradient flows through the choice.

    Args:
      params: the pre-training model's parameters (only `encoder/patch_embed` is used).
      candidates: (B, Tc, H, W, C) with Tc = 2*alpha*tau candidate frames (a multiple of the tubelet).
    Returns:
      video (B, T, H, W, C) of the chosen steps' frames, T = config.num_frames, and their step
      indices (B, tau) int32, ascending.
    """
    cand_config = dataclasses.replace(config, num_frames=candidates.shape[1])
    embeddings = TubeletEmbed(cand_config).apply({"params": params["encoder"]["patch_embed"]}, candidates)
    scores = selection.token_scores(candidates, embeddings, cand_config)  # (B, Tc' * L)
    pair_scores = selection.frame_pair_scores(scores, cand_config.grid[0], config.pretrain_keep_ratio)
    pair_idx = selection.sample_frame_pairs(rng, pair_scores, config.grid[0])
    video = selection.gather_frame_pairs(jax.lax.stop_gradient(candidates), pair_idx, config.tubelet_size)
    return video, pair_idx


def pretrain_loss(params: Any, model: PretrainingModel, video: jax.Array, rng: jax.Array,
                  train: bool = True, normalize_targets: bool = True,
                  frame_selection: bool = False) -> tuple[jax.Array, dict]:
    """Masked-reconstruction loss of one batch. Returns (loss, aux).

    video: (B, T, H, W, C), or with `frame_selection` (B, Tc, H, W, C) candidate frames from which
    `select_frames` chooses the clip first (aux then has 'frame_pairs' (B, tau)).
    """
    c = model.config
    pairs = None
    if frame_selection:
        frame_rng, rng = jax.random.split(rng)
        video, pairs = select_frames(params, c, video, frame_rng)
    mask_rng, dropout_rng = jax.random.split(rng)
    pred, aux = model.apply({"params": params}, video, train=train,
                            rngs={"masking": mask_rng, "dropout": dropout_rng})
    loss = reconstruction_loss(pred, video, aux["target_idx"], c.tubelet_size, c.patch_size, normalize_targets)
    if pairs is not None:
        aux = dict(aux, frame_pairs=pairs)
    return loss, aux


def classification_loss(params: Any, model: Classifier, video: jax.Array, labels: jax.Array,
                        rng: jax.Array, train: bool = True, label_smoothing: float = 0.0) -> tuple[jax.Array, dict]:
    """Softmax cross-entropy of one batch.

    labels: (B,) int class ids, or (B, classes) float soft targets (e.g. from `mixup_cutmix`).
    Label smoothing is applied on top of either.
    """
    logits, aux = model.apply({"params": params}, video, train=train, rngs={"dropout": rng})
    num_classes = model.config.num_classes
    targets = jax.nn.one_hot(labels, num_classes) if labels.ndim == 1 else labels
    loss = optax.softmax_cross_entropy(logits, optax.smooth_labels(targets, label_smoothing)).mean()
    accuracy = jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(targets, -1))
    return loss, dict(aux, logits=logits, accuracy=accuracy)


def mixup_cutmix(rng: jax.Array, video: jax.Array, labels: jax.Array, num_classes: int,
                 mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, switch_prob: float = 0.5):
    """Batch-level mixup or cutmix (timm style, the same box on every frame of a clip).

    Each batch is mixed with its reverse. With both alphas > 0, cutmix is chosen with
    probability `switch_prob`. Returns (video, soft targets (B, classes)).
    """
    targets = jax.nn.one_hot(labels, num_classes)
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        return video, targets
    r_choice, r_mix, r_cut, r_box = jax.random.split(rng, 4)
    b, t, h, w, _ = video.shape
    use_cutmix = (jax.random.uniform(r_choice) < switch_prob) if (mixup_alpha > 0 and cutmix_alpha > 0) \
        else jnp.asarray(cutmix_alpha > 0)
    lam_mix = jax.random.beta(r_mix, mixup_alpha, mixup_alpha) if mixup_alpha > 0 else jnp.float32(1.0)
    lam_cut = jax.random.beta(r_cut, cutmix_alpha, cutmix_alpha) if cutmix_alpha > 0 else jnp.float32(1.0)
    # Cutmix box of area (1 - lam) clipped to the frame; lam is then corrected to the real area.
    cut = jnp.sqrt(1.0 - lam_cut)
    cy, cx = jax.random.uniform(r_box, (2,)) * jnp.array([h, w])
    y0, y1 = jnp.clip(cy - cut * h / 2, 0, h), jnp.clip(cy + cut * h / 2, 0, h)
    x0, x1 = jnp.clip(cx - cut * w / 2, 0, w), jnp.clip(cx + cut * w / 2, 0, w)
    ys, xs = jnp.arange(h)[:, None], jnp.arange(w)[None, :]
    box = ((ys >= jnp.floor(y0)) & (ys < jnp.floor(y1)) & (xs >= jnp.floor(x0)) & (xs < jnp.floor(x1)))
    lam_cut = 1.0 - box.mean()
    flipped, flipped_targets = video[::-1], targets[::-1]
    mixed = jnp.where(use_cutmix, jnp.where(box[None, None, :, :, None], flipped, video),
                      lam_mix * video + (1 - lam_mix) * flipped)
    lam = jnp.where(use_cutmix, lam_cut, lam_mix)
    return mixed.astype(video.dtype), lam * targets + (1 - lam) * flipped_targets
