"""The training core every method runs on: `run(spec, workdir, task)`.

A method supplies a `Task` (model and init, loss, data, evaluation, export); the core owns the
rest, the way big_vision's trainers sit on `big_vision.utils` and maxtext's on `train_utils`:

  * the device mesh and the state created already sharded (`train_state`), or resumed from the
    latest checkpoint in `<workdir>/checkpoints[/<tag>]` before anything is initialised;
  * one jitted step: rng `fold_in(key(seed), step)`, state donated, gradient accumulation
    (`optax.MultiSteps`), a non-finite guard that leaves the state untouched;
  * Orbax checkpoints (async, keep-N) with the data iterator's state beside the train state, so
    a killed run resumes exactly, also onto another mesh;
  * metrics: one writer (JSON lines + TensorBoard), fetched from the device only on logging steps;
    progress lines with ETA;
  * evaluation every `eval_every` steps and at the end, with an evaluator the task builds once;
  * the final parameters, exported by the task.

    spec = RunSpec(seed=0, batch_size=8, total_steps=100, optimizer=optim.OptimizerConfig(...),
                   mesh={"data": -1})
    final, params = run(spec, "/tmp/run", MyTask(...))
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from typing import Any, Iterator, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from everest_jax import checkpoint, optim, sharding
from everest_jax.fields import Int, Is, OneOf, prefixed
from everest_jax.train_state import TrainState, create_sharded_state, state_shardings

# The checkpoint section of every method's run config.
CHECKPOINT_FIELDS = {"every_steps": Int(1), "keep": Int(1), "async_save": Is(bool)}
# The fields every method's run config has (`RunSpec.from_config` reads them); methods add theirs.
RUN_FIELDS = {
    "seed": Int(0), "batch_size": Int(1), "warmup_steps": Int(0), "log_every": Int(0), "eval_every": Int(0),
    "nonfinite": OneOf(("stop", "skip")), "init_from": Is(str), **prefixed("optimizer", optim.FIELDS),
    **prefixed("mesh", sharding.MESH_FIELDS), **prefixed("checkpoint", CHECKPOINT_FIELDS)}


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """The settled run settings of one training phase (built once from a validated config)."""

    seed: int
    batch_size: int  # global, over all processes and devices
    total_steps: int
    optimizer: optim.OptimizerConfig
    mesh: Mapping[str, int]
    rules: tuple = sharding.DEFAULT_RULES  # logical axis rules; () replicates every parameter
    warmup_steps: int = 0
    log_every: int = 0  # 0: no per-step metrics
    eval_every: int = 0  # 0: evaluate at the end only (if eval_at_end)
    eval_at_end: bool = True
    checkpoint_every: int = 50
    keep: int = 3
    async_save: bool = True
    nonfinite: str = "stop"  # or "skip"
    tag: str = ""  # phase name: checkpoints/<tag>/, 'phase' in metrics.jsonl, TensorBoard '<tag>/'

    @classmethod
    def from_config(cls, config, **overrides) -> "RunSpec":
        """From a validated run config's shared fields (seed, batch_size, warmup_steps, log_every,
        eval_every, nonfinite, optimizer, mesh, checkpoint); fields a method's config lays out its
        own way (total_steps, eval_at_end, rules, ...) come as overrides or, if present, from config."""
        ckpt = config.checkpoint
        fields = dict(
            seed=config.seed, batch_size=config.batch_size, warmup_steps=config.warmup_steps,
            optimizer=optim.OptimizerConfig.from_section(config.optimizer), mesh=config.mesh.to_dict(),
            log_every=config.log_every, eval_every=config.eval_every, nonfinite=config.nonfinite,
            checkpoint_every=ckpt.every_steps, keep=ckpt.keep, async_save=ckpt.async_save)
        for name in ("total_steps", "eval_at_end"):
            if name in config:
                fields[name] = config[name]
        if "sharding_rules" in config:
            fields["rules"] = sharding.rules_from_config(config.sharding_rules)
        return cls(**{**fields, **overrides})


class Task:
    """What a method supplies to the core. Override the methods; set the class attributes."""

    batch_keys: tuple[str, ...] = ()  # keys of a data batch the step takes
    encoder_depth: int = 0  # depth for layer-wise lr decay (`optim.layer_decay_scales`)
    units: Mapping[str, float] = {"examples": 1.0}  # per example; logged as <unit>_per_s

    def init_params(self) -> Any:
        """() -> parameters (boxed with logical axis names, or plain); traced, never run eagerly."""
        raise NotImplementedError

    def initial_params(self, abstract_params: Any) -> Mapping | None:
        """Weights to start from when not resuming: the whole tree, a part of it (nested dicts
        with some of its entries at any depth; the rest freshly initialised) or None."""
        return None

    def loss(self, params: Any, batch: Mapping[str, jax.Array], rng: jax.Array,
             step: jax.Array) -> tuple[jax.Array, dict]:
        """-> (scalar loss, metrics: scalars are logged, arrays returned by the step). `step`: the
        train steps taken, of `total_steps` (int32 scalar, traced), for schedules inside the loss."""
        raise NotImplementedError

    def train_data(self, local_batch: int, process_index: int, process_count: int) -> Iterator[dict]:
        """Endless local batches (dicts of NumPy arrays); an iterator with Grain's get/set_state."""
        raise NotImplementedError

    def evaluator(self, mesh, rules, param_shardings):
        """-> params -> dict of metrics, or None; called once per run (compile its steps here)."""
        return None

    def export(self, workdir: pathlib.Path, params: Any) -> dict:
        """Write the final parameters; -> entries for the final metrics."""
        return {}


# ---- pieces ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Setup:
    """The optimizer, shardings and the jitted step of a task on a mesh."""

    tx: optax.GradientTransformation
    shardings: TrainState  # of NamedShardings
    abstract_params: Any
    train_step: Any  # (state, global batch) -> (state, metrics)

    def fresh_state(self, task: Task, mesh, rules, params=None) -> TrainState:
        """A new state on the mesh (initialised, or `params` placed)."""
        return create_sharded_state(task.init_params, self.tx, mesh, rules, params=params)[0]


def setup(spec: RunSpec, task: Task, mesh) -> Setup:
    accum = spec.optimizer.grad_accum_steps
    schedule = optim.learning_rate_schedule(spec.optimizer, spec.batch_size, max(spec.total_steps // accum, 1),
                                            spec.warmup_steps // accum)
    abstract = nn.unbox(jax.eval_shape(task.init_params))
    tx = optim.make_optimizer(spec.optimizer, abstract, schedule, task.encoder_depth)
    _, shardings = state_shardings(task.init_params, tx, mesh, spec.rules)
    step = make_train_step(spec, task, tx, schedule, shardings, mesh)
    return Setup(tx, shardings, abstract, step)


def make_train_step(spec: RunSpec, task: Task, tx, schedule, shardings: TrainState, mesh):
    """The jitted step (state, batch) -> (state, metrics), state donated; metrics replicated."""
    base_rng = jax.random.key(spec.seed)
    accum = spec.optimizer.grad_accum_steps

    def step(state: TrainState, batch):
        rng = jax.random.fold_in(base_rng, state.step)
        (loss, aux), grads = jax.value_and_grad(task.loss, has_aux=True)(state.params, batch, rng, state.step)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # A non-finite step leaves parameters and optimizer state untouched.
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
        new_state = state.replace(step=state.step + 1, params=keep(params, state.params),
                                  opt_state=keep(opt_state, state.opt_state),
                                  nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32))
        return new_state, {"loss": loss, **aux, "grad_norm": grad_norm, "finite": finite,
                           "lr": schedule(state.step // accum)}

    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    # The batch arrives placed by `sharding.global_batch`; its sharding is taken from the arrays.
    jitted = jax.jit(step, in_shardings=(shardings, None), out_shardings=(shardings, replicated),
                     donate_argnums=(0,))

    def run_step(state, batch):
        with jax.set_mesh(mesh), nn.logical_axis_rules(spec.rules):
            return jitted(state, batch)
    return run_step


class MetricWriter:
    """JSON lines (`metrics.jsonl`) and TensorBoard events in the workdir, by process 0 only.
    With a tag, records carry `phase: tag` and TensorBoard scalars are named `tag/name`."""

    def __init__(self, workdir: pathlib.Path, tag: str = ""):
        self.enabled, self.tag = jax.process_index() == 0, tag
        if self.enabled:
            from tensorboardX import SummaryWriter

            self.jsonl = (workdir / "metrics.jsonl").open("a")
            self.tb = SummaryWriter(str(workdir / "tensorboard"))

    def write(self, step: int, metrics: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({**({"phase": self.tag} if self.tag else {}), "step": step, **metrics}) + "\n")
        self.jsonl.flush()
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v):
                self.tb.add_scalar(f"{self.tag}/{k}" if self.tag else k, v, step)
        self.tb.flush()

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            self.tb.close()


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The scalar entries of a step's metrics, fetched in one transfer (the step's host sync)."""
    names = sorted((k for k, v in metrics.items() if k != "finite" and getattr(v, "ndim", 1) == 0),
                   key=lambda k: k != "loss")  # loss first
    values = jax.device_get([metrics[k] for k in names])
    return {k: float(v) for k, v in zip(names, values)}


# ---- runs --------------------------------------------------------------------------------------


def run(spec: RunSpec, workdir: str | pathlib.Path, task: Task) -> tuple[dict, Any]:
    """Train `task` for `spec.total_steps` (resuming if a checkpoint exists), evaluate, export.

    Returns (final metrics, final parameters on the mesh)."""
    workdir = pathlib.Path(workdir)
    is_main = jax.process_index() == 0
    if is_main:
        workdir.mkdir(parents=True, exist_ok=True)
    mesh = sharding.make_mesh(spec.mesh)
    parts = setup(spec, task, mesh)
    local_batch = spec.batch_size // jax.process_count()
    data_iter = task.train_data(local_batch, jax.process_index(), jax.process_count())
    ckpt_dir = workdir / "checkpoints" / spec.tag if spec.tag else workdir / "checkpoints"
    ckpt = checkpoint.TrainCheckpointer(ckpt_dir, spec.checkpoint_every, spec.keep, spec.async_save)
    resume_step = ckpt.latest_step()
    if resume_step is not None:
        abstract_state = jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
            jax.eval_shape(lambda: TrainState(jnp.zeros((), jnp.int32), parts.abstract_params,
                                              parts.tx.init(parts.abstract_params), jnp.zeros((), jnp.int32))),
            parts.shardings)
        state = ckpt.restore(resume_step, abstract_state, data_iter)
        print(f"resumed from {ckpt_dir} at step {resume_step}", flush=True)
    else:
        given = task.initial_params(parts.abstract_params)
        whole = given is not None and _same_structure(given, parts.abstract_params)
        state = parts.fresh_state(task, mesh, spec.rules, params=given if whole else None)
        if given is not None and not whole:  # a part given, the rest fresh
            state = state.replace(params=_overlay(state.params, given, parts.shardings.params))

    writer = MetricWriter(workdir, spec.tag)
    evaluator = None
    step = int(jax.device_get(state.step))
    pending: list[tuple[int, Any]] = []  # (step, finite flag) not yet looked at on the host
    last: dict[str, Any] = {}
    start_time, start_step = None, step
    label = f"[{spec.tag}] " if spec.tag else ""

    def check_finite():
        flags = jax.device_get([f for _, f in pending])
        for (s, _), ok in zip(pending, flags):
            if not ok and spec.nonfinite == "stop":
                raise FloatingPointError(
                    f"non-finite loss or gradient at step {s}; stopping (the update was not applied; the last "
                    f"checkpoint in {ckpt_dir} is intact; set nonfinite='skip' to skip such steps)")
        pending.clear()

    def evaluate(at_step):
        nonlocal evaluator
        evaluator = evaluator or task.evaluator(mesh, spec.rules, parts.shardings.params)
        if evaluator is None:
            return {}
        result = evaluator(state.params)
        writer.write(at_step, result)
        return result

    try:
        while step < spec.total_steps:
            local = next(data_iter)
            batch = sharding.global_batch({k: local[k] for k in task.batch_keys}, mesh, spec.batch_size)
            state, metrics = parts.train_step(state, batch)
            step += 1
            pending.append((step, metrics["finite"]))
            if start_time is None:  # the first step compiles; measure throughput after it
                jax.block_until_ready(state.step)
                start_time, start_step = time.perf_counter(), step
            if spec.log_every and (step % spec.log_every == 0 or step == spec.total_steps):
                check_finite()
                last = _scalars(metrics)
                elapsed = time.perf_counter() - start_time
                if step > start_step and elapsed > 0:  # rates need a step after the compiling one
                    rate = (step - start_step) / elapsed
                    last.update({f"{u}_per_s": rate * spec.batch_size * n for u, n in task.units.items()})
                    eta = tqdm.format_interval((spec.total_steps - step) / rate)
                else:
                    eta = "?" if step < spec.total_steps else tqdm.format_interval(0)
                last["nonfinite_steps"] = int(jax.device_get(state.nonfinite_steps))
                writer.write(step, last)
                if is_main:
                    print(f"{label}step {step}/{spec.total_steps} "
                          + " ".join(f"{k}={v:.4g}" for k, v in last.items()) + f" eta={eta}", flush=True)
            if ckpt.should_save(step) or step == spec.total_steps:
                check_finite()
                ckpt.save(step, state, data_iter)
            if spec.eval_every and step % spec.eval_every == 0 and step < spec.total_steps:
                evaluate(step)
    finally:
        ckpt.close()
        if hasattr(data_iter, "close"):  # worker processes and threads stop here, also on errors
            data_iter.close()

    final = dict(last, step=step, checkpoint=str(ckpt_dir / str(step)))
    if hasattr(data_iter, "report"):  # video files: how many bad videos were replaced
        report = data_iter.report()
        final.update(bad_videos=report.num_bad, replaced_examples=report.replaced)
    if spec.eval_at_end:
        final.update(evaluate(step))
    final.update(task.export(workdir, state.params))
    writer.close()
    return final, state.params


def _same_structure(a, b) -> bool:
    return jax.tree.structure(a) == jax.tree.structure(b)


def _overlay(fresh: Mapping, given: Mapping, shardings: Mapping) -> dict:
    """`fresh` with the entries of `given` (nested dicts, any depth) placed on their shardings."""
    out = dict(fresh)
    for k, v in given.items():
        if isinstance(v, Mapping) and not _same_structure(v, fresh[k]):
            out[k] = _overlay(fresh[k], v, shardings[k])
        else:
            out[k] = jax.device_put(v, shardings[k])
    return out


def evaluate(spec: RunSpec, workdir: str | pathlib.Path, task: Task) -> dict:
    """Evaluate the task's `initial_params` (the whole tree) without training; metrics at step 0."""
    workdir = pathlib.Path(workdir)
    mesh = sharding.make_mesh(spec.mesh)
    boxed = jax.eval_shape(task.init_params)
    param_shardings = sharding.logical_shardings(boxed, mesh, spec.rules)
    params = jax.device_put(task.initial_params(nn.unbox(boxed)), param_shardings)
    metrics = task.evaluator(mesh, spec.rules, param_shardings)(params)
    writer = MetricWriter(workdir, spec.tag)
    writer.write(0, metrics)
    writer.close()
    return metrics
