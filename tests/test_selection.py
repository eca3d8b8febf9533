"""Token and frame selection: hand-computed cases, set properties, static shapes, statistics, real video."""

import av
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from everest_jax import ModelConfig, selection
from everest_jax.targets import patchify


def test_motion_scores_hand_computed():
    # (B=1, T'=3, L=2, D=2): step 1 - step 0 = (3, 4) at l=0 -> 5; step 2 - step 1 = (0, 1) at l=0 -> 1
    e = jnp.array([[[[0, 0], [1, 1]], [[3, 4], [1, 1]], [[3, 5], [1, 3]]]], jnp.float32)
    scores = selection.motion_scores(e)
    # (t, h, w) order; step 0 copies step 1
    np.testing.assert_allclose(scores, [[5, 0, 5, 0, 1, 2]], rtol=1e-6)
    grad = jax.grad(lambda x: selection.motion_scores(x).sum())(e + 0.5)
    assert not np.any(grad)
    with pytest.raises(ValueError, match="T' >= 2"):
        selection.motion_scores(e[:, :1])


def test_pretrain_split_is_a_shuffled_top_k():
    n = 1568
    scores = jax.random.uniform(jax.random.key(0), (3, n))
    visible, target = selection.pretrain_token_split(jax.random.key(1), scores)
    assert visible.shape == (3, 156) and target.shape == (3, 314)  # the official ViT-B numbers
    assert visible.dtype == jnp.int32 and target.dtype == jnp.int32
    top = np.argsort(-np.asarray(scores), axis=1)[:, :470]
    for b in range(3):
        v, t = np.asarray(visible[b]), np.asarray(target[b])
        assert np.all(np.diff(v) > 0) and np.all(np.diff(t) > 0)
        assert not set(v) & set(t)
        assert set(v) | set(t) == set(top[b])
    v2, _ = selection.pretrain_token_split(jax.random.key(2), scores)
    v3, _ = selection.pretrain_token_split(jax.random.key(1), scores)
    assert not np.array_equal(v2, visible)  # another rng, another split of the same top-K
    np.testing.assert_array_equal(v3, visible)
    same = jnp.tile(scores[:1], (2, 1))  # identical clips are shuffled independently
    vs, _ = selection.pretrain_token_split(jax.random.key(1), same)
    assert not np.array_equal(vs[0], vs[1])


def test_selection_is_static_under_jit():
    f = jax.jit(lambda r, s: selection.pretrain_token_split(r, s, 0.3, 0.1))
    shapes = {tuple(x.shape for x in f(jax.random.key(i), jax.random.normal(jax.random.key(i), (2, 200))))
              for i in range(3)}
    assert shapes == {((2, 20), (2, 40))}
    out = jax.eval_shape(selection.finetune_token_keep, jax.ShapeDtypeStruct((4, 200), jnp.float32))
    assert out.shape == (4, 120)


def test_finetune_keep_is_the_sorted_deterministic_top_k():
    scores = jax.random.normal(jax.random.key(3), (2, 50))
    keep = selection.finetune_token_keep(scores, 0.6)
    want = np.sort(np.argsort(-np.asarray(scores), axis=1)[:, :30], axis=1)
    np.testing.assert_array_equal(keep, want)
    np.testing.assert_array_equal(selection.finetune_token_keep(scores, 0.6), keep)


def test_tube_and_random_masks():
    grid = (4, 3, 5)
    visible, masked = selection.tube_mask(jax.random.key(0), 2, grid, 0.9)
    assert masked.shape == (2, 4 * 13) and visible.shape == (2, 4 * 2)  # int(0.9*15) = 13 per step
    for b in range(2):
        m = np.asarray(masked[b]).reshape(4, 13) % 15
        assert all(np.array_equal(m[0], m[t]) for t in range(4))  # the same positions every step
        assert sorted(set(np.asarray(visible[b])) | set(np.asarray(masked[b]))) == list(range(60))
    visible, masked = selection.random_mask(jax.random.key(1), 2, 60, 0.9)
    assert masked.shape == (2, 54) and visible.shape == (2, 6)
    assert set(np.asarray(visible[0])) | set(np.asarray(masked[0])) == set(range(60))
    assert not np.array_equal(visible[0], visible[1])


@pytest.mark.parametrize("masking", ["everest", "tube", "random"])
def test_pretrain_masks_dispatch(masking):
    config = ModelConfig(size="tiny", num_frames=8, image_size=32, patch_size=8, masking=masking)
    v, t = selection.pretrain_masks(jax.random.key(0), jnp.ones((2, config.num_tokens)), config)
    assert (v.shape[1], t.shape[1]) == config.pretrain_counts


def test_frame_pair_scores_and_gather():
    scores = jnp.array([[0, 0, 9, 9, 1, 1, 8, 0]], jnp.float32)  # T'=4 steps, L=2
    counts = selection.frame_pair_scores(scores, 4, keep_ratio=0.5)  # top 4: 2, 3, 6, (4 or 5)
    assert counts.sum() == 4 and counts[0, 1] == 2 and counts[0, 0] == 0
    video = jnp.arange(8, dtype=jnp.float32)[None, :, None, None, None] * jnp.ones((1, 8, 2, 2, 1))
    frames = selection.gather_frame_pairs(video, jnp.array([[1, 3]]), 2)
    np.testing.assert_array_equal(frames[0, :, 0, 0, 0], [2, 3, 6, 7])
    assert selection.num_candidate_frames(16, 1.5, 2) == 24
    with pytest.raises(ValueError):
        selection.num_candidate_frames(16, 0.5, 2)


def test_frame_pairs_are_drawn_without_replacement_in_proportion_to_score():
    weights = jnp.array([1.0, 2.0, 3.0, 4.0])
    n = 20000
    first = jax.vmap(lambda k: selection.sample_frame_pairs(k, weights[None], 1)[0, 0])(
        jax.random.split(jax.random.key(0), n))
    freq = np.bincount(np.asarray(first), minlength=4) / n
    # One draw is categorical(p = w / 10); the standard error of each frequency is < 0.0035.
    np.testing.assert_allclose(freq, np.asarray(weights) / 10, atol=0.015)
    pairs = jax.vmap(lambda k: selection.sample_frame_pairs(k, jnp.array([[5.0, 0, 1, 3, 0, 2]]), 3)[0])(
        jax.random.split(jax.random.key(1), 2000))
    pairs = np.asarray(pairs)
    assert np.all(np.diff(pairs, axis=1) > 0)  # distinct and in temporal order
    assert not np.isin(pairs, [1, 4]).any()  # zero-score pairs never drawn when 4 others score
    inclusion = np.bincount(pairs.ravel(), minlength=6) / 2000
    assert inclusion[0] > inclusion[3] > inclusion[5] > inclusion[2]  # monotone in score


def _bikes_clip(path, frames=16, size=112):
    with av.open(str(path)) as container:
        out = []
        for i, frame in enumerate(container.decode(video=0)):
            if i >= 2 * frames:
                break
            if i % 2 == 0:  # every second frame: more motion per step
                out.append(frame.to_ndarray(format="rgb24"))
    video = np.stack(out).astype(np.float32) / 255.0  # (16, 272, 640, 3)
    h, w = video.shape[1:3]
    y0, x0 = (h - 2 * size) // 2, (w - 2 * size) // 2
    return video[:, y0:y0 + 2 * size:2, x0:x0 + 2 * size:2]  # (16, 112, 112, 3)


def test_selection_on_a_real_clip_follows_pixel_change(bikes_path):
    video = _bikes_clip(bikes_path)
    patches = patchify(jnp.asarray(video)[None], 2, 16)  # (1, N, 2*16*16, 3)
    t_steps, positions = 8, 49
    embeddings = patches.reshape(1, t_steps, positions, -1)  # raw-pixel "embedding"
    scores = selection.motion_scores(embeddings)
    # Independent measure of change: mean |pixel difference| between consecutive tubelets.
    tub = np.asarray(embeddings[0])
    change = np.abs(tub[1:] - tub[:-1]).mean(-1)
    change = np.concatenate([change[:1], change]).reshape(-1)
    keep = np.asarray(selection.finetune_token_keep(scores, 0.3)[0])
    dropped = np.setdiff1d(np.arange(t_steps * positions), keep)
    assert change[keep].mean() > 1.5 * change[dropped].mean()
    random_subset = np.random.default_rng(0).choice(t_steps * positions, len(keep), replace=False)
    assert change[keep].mean() > change[random_subset].mean()
    visible, target = selection.pretrain_token_split(jax.random.key(0), scores)
    kept = np.concatenate([np.asarray(visible[0]), np.asarray(target[0])])
    assert change[kept].mean() > 1.5 * change[dropped].mean()
