"""Segment a video with STMG alone, one frame at a time, as on a camera feed.

    python -m stmg_jax.live --checkpoint RUN/final --video clip.mp4 --size 256 256 --out overlay.mp4

Each frame is decoded (`everest_jax.data.decode.iter_frames`), resized to --size (PIL bilinear,
aspect not kept), normalised, run through the jitted streaming step (batch 1) and its overlay
(segmentation | recompute map, `stream_eval.overlay`) is encoded straight away
(`everest_jax.data.encode.VideoWriter`): memory does not grow with the video's length, unlike
`stmg_jax.stream_eval`, which holds the clip to compare STMG with the dense network.

Printed: a progress line every --log-every frames and, at the end, one readable line and one JSON
object: frames, frames/s of the step (the network and its argmax) and end to end (decoding,
resizing, overlay and encoding included), both without frame 0 (it compiles the step), GFLOPs per
frame against the dense network's, key frames, skip rates overall and per unit (each gated block,
the stem, the decoder end), and what the decoder skipped.

Bad input: a video that cannot be opened (or decodes no frame), a checkpoint that is not a
gate-trained STMG checkpoint and a --size the network or the bin grids cannot take are one error
line and no output. Packets that fail to decode mid-stream are skipped and counted (the stream
carries on from the last good frame; the next key frame or recompute repairs the caches). The
overlay is written to a temporary file beside --out and renamed at the end: an error or an
interrupted run leaves no partial file.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def stream_file(streamer, params, video: str, out: str | None = None, max_frames: int = 0, fps: int = 25,
                log_every: int = 0, log=print) -> dict[str, Any]:
    """Stream `video` through `streamer.step` frame by frame; with `out`, encode the overlay there.

    Returns {'frames', 'step_fps', 'end_to_end_fps', 'gflops_per_frame', 'dense_gflops_per_frame',
    'key_frames', 'skip_rate', 'unit_skip_rates', 'decode': iter_frames' stats, 'out'}."""
    from everest_jax.data.augment import resize
    from everest_jax.data.decode import iter_frames
    from everest_jax.data.encode import VideoWriter, replaced_on_success
    from everest_jax.data import normalize_video
    from stmg_jax.stream_eval import overlay, recompute_map, skip_rates, units_skipped

    params = jax.device_put(params)  # once: NumPy parameters would be copied on every call
    argmax = jax.jit(lambda logits: jnp.argmax(logits, -1))
    decode_stats: dict[str, Any] = {}
    flops, ran, keys, skipped, step_seconds = [], [], [], [], 0.0
    state = streamer.init_state()
    with contextlib.ExitStack() as outputs:
        # the writer closes (flushing the encoder) before the temporary file replaces `out`
        writer = None
        if out:
            writer = outputs.enter_context(VideoWriter(outputs.enter_context(replaced_on_success(out)), fps=fps))
        for i, raw in enumerate(itertools.islice(iter_frames(video, decode_stats), max_frames or None)):
            small = resize(raw[None], streamer.image_size)                      # (1, H, W, 3) uint8
            t = time.perf_counter()
            state, logits, stats = streamer.step(params, state, jnp.asarray(normalize_video(small)[0]))
            pred = np.asarray(argmax(logits))                                    # waits for the step
            if i > 0:  # frame 0 compiles the step: left out of both rates
                step_seconds += time.perf_counter() - t
            flops.append(float(stats["flops"]))
            ran.append(np.asarray(stats["ran"]))
            keys.append(bool(stats["key"]))
            skipped.append(units_skipped(streamer, stats["recomputed"]))
            if writer is not None:
                writer.write(overlay(small, pred[None], recompute_map(streamer, stats["recomputed"])[None])[0])
            if log_every and (i + 1) % log_every == 0:
                log(f"frame {i + 1}: {np.mean(flops) / 1e9:.4f} GFLOPs/frame, skip rate {1 - np.mean(ran):.2f}")
            if i == 0:
                after_first = time.perf_counter()
        seconds = time.perf_counter() - after_first
    n = len(flops)
    return {"frames": n, "step_fps": (n - 1) / step_seconds if n > 1 else None,
            "end_to_end_fps": (n - 1) / seconds if n > 1 else None,
            "gflops_per_frame": float(np.mean(flops)) / 1e9, "dense_gflops_per_frame": streamer.dense_flops / 1e9,
            "key_frames": int(np.sum(keys)), "skip_rate": float(1 - np.mean(ran)),
            "unit_skip_rates": skip_rates(skipped), "decode": decode_stats, "out": out or None}


def main(argv=None) -> dict:
    from stmg_jax.checkpoint import load_streaming_params
    from everest_jax.cli import user_errors
    from stmg_jax.config import check_input_size
    from stmg_jax.streaming import Streamer

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="an STMG final/ directory (gates trained)")
    ap.add_argument("--video", required=True, help="the video file to segment")
    ap.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"),
                    help="frame size the network runs at (multiples of 32)")
    ap.add_argument("--out", default="", help="overlay MP4 (segmentation | recompute map); none: no video")
    ap.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0: the whole video)")
    ap.add_argument("--fps", type=int, default=25, help="frame rate of the overlay video")
    ap.add_argument("--log-every", type=int, default=100, help="progress line every N frames (0: none)")
    args = ap.parse_args(argv)
    with user_errors():
        net, stream, params = load_streaming_params(args.checkpoint)
        check_input_size(*args.size, stream, field="--size")
        streamer = Streamer(net, stream, tuple(args.size))
        result = stream_file(streamer, params, args.video, args.out or None, args.max_frames, args.fps,
                             args.log_every, log=lambda m: print(m, file=sys.stderr, flush=True))
    d = result["decode"]
    units = " ".join(f"{u}={r:.2f}" for u, r in result["unit_skip_rates"].items())
    fps = {k: "-" if result[k] is None else f"{result[k]:.1f}" for k in ("step_fps", "end_to_end_fps")}
    print(f"{result['frames']} frames at {args.size[0]}x{args.size[1]}: {fps['step_fps']} frames/s (step), "
          f"{fps['end_to_end_fps']} end to end; {result['gflops_per_frame']:.4f} GFLOPs/frame "
          f"(dense {result['dense_gflops_per_frame']:.4f}); key frames {result['key_frames']}; skip rate "
          f"{result['skip_rate']:.2f} (per unit: {units}); decoder skipped {d['skipped_packets']} packets"
          + (f", stopped: {d['stopped']}" if "stopped" in d else "")
          + (f"; overlay in {result['out']}" if result["out"] else ""), flush=True)
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
