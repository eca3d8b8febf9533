"""STMG dense network, partial compute with halo, and the errors that name their field."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stmg_jax.config import ConfigError, SegNetConfig, StreamConfig, check_input_size
from stmg_jax.distortion import (bin_distortion, channel_mean, from_bins, gather_with_halo, inside_mask, peak_change,
                                 scatter_bins, take_bins, to_bins)
from stmg_jax.generator import init_generators
from stmg_jax.model import SegNet, block_specs, dense_flops, gateable_blocks, stage_ends, upsample
from stmg_jax.streaming import Streamer
from stmg_jax.testing import random_net_variables

NET = SegNetConfig(num_classes=5, widths=(16, 32, 64, 128), decoder_width=32, residual_scale_init=1.0)
STREAM = StreamConfig(bin_grid=((4, 4), (4, 4), (2, 2), (1, 1)))
HW = (64, 128)


def normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


@pytest.fixture(scope="module")
def net_vars():
    """Random weights with every affine scale and bias perturbed (`stmg_jax.testing`)."""
    return random_net_variables(NET, HW, seed=0)


def test_structure_resnet18_layout():
    specs = block_specs(NET)
    assert [s for s, *_ in specs] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [st for *_, st in specs] == [1, 1, 2, 1, 2, 1, 2, 1]
    # Identity-shortcut blocks only: stage 0's two and the second of each later stage.
    assert gateable_blocks(NET) == [0, 1, 3, 5, 7]
    assert stage_ends(NET) == [1, 3, 5, 7]
    deep = SegNetConfig(blocks_per_stage=(3, 4, 6, 3))  # ResNet-34 layout
    assert len(block_specs(deep)) == 16 and len(gateable_blocks(deep)) == 13


def test_dense_shapes_and_stage_resolutions(net_vars):
    model = SegNet(NET)
    x = normal(2, (1, *HW, 3))
    logits, feats = jax.jit(lambda v, x: model.apply(v, x, method=lambda m, x: (m(x), m.features(x))))(net_vars, x)
    assert logits.shape == (1, *HW, 5)
    assert bool(jnp.all(jnp.isfinite(logits))) and 0.1 < float(jnp.std(logits)) < 100
    assert [f.shape for f in feats] == [(1, 16, 32, 16), (1, 8, 16, 32), (1, 4, 8, 64), (1, 2, 4, 128)]


def test_dense_flops_formula():
    f = dense_flops(NET, *HW)
    assert f["stem"] == 2 * 7 * 7 * 3 * 16 * 32 * 64
    assert f["block_0"] == 2 * (2 * 9 * 16 * 16 * 16 * 32)
    # downsampling block 2: 3x3 16->32 /2, 3x3 32->32, 1x1 projection 16->32, all at 8x16
    assert f["block_2"] == 2 * 9 * 16 * 32 * 128 + 2 * 9 * 32 * 32 * 128 + 2 * 16 * 32 * 128
    assert f["total"] == sum(v for k, v in f.items() if k != "total")


@pytest.mark.parametrize("block,bins", [
    (0, [0, 3, 12, 15]),   # stage 0, 4x4 grid of 4x8 bins: the four corners
    (0, [5, 6, 9, 10]),    # the four interior bins
    (1, [1, 7, 14, 4]),    # edge bins (top, right, bottom, left)
    (3, [2, 5, 8, 15]),    # stage 1, 4x4 grid of 2x4 bins (halo wider than the bin is tall)
    (5, [3, 0]),           # stage 2, 2x2 grid: every bin touches two borders
])
def test_partial_compute_equals_dense_block_on_its_bins(net_vars, block, bins):
    """partial_level on k bins == the dense branch on those bins; every other bin keeps the cache."""
    streamer = Streamer(NET, STREAM, HW)
    (h, w), grid, c = streamer.block_geometry(block)
    x = jax.nn.relu(normal(block, (h, w, c)))
    dense = SegNet(NET).apply(net_vars, block, x[None], method=SegNet.branch)[0]
    n = grid[0] * grid[1]
    score = jnp.zeros((n,)).at[jnp.asarray(bins)].set(1.0 + jnp.arange(len(bins)))
    cache = jnp.full((h, w, c), 7.0)
    ref = jnp.full((h, w, c), -3.0)
    run = jax.jit(streamer.partial_level(net_vars, block, len(bins)))
    new_cache, new_ref, recomputed = run(x, ref, cache, score)
    assert sorted(np.flatnonzero(np.asarray(recomputed)).tolist()) == sorted(bins)
    got, want, x_bins = to_bins(new_cache, grid), to_bins(dense, grid), to_bins(x, grid)
    others = [b for b in range(n) if b not in bins]
    np.testing.assert_allclose(got[jnp.asarray(bins)], want[jnp.asarray(bins)], atol=1e-5)
    np.testing.assert_array_equal(got[jnp.asarray(others)], 7.0) if others else None
    np.testing.assert_array_equal(to_bins(new_ref, grid)[jnp.asarray(bins)], x_bins[jnp.asarray(bins)])
    if others:
        np.testing.assert_array_equal(to_bins(new_ref, grid)[jnp.asarray(others)], -3.0)
    bh, bw = h // grid[0], w // grid[1]
    assert streamer.partial_flops(block, len(bins)) == len(bins) * 2 * 9 * c * c * ((bh + 2) * (bw + 2) + bh * bw)


def test_border_masking_is_what_makes_border_bins_exact(net_vars):
    """Control for the test above: without zeroing the first conv's out-of-image positions, border
    bins differ from the dense branch while interior bins still match."""
    (h, w), grid, c = Streamer(NET, STREAM, HW).block_geometry(0)
    x = jax.nn.relu(normal(9, (h, w, c)))
    model = SegNet(NET)
    dense = to_bins(model.apply(net_vars, 0, x[None], method=SegNet.branch)[0], grid)
    idx = jnp.asarray([0, 5])  # corner, interior
    patches = gather_with_halo(x, idx, grid)
    assert patches.shape == (2, h // 4 + 4, w // 4 + 4, c)
    unmasked = model.apply(net_vars, 0, patches, 0, None, method=SegNet.branch)
    masked = model.apply(net_vars, 0, patches, 0, inside_mask(idx, grid, (h, w), 1), method=SegNet.branch)
    np.testing.assert_allclose(masked, dense[idx], atol=1e-5)
    np.testing.assert_allclose(unmasked[1], dense[5], atol=1e-5)
    assert float(jnp.max(jnp.abs(unmasked[0] - dense[0]))) > 1e-2


def test_bins_roundtrip_order_and_distortion():
    x = jnp.arange(8 * 12 * 2, dtype=jnp.float32).reshape(8, 12, 2)
    b = to_bins(x, (2, 3))
    assert b.shape == (6, 4, 4, 2)
    np.testing.assert_array_equal(b[4], x[4:8, 4:8])  # row-major: bin 4 = row 1, col 1
    np.testing.assert_array_equal(from_bins(b, (2, 3)), x)
    ref = x.at[0:4, 8:12].add(2.0)  # change only bin 2
    d = bin_distortion(x, ref, (2, 3))
    expected = np.zeros(6)
    expected[2] = 2.0 / float(jnp.mean(jnp.abs(x)))
    np.testing.assert_allclose(d, expected, rtol=1e-5)


def test_take_and_scatter_bins_match_the_transposed_layout():
    x = jnp.asarray(np.random.RandomState(0).randn(8, 12, 3), jnp.float32)
    idx = jnp.asarray([5, 0, 2])
    np.testing.assert_array_equal(take_bins(x, idx, (2, 3)), to_bins(x, (2, 3))[idx])
    values = jnp.full((3, 4, 4, 3), 7.0)
    want = from_bins(to_bins(x, (2, 3)).at[idx].set(values), (2, 3))
    got = scatter_bins(x, idx, values, (2, 3))
    np.testing.assert_array_equal(got, want)
    assert (got[0:4, 0:4] == 7).all() and (got[4:8, 0:4] == x[4:8, 0:4]).all()


def test_peak_change_is_the_max_filtered_channel_mean():
    rng = np.random.RandomState(1)
    for c in (3, 16):  # the RGB input takes channel_mean's slice-sum path, 16 channels jnp.mean
        x = rng.rand(16, 16, c).astype(np.float32)
        ref = x.copy()
        ref[2, 10, :] += 3.0  # one changed pixel in bin 1 (rows 0-7, cols 8-15), 3 columns from bin 0
        np.testing.assert_allclose(channel_mean(jnp.abs(x - ref)), np.abs(x - ref).mean(-1), rtol=1e-6)
        norm = np.abs(x).mean()
        for halo, changed in ((0, [1]), (2, [1]), (3, [0, 1])):
            d = np.asarray(peak_change(jnp.asarray(x), jnp.asarray(ref), (2, 2), halo))
            want = np.zeros(4)
            want[changed] = 3.0 / norm
            np.testing.assert_allclose(d, want, rtol=1e-5, err_msg=f"c={c} halo={halo}")


@pytest.mark.parametrize("hw,grid", [((16, 24), (2, 3)), ((12, 8), (3, 1)), ((8, 8), (4, 4))])
def test_peak_change_and_bin_means_match_numpy(hw, grid):
    """Sparse random changes: peak_change equals NumPy's max over each bin grown by the halo
    (clipped at the map edge; halos narrower, equal to and wider than a bin), and bin_means
    equals NumPy's means."""
    from stmg_jax.distortion import bin_means
    rng = np.random.RandomState(4)
    (h, w), (gh, gw) = hw, grid
    x = rng.randn(h, w, 3).astype(np.float32)
    ref = x + (rng.rand(h, w, 1) < 0.05) * rng.rand(h, w, 3).astype(np.float32)
    change = np.abs(x - ref).mean(-1)
    bh, bw = h // gh, w // gw
    for halo in (0, 1, 2, 4, 5):
        want = [change[max(r * bh - halo, 0):(r + 1) * bh + halo, max(c * bw - halo, 0):(c + 1) * bw + halo].max()
                for r in range(gh) for c in range(gw)]
        got = peak_change(jnp.asarray(x), jnp.asarray(ref), grid, halo)
        np.testing.assert_allclose(got, np.asarray(want) / np.abs(x).mean(), rtol=1e-5, err_msg=f"halo={halo}")
    want_means = x.reshape(gh, bh, gw, bw, 3).mean(axis=(1, 3)).reshape(gh * gw, 3)
    np.testing.assert_allclose(bin_means(jnp.asarray(x), grid), want_means, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape,factor", [((2, 4, 6, 3), 2), ((1, 8, 4, 5), 4), ((1, 3, 5, 2), 3)])
def test_upsample_equals_jax_image_resize_bilinear(shape, factor):
    x = jnp.asarray(np.random.RandomState(2).randn(*shape), jnp.float32)
    n, h, w, c = shape
    want = jax.image.resize(x, (n, h * factor, w * factor, c), "bilinear")
    np.testing.assert_allclose(upsample(x, factor), want, atol=1e-6, rtol=0)


def test_generator_inputs_match_their_definitions():
    """On a post-ReLU block input: d = bin_distortion (normalised by mean |x|), pooled = bin means
    of x, change = per-channel bin means of |x - ref| / mean |x| (NumPy)."""
    from stmg_jax.generator import generator_inputs
    rng = np.random.RandomState(3)
    x = np.maximum(rng.randn(16, 24, 5), 0).astype(np.float32)
    ref = x + 0.3 * rng.randn(16, 24, 5).astype(np.float32)
    d, pooled, change = generator_inputs(jnp.asarray(x), jnp.asarray(ref), (2, 3))
    bins = x.reshape(2, 8, 3, 8, 5).transpose(0, 2, 1, 3, 4).reshape(6, 64, 5)
    diff = np.abs(x - ref).reshape(2, 8, 3, 8, 5).transpose(0, 2, 1, 3, 4).reshape(6, 64, 5)
    np.testing.assert_allclose(pooled, bins.mean(1), rtol=1e-5)
    np.testing.assert_allclose(change, diff.mean(1) / np.abs(x).mean(), rtol=1e-4)
    np.testing.assert_allclose(d, bin_distortion(jnp.asarray(x), jnp.asarray(ref), (2, 3)), rtol=1e-4)


def test_generator_untrained_is_a_distortion_threshold():
    """Untrained STMG: bin logits = 100 * (d - 0.05), gate logit = 100 * (max d - 0.05)."""
    from stmg_jax.generator import MaskGenerator
    gens = init_generators(jax.random.key(0), NET, STREAM)
    assert sorted(gens) == [f"block_{i}" for i in (0, 1, 3, 5, 7)]
    d = jnp.asarray([0.0, 0.01, 0.2] + [0.0] * 13)
    pooled = normal(1, (16, 16))
    gate, bins = MaskGenerator().apply(gens["block_0"], d, pooled, jnp.abs(pooled))
    np.testing.assert_allclose(bins, 100 * (d - 0.05), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(gate, 100 * (0.2 - 0.05), rtol=1e-5)


def test_bad_input_size_names_the_field(net_vars):
    with pytest.raises(ConfigError, match="input height 70 is not a positive multiple of 32"):
        SegNet(NET).apply(net_vars, jnp.zeros((1, 70, 128, 3)))
    with pytest.raises(ConfigError, match="image_size width 100"):
        Streamer(NET, STREAM, (64, 100))


def test_bad_bin_grid_names_the_field():
    # (8, 8) divides stage 0 (16x32) and stage 1 (8x16) but not stage 2 (4x8).
    with pytest.raises(ConfigError, match=r"bin_grid\[2\]=\(8, 8\) does not divide stage 2's feature map 4x8"):
        check_input_size(*HW, StreamConfig(bin_grid=(8, 8)))
    with pytest.raises(ConfigError, match=r"bin_grid\[3\]=\(1, 3\)"):
        Streamer(NET, StreamConfig(bin_grid=((4, 4), (4, 4), (2, 2), (1, 3))), HW)
    with pytest.raises(ConfigError, match="bin_grid="):
        StreamConfig(bin_grid=(4, 0))
    with pytest.raises(ConfigError, match="bin_grid="):
        StreamConfig(bin_grid=((4, 4), (4, 4)))
    with pytest.raises(ConfigError, match="capacities="):
        StreamConfig(capacities=(0.0,))
    with pytest.raises(ConfigError, match="widths="):
        SegNetConfig(widths=(16, 32, 64))


def test_capacity_levels():
    s = StreamConfig(capacities=(0.25, 0.5))
    assert s.levels(16) == (4, 8, 16)
    assert s.levels(4) == (1, 2, 4)
    assert s.levels(1) == (1,)


@pytest.mark.parametrize("block,bins", [
    (2, [0, 3, 5, 15]),    # stage 1 (8x16 output, 4x4 grid of 2x4 bins): corners + interior
    (4, [1, 2]),           # stage 2 (4x8 output, 2x2 grid)
    (6, [0]),              # stage 3, a single bin: the whole map through the gather path
])
def test_partial_compute_of_a_downsampling_block(net_vars, block, bins):
    """Stride-2 blocks (StreamConfig.gate_downsampling): output bins gathered from the input with
    2 * (bin + 1) + 3 pixels per side equal the dense stride-2 branch on those bins."""
    streamer = Streamer(NET, StreamConfig(bin_grid=STREAM.bin_grid, gate_downsampling=True), HW)
    assert streamer.gateable == list(range(8))
    (h, w), grid, c = streamer.block_geometry(block)
    hin, win, cin = streamer.block_input(block)
    assert (hin, win, cin) == (2 * h, 2 * w, c // 2)
    x = jax.nn.relu(normal(block, (hin, win, cin)))
    dense = SegNet(NET).apply(net_vars, block, x[None], method=SegNet.branch)[0]
    assert dense.shape == (h, w, c)
    n = grid[0] * grid[1]
    score = jnp.zeros((n,)).at[jnp.asarray(bins)].set(1.0 + jnp.arange(len(bins)))
    cache = jnp.full((h, w, c), 7.0)
    new_cache, new_ref, recomputed = jax.jit(streamer.partial_level(net_vars, block, len(bins)))(
        x, jnp.zeros((hin, win, cin)), cache, score)
    got, want = to_bins(new_cache, grid), to_bins(dense, grid)
    np.testing.assert_allclose(got[jnp.asarray(bins)], want[jnp.asarray(bins)], atol=1e-5)
    others = [b for b in range(n) if b not in bins]
    if others:
        np.testing.assert_array_equal(got[jnp.asarray(others)], 7.0)
    # the reference input is updated on the recomputed bins (input-resolution bins of the same grid)
    np.testing.assert_array_equal(to_bins(new_ref, grid)[jnp.asarray(bins)], to_bins(x, grid)[jnp.asarray(bins)])
    bh, bw = h // grid[0], w // grid[1]
    assert streamer.partial_flops(block, len(bins)) == len(bins) * (2 * 9 * cin * c * (bh + 2) * (bw + 2)
                                                              + 2 * 9 * c * c * bh * bw)
