"""Token and frame selection: exact small cases, set properties against numpy references, static
shapes under jit, the sampling distribution of frame pairs, and motion selection on a real clip."""

import dataclasses
import functools

import av
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import sample_video_path

from everest_jax import ModelConfig, selection
from everest_jax.models import TubeletEmbed
from everest_jax.targets import patchify

N_OFFICIAL = 1568  # ViT-B 16 frames x 224^2, tubelet 2, patch 16: 8 * 14 * 14 tokens
TINY_N = 96  # the tiny test config below: 4 * 4 * 6 tokens


def distinct_scores(batch, n, seed=0):
    """(B, N) float32 scores without ties, so the top K is unambiguous."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n).astype(np.float32) + 0.5 for _ in range(batch)])


def np_top_k(scores, k):
    """Independent reference: the sorted indices of the k largest scores of each row."""
    return np.sort(np.argsort(-scores, axis=1, kind="stable")[:, :k], axis=1)


def assert_sorted_int32(idx):
    idx = np.asarray(idx)
    assert idx.dtype == np.int32
    assert np.all(np.diff(idx, axis=-1) > 0), "indices must be strictly ascending"


# ---- motion_scores ------------------------------------------------------------------------------


def test_motion_scores_hand_computed():
    # (B=1, T'=3, L=2, D=2). Token (t, l) -> flat index t*L + l.
    e = np.array([[[[0, 0], [1, 1]],      # t=0
                   [[3, 4], [1, 3]],      # t=1: |(3,4)| = 5, |(0,2)| = 2
                   [[9, 12], [1, 4]]]],   # t=2: |(6,8)| = 10, |(0,1)| = 1
                 np.float32)
    want = np.array([[5, 2, 5, 2, 10, 1]], np.float32)  # step 0 copies step 1
    got = selection.motion_scores(jnp.asarray(e))
    assert got.shape == (1, 6) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # Batch entries are independent; scaling an example scales its scores.
    got2 = selection.motion_scores(jnp.asarray(np.concatenate([e, -3 * e])))
    np.testing.assert_allclose(got2, np.concatenate([want, 3 * want]), rtol=1e-6)


def test_motion_scores_shape_and_order_against_numpy():
    e = np.random.default_rng(1).normal(size=(2, 4, 6, 5)).astype(np.float32)
    want = np.linalg.norm(e[:, 1:] - e[:, :-1], axis=-1)  # (B, T'-1, L)
    want = np.concatenate([want[:, :1], want], axis=1).reshape(2, 4 * 6)
    got = selection.motion_scores(jnp.asarray(e))
    assert got.shape == (2, 24)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # bfloat16 embeddings still give float32 scores.
    assert selection.motion_scores(jnp.asarray(e, jnp.bfloat16)).dtype == jnp.float32


def test_motion_scores_pass_no_gradient():
    e = jnp.asarray(np.random.default_rng(2).normal(size=(2, 3, 4, 8)), jnp.float32)
    g = jax.grad(lambda x: selection.motion_scores(x).sum())(e)
    assert g.shape == e.shape
    np.testing.assert_array_equal(g, 0.0)
    # Also with identical steps (distance 0, where sqrt's derivative is infinite): no NaN leaks.
    same = jnp.ones((2, 3, 4, 8))
    np.testing.assert_array_equal(jax.grad(lambda x: selection.motion_scores(x).sum())(same), 0.0)


def test_motion_scores_l1_and_cosine_against_numpy():
    e = np.random.default_rng(3).normal(size=(2, 3, 5, 4)).astype(np.float32)
    now, before = e[:, 1:], e[:, :-1]
    l1 = np.abs(now - before).sum(-1)
    cos = 1 - (now * before).sum(-1) / (np.linalg.norm(now, axis=-1) * np.linalg.norm(before, axis=-1))
    for distance, d in (("l1", l1), ("cosine", cos)):
        want = np.concatenate([d[:, :1], d], axis=1).reshape(2, -1)
        np.testing.assert_allclose(selection.motion_scores(jnp.asarray(e), distance), want, rtol=1e-5, atol=1e-6)
    # Cosine ignores scale; L2 does not.
    scaled = e * np.array([1, 3, 3], np.float32)[None, :, None, None]
    np.testing.assert_allclose(selection.motion_scores(jnp.asarray(scaled), "cosine")[:, 5:],
                               selection.motion_scores(jnp.asarray(e), "cosine")[:, 5:], atol=1e-6)
    with pytest.raises(ValueError, match="distance"):
        selection.motion_scores(jnp.asarray(e), "pixel")


def test_token_scores_pixel_criterion_and_ascending_order():
    # (B=1, T=4, 4x4, C=1) video in 2x2x2 tubelets: T' = 2, L = 4. Only the top-left patch of
    # the second tubelet changes, by +1 on each of its 8 pixels: pixel score 1 there, 0 elsewhere.
    config = ModelConfig(size="tiny", num_frames=4, image_size=(4, 4), patch_size=2, in_channels=1,
                         pretrain_keep_ratio=0.5, visible_ratio=0.25, selection_distance="pixel")
    video = np.zeros((1, 4, 4, 4, 1), np.float32)
    video[:, 2:, :2, :2] = 1.0
    embeddings = jnp.zeros((1, 2, 4, 8))  # ignored by the pixel criterion
    got = selection.token_scores(jnp.asarray(video), embeddings, config)
    np.testing.assert_allclose(got, [[1, 0, 0, 0, 1, 0, 0, 0]])  # step 0 copies step 1
    asc = dataclasses.replace(config, selection_order="ascending")
    np.testing.assert_allclose(selection.token_scores(jnp.asarray(video), embeddings, asc), -got)
    # With embeddings and the default L2 the scores are motion_scores of the embeddings.
    e = jnp.asarray(np.random.default_rng(4).normal(size=(1, 2, 4, 8)), jnp.float32)
    l2 = dataclasses.replace(config, selection_distance="l2")
    np.testing.assert_allclose(selection.token_scores(jnp.asarray(video), e, l2), selection.motion_scores(e))
    # Ascending order keeps the least-changing tokens: the top-k of the negated scores.
    asc_l2 = dataclasses.replace(l2, selection_order="ascending")
    keep = selection.finetune_token_keep(selection.token_scores(jnp.asarray(video), e, asc_l2), 0.5)
    np.testing.assert_array_equal(keep, np_top_k(-np.asarray(selection.motion_scores(e)), 4))


@pytest.mark.parametrize("n", [800, 1568])
def test_counts_follow_the_release_expressions(n):
    # The release: visible int((1 - mask_ratio) * N), kept int((1 - mcm_ratio) * N) with
    # mask_ratio 0.9, mcm_ratio 0.7 (pre-training) and 0.4 (fine-tuning), in floating point.
    visible, kept, finetune = int((1 - 0.9) * n), int((1 - 0.7) * n), int((1 - 0.4) * n)
    assert (visible, kept, finetune) == {800: (79, 240, 480), 1568: (156, 470, 940)}[n]
    assert selection.release_count(0.1, n) == visible  # int(0.1 * 800) would be 80
    scores = jnp.asarray(distinct_scores(1, n))
    v_idx, t_idx = selection.pretrain_token_split(jax.random.key(0), scores, 0.3, 0.1)
    assert (v_idx.shape[1], v_idx.shape[1] + t_idx.shape[1]) == (visible, kept)
    assert selection.finetune_token_keep(scores, 0.6).shape[1] == finetune
    # 16 x 160^2 frames (N = 800) and 16 x 224^2 (N = 1568) in the model config.
    size = {800: 160, 1568: 224}[n]
    config = ModelConfig(size="tiny", image_size=size)
    assert config.num_tokens == n
    assert config.pretrain_counts == (visible, kept - visible)
    assert config.finetune_keep_count == finetune


@pytest.mark.parametrize("shape", [(2, 1, 4, 8), (3, 4, 8), (2, 0, 4, 8)])
def test_motion_scores_refuse_fewer_than_two_steps(shape):
    with pytest.raises(ValueError, match="T'"):
        selection.motion_scores(jnp.zeros(shape))


# ---- EVEREST pre-training split -----------------------------------------------------------------

split = functools.partial(selection.pretrain_token_split, keep_ratio=0.3, visible_ratio=0.1)
# One (400, N_official) score matrix shared by the split tests, so the eager primitives compile
# once: rows 0-2 are distinct, rows 3-399 repeat row 0 (for the per-example independence test).
SCORES = distinct_scores(3, N_OFFICIAL)
SCORES = np.concatenate([SCORES, np.repeat(SCORES[:1], 397, axis=0)])


@pytest.mark.parametrize("n, v, k", [(N_OFFICIAL, 156, 470), (TINY_N, 9, 28)])
def test_pretrain_split_is_a_partition_of_the_top_k(n, v, k):
    scores = SCORES if n == N_OFFICIAL else distinct_scores(2, n)  # as in the dispatch test
    visible, targets = split(jax.random.key(0), jnp.asarray(scores))
    assert visible.shape == (len(scores), v) and targets.shape == (len(scores), k - v)
    assert_sorted_int32(visible)
    assert_sorted_int32(targets)
    top = np_top_k(scores, k)
    for b in range(2):
        vis, tgt = set(np.asarray(visible[b]).tolist()), set(np.asarray(targets[b]).tolist())
        assert not vis & tgt
        assert vis | tgt == set(top[b].tolist())


def test_pretrain_split_is_jittable_with_static_shapes():
    fn = jax.jit(selection.pretrain_token_split, static_argnames=("keep_ratio", "visible_ratio"))
    s1, s2 = jnp.asarray(SCORES), jnp.asarray(SCORES[:, ::-1].copy())
    v1, t1 = fn(jax.random.key(0), s1, keep_ratio=0.3, visible_ratio=0.1)
    v2, t2 = fn(jax.random.key(7), s2, keep_ratio=0.3, visible_ratio=0.1)
    assert v1.shape == v2.shape == (400, 156) and t1.shape == t2.shape == (400, 314)
    assert fn._cache_size() == 1  # new values, same shapes -> no recompilation
    assert not np.array_equal(v1, v2)
    # jit gives the same result as eager execution.
    ve, te = split(jax.random.key(0), s1)
    np.testing.assert_array_equal(v1, ve)
    np.testing.assert_array_equal(t1, te)
    # Shapes are known without running anything.
    out = jax.eval_shape(split, jax.random.key(0), jax.ShapeDtypeStruct((4, N_OFFICIAL), jnp.float32))
    assert [(o.shape, o.dtype) for o in out] == [((4, 156), jnp.int32), ((4, 314), jnp.int32)]
    out = jax.eval_shape(split, jax.random.key(0), jax.ShapeDtypeStruct((2, 96), jnp.float32))
    assert [o.shape for o in out] == [(2, 9), (2, 19)]


def test_pretrain_split_rng_changes_the_split_not_the_kept_set():
    scores = jnp.asarray(SCORES)
    va, ta = split(jax.random.key(0), scores)
    vb, tb = split(jax.random.key(1), scores)
    vc, tc = split(jax.random.key(0), scores)
    np.testing.assert_array_equal(va, vc)  # same key -> same split
    np.testing.assert_array_equal(ta, tc)
    for b in range(3):
        assert not np.array_equal(va[b], vb[b])  # another key -> another split ...
        # ... of the same kept set.
        assert set(np.concatenate([va[b], ta[b]]).tolist()) == set(np.concatenate([vb[b], tb[b]]).tolist())


def test_pretrain_split_is_independent_per_example():
    # 398 identical rows (0 and 3-399): each gets its own split of the same kept set, and each kept
    # token is visible with probability V/K = 156/470; a split that always took, e.g., the
    # highest-scoring kept tokens as visible (or one shuffle for the batch) gives 0 or 1 per token.
    visible, targets = split(jax.random.key(4), jnp.asarray(SCORES))
    v, t = np.asarray(visible)[[0, *range(3, 400)]], np.asarray(targets)[[0, *range(3, 400)]]
    rows = len(v)
    kept = np_top_k(SCORES[:1], 470)[0]
    for b in range(rows):
        np.testing.assert_array_equal(np.sort(np.concatenate([v[b], t[b]])), kept)
    assert not np.array_equal(v[0], v[1])
    assert len({tuple(r) for r in v}) == rows
    freq = np.bincount(v.ravel(), minlength=N_OFFICIAL)[kept] / rows
    # Binomial(398, 0.332): sd 0.024; 0.15 is > 6 sd, so all 470 tokens stay inside (fixed key).
    np.testing.assert_allclose(freq, 156 / 470, atol=0.15)


def test_pretrain_split_rejects_empty_visible_or_target_sets():
    scores = jnp.asarray(distinct_scores(1, 100))
    for keep, vis in [(0.3, 0.3), (0.3, 0.4), (0.3, 0.001)]:
        with pytest.raises(ValueError):
            selection.pretrain_token_split(jax.random.key(0), scores, keep, vis)


# ---- fine-tuning keep ---------------------------------------------------------------------------


@pytest.mark.parametrize("n, k", [(N_OFFICIAL, 940), (96, 57)])
def test_finetune_keep_is_the_deterministic_top_k(n, k):
    scores = distinct_scores(3, n, seed=5)
    keep = selection.finetune_token_keep(jnp.asarray(scores), 0.6)
    assert keep.shape == (3, k)
    assert_sorted_int32(keep)
    np.testing.assert_array_equal(keep, np_top_k(scores, k))
    np.testing.assert_array_equal(keep, selection.finetune_token_keep(jnp.asarray(scores), 0.6))
    # Every kept token scores at least as high as every dropped one.
    for b in range(3):
        dropped = np.setdiff1d(np.arange(n), keep[b])
        assert scores[b, np.asarray(keep[b])].min() > scores[b, dropped].max()


def test_finetune_keep_all_and_jit():
    scores = jnp.asarray(distinct_scores(2, 30))
    np.testing.assert_array_equal(selection.finetune_token_keep(scores, 1.0), np.tile(np.arange(30), (2, 1)))
    fn = jax.jit(selection.finetune_token_keep, static_argnums=1)
    np.testing.assert_array_equal(fn(scores, 0.5), selection.finetune_token_keep(scores, 0.5))


# ---- VideoMAE tube masking and random masking --------------------------------------------------
# Shapes match the tiny config of the dispatch test below, so eager compilations are shared.
TINY = ModelConfig(size="tiny", num_frames=8, image_size=(32, 48), patch_size=8)  # grid (4, 4, 6)


def test_tube_mask():
    grid = TINY.grid
    steps, h, w = grid
    positions, batch = h * w, 2
    masked_per_step = int(0.9 * positions)
    visible, masked = selection.tube_mask(jax.random.key(0), batch, grid, 0.9)
    assert visible.shape == (batch, steps * (positions - masked_per_step))
    assert masked.shape == (batch, steps * masked_per_step)
    assert_sorted_int32(visible)
    assert_sorted_int32(masked)
    v, m = np.asarray(visible), np.asarray(masked)
    for b in range(batch):
        assert not set(v[b]) & set(m[b])
        assert set(v[b]) | set(m[b]) == set(range(steps * positions))
        # The same spatial positions at every time step, int(0.9*L) of them per step.
        for idx, per in ((m[b], masked_per_step), (v[b], positions - masked_per_step)):
            per_step = idx.reshape(steps, per)
            np.testing.assert_array_equal(per_step // positions, np.repeat(np.arange(steps)[:, None], per, 1))
            spatial = per_step % positions
            np.testing.assert_array_equal(spatial, np.broadcast_to(spatial[0], spatial.shape))
    assert not np.array_equal(v[0], v[1])  # different clips get different tubes


def test_mask_official_counts():
    vis, msk = jax.eval_shape(lambda k: selection.tube_mask(k, 2, (8, 14, 14), 0.9), jax.random.key(0))
    assert vis.shape == (2, 160) and msk.shape == (2, 1408)
    vis, msk = jax.eval_shape(lambda k: selection.random_mask(k, 2, N_OFFICIAL, 0.9), jax.random.key(0))
    assert vis.shape == (2, 157) and msk.shape == (2, 1411)


def test_random_mask():
    batch, n = 2, TINY.num_tokens
    m_count = int(0.9 * n)
    visible, masked = selection.random_mask(jax.random.key(0), batch, n, 0.9)
    assert visible.shape == (batch, n - m_count) and masked.shape == (batch, m_count)
    assert_sorted_int32(visible)
    assert_sorted_int32(masked)
    v, m = np.asarray(visible), np.asarray(masked)
    for b in range(batch):
        assert not set(v[b]) & set(m[b])
        assert set(v[b]) | set(m[b]) == set(range(n))
    assert not np.array_equal(v[0], v[1])
    # Not tube-structured: 10 visible tokens spread over more than 10/4 spatial positions.
    assert len(set((v[0] % TINY.tokens_per_step).tolist())) > v.shape[1] // TINY.grid[0]


@pytest.mark.parametrize("masking", ["everest", "tube", "random"])
def test_pretrain_masks_dispatch_gives_the_config_counts(masking):
    config = dataclasses.replace(TINY, masking=masking)
    scores = distinct_scores(2, config.num_tokens)
    visible, targets = selection.pretrain_masks(jax.random.key(0), jnp.asarray(scores), config)
    v_count, t_count = config.pretrain_counts
    assert visible.shape == (2, v_count) and targets.shape == (2, t_count)
    assert_sorted_int32(visible)
    assert_sorted_int32(targets)
    v, t = np.asarray(visible), np.asarray(targets)
    for b in range(2):
        assert not set(v[b]) & set(t[b])
        union = set(v[b]) | set(t[b])
        if masking == "everest":  # only the motion-rich tokens, none of the rest
            assert union == set(np_top_k(scores, v_count + t_count)[b].tolist())
        else:  # the baselines reconstruct everything not visible
            assert union == set(range(config.num_tokens))
    if masking == "tube":
        steps, positions = config.grid[0], config.tokens_per_step
        spatial = t[0].reshape(steps, -1) % positions
        np.testing.assert_array_equal(spatial, np.broadcast_to(spatial[0], spatial.shape))


def test_pretrain_masks_official_counts():
    scores = jax.ShapeDtypeStruct((1, N_OFFICIAL), jnp.float32)
    for masking, counts in [("everest", (156, 314)), ("tube", (160, 1408)), ("random", (157, 1411))]:
        config = ModelConfig(masking=masking)
        visible, targets = jax.eval_shape(lambda k, s: selection.pretrain_masks(k, s, config),
                                          jax.random.key(0), scores)
        assert (visible.shape[1], targets.shape[1]) == counts == config.pretrain_counts


# ---- information-intensive frame selection ------------------------------------------------------


def test_frame_pair_scores_hand_case():
    # T'=3 steps of L=2 tokens; keep int(0.5*6) = 3: tokens 0 (0.9), 1 (0.8), 4 (0.7) -> steps 0, 0, 2.
    scores = jnp.asarray([[0.9, 0.8, 0.1, 0.2, 0.7, 0.3],
                          [0.1, 0.2, 0.9, 0.8, 0.3, 0.7]])
    got = selection.frame_pair_scores(scores, 3, keep_ratio=0.5)
    assert got.dtype == jnp.float32
    np.testing.assert_array_equal(got, [[2, 0, 1], [0, 2, 1]])


def test_frame_pair_scores_against_numpy():
    steps, positions = 12, 49
    scores = distinct_scores(3, steps * positions, seed=9)
    got = np.asarray(selection.frame_pair_scores(jnp.asarray(scores), steps, keep_ratio=0.3))
    k = int(0.3 * steps * positions)
    want = np.stack([np.bincount(np_top_k(scores, k)[b] // positions, minlength=steps) for b in range(3)])
    assert got.shape == (3, steps)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got.sum(axis=1), k)


def plackett_luce_inclusion_2(w):
    """Exact P(item i is among 2 draws without replacement, each draw proportional to weight)."""
    w = np.asarray(w, np.float64)
    s = w.sum()
    first = w / s
    # i second: some j != i first, then i from the remaining weight s - w_j.
    second = np.array([sum(w[j] / s * w[i] / (s - w[j]) for j in range(len(w)) if j != i)
                       for i in range(len(w))])
    return first + second


# Every sampling test draws from (10000, 12) scores: the random bits compile once.
ROWS, PAIRS = 10000, 12
W = np.array([1.0, 2.0, 3.0, 4.0])
W_PADDED = np.tile(np.concatenate([W, np.zeros(PAIRS - 4)]), (ROWS, 1))  # zero pairs are never drawn


def test_sample_frame_pairs_single_draw_is_proportional_to_score():
    rows, w = ROWS, W
    draws = np.asarray(selection.sample_frame_pairs(jax.random.key(0), jnp.asarray(W_PADDED), 1))
    assert draws.shape == (rows, 1) and draws.dtype == np.int32
    counts = np.bincount(draws[:, 0], minlength=PAIRS)
    assert counts[4:].sum() == 0
    counts = counts[:4]
    expected = rows * w / w.sum()
    chi2 = ((counts - expected) ** 2 / expected).sum()
    # Pearson chi-square, 3 degrees of freedom: the 0.999 quantile is 16.27, so a correct sampler
    # fails this only with probability 1e-3 (and never, with this fixed key). Wrong laws are far
    # out at 10000 rows: uniform gives chi2 ~ 3000, p ~ score^2 ~ 1100, softmax(score) ~ 2700.
    assert chi2 < 16.27, (counts, expected, chi2)


def test_sample_frame_pairs_several_draws_follow_plackett_luce():
    rows, w = ROWS, W
    draws = np.asarray(selection.sample_frame_pairs(jax.random.key(1), jnp.asarray(W_PADDED), 2))
    assert draws.shape == (rows, 2)
    assert np.all(draws[:, 0] < draws[:, 1])  # distinct and in temporal order
    assert draws.max() < 4  # zero-score pairs never drawn
    freq = np.bincount(draws.ravel(), minlength=4) / rows
    assert np.all(np.diff(freq) > 0), freq  # inclusion is monotone in score
    # Each item's inclusion is Bernoulli(p_i) per row: sd <= 0.005 at 10000 rows; 0.025 is 5 sd.
    # Two independent draws with replacement (1 - (1 - p_i)^2: 0.19 ... 0.64 against PL's 0.23 ...
    # 0.72) are off by up to 0.076, uniform inclusion (0.5 each) by up to 0.27.
    np.testing.assert_allclose(freq, plackett_luce_inclusion_2(w), atol=0.025)


def test_sample_frame_pairs_without_replacement_sorted_in_range():
    rows, pairs, k = ROWS, PAIRS, 5
    scores = np.random.default_rng(0).uniform(0.1, 5.0, size=(rows, pairs)).astype(np.float32)
    draws = np.asarray(selection.sample_frame_pairs(jax.random.key(2), jnp.asarray(scores), k))
    assert draws.shape == (rows, k) and draws.dtype == np.int32
    assert draws.min() >= 0 and draws.max() < pairs
    assert np.all(np.diff(draws, axis=1) > 0)  # sorted, hence no duplicates
    # Rows are drawn independently: nearly all C(12, 5) = 792 subsets occur in 10000 rows.
    assert len({tuple(r) for r in draws}) > 700
    again = selection.sample_frame_pairs(jax.random.key(2), jnp.asarray(scores), k)
    np.testing.assert_array_equal(draws, again)


def test_sample_frame_pairs_never_draws_zero_score_pairs_when_enough_are_positive():
    rows = ROWS
    row = [0.0, 3.0, 0.0, 1.0, 2.0, 0.0, 0.001, 0.0, 0.0, 0.0, 0.0, 0.0]
    scores = jnp.asarray(np.tile(row, (rows, 1)), jnp.float32)
    draws = np.asarray(selection.sample_frame_pairs(jax.random.key(3), scores, 4))
    np.testing.assert_array_equal(draws, np.tile([1, 3, 4, 6], (rows, 1)))
    # With fewer positive pairs than requested, every positive pair is taken, the rest are zeros.
    draws = np.asarray(selection.sample_frame_pairs(jax.random.key(4), scores, 6))
    assert draws.shape == (rows, 6) and np.all(np.diff(draws, axis=1) > 0)
    np.testing.assert_array_equal(np.isin(draws, [1, 3, 4, 6]).sum(axis=1), 4)


def test_sample_frame_pairs_rejects_too_many_pairs():
    with pytest.raises(ValueError):
        selection.sample_frame_pairs(jax.random.key(0), jnp.ones((2, 4)), 5)


@pytest.mark.parametrize("tubelet", [2, 3])
def test_gather_frame_pairs_returns_the_chosen_frames(tubelet):
    batch, pairs = 2, 6
    t = pairs * tubelet
    # Frame t of clip b has value 100*b + t everywhere.
    values = 100 * np.arange(batch)[:, None] + np.arange(t)[None, :]
    video = np.broadcast_to(values[:, :, None, None, None], (batch, t, 2, 3, 1)).astype(np.float32)
    video = jnp.asarray(video)
    idx = jnp.asarray([[0, 3, 5], [1, 2, 4]], jnp.int32)
    got = np.asarray(selection.gather_frame_pairs(video, idx, tubelet))
    assert got.shape == (batch, 3 * tubelet, 2, 3, 1)
    for b in range(batch):
        want = [100 * b + p * tubelet + j for p in np.asarray(idx[b]) for j in range(tubelet)]
        np.testing.assert_array_equal(got[b, :, 0, 0, 0], want)
        np.testing.assert_array_equal(got[b], np.broadcast_to(got[b, :, :1, :1], got[b].shape))


# ---- real clips: selection follows the actual motion ---------------------------------------------


@functools.lru_cache(maxsize=None)
def decode_frames(name, count):
    frames = []
    with av.open(str(sample_video_path(name))) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    return np.stack(frames)


def real_clip(name):
    """(16, H, W, 3) float32 in [0, 1], H and W multiples of 16: the first 16 frames."""
    frames = decode_frames(name, 16)
    if name == "bikes.mp4":  # 272x640: a 256x256 centre crop subsampled to 128x128
        frames = frames[:, 8:264:2, 192:448:2]
    return frames.astype(np.float32) / 255.0  # carphone: 144x176 as is


def numpy_token_change(video, tubelet, patch):
    """Independent reference: per-token mean |pixel difference| to the co-located tubelet one time
    step earlier (step 0 takes step 1's value), in (t, h, w) token order. video (T, H, W, C)."""
    t, h, w, c = video.shape
    x = video.reshape(t // tubelet, tubelet, h // patch, patch, w // patch, patch, c)
    x = x.transpose(0, 2, 4, 1, 3, 5, 6).reshape(t // tubelet, (h // patch) * (w // patch), -1)
    d = np.abs(x[1:] - x[:-1]).mean(axis=-1)
    return np.concatenate([d[:1], d]).reshape(-1)


def kept_mask(idx, n):
    mask = np.zeros(n, bool)
    mask[np.asarray(idx)] = True
    return mask


def random_params(module, *args, seed=0):
    """Xavier-uniform random parameters for `module`, drawn with numpy: the shapes come from
    `jax.eval_shape` of its init (no compilation of Flax's random initialisers)."""
    rng = np.random.default_rng(seed)
    shapes = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), *args))

    def draw(leaf):
        if len(leaf.shape) == 1:  # bias
            return np.zeros(leaf.shape, np.float32)
        fan_in, fan_out = int(np.prod(leaf.shape[:-1])), leaf.shape[-1]
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, leaf.shape).astype(np.float32)

    return jax.tree.map(draw, shapes)


def clip_selections(clip, rng):
    """Selections on one clip (T, H, W, 3), jitted as one program to keep compile time low."""
    t, h, w, _ = clip.shape
    config = ModelConfig(size="tiny", num_frames=t, image_size=(h, w), patch_size=16)
    embed = TubeletEmbed(config)
    video = jnp.asarray(clip)[None]
    x = (video - 0.45) / 0.225
    params = random_params(embed, x)

    @jax.jit
    def run(video, x, params, rng):
        # 1. Raw pixel tubelets as the embedding (patchify, flattened to (B, T', L, D)).
        pix = patchify(video, 2, 16).reshape(1, t // 2, config.tokens_per_step, -1)
        pix_scores = selection.motion_scores(pix)
        keep = selection.finetune_token_keep(pix_scores, 0.6)
        visible, targets = selection.pretrain_token_split(rng, pix_scores, 0.3, 0.1)
        # 2. The model's own tubelet embedding with random weights: a fixed random linear map.
        emb = embed.apply(params, x)
        emb_keep = selection.finetune_token_keep(selection.motion_scores(emb), config.finetune_keep_ratio)
        return dict(pix_scores=pix_scores, keep=keep, visible=visible, targets=targets, emb=emb,
                    emb_keep=emb_keep)

    return config, jax.tree.map(np.asarray, run(video, x, params, rng))


def test_real_clip_selection_keeps_the_changing_tokens():
    clip = real_clip("bikes.mp4")  # 16 x 128 x 128, camera moving
    t, h, w, _ = clip.shape
    change = numpy_token_change(clip, 2, 16)  # independent per-token pixel change
    n = change.size
    config, out = clip_selections(clip, jax.random.key(0))
    assert n == config.num_tokens and out["pix_scores"].shape == (1, n)

    # Pixel embedding: the 60% kept for fine-tuning change far more than the 40% dropped.
    keep = kept_mask(out["keep"][0], n)
    assert keep.sum() == int(0.6 * n)
    assert change[keep].mean() >= 1.5 * change[~keep].mean()
    # EVEREST pre-training keeps 30% (visible + targets): more change than the rest, and than any
    # of 200 random subsets of the same size.
    everest = kept_mask(np.concatenate([out["visible"][0], out["targets"][0]]), n)
    assert everest.sum() == int(0.3 * n)
    assert change[everest].mean() >= 1.5 * change[~everest].mean()
    rng = np.random.default_rng(0)
    random_means = [change[rng.choice(n, everest.sum(), replace=False)].mean() for _ in range(200)]
    assert change[everest].mean() > 1.5 * max(random_means)
    # The encoder-visible tokens alone also carry more motion than a random sample does.
    assert change[out["visible"][0]].mean() > max(random_means)

    # The model's TubeletEmbed (random init, tiny, patch 16) selects the changing tokens too.
    assert out["emb"].shape == (1, t // 2, config.tokens_per_step, config.width)
    keep = kept_mask(out["emb_keep"][0], n)
    assert keep.sum() == config.finetune_keep_count
    assert change[keep].mean() >= 1.5 * change[~keep].mean()


def test_static_clip_has_no_motion():
    # Contrast: carphone's first frame repeated is perfectly static, every score is 0.
    carphone = real_clip("carphone_pristine.mp4")  # 144x176
    static = np.repeat(carphone[:1], 16, axis=0).reshape(8, 2, 9, 16, 11, 16, 3)
    emb = static.transpose(0, 2, 4, 1, 3, 5, 6).reshape(1, 8, 9 * 11, -1)  # pixel tubelets
    np.testing.assert_array_equal(selection.motion_scores(jnp.asarray(emb)), 0.0)
    # Moving camera (bikes) vs mostly static talking head (carphone): more change per token.
    assert numpy_token_change(real_clip("bikes.mp4"), 2, 16).mean() > 1.2 * numpy_token_change(
        carphone, 2, 16).mean()
