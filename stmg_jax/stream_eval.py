"""Run the dense network and the STMG streaming step over a video, frame by frame (batch 1), and
compare them: frames/s, FLOPs per frame (analytical, from the branches actually taken), skip rate,
mIoU against ground truth where there is one, and pixel agreement with the dense predictions.

Timing: the first frame of each path is run once untimed (compilation); every timed frame ends
with `block_until_ready`, so frames/s is wall-clock per frame at batch 1 on the current backend.
Both paths make the same calls per frame: the network (dense apply or streaming step), then the
same jitted argmax.
The STMG stream restarts from an empty state (frame 0 is a key frame). Parameters are put on the
device once before timing (NumPy parameters would be copied on every call, in both paths).
"""

from __future__ import annotations

import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from stmg_jax.config import SegNetConfig
from stmg_jax.model import SegNet, dense_flops
from stmg_jax.streaming import Streamer
from stmg_jax.metrics import miou, pred_confusion


def dense_video(net_config: SegNetConfig, net_vars, frames: np.ndarray) -> dict[str, Any]:
    """frames (T, H, W, 3) float -> {'pred' (T, H, W) int, 'seconds', 'fps', 'gflops_per_frame'}."""
    apply = jax.jit(lambda v, f: SegNet(net_config).apply(v, f[None])[0])
    argmax = jax.jit(lambda l: jnp.argmax(l, -1))  # a second call, as in `stream_video`
    net_vars = jax.device_put(net_vars)  # once: NumPy parameters would be copied on every call
    argmax(apply(net_vars, jnp.asarray(frames[0]))).block_until_ready()
    preds, t0 = [], time.perf_counter()
    for f in frames:
        preds.append(argmax(apply(net_vars, jnp.asarray(f))).block_until_ready())
    seconds = time.perf_counter() - t0
    h, w = frames.shape[1:3]
    return {"pred": np.stack([np.asarray(p) for p in preds]), "seconds": seconds,
            "fps": len(frames) / seconds, "gflops_per_frame": dense_flops(net_config, h, w)["total"] / 1e9}


def stream_video(streamer: Streamer, params, frames: np.ndarray) -> dict[str, Any]:
    """frames (T, H, W, 3) float -> {'pred' (T, H, W), 'seconds', 'fps', 'gflops_per_frame' (mean),
    'skip_rate' (share of gateable block-frames skipped, key frames included), 'unit_skip_rates'
    ({'block_<i>' | 'stem' | 'decoder': share of the frames on which that unit recomputed
    nothing}), 'bins_rate' (share of gateable bins recomputed), 'key_frames', 'flops' (T,)}."""
    step = streamer.step
    params = jax.device_put(params)  # once: NumPy parameters would be copied on every call
    warm = step(params, streamer.init_state(), jnp.asarray(frames[0]))
    warm = step(params, warm[0], jnp.asarray(frames[0]))  # a state produced by the step, too
    argmax = jax.jit(lambda l: jnp.argmax(l, -1))
    jax.block_until_ready(argmax(warm[1]))
    state = streamer.init_state()
    preds, flops, ran, bins, keys, recomputed = [], [], [], [], [], []
    t0 = time.perf_counter()
    for f in frames:
        state, logits, stats = step(params, state, jnp.asarray(f))
        pred = argmax(logits).block_until_ready()
        preds.append(pred)
        flops.append(stats["flops"]), ran.append(stats["ran"]), bins.append(stats["bins"]), keys.append(stats["key"])
        recomputed.append(stats["recomputed"])
    seconds = time.perf_counter() - t0
    flops, ran, bins = np.asarray(flops), np.asarray(ran), np.asarray(bins)
    total_bins = sum(math.prod(streamer.block_geometry(i)[1]) for i in streamer.gateable)
    return {"pred": np.stack([np.asarray(p) for p in preds]), "seconds": seconds, "fps": len(frames) / seconds,
            "gflops_per_frame": float(flops.mean()) / 1e9, "flops": flops,
            "skip_rate": float(1 - ran.mean()), "unit_skip_rates": skip_rates([units_skipped(streamer, r) for r in recomputed]),
            "bins_rate": float(bins.sum(1).mean() / total_bins),
            "key_frames": int(np.sum(keys)),
            "recompute_map": np.stack([recompute_map(streamer, r) for r in recomputed])}


def units_skipped(streamer: Streamer, recomputed: dict) -> dict[str, bool]:
    """A step's stats['recomputed'] -> {'stem', 'block_<i>' (gated, in order), 'decoder': True when
    the unit recomputed no bin on that frame} (for a block: its gate took the reuse branch)."""
    units = ["stem", *(f"block_{i}" for i in streamer.gateable), "decoder"]
    return {u: not bool(np.any(np.asarray(recomputed[u]))) for u in units}


def skip_rates(skipped: list[dict[str, bool]]) -> dict[str, float]:
    """Per-frame `units_skipped` dicts -> {unit: share of the frames it skipped}."""
    return {unit: float(np.mean([frame[unit] for frame in skipped])) for unit in skipped[0]}


def recompute_map(streamer: Streamer, recomputed: dict) -> np.ndarray:
    """{'block_<i>': (n,) bool} -> (H, W) float in [0, 1]: the share of gated blocks whose branch
    was recomputed on the bin covering each input pixel."""
    h, w = streamer.image_size
    out = np.zeros((h, w), np.float32)
    for i in streamer.gateable:
        _, (gh, gw), _ = streamer.block_geometry(i)
        m = np.asarray(recomputed[f"block_{i}"], np.float32).reshape(gh, gw)
        out += np.kron(m, np.ones((h // gh, w // gw), np.float32))
    return out / len(streamer.gateable)


PALETTE = np.asarray([[0, 0, 0], [255, 64, 64], [64, 200, 64], [64, 96, 255], [255, 200, 0], [200, 0, 255],
                      [0, 200, 200], [255, 128, 0]], np.uint8)


def overlay(frames_u8: np.ndarray, pred: np.ndarray, recompute: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) uint8, (T, H, W) classes, (T, H, W) in [0, 1] -> (T, H, 2W, 3) uint8: left the
    frame blended with the class colours, right the frame dimmed where nothing was recomputed and
    tinted red by the share of blocks that recomputed each region."""
    colours = PALETTE[pred % len(PALETTE)].astype(np.float32)
    f = frames_u8.astype(np.float32)
    left = np.where(pred[..., None] > 0, 0.5 * f + 0.5 * colours, f)
    r = recompute[..., None]
    right = f * (0.35 + 0.65 * r) * np.asarray([1.0, 0.6, 0.6]) + r * np.asarray([90.0, 0, 0])
    return np.clip(np.concatenate([left, right], axis=2), 0, 255).astype(np.uint8)


def write_overlay(path: str, frames_u8: np.ndarray, pred: np.ndarray, recompute: np.ndarray, fps: int = 25) -> None:
    """Encode `overlay(...)` to `path` (H.264 MP4) through a temporary file in the same folder, so
    an error leaves no partial output file behind."""
    from everest_jax.data.encode import replaced_on_success, write_video
    with replaced_on_success(path) as tmp:
        write_video(tmp, overlay(frames_u8, pred, recompute), fps=fps)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Inverse of the ImageNet normalisation: float (T, H, W, 3) -> uint8."""
    from everest_jax.data import IMAGENET_MEAN, IMAGENET_STD
    x = frames * np.asarray(IMAGENET_STD, np.float32) + np.asarray(IMAGENET_MEAN, np.float32)
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)


def compare(net_config: SegNetConfig, streamer: Streamer, params, frames: np.ndarray,
            labels: np.ndarray | None = None, overlay_path: str | None = None,
            repeats: int = 1) -> dict[str, dict[str, Any]]:
    """Dense vs STMG on one video; labels (T, H, W) int (255 = ignore) or None. Returns the benchmark's record:
    {'dense': {fps, gflops_per_frame, miou}, 'stmg': {fps, gflops_per_frame, skip_rate, miou,
    agreement, bins_rate, key_frames, unit_skip_rates}} (miou None without labels). With
    `repeats` > 1 the two paths run alternately that many times and fps is the median (the runs
    are in 'fps_runs'): on a shared, noisy machine one pass of a few ms per frame can be off by
    tens of percent. With `overlay_path`, writes the STMG segmentation and recompute map there
    (`write_overlay`)."""
    runs = [(dense_video(net_config, params["net"], frames), stream_video(streamer, params, frames))
            for _ in range(repeats)]
    d, s = runs[0]
    fps = {name: [r[i]["fps"] for r in runs] for i, name in enumerate(("dense", "stmg"))}
    if overlay_path:
        write_overlay(overlay_path, to_uint8(frames), s["pred"], s["recompute_map"])
    k = net_config.num_classes

    def score(pred):
        if labels is None:
            return None
        return miou(np.asarray(pred_confusion(pred, labels, k)))
    out = {"dense": {"fps": float(np.median(fps["dense"])), "gflops_per_frame": d["gflops_per_frame"],
                     "miou": score(d["pred"])},
           "stmg": {"fps": float(np.median(fps["stmg"])), "gflops_per_frame": s["gflops_per_frame"],
                    "skip_rate": s["skip_rate"], "miou": score(s["pred"]),
                    "agreement": float(np.mean(s["pred"] == d["pred"])), "bins_rate": s["bins_rate"],
                    "key_frames": s["key_frames"], "unit_skip_rates": s["unit_skip_rates"]}}
    if repeats > 1:
        out["dense"]["fps_runs"], out["stmg"]["fps_runs"] = fps["dense"], fps["stmg"]
    return out


def summary_line(name: str, record: dict) -> str:
    """One readable line of a `compare` record: frames/s, GFLOPs per frame, skip rates per unit."""
    d, s = record["dense"], record["stmg"]
    units = " ".join(f"{u}={r:.2f}" for u, r in s["unit_skip_rates"].items())
    return (f"{name}: dense {d['fps']:.1f} frames/s {d['gflops_per_frame']:.4f} GFLOPs/frame | STMG "
            f"{s['fps']:.1f} frames/s {s['gflops_per_frame']:.4f} GFLOPs/frame, agreement {s['agreement']:.4f}, "
            f"skip rate {s['skip_rate']:.2f} (per unit: {units})")


def load_video(path: str, size: tuple[int, int], max_frames: int) -> np.ndarray:
    """A real video file -> (T, H, W, 3) float, ImageNet-normalised, resized to `size` (H, W) with
    PIL bilinear (aspect not kept), at most `max_frames` frames from the start. Decoding errors
    are `everest_jax.data.decode.VideoError` naming the file and the cause."""
    from everest_jax.data.augment import resize
    from everest_jax.data.decode import decode_all
    from everest_jax.data import normalize_video
    frames = decode_all(path)[:max_frames]
    return normalize_video(resize(frames, size))


def main(argv=None) -> dict:
    """python -m stmg_jax.stream_eval --checkpoint DIR [--video PATH ...] [--synthetic N]
    [--size H W] [--frames T] [--overlay DIR]: dense vs STMG per video (frames resized to --size
    and batch 1); optionally writes overlay videos; prints per video a readable line (frames/s,
    GFLOPs per frame, skip rates per block, stem and decoder) and its JSON record and, last, one
    JSON object {"videos": {name: {"dense": {...}, "stmg": {...}}}} (see `compare`)."""
    import argparse
    import json
    import os

    from everest_jax.data import SyntheticVideos, normalize_video
    from stmg_jax.checkpoint import load_streaming_params
    from everest_jax.cli import user_errors
    from stmg_jax.config import check_input_size

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--video", action="append", default=[], help="a video file (repeatable)")
    ap.add_argument("--synthetic", type=int, default=0, help="number of synthetic test videos (with labels)")
    ap.add_argument("--size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"))
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--overlay", default="", help="folder for <video>.mp4 overlays (segmentation | recompute map)")
    args = ap.parse_args(argv)
    with user_errors():
        net, stream, params = load_streaming_params(args.checkpoint)
        size = tuple(args.size)
        check_input_size(*size, stream, field="--size")
        videos = {os.path.basename(path): (load_video(path, size, args.frames), None) for path in args.video}
    streamer = Streamer(net, stream, size)
    if args.synthetic:
        data = SyntheticVideos(num_examples=args.synthetic, num_frames=args.frames, image_size=size, seed=12345)
        synthetic = {}
        for i in range(args.synthetic):
            ex = data[i]
            synthetic[f"synthetic_{i}"] = (normalize_video(ex["video"]), ex["mask"].astype(np.int32))
        videos = {**synthetic, **videos}
    out = {}
    for name, (frames, labels) in videos.items():
        ov = os.path.join(args.overlay, os.path.splitext(name)[0] + ".mp4") if args.overlay else None
        out[name] = compare(net, streamer, params, frames, labels, ov)
        print(summary_line(name, out[name]), flush=True)
        print(name, json.dumps(out[name]), flush=True)
    print(json.dumps({"videos": out}))
    return out


if __name__ == "__main__":
    main()
