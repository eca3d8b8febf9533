"""Sharded training and evaluation: pre-training, fine-tuning and evaluation jobs from a config.

The flow follows big_vision/maxtext: validate the config, build the mesh, derive every shape
with `jax.eval_shape`, resume from the workdir's latest checkpoint if there is one (before any
initialisation), otherwise create the state already sharded, then run one jitted step with
explicit in/out shardings and a donated state. The step's rng is `fold_in(seed, step)`, and the
data iterator's state is saved with each checkpoint, so a killed run resumes exactly.
"""

from __future__ import annotations

import functools
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

from everest_jax import checkpoint, inputs, objectives, optim, sharding
from everest_jax.fields import Float, Int, Is, OneOf, check, prefixed
from everest_jax.config import ConfigError, ModelConfig
from everest_jax.models import Classifier, PretrainingModel, stack_blocks
from everest_jax.train_state import TrainState, create_sharded_state, state_shardings

JOBS = ("pretrain", "finetune", "evaluate")
_UNIT, _FRACTION, _POSITIVE = Float(0, 1), Float(0, 1, hi_open=True), Float(0, lo_open=True)
# Every field of a run config (configs/common.py) but `model` (ModelConfig checks its own): type
# and range, checked before anything is built.
RUN_FIELDS = {
    "job": OneOf(JOBS), "seed": Int(0), "batch_size": Int(1), "total_steps": Int(1), "warmup_steps": Int(0),
    "log_every": Int(1), "eval_every": Int(0), "eval_at_end": Is(bool), "init_from": Is(str),
    "normalize_targets": Is(bool), "label_smoothing": _FRACTION, "nonfinite": OneOf(("stop", "skip")),
    "dataset": Is(str), "method": Is(str), "sharding_rules": Is((tuple, list)),  # rules: checked by sharding
    "mixup.mixup_alpha": Float(0), "mixup.cutmix_alpha": Float(0), "mixup.switch_prob": _UNIT,
    **prefixed("optimizer", optim.FIELDS), **prefixed("mesh", sharding.MESH_FIELDS),
    "checkpoint.every_steps": Int(1), "checkpoint.keep": Int(1), "checkpoint.async_save": Is(bool),
    "eval.num_clips": Int(1), "eval.num_crops": Int(1), "eval.crop_extent": Float(1), "eval.batch_size": Int(1),
    "data.name": OneOf(inputs.SOURCES), "data.num_classes": Int(1), "data.num_examples": Int(1),
    "data.num_eval_examples": Int(1), "data.camera_pan": Is(bool), "data.synthetic_seed": Int(0),
    "data.num_speeds": Int(1), "data.min_travel": _POSITIVE, "data.max_travel": _POSITIVE,
    "data.background_drift": Float(0), "data.balanced_labels": Is(bool), "data.wrap": Is(bool),
    "data.root": Is(str), "data.train_list": Is(str), "data.eval_list": Is(str), "data.tfds_name": Is(str),
    "data.train_split": Is(str), "data.eval_split": Is(str), "data.tfds_data_dir": Is(str),
    "data.sampling": OneOf(inputs.SAMPLINGS), "data.stride": Int(1), "data.short_side": Int(0),
    "data.flip": Is(bool), "data.rand_augment": Is(bool), "data.erase_prob": _UNIT, "data.candidate_alpha": Float(1),
    "data.num_workers": Int(0), "data.read_threads": Int(1), "data.max_bad_fraction": _FRACTION,
}


# ---- configuration -----------------------------------------------------------------------


def validate(config: ml_collections.ConfigDict, num_devices: int | None = None) -> ModelConfig:
    """Check the run config before anything is built or compiled; returns the model config."""
    check(config, RUN_FIELDS, whole=("model",))
    model = ModelConfig.from_dict(config.model.to_dict())
    if config.job != "evaluate" and config.warmup_steps >= config.total_steps:
        raise ConfigError(f"warmup_steps={config.warmup_steps} must be in [0, total_steps={config.total_steps})")
    if config.job in ("finetune", "evaluate") and model.num_classes <= 0:
        raise ConfigError(f"model.num_classes={model.num_classes} must be positive for job={config.job}")
    if config.job in ("finetune", "evaluate") and model.num_classes != config.data.num_classes:
        raise ConfigError(f"model.num_classes={model.num_classes} must equal data.num_classes={config.data.num_classes}")
    if config.job == "evaluate" and not config.init_from:
        raise ConfigError("init_from must name a checkpoint to evaluate")
    if config.init_from and not pathlib.Path(config.init_from).exists():
        raise ConfigError(f"init_from={config.init_from!r} does not exist")
    num_devices = num_devices or len(sharding.mesh_devices(config.mesh.to_dict()))
    shape = dict(zip(sharding.MESH_AXES, sharding.mesh_shape(config.mesh.to_dict(), num_devices)))
    batch_ways = shape["data"] * shape["fsdp"]
    if config.batch_size % batch_ways:
        raise ConfigError(f"batch_size={config.batch_size} is not divisible by the data axes "
                          f"(mesh data x fsdp = {batch_ways})")
    if config.batch_size % jax.process_count():
        raise ConfigError(f"batch_size={config.batch_size} is not divisible by the {jax.process_count()} processes")
    sharding.rules_from_config(config.get("sharding_rules"))
    inputs.validate(config.data, config.job, model)
    return model


# ---- model, parameters ---------------------------------------------------------------------


def make_model(job: str, model_config: ModelConfig) -> nn.Module:
    return PretrainingModel(model_config) if job == "pretrain" else Classifier(model_config)


def params_initializer(model: nn.Module, model_config: ModelConfig, seed: int):
    """A function () -> boxed params (with logical axis metadata)."""
    c = model_config
    video = jnp.zeros((1, c.num_frames, *c.image_size, c.in_channels), jnp.float32)

    def init():
        rng = jax.random.key(seed)
        return model.init({"params": rng, "masking": rng, "dropout": rng}, video)["params"]
    return init


def load_init_params(path: str, job: str, model_config: ModelConfig, abstract_params: Any) -> dict:
    """Parameters to start a run from: a parameter checkpoint (converted or a run's `final/`) or a
    run's workdir (its latest train-state checkpoint).

    Fine-tuning and evaluation of a pre-training checkpoint take its encoder only (minus the final
    norm under mean pooling, as the official fine-tuning code does); the returned tree then holds
    just {'encoder': ...} and the caller keeps the fresh fc_norm and head. Shapes are checked.
    """
    path = pathlib.Path(path)
    if (path / checkpoint.CONFIG_FILE).exists():
        _, kind, params = checkpoint.load_params(path)
    else:
        ckpt = checkpoint.TrainCheckpointer(path / "checkpoints", 1, 1, async_save=False)
        step = ckpt.latest_step()
        if step is None:
            raise ConfigError(f"init_from={str(path)!r} has neither {checkpoint.CONFIG_FILE} nor checkpoints/")
        params = ckpt.restore_state(step, None)["params"]
        ckpt.close()
        kind = "pretrain" if "decoder" in params else "classifier"
    params = jax.tree.map(np.asarray, params)
    if model_config.scan:
        params = stack_blocks(params)
    if job != "pretrain" and kind == "pretrain":
        encoder = dict(params["encoder"])
        if model_config.use_mean_pooling:
            encoder.pop("norm", None)
        params, abstract_params = {"encoder": encoder}, {"encoder": abstract_params["encoder"]}
    want = {jax.tree_util.keystr(p): x.shape for p, x in jax.tree_util.tree_leaves_with_path(abstract_params)}
    got = {jax.tree_util.keystr(p): x.shape for p, x in jax.tree_util.tree_leaves_with_path(params)}
    for key in sorted(set(want) | set(got)):
        if want.get(key) != got.get(key):
            raise ConfigError(f"init_from={str(path)!r} does not fit the model at {key}: checkpoint "
                              f"{got.get(key)}, model {want.get(key)}")
    return params


# ---- steps ---------------------------------------------------------------------------------


def make_loss_fn(config, model):
    """(params, batch, rng) -> (loss, aux) for the job: reconstruction or (mixed) classification."""
    pretrain = config.job == "pretrain"
    frame_selection = inputs.frame_selection(config)
    mix = config.mixup

    def loss_fn(params, batch, rng):
        if pretrain:
            return objectives.pretrain_loss(params, model, batch["video"], rng, True, config.normalize_targets,
                                            frame_selection)
        mix_rng, rng = jax.random.split(rng)
        video, targets = objectives.mixup_cutmix(mix_rng, batch["video"], batch["label"], model.config.num_classes,
                                                 mix.mixup_alpha, mix.cutmix_alpha, mix.switch_prob)
        return objectives.classification_loss(params, model, video, targets, rng, True, config.label_smoothing)
    return loss_fn


def make_train_step(config, model, tx, schedule, shardings, batch_shardings, mesh, rules):
    """The jitted step (state, batch) -> (state, metrics), with explicit shardings and the state donated."""
    pretrain = config.job == "pretrain"
    base_rng = jax.random.key(config.seed)
    loss_fn = make_loss_fn(config, model)

    def step(state: TrainState, batch):
        rng = jax.random.fold_in(base_rng, state.step)
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, rng)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # A non-finite step leaves parameters and optimizer state untouched.
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
        new_state = state.replace(step=state.step + 1, params=keep(params, state.params),
                                  opt_state=keep(opt_state, state.opt_state),
                                  nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32))
        metrics = {"loss": loss, "grad_norm": grad_norm, "finite": finite,
                   "lr": schedule(state.step // config.optimizer.grad_accum_steps)}
        if not pretrain:
            metrics["accuracy"] = aux["accuracy"]
        if "frame_pairs" in aux:  # (B, tau) steps chosen from the candidates (not logged)
            metrics["frame_pairs"] = aux["frame_pairs"]
        return new_state, metrics

    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    jitted = jax.jit(step, in_shardings=(shardings, batch_shardings), out_shardings=(shardings, replicated),
                     donate_argnums=(0,))

    def run(state, batch):
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            return jitted(state, batch)
    return run


def make_eval_step(model, mesh, rules, batch_shardings, param_shardings):
    """(params, views (B*V, T, H, W, C)) -> softmax probabilities (B*V, classes)."""
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def step(params, video):
        logits, _ = model.apply({"params": params}, video, train=False)
        return jax.nn.softmax(logits, axis=-1)

    jitted = jax.jit(step, in_shardings=(param_shardings, batch_shardings), out_shardings=replicated)

    def run(params, video):
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            return jitted(params, video)
    return run


def evaluate(config, eval_step, params, mesh, model_config) -> dict:
    """Multi-view accuracy: softmax averaged over each video's clips x crops, top-1/top-5.
    `eval_step`: from `make_eval_step`, built once per run (every evaluation reuses its compile)."""
    views = inputs.eval_views(config, model_config, jax.process_index(), jax.process_count())
    ways = sharding.data_parallel_size(mesh)
    top1 = top5 = count = 0
    for batch in views:  # dict: video (b, V, T, H, W, C), label (b,), valid (b,)
        b, v = batch["video"].shape[:2]
        flat = batch["video"].reshape(b * v, *batch["video"].shape[2:])
        pad = (-flat.shape[0]) % ways
        flat = np.concatenate([flat, np.zeros((pad, *flat.shape[1:]), flat.dtype)]) if pad else flat
        local = {"video": flat}
        glob = sharding.global_batch(local, mesh, flat.shape[0] * jax.process_count())
        probs = np.asarray(jax.device_get(eval_step(params, glob["video"])))
        probs = probs[jax.process_index() * flat.shape[0]:][: b * v].reshape(b, v, -1).mean(axis=1)
        ranked = np.argsort(-probs, axis=-1)
        valid = batch["valid"].astype(bool)
        labels = batch["label"]
        top1 += int(np.sum((ranked[:, 0] == labels) & valid))
        top5 += int(np.sum(np.any(ranked[:, :5] == labels[:, None], axis=-1) & valid))
        count += int(valid.sum())
    totals = np.asarray([top1, top5, count])
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        totals = np.asarray(multihost_utils.process_allgather(totals)).reshape(-1, 3).sum(0)
    top1, top5, count = (int(x) for x in totals)
    return {"eval_top1": top1 / max(count, 1), "eval_top5": top5 / max(count, 1), "eval_videos": count}


# ---- outputs -------------------------------------------------------------------------------


class MetricWriter:
    """JSON lines and TensorBoard events in the workdir, written by process 0 only."""

    def __init__(self, workdir: pathlib.Path, enabled: bool):
        self.enabled = enabled
        if enabled:
            from tensorboardX import SummaryWriter

            self.jsonl = (workdir / "metrics.jsonl").open("a")
            self.tb = SummaryWriter(str(workdir / "tensorboard"))

    def write(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"step": step, **metrics}) + "\n")
        self.jsonl.flush()
        for k, v in metrics.items():
            if isinstance(v, (int, float)):
                self.tb.add_scalar(k, v, step)
        self.tb.flush()

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            self.tb.close()


def _format_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


# ---- the run -------------------------------------------------------------------------------


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Run the job named by `config.job`; returns the final metrics (and where the checkpoint is)."""
    model_config = validate(config)
    workdir = pathlib.Path(workdir)
    is_main = jax.process_index() == 0
    if is_main:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))

    mesh = sharding.make_mesh(config.mesh.to_dict())
    rules = sharding.rules_from_config(config.get("sharding_rules"))
    model = make_model(config.job, model_config)
    init_params = params_initializer(model, model_config, config.seed)
    total_steps = int(config.get("total_steps", 0) or 0)
    schedule = optim.learning_rate_schedule(config.optimizer, config.batch_size,
                                            max(total_steps // config.optimizer.grad_accum_steps, 1),
                                            config.get("warmup_steps", 0) // config.optimizer.grad_accum_steps)
    abstract_boxed = jax.eval_shape(init_params)
    abstract_params = nn.unbox(abstract_boxed)
    tx = optim.make_optimizer(config.optimizer, abstract_params, schedule, model_config.depth)
    _, shardings = state_shardings(init_params, tx, mesh, rules)
    eval_step = functools.cache(lambda: make_eval_step(model, mesh, rules, sharding.batch_sharding(mesh, 5),
                                                       shardings.params))  # built at the first evaluation

    if config.job == "evaluate":
        params = load_init_params(config.init_from, config.job, model_config, abstract_params)
        if set(params) != set(abstract_params):
            raise ConfigError(f"init_from={config.init_from!r} is a pre-training checkpoint; evaluate a fine-tuned one")
        params = jax.device_put(params, shardings.params)
        metrics = evaluate(config, eval_step(), params, mesh, model_config)
        MetricWriter(workdir, is_main).write(0, metrics)
        return metrics

    local_batch = config.batch_size // jax.process_count()
    data_iter = inputs.train_iterator(config, model_config, local_batch, jax.process_index(),
                                              jax.process_count())
    ckpt = checkpoint.TrainCheckpointer(workdir / "checkpoints", config.checkpoint.every_steps,
                                        config.checkpoint.keep, config.checkpoint.async_save)
    resume_step = ckpt.latest_step()
    if resume_step is not None:
        abstract_state = jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
            jax.eval_shape(lambda: TrainState(jnp.zeros((), jnp.int32), abstract_params,
                                              tx.init(abstract_params), jnp.zeros((), jnp.int32))), shardings)
        state = ckpt.restore(resume_step, abstract_state, data_iter)
        print(f"resumed from {workdir / 'checkpoints'} at step {resume_step}", flush=True)
    else:
        given = load_init_params(config.init_from, config.job, model_config, abstract_params) \
            if config.init_from else None
        if given is not None and set(given) == set(abstract_params):
            state, shardings = create_sharded_state(init_params, tx, mesh, rules, params=given)
        else:  # fresh state; then the encoder from the pre-training checkpoint, if any
            state, shardings = create_sharded_state(init_params, tx, mesh, rules)
            if given is not None:
                encoder = jax.device_put(given["encoder"], shardings.params["encoder"])
                state = state.replace(params={**state.params, "encoder": encoder})

    batch_shardings = {"video": sharding.batch_sharding(mesh, 5), "label": sharding.batch_sharding(mesh, 1)}
    train_step = make_train_step(config, model, tx, schedule, shardings, batch_shardings, mesh, rules)
    writer = MetricWriter(workdir, is_main)
    tokens_per_clip = model_config.pretrain_counts[0] if config.job == "pretrain" else model_config.finetune_keep_count

    step = int(jax.device_get(state.step))
    pending: list[tuple[int, Any]] = []  # (step, finite flag) not yet looked at on the host
    last: dict[str, Any] = {}
    start_time, start_step = None, step

    def check_finite():
        flags = jax.device_get([f for _, f in pending])
        for (s, _), ok in zip(pending, flags):
            if not ok and config.nonfinite == "stop":
                raise FloatingPointError(
                    f"non-finite loss or gradient at step {s}; stopping (the update was not applied; the last "
                    f"checkpoint in {workdir / 'checkpoints'} is intact; set nonfinite='skip' to skip such steps)")
        pending.clear()

    try:
        while step < total_steps:
            local = next(data_iter)
            batch = sharding.global_batch({k: local[k] for k in ("video", "label")}, mesh, config.batch_size)
            state, metrics = train_step(state, batch)
            step += 1
            pending.append((step, metrics["finite"]))
            if start_time is None:  # the first step compiles; measure throughput after it
                jax.block_until_ready(state.step)
                start_time, start_step = time.perf_counter(), step
            if step % config.log_every == 0 or step == total_steps:
                check_finite()
                m = jax.device_get(metrics)
                elapsed = time.perf_counter() - start_time
                rate = (step - start_step) / elapsed if elapsed > 0 and step > start_step else float("nan")
                last = {"loss": float(m["loss"]), "lr": float(m["lr"]), "grad_norm": float(m["grad_norm"]),
                        "clips_per_s": rate * config.batch_size, "tokens_per_s": rate * config.batch_size * tokens_per_clip,
                        "nonfinite_steps": int(jax.device_get(state.nonfinite_steps))}
                if "accuracy" in m:
                    last["accuracy"] = float(m["accuracy"])
                writer.write(step, last)
                if is_main:
                    eta = (total_steps - step) / rate if rate == rate and rate > 0 else 0
                    print(f"step {step}/{total_steps} " + " ".join(
                        f"{k}={v:.4g}" for k, v in last.items()) + f" eta={_format_eta(eta)}", flush=True)
            if ckpt.should_save(step) or step == total_steps:
                check_finite()
                ckpt.save(step, state, data_iter)
            eval_every = config.get("eval_every", 0)
            if config.job == "finetune" and eval_every and step % eval_every == 0 and step < total_steps:
                ev = evaluate(config, eval_step(), state.params, mesh, model_config)
                writer.write(step, ev)
    finally:
        ckpt.close()

    final = dict(last, step=step, checkpoint=str(workdir / "checkpoints" / str(step)))
    if hasattr(data_iter, "report"):  # video files: how many bad videos were replaced
        report = data_iter.report()
        final.update(bad_videos=report.num_bad, replaced_examples=report.replaced)
    if config.job == "finetune" and config.get("eval_at_end", True):
        ev = evaluate(config, eval_step(), state.params, mesh, model_config)
        writer.write(step, ev)
        final.update(ev)
    kind = "pretrain" if config.job == "pretrain" else "classifier"
    checkpoint.save_params(workdir / "final", state.params, model_config, kind, source=str(workdir))
    final["final_params"] = str(workdir / "final")
    writer.close()
    return final
