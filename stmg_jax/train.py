"""STMG's two training phases as tasks on the shared core (`everest_jax.trainer`):
`DenseTask` trains the segmentation network, then `GateTask` the gates (mask generators) with
the network frozen. Each phase checkpoints under `<workdir>/checkpoints/{dense,gates}/` and
resumes exactly; parameters are replicated and the batch split over the mesh's data axes (data
parallelism: rules for a conv net, whose parameters carry no logical axis names).

Data (`data.source`): consecutive frame pairs (t-1, t) with frame t's per-pixel labels, from
  synthetic   `everest_jax.data.synthetic.SyntheticVideos` (2 classes: background, moving shape)
  cityscapes  `stmg_jax.data.CityscapesSequences` under `data.root` (19 classes)
  camvid      `stmg_jax.data.CamVidSequences` under `data.root` (11 classes)
Label 255 (`IGNORE`: Cityscapes' unlabelled ids, CamVid's void) is left out of the cross-entropy
and of the confusion matrix / mIoU. Batch `step` is `pairs(data, ...)`, a pure function of
(seed, step), served by a Grain iterator whose position is checkpointed.

Losses (`GateTask.loss`): ce_weight * CE(student logits, labels)
                          + distill_weight * KL(softmax(dense teacher logits) || softmax(student))
                          + budget_weight * (mean cost - budget)^2,
cost = fraction of the gateable blocks' branch FLOPs selected (`masked.masked_forward`); the
teacher is the frozen dense network on frame t. Only the generators' parameters are trained.
"""

from __future__ import annotations

import pathlib
from typing import Any

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from everest_jax import optim, trainer
from everest_jax.fields import Float, Int, Is, OneOf, check, prefixed
from everest_jax.data import SyntheticVideos, normalize_video
from stmg_jax.checkpoint import CheckpointError, load_params, save_params
from stmg_jax.config import ConfigError, SegNetConfig, StreamConfig, check_input_size
from stmg_jax.data import IGNORE, CamVidSequences, CityscapesSequences, pairs_batch
from stmg_jax.generator import init_generators
from stmg_jax.masked import masked_forward
from stmg_jax.metrics import confusion, miou
from stmg_jax.model import SegNet


SOURCES = {"cityscapes": CityscapesSequences, "camvid": CamVidSequences}  # real datasets (data.source)

# Every field of an STMG run config (configs/stmg_*.py) but `net` and `stream` (SegNetConfig and
# StreamConfig check their own): type and range, checked before anything is built.
RUN_FIELDS = {  # log_every 0: no progress lines
    **trainer.RUN_FIELDS, "dense_steps": Int(1), "gate_steps": Int(1),
    "data.source": OneOf(("synthetic", *SOURCES)), "data.root": Is(str), "data.num_examples": Int(1),
    "data.num_eval_examples": Int(1), "data.num_frames": Int(2), "data.image_size": Is((tuple, list)),
    "data.seed": Int(0), "data.camera_pan": Is(bool),
    "gates.budget": Float(0, 1), "gates.ce_weight": Float(0), "gates.distill_weight": Float(0),
    "gates.budget_weight": Float(0), "gates.tau": Float(0, lo_open=True),
    **prefixed("gates.optimizer", optim.FIELDS),
}


def _section(name: str, build, cfg_section) -> Any:
    """Build a dataclass config from its section; its errors name the field as `name.field`."""
    try:
        return build(**cfg_section.to_dict())
    except ConfigError as e:
        raise ConfigError(f"{name}.{e}") from None
    except TypeError as e:  # a field the dataclass does not have
        raise ConfigError(f"{name}: {e}") from None


def net_config(cfg: ml_collections.ConfigDict) -> SegNetConfig:
    return _section("net", SegNetConfig, cfg.net)


def stream_config(cfg: ml_collections.ConfigDict) -> StreamConfig:
    return _section("stream", StreamConfig, cfg.stream)


# -- data -------------------------------------------------------------------------------------
def dataset(cfg: ml_collections.ConfigDict, split: str = "train"):
    """The train or eval source of `data.source` (eval: synthetic seed + 1000003, real: `val`);
    an unknown source or a missing root is a ConfigError, a missing folder a DatasetError."""
    d = cfg.data
    source = d.source
    if source == "synthetic":
        seed = d.seed if split == "train" else d.seed + 1_000_003
        n = d.num_examples if split == "train" else d.num_eval_examples
        return SyntheticVideos(num_examples=n, num_frames=d.num_frames, image_size=tuple(d.image_size),
                               seed=seed, camera_pan=d.camera_pan)
    if source not in SOURCES:
        raise ConfigError(f"data.source={source!r} is not one of synthetic, {', '.join(SOURCES)}")
    if not d.root:
        raise ConfigError(f"data.root must name the {source} folder (data.source={source!r})")
    return SOURCES[source](d.root, "train" if split == "train" else "val", clip_length=2,
                           image_size=tuple(d.image_size))


def pairs(data, batch_size: int, step: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Batch `step` of (t-1, t) pairs from any source: prev, cur (B, H, W, 3), label (B, H, W)."""
    if isinstance(data, SyntheticVideos):
        return frame_pairs(data, batch_size, step, seed)
    return pairs_batch(data, batch_size, step, seed)


def frame_pairs(data: SyntheticVideos, batch_size: int, step: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Batch `step`: prev, cur (B, H, W, 3) float32 normalised; label (B, H, W) int32 (mask at t)."""
    rng = np.random.default_rng((seed, step))
    idx = rng.integers(len(data), size=batch_size)
    ts = rng.integers(1, data.num_frames, size=batch_size)
    ex = [data[int(i)] for i in idx]
    video = np.stack([e["video"][t - 1:t + 1] for e, t in zip(ex, ts)])  # (B, 2, H, W, 3)
    video = normalize_video(video)
    return {"prev": video[:, 0], "cur": video[:, 1],
            "label": np.stack([e["mask"][t] for e, t in zip(ex, ts)]).astype(np.int32)}


# -- losses and metrics -----------------------------------------------------------------------
def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean per-pixel CE over the labelled pixels; logits (B, H, W, K), labels (B, H, W) int with
    255 (`IGNORE`) = unlabelled. 0 when no pixel is labelled."""
    valid = labels != IGNORE
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(valid, labels, 0))
    return jnp.sum(jnp.where(valid, ce, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def distillation(student: jax.Array, teacher: jax.Array) -> jax.Array:
    """Mean per-pixel KL(softmax(teacher) || softmax(student))."""
    t = jax.nn.log_softmax(teacher)
    return jnp.mean(jnp.sum(jnp.exp(t) * (t - jax.nn.log_softmax(student)), axis=-1))


# -- tasks ------------------------------------------------------------------------------------
def phase_spec(cfg: ml_collections.ConfigDict, phase: str) -> trainer.RunSpec:
    """The core's settings of phase 'dense' or 'gates' (gates: its own steps, optimizer, seed + 2)."""
    dense = phase == "dense"
    return trainer.RunSpec.from_config(
        cfg, total_steps=cfg.dense_steps if dense else cfg.gate_steps, seed=cfg.seed if dense else cfg.seed + 2,
        optimizer=optim.OptimizerConfig.from_section(cfg.optimizer if dense else cfg.gates.optimizer),
        rules=(), tag=phase)


def train_batches(cfg: ml_collections.ConfigDict, local_batch: int, process_index: int):
    """Endless local batches: this process's rows of `pairs(train data, batch_size, step)`."""
    data = dataset(cfg, "train")
    lo = process_index * local_batch

    def batch(step):
        return {k: v[lo:lo + local_batch] for k, v in pairs(data, cfg.batch_size, step, cfg.data.seed).items()}
    return iter(grain.MapDataset.range(1 << 62).map(batch).to_iter_dataset(
        grain.ReadOptions(num_threads=1, prefetch_buffer_size=2)))


def make_evaluator(cfg: ml_collections.ConfigDict, num_batches: int = 4):
    """-> evaluate(net_vars, gen_vars=None): mIoU (%) of the dense network and, with `gen_vars`, of
    STMG's masked forward in eval mode (no noise, the streaming thresholds) on held-out frame pairs,
    with STMG's mean cost fraction and its agreement with the dense network. Compiled once."""
    net_cfg, stream_cfg = net_config(cfg), stream_config(cfg)
    data = dataset(cfg, "eval")
    k = net_cfg.num_classes

    @jax.jit
    def run(net_vars, gen_vars, batch):
        dense = SegNet(net_cfg).apply(net_vars, batch["cur"])
        out = {"dense": confusion(dense, batch["label"], k)}
        if gen_vars is not None:
            logits, aux = masked_forward(net_cfg, stream_cfg, {"net": net_vars, "gen": gen_vars},
                                         batch["prev"], batch["cur"])
            out.update(stmg=confusion(logits, batch["label"], k), cost=jnp.mean(aux["cost"]),
                       agreement=jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(dense, -1)))
        return out

    def evaluate(net_vars, gen_vars=None) -> dict[str, float]:
        acc: dict[str, Any] = {}
        for b in range(num_batches):
            for key, v in run(net_vars, gen_vars, pairs(data, cfg.batch_size, b, cfg.data.seed + 7)).items():
                acc[key] = acc.get(key, 0) + np.asarray(v)
        result = {"dense_miou": miou(acc["dense"])}
        if gen_vars is not None:
            result.update(stmg_miou=miou(acc["stmg"]), cost=float(acc["cost"]) / num_batches,
                          agreement=float(acc["agreement"]) / num_batches)
        return result
    return evaluate


class DenseTask(trainer.Task):
    """Phase 1: the segmentation network, per-pixel cross-entropy on frame t; exports `dense/`."""

    batch_keys = ("cur", "label")
    units = {"frames": 1.0}

    def __init__(self, cfg: ml_collections.ConfigDict):
        self.cfg, self.net_cfg, self.stream_cfg = cfg, net_config(cfg), stream_config(cfg)

    def init_params(self):
        hw = tuple(self.cfg.data.image_size)
        return SegNet(self.net_cfg).init(jax.random.key(self.cfg.seed), jnp.zeros((1, *hw, 3)))["params"]

    def loss(self, params, batch, rng, step):
        return cross_entropy(SegNet(self.net_cfg).apply({"params": params}, batch["cur"]), batch["label"]), {}

    def train_data(self, local_batch, process_index, process_count):
        return train_batches(self.cfg, local_batch, process_index)

    def evaluator(self, mesh, rules, param_shardings):
        evaluate = make_evaluator(self.cfg)
        return lambda params: evaluate({"params": params})

    def export(self, workdir, params):
        save_params(workdir / "dense", {"net": {"params": params}}, self.net_cfg)
        return {}


class GateTask(DenseTask):
    """Phase 2: the mask generators on frame pairs, the network (`net_vars`) frozen; exports `final/`."""

    batch_keys = ("prev", "cur", "label")

    def __init__(self, cfg: ml_collections.ConfigDict, net_vars: Any):
        super().__init__(cfg)
        self.net_vars = net_vars

    def init_params(self):
        return init_generators(jax.random.key(self.cfg.seed + 1), self.net_cfg, self.stream_cfg)

    def loss(self, params, batch, rng, step):
        g = self.cfg.gates
        teacher = jax.lax.stop_gradient(SegNet(self.net_cfg).apply(self.net_vars, batch["cur"]))
        logits, aux = masked_forward(self.net_cfg, self.stream_cfg, {"net": self.net_vars, "gen": params},
                                     batch["prev"], batch["cur"], key=rng, tau=g.tau)
        ce, kl = cross_entropy(logits, batch["label"]), distillation(logits, teacher)
        cost = jnp.mean(aux["cost"])
        loss = g.ce_weight * ce + g.distill_weight * kl + g.budget_weight * (cost - g.budget) ** 2
        return loss, {"ce": ce, "distill": kl, "cost": cost}

    def evaluator(self, mesh, rules, param_shardings):
        evaluate = make_evaluator(self.cfg)
        return lambda params: evaluate(self.net_vars, params)

    def export(self, workdir, params):
        save_params(workdir / "final", {"net": self.net_vars, "gen": params}, self.net_cfg, self.stream_cfg)
        return {"final_params": str(workdir / "final")}


def check_config(cfg) -> None:
    """Build the dataclass configs, check the data size against the stream's bin grids and, for a
    real dataset, its class count and folders (a missing one is a `DatasetError` naming it),
    all before anything is compiled."""
    check(cfg, RUN_FIELDS, whole=("net", "stream"))
    stream = stream_config(cfg)
    net = net_config(cfg)
    h, w = cfg.data.image_size
    check_input_size(h, w, stream, field="data.image_size")
    if cfg.batch_size % max(1, cfg.mesh.data * cfg.mesh.fsdp) and cfg.mesh.data > 0:
        raise ConfigError(f"batch_size={cfg.batch_size} is not divisible by the mesh's data axes")
    source = cfg.data.source
    if source == "synthetic":
        return
    for split in ("train", "eval"):
        data = dataset(cfg, split)
        if data.num_classes != net.num_classes:
            raise ConfigError(f"net.num_classes={net.num_classes} but data.source={source!r} has "
                              f"{data.num_classes} classes")


def run(cfg, workdir: str, log=print) -> dict:
    """Both phases on the shared trainer core (each resumes from its checkpoints after a kill);
    returns the final evaluation (dense/STMG mIoU, cost, agreement)."""
    check_config(cfg)
    work = pathlib.Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(cfg.to_json_best_effort(indent=2))
    if cfg.init_from:
        net, _, params = load_params(cfg.init_from)
        if net != net_config(cfg):
            raise CheckpointError(f"{cfg.init_from}: network {net} differs from config.net {net_config(cfg)}")
        net_vars = params["net"]
    else:
        result, params = trainer.run(phase_spec(cfg, "dense"), work, DenseTask(cfg))
        log(f"dense eval: dense_miou={result['dense_miou']:.4g}")
        net_vars = {"params": params}
    result, _ = trainer.run(phase_spec(cfg, "gates"), work, GateTask(cfg, net_vars))
    result = {k: result[k] for k in ("dense_miou", "stmg_miou", "cost", "agreement", "final_params")}
    log("STMG eval: " + ", ".join(f"{k}={v:.4g}" for k, v in result.items() if k != "final_params"))
    return result
