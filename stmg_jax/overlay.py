"""STMG's panel of `python -m everest_jax.visualize`: the segmentation and recompute-map overlay.

A visualisation plugin (entry point group `everest_jax.visualize`, declared in pyproject.toml), so
the shared command finds it without importing this package. A plugin module provides
`add_arguments(parser)`, `load(args)` (-> state, or None when its flags were not given; errors are
ConfigError / CheckpointError / VideoError naming the cause, raised before anything is written)
and `write(out, state)` (-> the file names written to `out`).
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stmg-checkpoint", help="an STMG checkpoint with trained gates: also write the "
                                                  "STMG segmentation / recompute-map overlay")
    parser.add_argument("--stmg-size", type=int, nargs=2, metavar=("H", "W"),
                        help="frame size for STMG (default: --size x --size); divisible by 32 and the bin grid")
    parser.add_argument("--stmg-frames", type=int, default=32, help="consecutive frames streamed by STMG")


def load(args: argparse.Namespace):
    """-> (Streamer, params, frames (T, H, W, 3) normalised) from --stmg-checkpoint and the video."""
    if not args.stmg_checkpoint:
        return None
    from stmg_jax.checkpoint import load_streaming_params
    from stmg_jax.config import check_input_size
    from stmg_jax.stream_eval import load_video
    from stmg_jax.streaming import Streamer

    net, stream, params = load_streaming_params(args.stmg_checkpoint)
    size = tuple(args.stmg_size or (args.size, args.size))
    check_input_size(*size, stream, field="--stmg-size")
    return Streamer(net, stream, size), params, load_video(args.video, size, args.stmg_frames)


def write(out: pathlib.Path, state) -> list[str]:
    """Stream the frames through STMG; write stmg_overlay.{gif,mp4,png} and stmg.npz."""
    from everest_jax.visualize import save_gif, save_grid
    from stmg_jax.stream_eval import overlay, stream_video, to_uint8, write_overlay

    streamer, params, frames = state
    s = stream_video(streamer, params, frames)
    video = to_uint8(frames)
    panels = overlay(video, s["pred"], s["recompute_map"])
    save_gif(out / "stmg_overlay.gif", panels, fps=8)
    write_overlay(str(out / "stmg_overlay.mp4"), video, s["pred"], s["recompute_map"], fps=8)
    shown = np.linspace(0, len(frames) - 1, min(8, len(frames))).round().astype(int)
    save_grid(out / "stmg_overlay.png", {"seg. | recomp.": panels[shown]},
              f"STMG: {s['gflops_per_frame']:.3f} GFLOPs/frame, {100 * s['skip_rate']:.0f}% of gated blocks "
              f"skipped, {s['key_frames']} key frames (frames {', '.join(map(str, shown))})")
    np.savez(out / "stmg.npz", pred=s["pred"], recompute=s["recompute_map"], flops=s["flops"])
    print(f"STMG: {s['fps']:.1f} frames/s, {s['gflops_per_frame']:.4f} GFLOPs/frame, skip rate {s['skip_rate']:.3f}")
    return ["stmg_overlay.gif", "stmg_overlay.mp4", "stmg_overlay.png", "stmg.npz"]
