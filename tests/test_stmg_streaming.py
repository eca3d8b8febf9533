"""STMG streaming path: equality with the dense network, skipping, partial compute inside the
jitted step, key frames, and that skipped work really is not executed (counted on the host)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stmg_jax.config import ConfigError, SegNetConfig, StreamConfig
from stmg_jax.distortion import from_bins
from stmg_jax.generator import init_generators
from stmg_jax.masked import masked_forward
from stmg_jax.model import SegNet, block_specs, stage_ends, upsample_logits
from stmg_jax.streaming import Streamer
from stmg_jax.testing import random_net_variables

NET = SegNetConfig(num_classes=5, widths=(16, 32, 64, 128), decoder_width=32)
GRID = ((4, 4), (4, 4), (2, 2), (1, 1))
HW = (64, 128)
GATED = [0, 1, 3, 5, 7]
NUM_BINS = [16, 16, 16, 4, 1]


def frame(seed):
    """(64, 128, 3) image-like frame: smooth blobs (8x8-pixel cells) plus a little pixel noise."""
    rng = np.random.default_rng(seed)
    coarse = np.repeat(np.repeat(rng.normal(size=(HW[0] // 8, HW[1] // 8, 3)), 8, 0), 8, 1)
    return (coarse + 0.1 * rng.normal(size=(*HW, 3))).astype(np.float32)


def local_change(f, seed, rows=slice(0, 16), cols=slice(96, 128)):
    """f with a block of pixels (top-right corner by default) replaced by new noise."""
    g = f.copy()
    g[rows, cols] = np.random.default_rng(seed).normal(size=g[rows, cols].shape)
    return g


@pytest.fixture(scope="module")
def params():
    return {"net": random_net_variables(NET, HW, seed=0),
            "gen": init_generators(jax.random.key(0), NET, StreamConfig(bin_grid=GRID))}


@pytest.fixture(scope="module")
def dense(params):
    apply = jax.jit(SegNet(NET).apply)
    return lambda f: np.asarray(apply(params["net"], jnp.asarray(f)[None])[0])


@pytest.fixture(scope="module")
def forced_on():
    """Every gate and every bin forced on; key frames only at frame 0 or on a scene cut."""
    return Streamer(NET, StreamConfig(bin_grid=GRID, gate_threshold=0.0, bin_threshold=0.0, key_every=0,
                                      key_distortion=0.5), HW)


CALLS = []


@pytest.fixture(scope="module")
def counted():
    """Default thresholds (untrained generator = normalised distortion > 0.05), key every 4th
    frame, and a host-side counter called from inside every compute branch."""
    return Streamer(NET, StreamConfig(bin_grid=GRID, key_every=4), HW,
                    on_compute=lambda block, k: CALLS.append((block, k)))


def block_calls():
    """The counter's (block, k) entries, sorted; the stem's and decoder's are `region_calls`."""
    return sorted(c for c in CALLS if isinstance(c[0], int))


def region_calls():
    return sorted(c for c in CALLS if isinstance(c[0], str))


def step(streamer, params, state, f):
    CALLS.clear()
    state, logits, stats = streamer.step(params, state, jnp.asarray(f))
    jax.block_until_ready(logits)
    return state, np.asarray(logits), jax.tree.map(np.asarray, stats)


def test_all_gates_and_bins_forced_on_equals_dense(params, dense, forced_on):
    f1 = frame(1)
    f2 = np.roll(f1, 1, axis=1)  # camera pan by one pixel
    f3 = frame(3)                                    # scene cut
    state = forced_on.init_state()
    keys = []
    for f in (f1, f2, f3):
        state, logits, stats = step(forced_on, params, state, f)
        want = dense(f)
        assert np.std(want) > 0.1
        np.testing.assert_allclose(logits, want, atol=1e-5, rtol=0)
        assert stats["ran"].all() and list(stats["bins"]) == NUM_BINS
        assert stats["flops"] == pytest.approx(forced_on.dense_flops, rel=1e-6)
        keys.append(bool(stats["key"]))
    # frame 0 is a key frame; the pan is not; the unrelated frame crosses key_distortion.
    assert keys == [True, False, True]


def test_same_frame_twice_skips_everything_and_equals_dense(params, dense, counted):
    f = frame(4)
    state = counted.init_state()
    state, logits, stats = step(counted, params, state, f)
    assert bool(stats["key"]) and block_calls() == list(zip(GATED, NUM_BINS))  # dense on the key frame
    assert region_calls() == [("decoder", 16), ("stem", 16)]
    np.testing.assert_allclose(logits, dense(f), atol=1e-5, rtol=0)
    for t in (1, 2, 3):
        state, logits, stats = step(counted, params, state, f)
        assert not stats["key"]
        assert CALLS == []                        # no compute branch executed
        assert not stats["ran"].any() and (stats["bins"] == 0).all()
        assert (stats["distortion"] == 0).all()
        assert stats["flops"] == pytest.approx(counted.fixed_flops, rel=1e-6)
        assert stats["stem_flops"] == 0 and stats["decoder_flops"] == 0
        assert stats["flops"] < 0.35 * stats["dense_flops"]
        np.testing.assert_allclose(logits, dense(f), atol=1e-5, rtol=0)
    # frame 4: key-frame refresh, every block runs densely although nothing changed
    state, logits, stats = step(counted, params, state, f)
    assert bool(stats["key"]) and stats["ran"].all() and block_calls() == list(zip(GATED, NUM_BINS))
    assert region_calls() == [("decoder", 16), ("stem", 16)]
    np.testing.assert_allclose(logits, dense(f), atol=1e-5, rtol=0)


def reference(params, state, f, recomputed):
    """The streaming semantics written out densely: the stem output, each gated block's branch
    output and the decoder's stride-4 blend output are the dense layer's on the recomputed bins
    and the previous cache elsewhere; a block's out = ReLU(x + r)."""
    model, v = SegNet(NET), params["net"]

    def mix(name, fresh, grid):
        _, h, w, _ = fresh.shape
        gh, gw = grid
        mask = from_bins(jnp.broadcast_to(jnp.asarray(recomputed[name])[:, None, None, None],
                                          (gh * gw, h // gh, w // gw, 1)), grid)
        return jnp.where(mask, fresh[0], state.caches[name])[None]

    x = mix("stem", model.apply(v, jnp.asarray(f)[None], method=SegNet.stem), GRID[0])
    feats = []
    for i, (s, *_rest) in enumerate(block_specs(NET)):
        if i in GATED:
            x = jax.nn.relu(x + mix(f"block_{i}", model.apply(v, i, x, method=SegNet.branch), GRID[s]))
        else:
            x = model.apply(v, i, x, method=SegNet.block)
        if i in stage_ends(NET):
            feats.append(x)
    top = mix("decoder", model.apply(v, model.apply(v, feats, method=SegNet.decode_ladder),
                                     method=SegNet.blend_head), GRID[0])
    return np.asarray(upsample_logits(top, HW)[0])


def test_partial_compute_inside_the_step_matches_its_reference(params, dense, counted):
    """A local change: blocks, the stem and the decoder blend run on some bins only (partial
    levels, with their halo at the image border); the jitted step equals the dense reference of
    the same decisions, and the counter saw exactly the units that ran, each with the k of its
    capacity level."""
    f1 = frame(5)
    f2 = local_change(f1, 6)
    state = counted.init_state()
    state, _, _ = step(counted, params, state, f1)
    before = jax.tree.map(jnp.copy, state)
    given = state
    state, logits, stats = step(counted, params, state, f2)
    # the step donates the state it is given: its caches are updated in place, not copied
    assert all(a.is_deleted() for a in jax.tree.leaves(given))
    assert not stats["key"]
    ran = [b for b, r in zip(GATED, stats["ran"]) if r]
    assert block_calls() == sorted((b, int(k)) for b, k, r in zip(GATED, stats["bins"], stats["ran"]) if r)
    assert [b for b, _ in block_calls()] == ran
    # the stem sees one changed bin (the top-right one): the smallest level, 4 of 16 bins
    assert stats["recomputed"]["stem"].sum() == 4 and stats["recomputed"]["stem"][3]
    assert 0 < stats["recomputed"]["decoder"].sum() < 16
    assert region_calls() == sorted((n, int(stats["recomputed"][n].sum())) for n in ("stem", "decoder"))
    assert stats["stem_flops"] < 0.5 * counted.region_dense_flops["stem"]
    partial = [(b, k, n) for b, k, n, r in zip(GATED, stats["bins"], NUM_BINS, stats["ran"]) if r and k < n]
    assert partial, f"no block took a partial level: {stats}"
    for name, rec in stats["recomputed"].items():
        if not name.startswith("block_"):
            continue
        i = GATED.index(int(name.split("_")[1]))
        assert rec.sum() == stats["bins"][i]
        assert stats["bins"][i] in ((0,) if not stats["ran"][i] else counted.levels(GATED[i]))
    # the changed corner (top-right bin of stage 0's 4x4 grid) is among the recomputed bins
    assert stats["recomputed"]["block_0"][3]
    want = reference(params, before, f2, stats["recomputed"])
    # (patches vs whole maps sum in a different order: float32 round-off ~1e-6 relative)
    np.testing.assert_allclose(logits, want, atol=1e-5, rtol=1e-5)
    # partial FLOPs: fewer than dense, and the analytic count of the levels taken
    expected = counted.fixed_flops + sum(counted.level_flops(b, int(k)) for b, k, r in
                                         zip(GATED, stats["bins"], stats["ran"]) if r)
    expected += stats["stem_flops"] + stats["decoder_flops"]
    assert stats["flops"] == pytest.approx(expected, rel=1e-6) and stats["flops"] < stats["dense_flops"]
    # and the approximation stays close to the dense output of the new frame
    assert np.mean(np.argmax(logits, -1) == np.argmax(dense(f2), -1)) > 0.9


def test_reused_bins_keep_their_reference_so_drift_accumulates(params, counted):
    """While a bin is reused its reference input stays the one its cache was computed from, so
    small per-frame changes add up in the distortion until the layer recomputes: a brightness
    ramp of 0.03 per frame (pixel distortion ~0.04 per frame, under the stem's 0.05 threshold)
    is skipped at frame 1 and recomputed at frame 2, measured against frame 0's pixels."""
    f = frame(7)
    state = counted.init_state()
    state, _, _ = step(counted, params, state, f)
    stem_bins, decoder_bins, flops = [], [], []
    for t in range(1, 4):
        state, _, stats = step(counted, params, state, f + 0.03 * t)
        stem_bins.append(int(stats["recomputed"]["stem"].sum()))
        decoder_bins.append(int(stats["recomputed"]["decoder"].sum()))
        flops.append(float(stats["flops"]))
    assert stem_bins == [0, 16, 0], stem_bins
    assert decoder_bins[0] == 0 and flops[0] == pytest.approx(counted.fixed_flops, rel=1e-6)


def test_compiled_step_has_real_conditionals(params, counted):
    hlo = counted.step.lower(params, counted.init_state(), jnp.zeros((*HW, 3))).compile().as_text()
    # one switch [reuse, level_0, ..., dense] per gated block (block 7 has a single bin, so a
    # single level: a two-branch conditional), one each for the stem and the decoder blend
    assert sum(len(counted.levels(b)) > 1 for b in GATED) == 4
    assert hlo.count("conditional(") == len(GATED) + 2


def test_frame_of_another_size_mid_stream_is_refused(params, counted):
    state = counted.init_state()
    with pytest.raises(ConfigError, match=r"frame shape \(32, 128, 3\) differs from image_size \(64, 128\)"):
        counted.step(params, state, jnp.zeros((32, 128, 3)))


def test_stream_eval_on_a_static_video(params, counted):
    """compare(): a static 6-frame video with key frames at 0 and 4 (key_every=4): every other
    block-frame is skipped, FLOPs per frame are the mean of the frames' counts, and the STMG
    predictions agree with the dense ones everywhere."""
    from stmg_jax.stream_eval import compare
    frames = np.stack([frame(8)] * 6)
    dense_pred = np.argmax(np.asarray(jax.jit(SegNet(NET).apply)(params["net"], jnp.asarray(frames[:1]))[0]), -1)
    labels = np.stack([dense_pred] * 6).astype(np.int32)
    r = compare(NET, counted, params, frames, labels)
    assert r["stmg"]["skip_rate"] == pytest.approx(4 / 6)
    assert r["stmg"]["key_frames"] == 2
    assert r["stmg"]["gflops_per_frame"] == pytest.approx((2 * counted.dense_flops + 4 * counted.fixed_flops) / 6 / 1e9,
                                                          rel=1e-6)
    assert r["dense"]["gflops_per_frame"] == pytest.approx(counted.dense_flops / 1e9)
    assert r["stmg"]["agreement"] == 1.0 and r["dense"]["miou"] == pytest.approx(100.0)
    assert r["stmg"]["miou"] == pytest.approx(100.0) and r["stmg"]["fps"] > 0


def test_gating_downsampling_blocks_too(params, dense):
    """StreamConfig.gate_downsampling: all 8 blocks gated (the 1x1 projections always run). Key
    frame = dense; a static frame skips all 8 and equals dense; a local change equals the masked
    forward with the same masks (stem and decoder dense here, as in training)."""
    stream = StreamConfig(bin_grid=GRID, key_every=0, gate_downsampling=True, stem_threshold=0.0,
                          decoder_threshold=0.0)
    p = {"net": params["net"], "gen": init_generators(jax.random.key(1), NET, stream)}
    streamer = Streamer(NET, stream, HW)
    f1 = frame(9)
    f2 = local_change(f1, 10, rows=slice(24, 48), cols=slice(40, 72))  # interior change
    state = streamer.init_state()
    state, logits, stats = step(streamer, p, state, f1)
    assert stats["ran"].shape == (8,) and stats["ran"].all()
    np.testing.assert_allclose(logits, dense(f1), atol=1e-5, rtol=0)
    state, logits, stats = step(streamer, p, state, f1)
    assert not stats["ran"].any()
    np.testing.assert_allclose(logits, dense(f1), atol=1e-5, rtol=0)
    # skipping every branch leaves only stem, projections and decoder
    projections = sum(2 * c_in * c_out * (HW[0] // 2 ** (s + 2)) * (HW[1] // 2 ** (s + 2))
                      for s, c_in, c_out, st in block_specs(NET) if st == 2)
    assert stats["flops"] == pytest.approx(streamer.fixed_flops + sum(streamer.region_dense_flops.values()), rel=1e-6)
    assert streamer.fixed_flops < 0.45 * streamer.dense_flops and streamer.fixed_flops > projections
    _, logits, stats = step(streamer, p, state, f2)
    assert any(0 < k < n for k, n, r in zip(stats["bins"], [16, 16, 16, 16, 4, 4, 1, 1], stats["ran"]) if r)
    masks = {k: v[None].astype(np.float32) for k, v in stats["recomputed"].items()}
    trained, _ = jax.jit(lambda q, a, b: masked_forward(NET, stream, q, a, b, masks=masks))(
        p, jnp.asarray(f1)[None], jnp.asarray(f2)[None])
    np.testing.assert_allclose(trained[0], logits, atol=1e-5, rtol=1e-5)


def test_stream_eval_per_unit_skip_rates(params, counted):
    """compare()'s per-unit skip rates are, per block / stem / decoder, the share of frames whose
    step took that unit's reuse branch (checked against stepping the same video by hand); with a
    local change the units differ, so a rate assigned to the wrong unit would show."""
    from stmg_jax.stream_eval import compare, summary_line
    f = frame(11)
    g = local_change(f, 12)
    speck = g.copy()
    speck[10:12, 100:102] += 1.0  # 4 pixels: the stem's per-pixel test sees it, the blocks' bin means hardly
    frames = np.stack([f, f, g, speck, f, g, g])
    ran, stem, dec = [], [], []
    state = counted.init_state()
    for x in frames:
        state, _, stats = step(counted, params, state, x)
        ran.append(stats["ran"])
        stem.append(stats["recomputed"]["stem"].any())
        dec.append(stats["recomputed"]["decoder"].any())
    ran = np.asarray(ran)
    expected = {"stem": 1 - np.mean(stem), **{f"block_{i}": 1 - ran[:, j].mean() for j, i in enumerate(GATED)},
                "decoder": 1 - np.mean(dec)}
    rates = compare(NET, counted, params, frames)["stmg"]["unit_skip_rates"]
    assert list(rates) == list(expected)  # stem, blocks in order, decoder
    np.testing.assert_allclose([rates[k] for k in expected], list(expected.values()))
    assert len(set(rates.values())) > 1, rates
    assert 0 < rates["block_0"] < 1
    line = summary_line("clip", {"dense": {"fps": 10.0, "gflops_per_frame": 1.0},
                                 "stmg": {"fps": 20.0, "gflops_per_frame": 0.5, "agreement": 1.0, "skip_rate": 0.5,
                                          "unit_skip_rates": rates}})
    assert "block_0=" in line and "decoder=" in line and "20.0 frames/s" in line
