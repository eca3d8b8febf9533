"""Training STMG: the dense network first, then the gates (mask generators) with the network frozen.

Reused from `everest_jax`: `train_state.TrainState` / `create_sharded_state` (the state is created
on the config's mesh; STMG's parameters carry no logical axis names, so they are replicated and
the batch is split over the mesh's data axes: plain data parallelism), `optim.make_optimizer` /
`learning_rate_schedule` (AdamW, warmup + cosine, lr scaled by batch / 256, no decay on
scales/biases) and `sharding.make_mesh` / `batch_sharding`.

Data (`data.source`): consecutive frame pairs (t-1, t) with frame t's per-pixel labels, from
  synthetic   `everest_jax.data.synthetic.SyntheticVideos` (2 classes: background, moving shape)
  cityscapes  `stmg_jax.data.CityscapesSequences` under `data.root` (19 classes)
  camvid      `stmg_jax.data.CamVidSequences` under `data.root` (11 classes)
Label 255 (`IGNORE`: Cityscapes' unlabelled ids, CamVid's void) is left out of the cross-entropy
and of the confusion matrix / mIoU. `pairs(data, ...)` is a pure function of (seed, step), so a
run's batches do not depend on anything else.

Losses (`gate_loss`): ce_weight * CE(student logits, labels)
                      + distill_weight * KL(softmax(dense teacher logits) || softmax(student))
                      + budget_weight * (mean cost - budget)^2,
cost = fraction of the gateable blocks' branch FLOPs selected (`masked.masked_forward`); the
teacher is the frozen dense network on frame t. Only the generators' parameters are trained.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from everest_jax import optim, sharding
from everest_jax.fields import Float, Int, Is, OneOf, check, prefixed
from everest_jax.data import SyntheticVideos, normalize_video
from everest_jax.train_state import TrainState, create_sharded_state
from stmg_jax.config import ConfigError, SegNetConfig, StreamConfig
from stmg_jax.data import IGNORE, CamVidSequences, CityscapesSequences, pairs_batch
from stmg_jax.generator import init_generators
from stmg_jax.masked import masked_forward
from stmg_jax.metrics import confusion, miou
from stmg_jax.model import SegNet


SOURCES = {"cityscapes": CityscapesSequences, "camvid": CamVidSequences}  # real datasets (data.source)

# Every field of an STMG run config (configs/stmg_*.py) but `net` and `stream` (SegNetConfig and
# StreamConfig check their own): type and range, checked before anything is built.
RUN_FIELDS = {  # log_every 0: no progress lines
    "seed": Int(0), "init_from": Is(str), "log_every": Int(0), "batch_size": Int(1), "dense_steps": Int(1),
    "gate_steps": Int(1), "warmup_steps": Int(0),
    "data.source": OneOf(("synthetic", *SOURCES)), "data.root": Is(str), "data.num_examples": Int(1),
    "data.num_eval_examples": Int(1), "data.num_frames": Int(2), "data.image_size": Is((tuple, list)),
    "data.seed": Int(0), "data.camera_pan": Is(bool),
    "gates.budget": Float(0, 1), "gates.ce_weight": Float(0), "gates.distill_weight": Float(0),
    "gates.budget_weight": Float(0), "gates.tau": Float(0, lo_open=True),
    **prefixed("optimizer", optim.FIELDS), **prefixed("gates.optimizer", optim.FIELDS),
    **prefixed("mesh", sharding.MESH_FIELDS),
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


# -- states and steps -------------------------------------------------------------------------
@dataclasses.dataclass
class Trainer:
    """Builds the optimizer, the state and the jitted steps for one phase ('dense' or 'gates')."""

    cfg: ml_collections.ConfigDict
    phase: str
    net_vars: Any = None  # frozen network variables (phase 'gates')

    def __post_init__(self):
        cfg = self.cfg
        self.net_cfg, self.stream_cfg = net_config(cfg), stream_config(cfg)
        self.mesh = sharding.make_mesh(cfg.mesh.to_dict())
        self.steps = cfg.dense_steps if self.phase == "dense" else cfg.gate_steps
        self._data = {}
        hw = tuple(cfg.data.image_size)
        if self.phase == "dense":
            init = lambda: SegNet(self.net_cfg).init(jax.random.key(cfg.seed), jnp.zeros((1, *hw, 3)))["params"]
            opt_cfg = cfg.optimizer
        else:
            init = lambda: init_generators(jax.random.key(cfg.seed + 1), self.net_cfg, self.stream_cfg)
            opt_cfg = cfg.gates.optimizer
        schedule = optim.learning_rate_schedule(opt_cfg, cfg.batch_size, self.steps, cfg.warmup_steps)
        abstract = jax.eval_shape(init)
        self.tx = optim.make_optimizer(opt_cfg, abstract, schedule, encoder_depth=0)
        self.state, self.shardings = create_sharded_state(init, self.tx, self.mesh, sharding.DEFAULT_RULES)
        self.train_step = jax.jit(self._dense_step if self.phase == "dense" else self._gate_step,
                                  donate_argnums=0)

    def batch(self, step: int, split: str = "train") -> dict[str, jax.Array]:
        if split not in self._data:
            self._data[split] = dataset(self.cfg, split)
        b = pairs(self._data[split], self.cfg.batch_size, step, self.cfg.data.seed + (0 if split == "train" else 7))
        return {k: jax.device_put(v, sharding.batch_sharding(self.mesh, v.ndim)) for k, v in b.items()}

    def _apply_grads(self, state: TrainState, grads) -> TrainState:
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        return state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                             opt_state=opt_state)

    def _dense_step(self, state: TrainState, batch):
        def loss_fn(p):
            return cross_entropy(SegNet(self.net_cfg).apply({"params": p}, batch["cur"]), batch["label"])
        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return self._apply_grads(state, grads), {"loss": loss}

    def _gate_step(self, state: TrainState, batch):
        g = self.cfg.gates
        teacher = jax.lax.stop_gradient(SegNet(self.net_cfg).apply(self.net_vars, batch["cur"]))
        key = jax.random.fold_in(jax.random.key(self.cfg.seed + 2), state.step)

        def loss_fn(p):
            logits, aux = masked_forward(self.net_cfg, self.stream_cfg, {"net": self.net_vars, "gen": p},
                                         batch["prev"], batch["cur"], key=key, tau=g.tau)
            ce, kl = cross_entropy(logits, batch["label"]), distillation(logits, teacher)
            cost = jnp.mean(aux["cost"])
            loss = g.ce_weight * ce + g.distill_weight * kl + g.budget_weight * (cost - g.budget) ** 2
            return loss, {"loss": loss, "ce": ce, "distill": kl, "cost": cost}
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        return self._apply_grads(state, grads), metrics

    def fit(self, log_every: int = 0, log=print) -> list[dict[str, float]]:
        history = []
        for step in range(self.steps):
            self.state, metrics = self.train_step(self.state, self.batch(step))
            metrics = {k: float(v) for k, v in metrics.items()}
            history.append(metrics)
            if log_every and (step % log_every == 0 or step == self.steps - 1):
                log(f"[{self.phase}] step {step} " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        return history


def evaluate(cfg: ml_collections.ConfigDict, net_vars, gen_vars=None, num_batches: int = 4) -> dict[str, float]:
    """mIoU (%) of the dense network and, with `gen_vars`, of STMG's masked forward in eval mode
    (no noise, the streaming thresholds) on held-out frame pairs, plus STMG's mean cost fraction."""
    net_cfg, stream_cfg = net_config(cfg), stream_config(cfg)
    data = dataset(cfg, "eval")
    k = net_cfg.num_classes

    @jax.jit
    def run(batch):
        dense = SegNet(net_cfg).apply(net_vars, batch["cur"])
        out = {"dense": confusion(dense, batch["label"], k)}
        if gen_vars is not None:
            logits, aux = masked_forward(net_cfg, stream_cfg, {"net": net_vars, "gen": gen_vars},
                                         batch["prev"], batch["cur"])
            out.update(stmg=confusion(logits, batch["label"], k), cost=jnp.mean(aux["cost"]),
                       agreement=jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(dense, -1)))
        return out

    acc: dict[str, Any] = {}
    for b in range(num_batches):
        out = run(pairs(data, cfg.batch_size, b, cfg.data.seed + 7))
        for key, v in out.items():
            acc[key] = acc.get(key, 0) + np.asarray(v)
    result = {"dense_miou": miou(acc["dense"])}
    if gen_vars is not None:
        result.update(stmg_miou=miou(acc["stmg"]), cost=float(acc["cost"]) / num_batches,
                      agreement=float(acc["agreement"]) / num_batches)
    return result
