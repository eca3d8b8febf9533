"""EVEREST's jobs as tasks on the shared training core (`everest_jax.trainer`).

  pretrain   `PretrainTask`: EVEREST or VideoMAE masking, reconstruction loss (optionally with
             information-intensive frame selection inside the step)
  finetune   `FinetuneTask`: classification with token dropping, mixup/cutmix, multi-view
             evaluation; initialised from a pre-training run's encoder or a converted checkpoint
  evaluate   `FinetuneTask` evaluated without training

`validate` checks the whole config before anything is built; `run(config, workdir)` runs the job.
"""

from __future__ import annotations

import pathlib
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from everest_jax import checkpoint, evaluation, inputs, objectives, sharding, trainer
from everest_jax.fields import Float, Int, Is, OneOf, check
from everest_jax.config import ConfigError, ModelConfig
from everest_jax.models import Classifier, PretrainingModel, stack_blocks

JOBS = ("pretrain", "finetune", "evaluate")
_FRACTION = Float(0, 1, hi_open=True)
# Every field of a run config (configs/common.py) but `model` (ModelConfig checks its own): type
# and range, checked before anything is built.
RUN_FIELDS = {
    **trainer.RUN_FIELDS, **inputs.FIELDS, "job": OneOf(JOBS), "total_steps": Int(1), "eval_at_end": Is(bool),
    "normalize_targets": Is(bool), "label_smoothing": _FRACTION, "dataset": Is(str), "method": Is(str),
    "sharding_rules": Is((tuple, list)),  # rules: checked by sharding
    "mixup.mixup_alpha": Float(0), "mixup.cutmix_alpha": Float(0), "mixup.switch_prob": Float(0, 1),
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
    mismatch = checkpoint.tree_mismatch(params, abstract_params)
    if mismatch:
        raise ConfigError(f"init_from={str(path)!r} does not fit the model: {mismatch}")
    return params


# ---- steps ---------------------------------------------------------------------------------


def make_loss_fn(config, model):
    """(params, batch, rng, step) -> (loss, metrics) for the job: reconstruction or (mixed) classification.
    Metrics: 'accuracy' (fine-tuning), 'frame_pairs' (B, tau) under frame selection (not logged)."""
    pretrain = config.job == "pretrain"
    frame_selection = inputs.frame_selection(config)
    mix = config.mixup

    def loss_fn(params, batch, rng, step):
        if pretrain:
            loss, aux = objectives.pretrain_loss(params, model, batch["video"], rng, True, config.normalize_targets,
                                                 frame_selection)
            return loss, {k: aux[k] for k in ("frame_pairs",) if k in aux}
        mix_rng, rng = jax.random.split(rng)
        video, targets = objectives.mixup_cutmix(mix_rng, batch["video"], batch["label"], model.config.num_classes,
                                                 mix.mixup_alpha, mix.cutmix_alpha, mix.switch_prob)
        loss, aux = objectives.classification_loss(params, model, video, targets, rng, True, config.label_smoothing)
        return loss, {"accuracy": aux["accuracy"]}
    return loss_fn


# ---- tasks -------------------------------------------------------------------------------


class PretrainTask(trainer.Task):
    """EVEREST / VideoMAE pre-training of `PretrainingModel` on the config's data."""

    batch_keys = ("video", "label")
    kind = "pretrain"

    def __init__(self, config: ml_collections.ConfigDict, model_config: ModelConfig):
        self.config, self.model_config = config, model_config
        self.model = make_model(config.job, model_config)
        self.init_params = params_initializer(self.model, model_config, config.seed)
        self.loss = make_loss_fn(config, self.model)
        self.encoder_depth = model_config.depth
        tokens = model_config.pretrain_counts[0] if config.job == "pretrain" else model_config.finetune_keep_count
        self.units = {"clips": 1.0, "tokens": float(tokens)}  # tokens: those the encoder sees

    def initial_params(self, abstract_params):
        if not self.config.init_from:
            return None
        return load_init_params(self.config.init_from, self.config.job, self.model_config, abstract_params)

    def train_data(self, local_batch, process_index, process_count):
        return inputs.train_iterator(self.config, self.model_config, local_batch, process_index, process_count)

    def export(self, workdir, params):
        checkpoint.save_params(workdir / "final", params, self.model_config, self.kind, source=str(workdir))
        return {"final_params": str(workdir / "final")}


class FinetuneTask(PretrainTask):
    """Classification (`Classifier`, token dropping at rho) and multi-view evaluation; starts from
    a pre-training checkpoint's encoder (fresh fc_norm and head) or a whole classifier."""

    kind = "classifier"

    def initial_params(self, abstract_params):
        params = super().initial_params(abstract_params)
        if self.config.job == "evaluate" and set(params) != set(abstract_params):
            raise ConfigError(f"init_from={self.config.init_from!r} is a pre-training checkpoint; "
                              "evaluate a fine-tuned one")
        return params

    def evaluator(self, mesh, rules, param_shardings):
        def probs(params, video):
            logits, _ = self.model.apply({"params": params}, video, train=False)
            return {"probs": jax.nn.softmax(logits, axis=-1)}
        step = evaluation.make_eval_step(probs, mesh, rules, param_shardings)
        return lambda params: evaluation.multi_view_accuracy(self.config, step, params, mesh, self.model_config)


def run_spec(config: ml_collections.ConfigDict) -> trainer.RunSpec:
    """The core's settings of a validated run config (fine-tuning evaluates every `eval_every`)."""
    finetune = config.job == "finetune"
    return trainer.RunSpec.from_config(config, eval_every=config.eval_every if finetune else 0,
                                       eval_at_end=finetune and config.eval_at_end)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Run the job named by `config.job`; returns the final metrics (and where the checkpoint is)."""
    model_config = validate(config)
    workdir = pathlib.Path(workdir)
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    task = (PretrainTask if config.job == "pretrain" else FinetuneTask)(config, model_config)
    if config.job == "evaluate":
        return trainer.evaluate(run_spec(config), workdir, task)
    final, _ = trainer.run(run_spec(config), workdir, task)
    return final
