"""Blocked attention (models/attention.py) against jax.nn.dot_product_attention's XLA reference."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from everest_jax import ModelConfig, objectives
from everest_jax.models import Classifier
from everest_jax.models.attention import blocked_attention, dot_product_attention


def qkv(n, heads=3, dim=16, batch=2, dtype=jnp.float32):
    keys = jax.random.split(jax.random.key(0), 4)
    q, k, v, ct = (2 * jax.random.normal(key, (batch, n, heads, dim)) for key in keys)
    return q.astype(dtype), k.astype(dtype), v.astype(dtype), ct


def loss_and_grads(attention, q, k, v, ct):
    f = lambda q, k, v: (attention(q, k, v).astype(jnp.float32) * ct).sum()  # noqa: E731
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))(q, k, v)


def reference(q, k, v):
    return jax.nn.dot_product_attention(q, k, v, implementation="xla")


@pytest.mark.parametrize("n, block", [(100, 32), (64, 64), (20, 128)])  # padded last block, exact, one block
def test_blocked_attention_and_its_gradients_equal_the_reference(n, block):
    q, k, v, ct = qkv(n)
    np.testing.assert_allclose(blocked_attention(q, k, v, block), reference(q, k, v), atol=1e-5)
    (got, grads), (want, ref_grads) = (loss_and_grads(lambda *a: blocked_attention(*a, block), q, k, v, ct),
                                       loss_and_grads(reference, q, k, v, ct))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    for g, r in zip(grads, ref_grads):
        np.testing.assert_allclose(g, r, atol=2e-5)


def test_bfloat16_inputs_keep_their_dtype_and_err_no_more_than_the_reference_in_bfloat16():
    q, k, v, ct = qkv(70)
    low = [x.astype(jnp.bfloat16) for x in (q, k, v)]
    exact = [reference(q, k, v), *loss_and_grads(reference, q, k, v, ct)[1]]

    def errors(attention):  # max |error| of the output and of dq, dk, dv against float32
        got = [attention(*low), *loss_and_grads(attention, *low, ct)[1]]
        assert all(g.dtype == jnp.bfloat16 for g in got)
        return np.array([float(jnp.abs(g.astype(jnp.float32) - e).max()) for g, e in zip(got, exact)])

    ratio = errors(lambda *a: blocked_attention(*a, 32)) / errors(reference)
    assert ratio.max() < 1.5, ratio


def test_the_backward_pass_never_holds_the_full_attention_matrix():
    q, k, v, ct = qkv(1024, heads=2, batch=1)

    def temp_bytes(attention):
        f = jax.grad(lambda q, k, v: (attention(q, k, v) * ct).sum(), argnums=(0, 1, 2))
        return jax.jit(f).lower(q, k, v).compile().memory_analysis().temp_size_in_bytes

    full = 2 * 1024 * 1024 * 4  # one (H, N, N) float32 matrix
    assert temp_bytes(reference) >= full
    assert temp_bytes(lambda *a: blocked_attention(*a, 128)) < full / 2


def test_auto_is_blocked_on_cpu_and_explicit_choices_are_kept():
    q, k, v, _ = qkv(40)
    uses_custom_vjp = lambda impl: "custom_vjp_call" in str(  # noqa: E731
        jax.make_jaxpr(lambda q, k, v: dot_product_attention(q, k, v, impl))(q, k, v))
    assert jax.default_backend() == "cpu"
    assert uses_custom_vjp(None) and uses_custom_vjp("blocked") and not uses_custom_vjp("xla")


def test_a_model_with_blocked_attention_trains_like_one_with_xla_attention():
    config = ModelConfig(size="tiny", num_frames=8, image_size=48, patch_size=8, num_classes=3, attention="xla")
    video = jax.random.normal(jax.random.key(3), (2, 8, 48, 48, 3))
    labels = jnp.array([0, 2])
    params = nn.unbox(Classifier(config).init({"params": jax.random.key(1)}, video))["params"]

    def grads(attention):
        model = Classifier(dataclasses.replace(config, attention=attention))
        loss = lambda p: objectives.classification_loss(p, model, video, labels, jax.random.key(4))[0]  # noqa: E731
        return jax.jit(jax.value_and_grad(loss))(params)

    (got, g), (want, r) = grads("blocked"), grads("xla")
    np.testing.assert_allclose(got, want, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), g, r)
