"""Segmentation metrics: confusion matrices (jittable) and mean IoU."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from stmg_jax.data import IGNORE


def confusion(logits: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
    """(K, K) counts of argmax(logits), see `pred_confusion`."""
    return pred_confusion(jnp.argmax(logits, -1), labels, num_classes)


def pred_confusion(pred: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
    """(K, K) counts, rows = label, cols = predicted class (pred and labels of one shape);
    pixels labelled 255 (`IGNORE`) are left out."""
    pred, labels = jnp.reshape(pred, -1), jnp.reshape(labels, -1)
    valid = labels != IGNORE
    return jnp.zeros((num_classes, num_classes), jnp.int32).at[jnp.where(valid, labels, 0), pred].add(
        valid.astype(jnp.int32))


def miou(conf: np.ndarray) -> float:
    """Mean IoU over the classes present in the labels or the predictions, in percent."""
    conf = np.asarray(conf, np.float64)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    present = union > 0
    return float(100 * np.mean(tp[present] / union[present]))
