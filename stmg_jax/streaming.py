"""The jitted streaming path (batch 1): `step(params, state, frame) -> (state, logits, stats)`.

Per frame:
  1. Key frame if frame 0, every `key_every`-th frame, or when the frame's pixel distortion
     against the previous frame reaches `key_distortion` (a scene cut). On a key frame every layer
     below runs densely and every cache is refreshed.
  2. stem, recomputed per bin: the bins (stage 0's grid, on the stem output) that an input-pixel
     change of >= `stem_threshold` against the pixels the cached stem output was computed from
     can reach (`distortion.peak_change`, 5-pixel halo); the stem runs on those bins' input
     patches (7x7 conv /2 and 3x3 max-pool /2: 4 bh + 7 input rows per bin) at the smallest level
     that covers them (same levels and `lax.switch` as the blocks), cache elsewhere; nothing
     executes when no bin is selected (the switch's reuse branch).
  3. blocks in order. A non-gateable block (by default the downsampling, projection-shortcut
     blocks; see StreamConfig.gate_downsampling) runs densely. A gateable block i with input x:
       d, pooled, change = generator_inputs(x, ref_i, grid)        (ref_i: see `StreamState`)
       gate_logit, bin_logits = generator_i(d, pooled, change)
       selected = sigmoid(bin_logits) >= bin_threshold;  n_sel = sum(selected)
       run   = key or (sigmoid(gate_logit) >= gate_threshold and n_sel > 0)
       level = the last (dense) level on key frames, else the smallest capacity level k >= n_sel
       r = lax.switch(run ? 1 + level : 0, [reuse, partial(k_0), ..., partial(k_{L-2}), dense]):
             reuse:   r = cache_i                                   (nothing else executes)
               partial(k): the k bins of highest bin probability (lax.top_k, static k) are
                 gathered with a 2-pixel halo (two 3x3 convs; bins are on the block's output map,
                 a stride-2 block gathers 2*(bh+1)+3 input rows per bin), the branch runs VALID on
                 the (k, bh+4, bw+4, c) patches with the first conv's positions outside the image
                 zeroed (`distortion.inside_mask`), the (k, bh, bw, c) results are scattered into
                 the cache, cache elsewhere. ref_i is updated on the recomputed bins only.
               dense: the branch on the whole map (no halo overhead); ref_i = x.
       out = ReLU(shortcut(x) + r)        (shortcut: identity, or the 1x1 projection, always run)
     Reuse is the identity transform of the previous branch output (the SPEC's minimum); the
     identity shortcut still carries the current frame's x through every skipped block.
  4. decoder: the lateral 1x1 convs and the stride-32..8 blends run densely (cheap); its stride-4
     end (`SegNet.blend_head`: the 3x3 blend, the decoder's most expensive conv, and the 1x1
     classifier) is recomputed per bin like the stem, on the bins that an input change of
     >= `decoder_threshold` can reach (1-pixel halo); the cache holds the stride-4 logits; then
     the x4 bilinear upsampling -> logits (H, W, classes).
  The stem and decoder masks are fixed distortion thresholds (skip-convolution style), not
  learned: their input is pixels or the decoder's own input, where "changed" is well defined.

Shapes are static everywhere: k per level is a Python int; the gate (reuse or compute) and the
level are one `lax.switch` (a `lax.cond` with more than two branches: a cond around a switch
copied every cache and ref twice per frame). At batch size 1 under `jit` on CPU/GPU/TPU, it runs
only the taken branch (verified by `tests/test_stmg_streaming.py` with a `jax.debug.callback`
counter). Do not `vmap` this step: under vmap `cond` becomes `select` and both branches run
(training uses masked compute instead, see the SPEC).

With every threshold at 0 every layer runs densely and the step equals the dense network (tested
at 1e-5); on a static input nothing but the always-dense layers runs and the output still equals
the dense network's.

FLOPs (stats['flops']) are counted analytically from the conv shapes of the branches actually
taken (`model.conv_flops`: 2 * k*k * Cin * Cout * Hout * Wout per conv; affines, ReLUs, adds,
pooling, resizing and the generators are not counted). A partial level on k bins of (bh, bw)
costs k * (conv 3x3 on (bh+2) x (bw+2) outputs + conv 3x3 on bh x bw outputs), halo included;
the stem on k bins k * conv 7x7 on (2bh+1) x (2bw+1) outputs, the decoder's end k * (conv 3x3 +
conv 1x1) on bh x bw outputs.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp

from stmg_jax.config import ConfigError, SegNetConfig, StreamConfig, check_input_size
from stmg_jax.distortion import (EPS, gather_patches, gather_with_halo, inside_mask, peak_change, scatter_bins,
                                 take_bins)
from stmg_jax.generator import MaskGenerator, generator_inputs
from stmg_jax.model import (SegNet, block_specs, branch_flops, conv_flops, dense_flops, gateable_blocks,
                            region_flops, stage_ends, upsample_logits)


@flax.struct.dataclass
class StreamState:
    """Streaming state (one video, no batch axis).

    count: int32, frames processed so far.
    frame_ref: (H, W, 3) the previous frame (for `key_distortion`; zeros when that test is off).
    refs: {'block_<i>': (h, w, c)} per gateable block, the block input each bin's cached branch
      output was computed from (the previous frame's input on bins recomputed at t-1); 'stem':
      (H, W, 3) the same for the stem's input pixels; 'decoder': (H/4, W/4, d) for the input of
      the decoder's stride-4 end.
    caches: {'block_<i>': (h, w, c)} per gateable block, the cached residual-branch output;
      'stem': (H/4, W/4, widths[0]) the stem output; 'decoder': (H/4, W/4, classes) the stride-4 logits.
    """

    count: jax.Array
    frame_ref: jax.Array
    refs: dict[str, jax.Array]
    caches: dict[str, jax.Array]


class Streamer:
    """Builds the streaming step for one network config, stream config and frame size.

    params = {'net': SegNet variables, 'gen': `generator.init_generators(...)` output}.
    `on_compute(unit, k)`, if given, is called from inside every compute branch through
    `jax.debug.callback` (block index or 'stem' / 'decoder', bins computed): a host-side
    execution counter for tests.

    `step` donates the state it is given (its caches are updated in place instead of copied every
    frame): use the returned state, as a stream does; copy a state you want to keep
    (`jax.tree.map(jnp.copy, state)`).
    """

    def __init__(self, net_config: SegNetConfig, stream_config: StreamConfig, image_size: tuple[int, int],
                 generator: MaskGenerator = MaskGenerator(),
                 on_compute: Callable[[int, int], Any] | None = None):
        check_input_size(*image_size, stream_config, field="image_size")
        self.net_config, self.config = net_config, stream_config
        self.image_size = tuple(image_size)
        self.net, self.generator, self.on_compute = SegNet(net_config), generator, on_compute
        self.specs = block_specs(net_config)
        self.gateable = gateable_blocks(net_config, stream_config.gate_downsampling)
        self.ends = stage_ends(net_config)
        h, w = self.image_size
        dense = dense_flops(net_config, h, w)
        self.dense_flops = float(dense["total"])
        self.region_dense_flops = region_flops(net_config, h, w)
        self.fixed_flops = float(dense["total"] - sum(branch_flops(net_config, i, h, w) for i in self.gateable)
                                 - sum(self.region_dense_flops.values()))
        self.step = jax.jit(self._step, donate_argnums=1)

    # -- static geometry ------------------------------------------------------------------------
    def block_geometry(self, i: int) -> tuple[tuple[int, int], tuple[int, int], int]:
        """((h, w) output feature map, (gh, gw) bin grid, output channels) of block i."""
        s, _, c, _ = self.specs[i]
        h, w = self.image_size
        return (h // 2 ** (s + 2), w // 2 ** (s + 2)), self.config.bin_grid[s], c

    def block_input(self, i: int) -> tuple[int, int, int]:
        """(H, W, C) of block i's input (stride x the output map for a downsampling block)."""
        (h, w), _, _ = self.block_geometry(i)
        _, cin, _, stride = self.specs[i]
        return h * stride, w * stride, cin

    def levels(self, i: int) -> tuple[int, ...]:
        _, (gh, gw), _ = self.block_geometry(i)
        return self.config.levels(gh * gw)

    def partial_flops(self, i: int, k: int) -> float:
        """Branch FLOPs of partial compute on k bins: per bin, the first conv on the bin plus a
        1-pixel ring of output positions (the halo) and the second conv on the bin."""
        (h, w), (gh, gw), c = self.block_geometry(i)
        cin = self.specs[i][1]
        bh, bw = h // gh, w // gw
        return float(k * (conv_flops(bh + 2, bw + 2, cin, c, 3) + conv_flops(bh, bw, c, c, 3)))

    def level_flops(self, i: int, k: int) -> float:
        """Branch FLOPs of the capacity level with k bins (the last level, k = all bins, is dense)."""
        (h, w), (gh, gw), c = self.block_geometry(i)
        if k == gh * gw:
            return float(branch_flops(self.net_config, i, *self.image_size))
        return self.partial_flops(i, k)

    # -- state ----------------------------------------------------------------------------------
    def init_state(self) -> StreamState:
        h, w = self.image_size
        refs, caches = {}, {}
        for i in self.gateable:
            (fh, fw), _, c = self.block_geometry(i)
            caches[f"block_{i}"] = jnp.zeros((fh, fw, c), jnp.float32)
            refs[f"block_{i}"] = jnp.zeros(self.block_input(i), jnp.float32)
        d = self.net_config.decoder_width
        refs["stem"] = jnp.zeros((h, w, 3), jnp.float32)
        caches["stem"] = jnp.zeros((h // 4, w // 4, self.net_config.widths[0]), jnp.float32)
        refs["decoder"] = jnp.zeros((h // 4, w // 4, d), jnp.float32)
        caches["decoder"] = jnp.zeros((h // 4, w // 4, self.net_config.num_classes), jnp.float32)
        return StreamState(count=jnp.zeros((), jnp.int32), frame_ref=jnp.zeros((h, w, 3), jnp.float32),
                           refs=refs, caches=caches)

    # -- capacity levels (blocks, stem, decoder) -------------------------------------------------
    def _partial(self, unit, grid: tuple[int, int], k: int, patch_fn):
        """Capacity level of k bins: a function (x, ref, cache, score) -> (cache', ref',
        recomputed (n,) bool) that runs `patch_fn(x, idx)` -> (k, bh, bw, C) on the k bins of
        highest score, scatters the results into the cache and x's bins into ref."""
        def run(x, ref, cache, score):
            if self.on_compute is not None:
                jax.debug.callback(lambda: self.on_compute(unit, k))
            idx = jax.lax.top_k(score, k)[1]
            recomputed = jnp.zeros((grid[0] * grid[1],), bool).at[idx].set(True)
            return (scatter_bins(cache, idx, patch_fn(x, idx), grid),
                    scatter_bins(ref, idx, take_bins(x, idx, grid), grid), recomputed)
        return run

    def _dense(self, unit, num_bins: int, dense_fn):
        """The full level: same signature as `_partial`, `dense_fn(x)` on the whole map."""
        def run(x, ref, cache, score):
            if self.on_compute is not None:
                jax.debug.callback(lambda: self.on_compute(unit, num_bins))
            return dense_fn(x), x, jnp.ones((num_bins,), bool)
        return run

    def partial_level(self, nv, i: int, k: int):
        """Capacity level of k bins for gateable block i (see `_partial`); x, ref: the block's
        input (H, W, Cin), cache: its branch output (h, w, C), score (n,). Recomputes the branch on
        the k bins of highest score (halo handled), cache elsewhere."""
        (h, w), grid, _ = self.block_geometry(i)
        stride = self.specs[i][3]

        def branch(x, idx):
            patches = gather_with_halo(x, idx, grid, stride)    # (k, s(bh+1)+3, s(bw+1)+3, Cin)
            mask = inside_mask(idx, grid, (h, w), 1)                             # (k, bh+2, bw+2, 1)
            return self.net.apply(nv, i, patches, 0, mask, method=SegNet.branch)  # (k, bh, bw, C)
        return self._partial(i, grid, k, branch)

    def dense_level(self, nv, i: int):
        """The full level of block i: the branch on the whole map."""
        _, (gh, gw), _ = self.block_geometry(i)
        return self._dense(i, gh * gw, lambda x: self.net.apply(nv, i, x[None], method=SegNet.branch)[0])

    def _levels_step(self, run, key, n_sel, levels, branches, level_flops, x, ref, cache, score):
        """Shared by blocks, stem and decoder: one `lax.switch` over [reuse, level_0, ..., dense]:
        reuse (returns the cache untouched) unless `run`, else the smallest capacity level covering
        the n_sel selected bins (the dense last level on key frames). One conditional rather than a
        `cond` around a `switch`: each conditional level copies the buffers it returns (XLA cannot
        update a conditional's operand in place), so nesting doubled the copies of cache and ref.
        The FLOPs taken are looked up outside the conditional in `level_flops` (one Python float
        per level). -> (cache', ref', recomputed (n,) bool, flops, level)."""
        # the first level with k >= n_sel: the number of levels below n_sel (a compare and a sum;
        # jnp.searchsorted is a while loop)
        level = jnp.where(key, len(levels) - 1,
                          jnp.minimum(jnp.sum(jnp.asarray(levels) < n_sel), len(levels) - 1))

        def reuse(x, ref, cache, score):
            return cache, ref, jnp.zeros_like(score, bool)

        out = jax.lax.switch(jnp.where(run, level + 1, 0), [reuse, *branches], x, ref, cache, score)
        flops = jnp.where(run, jnp.asarray(level_flops, jnp.float32)[level], jnp.float32(0.0))
        return (*out, flops, level)

    def _gated_block(self, params, state: StreamState, i: int, x: jax.Array, key: jax.Array):
        """x (H, W, Cin) -> (out (h, w, C), new ref, new cache, per-block stats, recomputed (n,) bool)."""
        nv, name = params["net"], f"block_{i}"
        _, grid, _ = self.block_geometry(i)
        ref, cache = state.refs[name], state.caches[name]
        d, pooled, change = generator_inputs(x, ref, grid)
        gate_logit, bin_logits = self.generator.apply(params["gen"][name], d, pooled, change)
        gate_p, bin_p = jax.nn.sigmoid(gate_logit), jax.nn.sigmoid(bin_logits)
        n_sel = jnp.sum(bin_p >= self.config.bin_threshold).astype(jnp.int32)
        run = key | ((gate_p >= self.config.gate_threshold) & (n_sel > 0))
        levels = self.levels(i)
        branches = [self.partial_level(nv, i, k) for k in levels[:-1]] + [self.dense_level(nv, i)]
        cache, ref, recomputed, flops, level = self._levels_step(
            run, key, n_sel, levels, branches, [self.level_flops(i, k) for k in levels], x, ref, cache, bin_p)
        bins = jnp.sum(recomputed).astype(jnp.int32)
        # the (possibly partly) refreshed cache is this frame's branch output
        shortcut = x if self.specs[i][3] == 1 and self.specs[i][1] == self.specs[i][2] else \
            self.net.apply(nv, i, x[None], method=SegNet.shortcut)[0]
        out = jax.nn.relu(shortcut + cache)
        stats = dict(ran=run, level=jnp.where(run, level, -1).astype(jnp.int32), bins=bins,
                     selected=n_sel, distortion=jnp.mean(d), gate_prob=gate_p, flops=flops)
        return out, ref, cache, stats, recomputed

    # -- stem and decoder: per-bin recompute on a distortion threshold ----------------------------
    def _region(self, state: StreamState, name: str, x: jax.Array, key: jax.Array, threshold: float, halo: int,
                dense_fn, patch_fn, patch_flops: float):
        """Recompute the stem / decoder end on the bins that a change of >= threshold can reach
        (`distortion.peak_change` with the layer's input `halo`).
        -> (cache' = this frame's output map, ref', recomputed (n,) bool, flops)."""
        ref, cache, grid = state.refs[name], state.caches[name], self.config.bin_grid[0]
        d = peak_change(x, ref, grid, halo)
        n_sel = jnp.sum(d >= threshold).astype(jnp.int32)
        levels = self.config.levels(grid[0] * grid[1])
        branches = [self._partial(name, grid, k, patch_fn) for k in levels[:-1]]
        branches.append(self._dense(name, levels[-1], dense_fn))
        level_flops = [k * patch_flops for k in levels[:-1]] + [self.region_dense_flops[name]]
        return self._levels_step(key | (n_sel > 0), key, n_sel, levels, branches, level_flops,
                                 x, ref, cache, d)[:4]

    def _stem(self, nv, state: StreamState, frame: jax.Array, key: jax.Array):
        h, w = self.image_size
        gh, gw = self.config.bin_grid[0]
        bh, bw = h // 4 // gh, w // 4 // gw

        def patches(x, idx):   # input rows 4 r0 - 5 .. 4 (r0 + bh) + 1 of output bin rows r0 .. r0 + bh
            p = gather_patches(jnp.pad(x, ((5, 5), (5, 5), (0, 0))), idx, (gh, gw), (4 * bh, 4 * bw),
                               (4 * bh + 7, 4 * bw + 7))
            # conv-output rows 2 r0 - 1 .. 2 (r0 + bh) - 1 (2 bh + 1 of them) inside the image
            mask = inside_mask(idx, (gh, gw), (h // 2, w // 2), 1)[:, :-1, :-1]
            return self.net.apply(nv, p, mask, method=SegNet.stem_patches)

        dense = lambda x: self.net.apply(nv, x[None], method=SegNet.stem)[0]
        flops = conv_flops(2 * bh + 1, 2 * bw + 1, 3, self.net_config.widths[0], 7)
        # an output bin's input patch (rows 4 r0 - 5 .. 4 (r0 + bh) + 1) reaches 5 pixels beyond the
        # bin's input pixels: a 5-pixel halo for the change test
        return self._region(state, "stem", frame, key, self.config.stem_threshold, 5, dense, patches, flops)

    def _decoder_end(self, nv, state: StreamState, z: jax.Array, key: jax.Array):
        h, w = self.image_size
        gh, gw = self.config.bin_grid[0]
        bh, bw = h // 4 // gh, w // 4 // gw

        def patches(x, idx):
            p = gather_patches(jnp.pad(x, ((1, 1), (1, 1), (0, 0))), idx, (gh, gw), (bh, bw), (bh + 2, bw + 2))
            return self.net.apply(nv, p, 0, method=SegNet.blend_head)

        dense = lambda x: self.net.apply(nv, x[None], method=SegNet.blend_head)[0]
        d = self.net_config.decoder_width
        return self._region(state, "decoder", z, key, self.config.decoder_threshold, 1, dense, patches,
                            conv_flops(bh, bw, d, d, 3) + conv_flops(bh, bw, d, self.net_config.num_classes, 1))

    # -- one frame ------------------------------------------------------------------------------
    def _step(self, params, state: StreamState, frame: jax.Array):
        """frame (H, W, 3) float (normalised like training) -> (state, logits (H, W, classes), stats).

        stats: key (bool); frame_distortion (the scene-cut test's d; NaN when `key_distortion` is
        inf: the test and the frame_ref update are then left out of the step); per gated block, in
        the order of `self.gateable`, arrays of shape (G,): ran (bool), level (int32, -1 when
        skipped), bins (recomputed), selected (bins over the mask threshold), distortion (mean of
        d), gate_prob, block_flops (branch FLOPs taken); stem_flops, decoder_flops (taken by the
        stem and the decoder's stride-4 end); flops (this frame's total, float32) and dense_flops
        (a dense frame's); recomputed: {'block_<i>' | 'stem' | 'decoder': (n,) bool} the bins whose output
        was recomputed this frame (row-major over the bin grid).
        """
        if frame.shape != (*self.image_size, 3):
            raise ConfigError(f"frame shape {tuple(frame.shape)} differs from image_size "
                              f"{self.image_size} (+ 3 channels) this streamer was built for")
        nv = params["net"]
        frame = frame.astype(jnp.float32)
        c = self.config
        key = state.count == 0
        if math.isinf(c.key_distortion):  # no scene-cut test: no frame statistics to compute
            d_frame, frame_ref = jnp.float32(jnp.nan), state.frame_ref
        else:
            d_frame = jnp.mean(jnp.abs(frame - state.frame_ref)) / (jnp.mean(jnp.abs(frame)) + EPS)
            key, frame_ref = key | (d_frame >= c.key_distortion), frame
        if c.key_every > 0:
            key = key | (state.count % c.key_every == 0)
        refs, caches, per_block, feats, recomputed = dict(state.refs), dict(state.caches), [], [], {}
        caches["stem"], refs["stem"], recomputed["stem"], stem_flops = self._stem(nv, state, frame, key)
        x = caches["stem"]
        for i in range(len(self.specs)):
            if i in self.gateable:
                name = f"block_{i}"
                x, refs[name], caches[name], st, recomputed[name] = self._gated_block(params, state, i, x, key)
                per_block.append(st)
            else:
                x = self.net.apply(nv, i, x[None], method=SegNet.block)[0]
            if i in self.ends:
                feats.append(x[None])
        z = self.net.apply(nv, feats, method=SegNet.decode_ladder)[0]
        caches["decoder"], refs["decoder"], recomputed["decoder"], dec_flops = self._decoder_end(nv, state, z, key)
        logits = upsample_logits(caches["decoder"][None], self.image_size)[0]
        stats = {k: jnp.stack([st[k] for st in per_block]) for k in per_block[0]}
        stats["block_flops"] = stats.pop("flops")
        stats["stem_flops"], stats["decoder_flops"] = stem_flops, dec_flops
        stats["flops"] = jnp.float32(self.fixed_flops) + jnp.sum(stats["block_flops"]) + stem_flops + dec_flops
        stats["dense_flops"] = jnp.float32(self.dense_flops)
        stats["key"] = key
        stats["frame_distortion"] = d_frame
        stats["recomputed"] = recomputed
        new_state = StreamState(count=state.count + 1, frame_ref=frame_ref, refs=refs, caches=caches)
        return new_state, logits, stats
