"""Per-bin inter-frame distortion and the bin <-> feature-map plumbing (gather with halo, scatter).

Bins: a feature map (H, W, C) is cut into a (gh, gw) grid of bins of (H/gh, W/gw) pixels, bin
b = row * gw + col (row-major). Everything here works on one frame (no batch axis) unless noted;
the training path vmaps it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

EPS = 1e-6
HALO = 2  # a stride-1 BasicBlock branch has two 3x3 convs: each output pixel sees 2 input pixels each side


def bin_view(x: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """(H, W, C) -> (gh, H/gh, gw, W/gw, C): a free reshape; bin (r, c) is [r, :, c]. Reductions,
    gathers and scatters over bins index this view instead of transposing the whole map (a
    transpose copies the map: at 512x512 frames that was several ms per frame on CPU)."""
    h, w, c = x.shape
    gh, gw = grid
    return x.reshape(gh, h // gh, gw, w // gw, c)


def to_bins(x: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """(H, W, C) -> (gh * gw, H/gh, W/gw, C), bins in row-major order (a copy; see `take_bins`)."""
    h, w, c = x.shape
    gh, gw = grid
    return bin_view(x, grid).transpose(0, 2, 1, 3, 4).reshape(gh * gw, h // gh, w // gw, c)


def from_bins(b: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """Inverse of `to_bins`: (gh * gw, bh, bw, C) -> (gh * bh, gw * bw, C)."""
    gh, gw = grid
    _, bh, bw, c = b.shape
    return b.reshape(gh, gw, bh, bw, c).transpose(0, 2, 1, 3, 4).reshape(gh * bh, gw * bw, c)


def bin_means(x: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """Mean over each bin's pixels: (H, W, C) -> (gh * gw, C)."""
    return jnp.mean(bin_view(x, grid), axis=(1, 3)).reshape(grid[0] * grid[1], x.shape[-1])


def channel_mean(x: jax.Array) -> jax.Array:
    """mean_c x: (H, W, C) -> (H, W). Few channels (the stem's RGB input) are summed slice by
    slice: XLA:CPU reduces over a 3-wide minor axis ~10x slower than this elementwise sum."""
    c = x.shape[-1]
    if c <= 4:
        return sum(x[..., i] for i in range(c)) / c
    return jnp.mean(x, axis=-1)


def bin_change(x: jax.Array, ref: jax.Array, grid: tuple[int, int], mean_abs_x: jax.Array | None = None) -> jax.Array:
    """Per-bin, per-channel change: (H, W, C) x2 -> (gh * gw, C), mean over bin b's pixels of
    |x - ref|, divided by (mean_{whole map} |x| + EPS). `bin_distortion` is its channel mean.
    `mean_abs_x`, if the caller has it, saves the whole-map reduction."""
    if mean_abs_x is None:
        mean_abs_x = jnp.mean(jnp.abs(x))
    return bin_means(jnp.abs(x - ref), grid) / (mean_abs_x + EPS)


def bin_distortion(x: jax.Array, ref: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """Inter-frame distortion of a block input, per bin: (H, W, C) x2 -> (gh * gw,).

    d_b = mean_{pixels, channels in b} |x - ref|  /  (mean_{whole map} |x| + EPS).

    `ref` is the block input the cached branch output of that bin was computed from (in the
    streaming path: the previous frame's input for every bin recomputed at t-1; older for bins
    that were reused, so slow drift accumulates in d instead of going unnoticed). The normaliser is
    the mean over the whole map, not per bin: it makes d comparable across blocks of different
    scale, while a bin whose features are all ~0 (post-ReLU) does not get a huge distortion from
    a tiny change.
    """
    return jnp.mean(bin_change(x, ref, grid), axis=-1)


def peak_change(x: jax.Array, ref: jax.Array, grid: tuple[int, int], halo: int) -> jax.Array:
    """Largest change that can reach each bin of a layer with a `halo`-pixel receptive margin:
    (H, W, C) x2 -> (gh * gw,).

    d_b = max over the pixels of bin b and its `halo`-pixel ring of mean_c |x - ref|, divided by
    (mean_{whole map} |x| + EPS). Used for the stem and the decoder's end, whose masks are fixed
    thresholds: a mean over the bin would let a thin moving edge (a few changed pixels in a large
    bin) go unnoticed frame after frame; the max with the halo recomputes every bin whose output
    the change can reach, and a bin is reused only where nothing within its receptive field moved
    by more than the threshold (sensor and codec noise stay below it).
    """
    change = channel_mean(jnp.abs(x - ref))
    return _bin_peak(change, grid, halo) / (jnp.mean(jnp.abs(x)) + EPS)


def _bin_peak(m: jax.Array, grid: tuple[int, int], halo: int) -> jax.Array:
    """max of m (H, W) over each bin and its `halo`-pixel ring (outside the map ignored): (gh * gw,).

    Separable, one axis at a time: per bin, the max over its own columns and over the `halo`
    columns each neighbouring bin has next to it (pixels beyond the map edge are not there), then
    the same over rows of that (H, gw) result. Every reduction is a plain strided one (no sliding
    window: XLA:CPU's reduce_window took 1 ms on a 512x512 map). A halo wider than a bin takes a
    separable sliding-window max first."""
    h, w = m.shape
    gh, gw = grid
    if halo > min(h // gh, w // gw):
        for window in ((2 * halo + 1, 1), (1, 2 * halo + 1)):
            m = jax.lax.reduce_window(m, -jnp.inf, jax.lax.max, window, (1, 1), "SAME")
        halo = 0

    def along_last(v, n):  # (..., L) -> (..., n): max over each of n segments and `halo` beyond it
        seg = v.reshape(*v.shape[:-1], n, -1)
        peak = jnp.max(seg, axis=-1)
        if halo and n > 1:
            fill = jnp.full((*v.shape[:-1], 1), -jnp.inf, v.dtype)
            before = jnp.concatenate([fill, jnp.max(seg[..., :-1, -halo:], axis=-1)], axis=-1)
            after = jnp.concatenate([jnp.max(seg[..., 1:, :halo], axis=-1), fill], axis=-1)
            peak = jnp.maximum(peak, jnp.maximum(before, after))
        return peak

    cols = along_last(m, gw)                                            # (H, gw)
    return along_last(cols.T, gh).T.reshape(-1)                         # (gw, H) -> (gh, gw)


def gather_with_halo(x: jax.Array, idx: jax.Array, grid: tuple[int, int], stride: int = 1) -> jax.Array:
    """Input patches of output bins `idx` (k,) for a BasicBlock branch (3x3 conv /stride, 3x3 conv).

    x (H, W, C) is the block input; bins are those of the block's output map (H/stride, W/stride)
    on `grid`, of (bh, bw) output pixels. An output bin needs the first conv's outputs on the bin
    plus a 1-pixel ring, i.e. input rows stride*(r0 - 1) - 1 .. stride*(r0 + bh) + 1: patches of
    (stride*(bh+1) + 3, stride*(bw+1) + 3) = (bh + 4, bw + 4) at stride 1 (a 2-pixel halo).
    Returns (k, stride*(bh+1)+3, stride*(bw+1)+3, C); pixels outside the image are zeros (what
    the dense branch's SAME-padded first conv sees).
    """
    h, w, _ = x.shape
    bh, bw = h // stride // grid[0], w // stride // grid[1]
    pad = stride + 1
    return gather_patches(jnp.pad(x, ((pad, pad), (pad, pad), (0, 0))), idx, grid, (bh * stride, bw * stride),
                          (stride * (bh + 1) + 3, stride * (bw + 1) + 3))


def gather_patches(xp: jax.Array, idx: jax.Array, grid: tuple[int, int], step: tuple[int, int],
                   size: tuple[int, int]) -> jax.Array:
    """Patches of `size` (ph, pw) of an already padded map xp (H', W', C), bin b's patch starting
    at (row(b) * step[0], col(b) * step[1]) with row/col on the (gh, gw) `grid`: (k, ph, pw, C).

    The slices are taken from the (H', W' * C) view (rows of pw * C contiguous values, not pw * ph
    runs of C: XLA:CPU gathers 3-channel pixels one by one), and the result is materialised before
    its consumer (`optimization_barrier`): fused into the convolution that reads it, the gather was
    recomputed for every kernel tap."""
    gw, c = grid[1], xp.shape[2]
    rows = xp.reshape(xp.shape[0], -1)

    def one(b):
        return jax.lax.dynamic_slice(rows, ((b // gw) * step[0], (b % gw) * step[1] * c), (size[0], size[1] * c))
    return jax.lax.optimization_barrier(jax.vmap(one)(idx).reshape(-1, *size, c))


def inside_mask(idx: jax.Array, grid: tuple[int, int], hw: tuple[int, int], margin: int) -> jax.Array:
    """(k, bh + 2 margin, bw + 2 margin, 1) float: 1 where a bin-with-margin position lies inside the
    (H, W) map. Partial compute multiplies the first conv's output (margin 1) by it, so that
    positions outside the image are the zeros that the second conv's SAME padding would see."""
    h, w = hw
    gh, gw = grid
    bh, bw = h // gh, w // gw
    rows = (idx // gw)[:, None] * bh - margin + jnp.arange(bh + 2 * margin)[None]  # (k, bh+2m)
    cols = (idx % gw)[:, None] * bw - margin + jnp.arange(bw + 2 * margin)[None]
    rin = (rows >= 0) & (rows < h)
    cin = (cols >= 0) & (cols < w)
    return (rin[:, :, None] & cin[:, None, :]).astype(jnp.float32)[..., None]


def _bin_rows(x: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """(H, W, C) -> (gh, H/gh, gw, W/gw * C): `bin_view` with each bin row's pixels merged into one
    contiguous run (free). Gathers and scatters of whole bins index this view: they then move runs
    of W/gw * C values instead of C at a time."""
    h, w, c = x.shape
    return x.reshape(grid[0], h // grid[0], grid[1], (w // grid[1]) * c)


def take_bins(x: jax.Array, idx: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """Bins `idx` (k,) of x (H, W, C): (k, H/gh, W/gw, C) (a gather; nothing else is copied)."""
    h, w, c = x.shape
    return _bin_rows(x, grid)[idx // grid[1], :, idx % grid[1]].reshape(-1, h // grid[0], w // grid[1], c)


def scatter_bins(x: jax.Array, idx: jax.Array, values: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """x (H, W, C) with bins `idx` (k,) replaced by `values` (k, bh, bw, C) (one scatter, in place
    when x's buffer can be reused)."""
    k, bh, bw, c = values.shape
    rows = _bin_rows(x, grid).at[idx // grid[1], :, idx % grid[1]].set(values.astype(x.dtype).reshape(k, bh, bw * c))
    return rows.reshape(x.shape)
