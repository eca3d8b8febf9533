"""Model options: layouts (scan/remat), compute dtype, drop path, logical axes, shapes."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from everest_jax import ModelConfig, objectives
from everest_jax.models import Classifier, PretrainingModel, sincos_table, stack_blocks

BASE = ModelConfig(size="tiny", num_frames=8, image_size=(32, 48), patch_size=8, num_classes=3)


def video(config, batch=2, seed=0):
    return jax.random.normal(jax.random.key(seed), (batch, config.num_frames, *config.image_size, 3))


def init(model, v):
    return nn.unbox(model.init({"params": jax.random.key(1), "masking": jax.random.key(2)}, v))["params"]


def test_sincos_table_matches_the_formula():
    table = sincos_table(10, 6)
    pos, j = 7, 3  # odd j: cos(pos / 10000^(2*1/6))
    assert table.shape == (10, 6)
    np.testing.assert_allclose(table[pos, j], np.cos(pos / 10000 ** (2 / 6)), rtol=1e-6)
    np.testing.assert_allclose(table[pos, 2], np.sin(pos / 10000 ** (2 / 6)), rtol=1e-6)
    np.testing.assert_allclose(table[0, 1::2], 1.0)


@pytest.mark.parametrize("masking", ["everest", "tube", "random"])
def test_pretraining_shapes_for_a_non_square_clip(masking):
    config = dataclasses.replace(BASE, masking=masking)
    v = video(config)
    model = PretrainingModel(config)
    pred, aux = model.apply({"params": init(model, v)}, v, rngs={"masking": jax.random.key(0)})
    visible, targets = config.pretrain_counts
    assert config.grid == (4, 4, 6) and config.num_tokens == 96
    assert pred.shape == (2, targets, 2 * 8 * 8 * 3)
    assert aux["visible_idx"].shape == (2, visible) and aux["target_idx"].shape == (2, targets)


def test_scan_and_remat_give_the_same_loss_and_gradients():
    config = dataclasses.replace(BASE, depth=3, drop_path=0.0)
    v = video(config)
    model = PretrainingModel(config)
    params = init(model, v)
    rng = jax.random.key(5)
    grad_fn = jax.value_and_grad(lambda p, m: objectives.pretrain_loss(p, m, v, rng)[0])
    loss, grads = grad_fn(params, model)
    for scan, remat in [(True, False), (False, True), (True, True)]:
        other = PretrainingModel(dataclasses.replace(config, scan=scan, remat=remat))
        p = stack_blocks(params) if scan else params
        loss2, grads2 = grad_fn(p, other)
        np.testing.assert_allclose(loss2, loss, rtol=1e-6)
        want = stack_blocks(grads) if scan else grads
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5), grads2, want)


def test_bfloat16_compute_keeps_float32_params_and_stays_close():
    config = dataclasses.replace(BASE, finetune_keep_ratio=1.0)
    v = video(config)
    params = init(Classifier(config), v)
    params = jax.tree.map(lambda x: x * 0 + jax.random.normal(jax.random.key(x.size), x.shape) * 0.1, params)
    bf16 = Classifier(dataclasses.replace(config, dtype="bfloat16"))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(init(bf16, v)))
    a, _ = Classifier(config).apply({"params": params}, v)
    b, _ = bf16.apply({"params": params}, v)
    assert b.dtype == jnp.float32
    assert np.abs(np.asarray(a) - np.asarray(b)).max() < 0.05 * np.abs(np.asarray(a)).max() + 1e-3
    assert not np.allclose(a, b, atol=1e-7)  # the compute really ran in bfloat16


def test_drop_path_is_random_in_training_and_off_in_evaluation():
    config = dataclasses.replace(BASE, drop_path=0.5, depth=4, finetune_keep_ratio=1.0)
    v = video(config, batch=4)
    model = Classifier(config)
    params = init(model, v)
    params = jax.tree.map(lambda x: x + 0.05 * jax.random.normal(jax.random.key(x.size), x.shape), params)

    def run(train, seed):
        return np.asarray(model.apply({"params": params}, v, train=train, rngs={"dropout": jax.random.key(seed)})[0])

    assert not np.allclose(run(True, 0), run(True, 1))
    np.testing.assert_array_equal(run(False, 0), run(False, 1))


def test_parameters_carry_logical_axes_that_map_to_a_mesh():
    model = PretrainingModel(BASE)
    v = video(BASE)
    boxed = jax.eval_shape(lambda: model.init({"params": jax.random.key(1), "masking": jax.random.key(2)}, v))
    specs = nn.get_partition_spec(boxed)["params"]
    attn = specs["encoder"]["transformer"]["block_0"]["attn"]
    assert attn["query"]["kernel"] == P("embed", "heads", "kv")
    assert attn["out"]["kernel"] == P("heads", "kv", "embed")
    assert specs["encoder"]["transformer"]["block_0"]["mlp"]["fc1"]["kernel"] == P("embed", "mlp")
    rules = (("embed", "fsdp"), ("heads", "tensor"), ("mlp", "tensor"), ("kv", None), ("norm", None))
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"))
    shardings = nn.logical_to_mesh_sharding(specs, mesh, rules)
    assert shardings["encoder"]["transformer"]["block_0"]["mlp"]["fc1"]["kernel"].spec == P("fsdp", "tensor")
    assert shardings["encoder"]["transformer"]["block_0"]["attn"]["query"]["kernel"].spec == P("fsdp", "tensor", None)


def test_sharded_forward_matches_single_device():
    """Logical constraints inside the blocks hold under a mesh: a sharded apply equals the plain one."""
    config = dataclasses.replace(BASE, finetune_keep_ratio=0.6)
    v = video(config, batch=4)
    model = Classifier(config)
    boxed = model.init({"params": jax.random.key(1)}, v)
    params = nn.unbox(boxed)["params"]
    want, _ = model.apply({"params": params}, v)
    rules = (("activation_batch", "data"), ("embed", "fsdp"), ("heads", "tensor"), ("mlp", "tensor"),
             ("activation_mlp", "tensor"))
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 3)
    shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed), mesh, rules)["params"]
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        sharded = jax.device_put(params, shardings)
        got, _ = jax.jit(lambda p, x: model.apply({"params": p}, x))(sharded, v)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)


def test_video_of_the_wrong_shape_is_refused():
    model = PretrainingModel(BASE)
    with pytest.raises(ValueError, match="does not match the config"):
        model.init({"params": jax.random.key(0), "masking": jax.random.key(0)}, jnp.zeros((1, 8, 32, 32, 3)))
