"""Loss functions of the pre-training and fine-tuning jobs, shared by the trainer and benchmarks."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from everest_jax.models import Classifier, PretrainingModel
from everest_jax.targets import reconstruction_loss


def pretrain_loss(params: Any, model: PretrainingModel, video: jax.Array, rng: jax.Array,
                  train: bool = True, normalize_targets: bool = True) -> tuple[jax.Array, dict]:
    """Masked-reconstruction loss of one batch. video: (B, T, H, W, C). Returns (loss, aux)."""
    mask_rng, dropout_rng = jax.random.split(rng)
    c = model.config
    pred, aux = model.apply({"params": params}, video, train=train,
                            rngs={"masking": mask_rng, "dropout": dropout_rng})
    loss = reconstruction_loss(pred, video, aux["target_idx"], c.tubelet_size, c.patch_size, normalize_targets)
    return loss, aux


def classification_loss(params: Any, model: Classifier, video: jax.Array, labels: jax.Array,
                        rng: jax.Array, train: bool = True, label_smoothing: float = 0.0) -> tuple[jax.Array, dict]:
    """Softmax cross-entropy (optionally label-smoothed) of one batch. labels: (B,) int."""
    logits, aux = model.apply({"params": params}, video, train=train, rngs={"dropout": rng})
    targets = optax.smooth_labels(jax.nn.one_hot(labels, model.config.num_classes), label_smoothing)
    loss = optax.softmax_cross_entropy(logits, targets).mean()
    return loss, dict(aux, logits=logits, accuracy=jnp.mean(jnp.argmax(logits, -1) == labels))
