"""Multi-view classification evaluation, shared by every video classifier (EVEREST fine-tuning,
VA-RED²): each held-out video as `eval.num_clips x eval.num_crops` views, softmax averaged over
its views, top-1 / top-5 over the videos; any other per-view output of the step is averaged too."""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from everest_jax import inputs, sharding


def make_eval_step(fn: Callable[[Any, jax.Array], dict], mesh, rules, param_shardings):
    """`fn(params, video (N, T, H, W, C)) -> {"probs": (N, classes), other: (N,)...}` jitted once
    on the mesh (views split over the data axes, outputs replicated)."""
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    jitted = jax.jit(fn, in_shardings=(param_shardings, sharding.batch_sharding(mesh, 5)), out_shardings=replicated)

    def run(params, video):
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            return jitted(params, video)
    return run


def multi_view_accuracy(config: ml_collections.ConfigDict, eval_step, params, mesh, clip) -> dict:
    """{"eval_top1", "eval_top5", "eval_videos", "eval_<other>" (mean over valid views)} over the
    config's held-out videos. `eval_step`: from `make_eval_step`, built once per run; `clip`: the
    clip shape (`num_frames`, `image_size`, `in_channels`; e.g. a ModelConfig)."""
    views = inputs.eval_views(config, clip, jax.process_index(), jax.process_count())
    ways = sharding.data_parallel_size(mesh)
    sums: dict[str, float] = {}
    top1 = top5 = count = 0
    for batch in views:  # dict: video (b, V, T, H, W, C), label (b,), valid (b,)
        b, v = batch["video"].shape[:2]
        flat = batch["video"].reshape(b * v, *batch["video"].shape[2:])
        pad = (-flat.shape[0]) % ways
        flat = np.concatenate([flat, np.zeros((pad, *flat.shape[1:]), flat.dtype)]) if pad else flat
        glob = sharding.global_batch({"video": flat}, mesh, flat.shape[0] * jax.process_count())
        out = jax.device_get(eval_step(params, glob["video"]))
        rows = slice(jax.process_index() * flat.shape[0], jax.process_index() * flat.shape[0] + b * v)
        out = {k: np.asarray(x)[rows].reshape(b, v, *np.shape(x)[1:]) for k, x in out.items()}
        valid = batch["valid"].astype(bool)
        ranked = np.argsort(-out.pop("probs").mean(axis=1), axis=-1)
        labels = batch["label"]
        top1 += int(np.sum((ranked[:, 0] == labels) & valid))
        top5 += int(np.sum(np.any(ranked[:, :5] == labels[:, None], axis=-1) & valid))
        count += int(valid.sum())
        for k, x in out.items():
            sums[k] = sums.get(k, 0.0) + float(x[valid].sum())
    names = sorted(sums)
    totals = np.asarray([top1, top5, count] + [sums[k] for k in names], np.float64)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        totals = np.asarray(multihost_utils.process_allgather(totals)).reshape(-1, totals.size).sum(0)
    top1, top5, count = (int(x) for x in totals[:3])
    views_per_video = config.eval.num_clips * config.eval.num_crops
    return {"eval_top1": top1 / max(count, 1), "eval_top5": top5 / max(count, 1), "eval_videos": count,
            **{f"eval_{k}": float(s) / max(count * views_per_video, 1) for k, s in zip(names, totals[3:])}}
