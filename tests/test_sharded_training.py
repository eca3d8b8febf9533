"""Sharded training agrees with the single-device run on data, FSDP and tensor-parallel meshes."""

import grain
import jax
import numpy as np
import pytest

from configs import quickstart
from everest_jax import sharding, train, trainer
from everest_jax.config import ModelConfig
from everest_jax.train_state import bytes_per_device

MESHES = {
    "1": dict(data=1, fsdp=1, tensor=1),
    "8x1": dict(data=8, fsdp=1, tensor=1),
    "2x4": dict(data=2, fsdp=4, tensor=1),
    "2x2x2": dict(data=2, fsdp=2, tensor=2),
}
STEPS = 3


def config_for(job):
    c = quickstart.get_config(f"job={job}")
    c.batch_size = 8
    c.total_steps = 10
    c.warmup_steps = 0
    c.optimizer.base_lr = 0.128  # lr 4e-3 at batch 8: updates far larger than rounding noise
    # width 64 / heads 4 / mlp 256: divisible by the 2- and 4-way splits
    c.model.num_heads = 4
    return c


def setup(config, mesh_config):
    model_config = ModelConfig.from_dict(config.model.to_dict())
    devices = jax.devices()[: int(np.prod(list(mesh_config.values())))]
    mesh = sharding.make_mesh(mesh_config, devices)
    task = (train.PretrainTask if config.job == "pretrain" else train.FinetuneTask)(config, model_config)
    spec = train.run_spec(config)
    rules = spec.rules
    parts = trainer.setup(spec, task, mesh)  # the trainer core's step
    state, step, shardings, loss_fn = parts.fresh_state(task, mesh, rules), parts.train_step, parts.shardings, task.loss

    def grads(params, batch, rng):
        with jax.set_mesh(mesh), __import__("flax").linen.logical_axis_rules(rules):
            return jax.jit(jax.grad(lambda p: loss_fn(p, batch, rng, 0)[0]), out_shardings=shardings.params)(params)
    return mesh, state, step, grads


def batches(config, n):
    rng = np.random.default_rng(0)
    m = config.model
    return [{"video": rng.normal(size=(config.batch_size, m.num_frames, *m.image_size, 3)).astype(np.float32),
             "label": rng.integers(0, 4, config.batch_size).astype(np.int32)} for _ in range(n)]


def run_steps(config, mesh_config):
    mesh, state, step, grads = setup(config, mesh_config)
    data = batches(config, STEPS)
    first = sharding.global_batch(data[0], mesh, config.batch_size)
    g0 = jax.device_get(grads(state.params, first, jax.random.key(7)))
    p0 = jax.device_get(state.params)
    losses = []
    for batch in data:
        state, metrics = step(state, sharding.global_batch(batch, mesh, config.batch_size))
        losses.append(float(metrics["loss"]))
    return losses, g0, p0, jax.device_get(state.params)


@pytest.fixture(scope="module", params=["pretrain", "finetune"])
def reference(request):
    config = config_for(request.param)
    return config, run_steps(config, MESHES["1"])


@pytest.mark.parametrize("mesh_name", ["8x1", "2x4", "2x2x2"])
def test_sharded_steps_match_single_device(reference, mesh_name):
    config, (losses, grads, init, params) = reference
    losses2, grads2, init2, params2 = run_steps(config, MESHES[mesh_name])
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), init2, init)  # same initialisation
    np.testing.assert_allclose(losses2, losses, atol=1e-5, rtol=0)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=0), grads2, grads)
    # Parameters after 3 Adam steps: Adam divides by sqrt(v) + eps, so where a gradient is ~0 a
    # 1e-7 difference in reduction order can move a parameter by a sizeable part of lr (4e-3).
    # 5e-4 (an eighth of one step) is far above float32 noise (3.8e-5 seen) and far below the
    # parameters' movement, which is checked too.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=5e-4, rtol=0), params2, params)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(params2), jax.tree.leaves(init)))
    assert moved > 10 * 5e-4


def test_fsdp_holds_a_quarter_of_the_parameters_and_optimizer_state_per_device():
    config = config_for("pretrain")
    config.model.width = 256  # large enough that replicated scalars and norms do not matter
    _, replicated, _, _ = setup(config, MESHES["8x1"])
    _, fsdp, _, _ = setup(config, MESHES["2x4"])
    rep = bytes_per_device(replicated)
    shard = bytes_per_device(fsdp)
    ratio = max(shard.values()) / max(rep.values())
    assert abs(ratio - 0.25) < 0.02, ratio


def test_checkpoint_restores_onto_another_mesh_and_device_count(tmp_path):
    """A state saved from a 2x4 FSDP mesh restores bit for bit onto a 2x2x2 (tensor-parallel)
    mesh and onto a single device, each with the target's shardings, and training continues there as
    it would have on the original mesh."""
    from everest_jax.checkpoint import TrainCheckpointer

    config = config_for("pretrain")
    data = batches(config, 2)
    mesh, state, step, _ = setup(config, MESHES["2x4"])
    state, _ = step(state, sharding.global_batch(data[0], mesh, config.batch_size))
    ckpt = TrainCheckpointer(tmp_path / "ckpt", every_steps=1, keep=1, async_save=False)
    ckpt.save(1, state, iter(grain.MapDataset.range(4).to_iter_dataset()))
    ckpt.close()
    saved = jax.device_get(state)
    state, metrics = step(state, sharding.global_batch(data[1], mesh, config.batch_size))
    expected_loss, expected = float(metrics["loss"]), jax.device_get(state.params)

    for name in ("2x2x2", "1"):
        target_mesh, target, target_step, _ = setup(config, MESHES[name])
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), target)
        restored = TrainCheckpointer(tmp_path / "ckpt", every_steps=1, keep=1).restore_state(1, abstract)
        jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), saved)
        for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(target)):
            assert got.sharding.is_equivalent_to(want.sharding, got.ndim), name
        assert int(restored.step) == 1
        restored, metrics = target_step(restored, sharding.global_batch(data[1], target_mesh, config.batch_size))
        np.testing.assert_allclose(float(metrics["loss"]), expected_loss, atol=1e-5)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=5e-4, rtol=0),
                     jax.device_get(restored.params), expected)
