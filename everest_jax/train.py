"""A single-device training loop for pre-training and fine-tuning on the synthetic videos.

One jitted step (forward, backward, AdamW update) per batch; metrics as JSON lines in the workdir
and a parameter checkpoint at the end. Sharded training over device meshes, periodic
checkpoints with exact resume and real datasets build on this.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from everest_jax import checkpoint, objectives
from everest_jax.config import ConfigError, ModelConfig
from everest_jax.data import SyntheticVideos, normalize_video
from everest_jax.models import Classifier, PretrainingModel

JOBS = ("pretrain", "finetune")


def validate(config: ml_collections.ConfigDict) -> ModelConfig:
    """Check the run config before anything is built or compiled; returns the model config."""
    if config.job not in JOBS:
        raise ConfigError(f"job={config.job!r} must be one of {JOBS}")
    model = ModelConfig.from_dict(config.model.to_dict())
    for name in ("batch_size", "total_steps", "log_every"):
        if int(config[name]) <= 0:
            raise ConfigError(f"{name}={config[name]!r} must be a positive integer")
    if not 0 <= config.warmup_steps < config.total_steps:
        raise ConfigError(f"warmup_steps={config.warmup_steps} must be in [0, total_steps={config.total_steps})")
    if config.optimizer.base_lr <= 0:
        raise ConfigError(f"optimizer.base_lr={config.optimizer.base_lr} must be positive")
    if config.data.name != "synthetic":
        raise ConfigError(f"data.name={config.data.name!r}: this loop reads the 'synthetic' dataset")
    if config.job == "finetune" and model.num_classes != config.data.num_classes:
        raise ConfigError(f"model.num_classes={model.num_classes} must equal data.num_classes="
                          f"{config.data.num_classes} for fine-tuning")
    if config.data.num_examples < config.batch_size:
        raise ConfigError(f"data.num_examples={config.data.num_examples} is smaller than "
                          f"batch_size={config.batch_size}")
    return model


def weight_decay_mask(params: Any) -> Any:
    """True for weight matrices; biases, norms and the mask token are not decayed."""
    def decay(path, x):
        return x.ndim >= 2 and "mask_token" not in jax.tree_util.keystr(path)
    return jax.tree_util.tree_map_with_path(decay, params)


def make_optimizer(config: ml_collections.ConfigDict, params: Any) -> optax.GradientTransformation:
    o = config.optimizer
    scale = config.batch_size / 256
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=1e-6 * scale, peak_value=o.base_lr * scale, warmup_steps=config.warmup_steps,
        decay_steps=config.total_steps, end_value=o.min_lr * scale)
    return optax.adamw(schedule, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay,
                       mask=weight_decay_mask(params)), schedule


def batches(dataset: SyntheticVideos, batch_size: int, seed: int):
    """Endless (video float32 (B,T,H,W,C), label (B,)) batches in a seeded per-epoch order."""
    epoch = 0
    while True:
        order = np.random.default_rng((seed, epoch)).permutation(len(dataset))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            examples = [dataset[int(i)] for i in order[start:start + batch_size]]
            yield (normalize_video(np.stack([e["video"] for e in examples])),
                   np.stack([e["label"] for e in examples]))
        epoch += 1


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Train for `config.total_steps`; returns the final metrics."""
    model_config = validate(config)
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))

    dataset = SyntheticVideos(num_examples=config.data.num_examples, num_frames=model_config.num_frames,
                              image_size=model_config.image_size, num_classes=config.data.num_classes,
                              seed=config.seed, camera_pan=config.data.camera_pan)
    pretrain = config.job == "pretrain"
    model = PretrainingModel(model_config) if pretrain else Classifier(model_config)
    rng = jax.random.key(config.seed)
    init_rng, rng = jax.random.split(rng)
    video0 = jnp.zeros((1, model_config.num_frames, *model_config.image_size, model_config.in_channels))
    params = nn.unbox(jax.jit(model.init)({"params": init_rng, "masking": init_rng}, video0))["params"]
    tx, schedule = make_optimizer(config, params)
    opt_state = tx.init(params)

    def loss_fn(params, video, labels, step_rng):
        if pretrain:
            return objectives.pretrain_loss(params, model, video, step_rng, True, config.normalize_targets)
        return objectives.classification_loss(params, model, video, labels, step_rng, True, config.label_smoothing)

    @jax.jit
    def train_step(params, opt_state, video, labels, step):
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            params, video, labels, jax.random.fold_in(rng, step))
        updates, opt_state = tx.update(grads, opt_state, params)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
        if not pretrain:
            metrics["accuracy"] = aux["accuracy"]
        return optax.apply_updates(params, updates), opt_state, metrics

    tokens = model_config.pretrain_counts[0] if pretrain else model_config.finetune_keep_count
    data = batches(dataset, config.batch_size, config.seed)
    metrics_file = (workdir / "metrics.jsonl").open("w")
    start, last = None, {}
    for step in range(config.total_steps):
        video, labels = next(data)
        params, opt_state, metrics = train_step(params, opt_state, video, labels, step)
        if step == 0:  # throughput is measured after the first step, which compiles
            jax.block_until_ready(params)
            start = time.perf_counter()
        if (step + 1) % config.log_every == 0 or step + 1 == config.total_steps:
            metrics = jax.device_get(metrics)
            if not np.isfinite(metrics["loss"]):
                raise FloatingPointError(f"non-finite loss {metrics['loss']} at step {step + 1}")
            elapsed = max(time.perf_counter() - start, 1e-9)
            clips = step * config.batch_size
            last = {"step": step + 1, "lr": float(schedule(step)), "clips_per_s": clips / elapsed,
                    "encoder_tokens_per_s": clips * tokens / elapsed,
                    **{k: float(v) for k, v in metrics.items()}}
            metrics_file.write(json.dumps(last) + "\n")
            metrics_file.flush()
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in last.items()),
                  flush=True)
    metrics_file.close()
    out = checkpoint.save_params(workdir / "final", params, model_config,
                                 "pretrain" if pretrain else "classifier", source=f"{config.job} run")
    last["checkpoint"] = str(out)
    return last
