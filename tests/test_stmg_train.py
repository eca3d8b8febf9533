"""STMG gate training: straight-through Gumbel-sigmoid, masked compute semantics, losses, metrics,
and a few gate-training steps that move the FLOPs cost toward the budget."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.stmg_synthetic import get_config
from stmg_jax.config import SegNetConfig, StreamConfig
from stmg_jax.generator import init_generators
from stmg_jax.masked import gumbel_sigmoid_st, masked_forward
from stmg_jax.model import SegNet
from stmg_jax.testing import random_net_variables
from stmg_jax.metrics import confusion, miou
from everest_jax import trainer
from stmg_jax.train import GateTask, dataset, distillation, frame_pairs, phase_spec

NET = SegNetConfig(num_classes=3, widths=(16, 32, 64, 128), decoder_width=32)
STREAM = StreamConfig(bin_grid=((4, 4), (4, 4), (2, 2), (1, 1)))
HW = (64, 64)
GATED = ["block_0", "block_1", "block_3", "block_5", "block_7"]
BINS = {"block_0": 16, "block_1": 16, "block_3": 16, "block_5": 4, "block_7": 1}


def test_gumbel_sigmoid_straight_through():
    logits = jnp.asarray([-3.0, -0.1, 0.1, 3.0])
    hard = gumbel_sigmoid_st(logits, None)
    np.testing.assert_array_equal(hard, [0, 0, 1, 1])             # forward: hard threshold
    grad = jax.grad(lambda l: jnp.sum(gumbel_sigmoid_st(l, None, tau=2.0)))(logits)
    s = jax.nn.sigmoid(logits / 2.0)
    np.testing.assert_allclose(grad, s * (1 - s) / 2.0, rtol=1e-5)  # backward: d sigmoid(l / tau)
    # with noise: still exactly 0/1, and P(1) = sigmoid(logit) for the logistic noise
    samples = gumbel_sigmoid_st(jnp.full((20000,), 1.0), jax.random.key(0))
    assert set(np.unique(np.asarray(samples)).tolist()) <= {0.0, 1.0}
    assert abs(float(samples.mean()) - float(jax.nn.sigmoid(1.0))) < 0.015
    assert float(gumbel_sigmoid_st(jnp.asarray(0.4), None, threshold=0.7)) == 0.0


def test_masked_forward_semantics():
    """masks 1: the dense network on the current frame; masks 0 on a changed frame: the previous
    frame's branch outputs reused (differs from dense); masks 0 on the same frame: dense."""
    params = {"net": random_net_variables(NET, HW, seed=1),
              "gen": init_generators(jax.random.key(0), NET, STREAM)}
    rng = np.random.default_rng(0)
    prev = jnp.asarray(rng.normal(size=(2, *HW, 3)).astype(np.float32))
    cur = prev.at[:, 20:40, 10:30].add(1.0)

    @jax.jit
    def run(p, a, b, value):
        masks = {k: jnp.full((2, n), value) for k, n in BINS.items()}
        return masked_forward(NET, STREAM, p, a, b, masks=masks)

    dense = jax.jit(SegNet(NET).apply)
    ones, aux = run(params, prev, cur, 1.0)
    np.testing.assert_allclose(ones, dense(params["net"], cur), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(aux["cost"], [1.0, 1.0], rtol=1e-6)
    zeros, aux = run(params, prev, cur, 0.0)
    assert float(jnp.max(jnp.abs(zeros - dense(params["net"], cur)))) > 1e-2
    np.testing.assert_allclose(aux["cost"], [0.0, 0.0])
    same, _ = run(params, cur, cur, 0.0)
    np.testing.assert_allclose(same, dense(params["net"], cur), atol=1e-5, rtol=1e-5)
    # generator decisions (no override): hard 0/1 masks of shape (B, bins), probabilities in (0, 1)
    _, aux = jax.jit(lambda p, a, b: masked_forward(NET, STREAM, p, a, b, key=jax.random.key(3)))(params, prev, cur)
    for name in GATED:
        m = np.asarray(aux["masks"][name])
        assert m.shape == (2, BINS[name]) and set(np.unique(m).tolist()) <= {0.0, 1.0}
        assert aux["gate_prob"][name].shape == (2,)


def test_losses_and_miou():
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4, 3)).astype(np.float32))
    assert float(distillation(logits, logits)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation(logits, -logits)) > 0.1
    labels = jnp.argmax(logits, -1)
    conf = np.asarray(confusion(logits, labels, 3))
    assert conf.sum() == 32 and np.trace(conf) == 32 and miou(conf) == pytest.approx(100.0)
    # hand case: class 0 IoU 1/2, class 1 IoU 1/2 (one pixel of 0 predicted as 1)
    assert miou(np.asarray([[1, 1], [0, 1]])) == pytest.approx(50.0)
    assert miou(np.asarray([[2, 0, 0], [0, 0, 0], [0, 0, 2]])) == pytest.approx(100.0)  # absent class ignored


def test_frame_pairs_are_consecutive_frames_with_masks():
    cfg = get_config()
    cfg.data.num_examples, cfg.data.image_size = 8, (64, 64)
    data = dataset(cfg)
    b = frame_pairs(data, 3, step=5)
    assert b["prev"].shape == b["cur"].shape == (3, 64, 64, 3) and b["label"].shape == (3, 64, 64)
    assert set(np.unique(b["label"]).tolist()) <= {0, 1} and b["label"].sum() > 0
    again = frame_pairs(data, 3, step=5)
    np.testing.assert_array_equal(again["cur"], b["cur"])  # a pure function of (seed, step)
    assert np.abs(b["cur"] - b["prev"]).mean() > 0     # the shape moved between t-1 and t


def test_gate_training_moves_cost_to_the_budget(tmp_path):
    """Only the budget term: a few steps of the gate phase on the trainer core push the selected
    FLOPs fraction down toward 0."""
    cfg = get_config()
    cfg.net.num_classes = 2
    cfg.data.num_examples, cfg.batch_size, cfg.gate_steps, cfg.log_every = 32, 4, 8, 1
    cfg.gates.update(budget=0.0, ce_weight=0.0, distill_weight=0.0, budget_weight=10.0)
    cfg.warmup_steps = 1
    cfg.gates.optimizer.base_lr = 2.56  # lr 0.04 at batch 4
    cfg.checkpoint.async_save = False
    net_vars = random_net_variables(SegNetConfig(**cfg.net.to_dict()), (64, 64), seed=2)
    task = GateTask(cfg, net_vars)
    before = jax.tree.map(np.asarray, jax.jit(task.init_params)())
    final, after = trainer.run(phase_spec(cfg, "gates"), tmp_path, task)
    costs = [m["cost"] for m in map(json.loads, open(tmp_path / "metrics.jsonl")) if "cost" in m and "loss" in m]
    assert len(costs) == 8 and final["step"] == 8
    assert costs[0] > 0.2, costs
    assert np.mean(costs[-3:]) < 0.5 * costs[0], costs
    # the generators' thresholds moved (gradients flow through the straight-through gates)
    assert float(after["block_0"]["params"]["bin_threshold"]) > float(before["block_0"]["params"]["bin_threshold"])
    assert (tmp_path / "final" / "stmg.json").exists()


def test_cli_config_checks_name_the_field():
    from stmg_jax.config import ConfigError
    from stmg_jax.train import check_config
    cfg = get_config()
    check_config(cfg)  # the shipped config is valid
    cfg.data.image_size = (64, 80)
    with pytest.raises(ConfigError, match="data.image_size width 80"):
        check_config(cfg)
    cfg = get_config()
    cfg.stream.bin_grid = (8, 8)
    with pytest.raises(ConfigError, match=r"bin_grid\[2\]=\(8, 8\)"):
        check_config(cfg)


def test_synthetic_config_network_argument():
    """configs/stmg_synthetic.py:side=S,network=N: the quarter-width CPU network by default, the
    full-width ResNet-18 + SwiftNet-128 decoder with network=resnet18; anything else is refused."""
    from stmg_jax.train import check_config
    small, full = get_config("side=128"), get_config("side=128,network=resnet18")
    assert tuple(small.net.widths) == (16, 32, 64, 128) and small.net.decoder_width == 32
    assert tuple(full.net.widths) == (64, 128, 256, 512) and full.net.decoder_width == 128
    assert tuple(full.data.image_size) == (128, 128) and full.stream.bin_grid == small.stream.bin_grid
    check_config(full)
    for bad, match in (("side=128,network=resnet50", "network one of"), ("side=96", "side must be"),
                       ("big=1", "unknown config argument 'big'"), ("side=x", "invalid literal")):
        with pytest.raises(ValueError, match=match):
            get_config(bad)
