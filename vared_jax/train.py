"""VA-RED² training and evaluation as a task on the shared training core (`everest_jax.trainer`).

  job=train     `ClassifyTask`: the dense R(2+1)D (`vared.enabled=False`) or the VA-RED² network
                (soft Gumbel-softmax mixture of every conv's choices, temperature annealed
                geometrically from `vared.tau_start` to `vared.tau_end` over the run), loss =
                cross-entropy + `vared.flops_weight` * (mean expected FLOPs / dense - `vared.budget`)^2
                (`vared.flops_penalty="excess"`: only FLOPs above the budget are penalised);
                started from scratch or from `init_from` (a dense or VA-RED² `final/`, or a
                torchvision r2plus1d_18 state dict `.pth`). `vared.train_backbone=False`: the
                backbone stays as `init_from` gives it; only the gates and reconstructions train.
  job=evaluate  the same task evaluated without training.

Evaluation: multi-view top-1/top-5 on the config's held-out videos (`everest_jax.evaluation`); for
VA-RED² the network takes each gate's argmax (hard mode) and the evaluation also reports the FLOPs
of the chosen branches relative to the dense network (`eval_flops`) and the share of gated convs
that chose a temporal / channel reduction (`eval_temporal_reduced`, `eval_channel_reduced`).
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from everest_jax import checkpoint, evaluation, inputs, trainer
from everest_jax.config import ConfigError
from everest_jax.fields import Float, Int, Is, OneOf, check
from vared_jax.model import R2Plus1D, R2Plus1DConfig, VaRedR2Plus1D, dense_params, expected_flops, flops_table

JOBS = ("train", "evaluate")
CONFIG_FILE = "vared.json"
# Every field of a VA-RED² run config (configs/vared_*.py) but `model` (R2Plus1DConfig checks its own).
RUN_FIELDS = {
    **trainer.RUN_FIELDS, **inputs.FIELDS, "job": OneOf(JOBS), "total_steps": Int(1), "eval_at_end": Is(bool),
    "label_smoothing": Float(0, 1, hi_open=True), "clip.num_frames": Int(1), "clip.image_size": Is((tuple, list)),
    "vared.enabled": Is(bool), "vared.budget": Float(0, 1, lo_open=True), "vared.flops_weight": Float(0),
    "vared.tau_start": Float(0, lo_open=True), "vared.tau_end": Float(0, lo_open=True),
    "vared.train_backbone": Is(bool), "vared.flops_penalty": OneOf(("squared", "excess")),
}


def model_config(config: ml_collections.ConfigDict) -> R2Plus1DConfig:
    """The model section as an `R2Plus1DConfig`; errors name the field as `model.<field>`."""
    fields = {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in config.model.to_dict().items()}
    try:
        return R2Plus1DConfig(**fields)
    except ConfigError as e:
        raise ConfigError(f"model.{e}") from None
    except TypeError as e:  # a field R2Plus1DConfig does not have
        raise ConfigError(f"model: {e}") from None


def clip_of(config: ml_collections.ConfigDict) -> inputs.Clip:
    size = tuple(config.clip.image_size)
    if len(size) != 2 or not all(isinstance(s, int) and s >= 1 for s in size):
        raise ConfigError(f"clip.image_size={config.clip.image_size!r} must be (height, width) positive ints")
    return inputs.Clip(config.clip.num_frames, size)


def validate(config: ml_collections.ConfigDict) -> tuple[R2Plus1DConfig, inputs.Clip]:
    """Check the whole run config before anything is built or compiled."""
    check(config, RUN_FIELDS, whole=("model",))
    model, clip = model_config(config), clip_of(config)
    if config.job == "train" and config.warmup_steps >= config.total_steps:
        raise ConfigError(f"warmup_steps={config.warmup_steps} must be in [0, total_steps={config.total_steps})")
    if model.num_classes != config.data.num_classes:
        raise ConfigError(f"model.num_classes={model.num_classes} must equal data.num_classes={config.data.num_classes}")
    if config.vared.tau_end > config.vared.tau_start:
        raise ConfigError(f"vared.tau_end={config.vared.tau_end} must not exceed vared.tau_start={config.vared.tau_start}")
    if config.job == "evaluate" and not config.init_from:
        raise ConfigError("init_from must name a checkpoint to evaluate")
    if not config.vared.train_backbone and not (config.job == "train" and config.vared.enabled and config.init_from):
        raise ConfigError("vared.train_backbone=False trains only the gates and reconstructions: "
                          "it needs job='train', vared.enabled and an init_from")
    if config.init_from and not pathlib.Path(config.init_from).exists():
        raise ConfigError(f"init_from={config.init_from!r} does not exist")
    if config.data.sampling == "candidate":
        raise ConfigError("data.sampling='candidate' is EVEREST pre-training's frame selection; "
                          "VA-RED² samples clips with 'stride' or 'segment'")
    inputs.validate(config.data, "finetune" if config.job == "train" else "evaluate", clip)
    return model, clip


# ---- parameter checkpoints --------------------------------------------------------------------


def save_params(out_dir, params: dict, model: R2Plus1DConfig, vared: bool, source: str = "") -> pathlib.Path:
    """`<out_dir>/params` (Orbax) + `<out_dir>/vared.json` {kind: 'vared'|'dense', model: fields}."""
    meta = {"kind": "vared" if vared else "dense", "source": source, "model": dataclasses.asdict(model)}
    return checkpoint.write_params_dir(out_dir, params, meta, CONFIG_FILE)


def load_params(path) -> tuple[R2Plus1DConfig, str, dict]:
    """-> (model config, kind 'vared'|'dense', params as NumPy arrays)."""
    meta, params = checkpoint.read_params_dir(path, CONFIG_FILE, "a VA-RED²")
    model = R2Plus1DConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["model"].items()})
    return model, meta["kind"], params


def load_init_params(path: str, abstract_params) -> dict:
    """Weights to start from: a dense or VA-RED² `final/`, or a torchvision r2plus1d_18 state dict
    (`.pth`/`.pt`, read with torch's weights-only unpickler). A dense tree gives a VA-RED² network
    its backbone (gates and reconstructions start fresh); a VA-RED² tree gives a dense network its
    backbone; a classifier head of another class count is left fresh. Every other layer must be
    there and fit the model (checked, naming it)."""
    p = pathlib.Path(path)
    if p.suffix in (".pth", ".pt"):
        import torch

        from vared_jax.convert import from_torchvision

        params = from_torchvision(torch.load(p, map_location="cpu", weights_only=True))
    else:
        params = load_params(p)[2]
    params = jax.tree.map(np.asarray, params)
    if not _has_gates(abstract_params):
        params = dense_params(params)
    if "fc" in params and checkpoint.tree_mismatch(params["fc"], abstract_params["fc"]):
        params = {k: v for k, v in params.items() if k != "fc"}  # another class count: a fresh head
    missing = sorted(set(abstract_params) - set(params) - {"fc"})
    mismatch = checkpoint.tree_mismatch(params, abstract_params, partial=True)
    if mismatch or missing:
        raise ConfigError(f"init_from={path!r} does not fit the model: {mismatch or f'no layer {missing[0]}'}")
    return params


def _has_gates(params) -> bool:
    return any(k.startswith("gate_") for layer in params.values() for k in layer)


def _policy(params: dict) -> dict:
    """The gate and reconstruction params of a VA-RED² tree (what `vared.train_backbone=False`
    trains; `dense_params` is the rest)."""
    parts = {name: {k: v for k, v in layer.items() if k.startswith(("gate_", "recon_"))}
             for name, layer in params.items()}
    return {name: layer for name, layer in parts.items() if layer}


def _merge(a: dict, b: dict) -> dict:
    """Two trees with disjoint params per layer (the backbone, the policy) -> the whole tree."""
    return {name: {**a.get(name, {}), **b.get(name, {})} for name in {**a, **b}}


# ---- the task ---------------------------------------------------------------------------------


class ClassifyTask(trainer.Task):
    """Action recognition with the dense R(2+1)D or its VA-RED² version on the config's data."""

    batch_keys = ("video", "label")
    units = {"clips": 1.0}

    def __init__(self, config: ml_collections.ConfigDict, model: R2Plus1DConfig, clip: inputs.Clip):
        self.config, self.model_config, self.clip = config, model, clip
        self.vared = bool(config.vared.enabled)
        self.net = (VaRedR2Plus1D if self.vared else R2Plus1D)(model)
        self.shape = (clip.num_frames, *clip.image_size)  # (T, H, W) of a clip
        self.backbone = None  # vared.train_backbone=False: the fixed backbone; params hold the policy only
        if not config.vared.train_backbone:
            abstract = jax.eval_shape(self._init_all)
            self.backbone = dense_params(load_init_params(config.init_from, abstract))

    def _init_all(self):
        video = jnp.zeros((1, *self.shape, 3), jnp.float32)
        return self.net.init({"params": jax.random.key(self.config.seed)}, video)["params"]

    def init_params(self):
        return self._init_all() if self.backbone is None else _policy(self._init_all())

    def initial_params(self, abstract_params):
        if self.backbone is not None or not self.config.init_from:  # (fresh gates over the fixed backbone)
            return None
        return load_init_params(self.config.init_from, abstract_params)

    def full(self, params):
        """The whole network's parameters: `params`, over the fixed backbone if there is one."""
        return params if self.backbone is None else _merge(self.backbone, params)

    def loss(self, params, batch, rng, step):
        c, metrics = self.config, {}
        if self.vared:
            v = c.vared
            tau = v.tau_start * (v.tau_end / v.tau_start) ** (step / c.total_steps)
            logits, choices = self.net.apply({"params": self.full(params)}, batch["video"], mode="soft", tau=tau,
                                             deterministic=False, rngs={"gumbel": rng})
            flops = jnp.mean(expected_flops(self.model_config, self.shape, choices))
            # "squared" also rewards compute below the budget; "excess" never does (then compute
            # that does not lower the loss, e.g. on a still clip, has a price >= 0)
            over = flops - v.budget if v.flops_penalty == "squared" else jnp.maximum(flops - v.budget, 0.0)
            penalty = v.flops_weight * over ** 2
            metrics = {"flops": flops, "tau": tau}
        else:
            logits, penalty = self.net.apply({"params": params}, batch["video"]), 0.0
        targets = optax.smooth_labels(jax.nn.one_hot(batch["label"], logits.shape[-1]), c.label_smoothing)
        ce = optax.softmax_cross_entropy(logits, targets).mean()
        accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
        return ce + penalty, {"ce": ce, "accuracy": accuracy, **metrics}

    def train_data(self, local_batch, process_index, process_count):
        return inputs.train_iterator(self.config, self.clip, local_batch, process_index, process_count)

    def evaluator(self, mesh, rules, param_shardings):
        step = evaluation.make_eval_step(self.predict, mesh, rules, param_shardings)
        return lambda params: evaluation.multi_view_accuracy(self.config, step, params, mesh, self.clip)

    def predict(self, params, video):
        """video (N, T, H, W, 3) -> {"probs": (N, classes)}; VA-RED² (each gate's argmax) adds per
        clip "flops" (of the chosen branches / dense) and the shares of gated convs that chose a
        temporal / channel reduction, among those where one is available."""
        if not self.vared:
            return {"probs": jax.nn.softmax(self.net.apply({"params": params}, video), -1)}
        logits, choices = self.net.apply({"params": self.full(params)}, video, mode="hard")
        out = {"probs": jax.nn.softmax(logits, -1), "flops": expected_flops(self.model_config, self.shape, choices)}
        _, table = flops_table(self.model_config, self.shape)
        for key, axis, name in (("t", 1, "temporal_reduced"), ("c", 0, "channel_reduced")):
            layers = [n for n, tab in table.items() if np.sum(tab.any(axis=axis)) > 1]
            out[name] = sum(1 - choices[n][key][:, 0] for n in layers) / max(len(layers), 1)
        return out

    def export(self, workdir, params):
        save_params(workdir / "final", self.full(params), self.model_config, self.vared, source=str(workdir))
        return {"final_params": str(workdir / "final")}


def run_spec(config: ml_collections.ConfigDict) -> trainer.RunSpec:
    """The core's settings: parameters replicated (rules=()), the batch split over data x fsdp."""
    return trainer.RunSpec.from_config(config, rules=(), eval_at_end=config.job == "train" and config.eval_at_end)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Run `config.job`; returns the final metrics (and where the parameters are)."""
    model, clip = validate(config)
    workdir = pathlib.Path(workdir)
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    task = ClassifyTask(config, model, clip)
    if config.job == "evaluate":
        return trainer.evaluate(run_spec(config), workdir, task)
    return trainer.run(run_spec(config), workdir, task)[0]
