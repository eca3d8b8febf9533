"""This library's train steps next to the PyTorch code researchers run today, same machine.

In one run, on the same cores, with the same shapes, fp32, from the same weights:
  pretrain  Hugging Face `transformers` VideoMAEForPreTraining (tube masking 90 %, norm_pix_loss,
            AdamW step) against ours with VideoMAE tube masking and with EVEREST;
  finetune  VideoMAEForVideoClassification (all tokens, mean pooling, cross-entropy, AdamW)
            against ours with all tokens and with EVEREST's rho = 0.6.
Our networks are converted from the Hugging Face ones (`everest_jax.convert`), so both frameworks
start from identical parameters; the record keeps the largest difference of the fine-tuning
logits on the benchmark clip as a check that the two compute the same network. Each group's
steps run in interleaved rounds (load from other processes falls on all alike); reported: median
ms per step, its ratio to the PyTorch step of the group, and ours' XLA-counted GFLOPs per clip.
Threads: the process is pinned to `--threads` cores (os.sched_setaffinity, before either framework
starts its thread pools) and torch.set_num_threads(--threads); XLA sizes its pool from the affinity.

    python benchmarks/vs_pytorch.py                          # small default (ViT-S, 8x112^2), ~1-2 min
    python benchmarks/vs_pytorch.py --model B --frames 16 --image-size 224 --batch 1 --iters 5   # the paper's shape

Tables go to stdout, progress to stderr; the last line of stdout is one JSON object:
    {"pretrain": {"pytorch_videomae_tube": E, "ours_videomae_tube": E, "ours_everest": E},
     "finetune": {"pytorch_all_tokens": E, "ours_all_tokens": E, "ours_everest": E},
     "parity": {"finetune_logits_max_abs_diff": x}, "attention": {...}, "config": {...}, "machine": {...},
     with --profile: "profile": {GROUP: {VARIANT: [[operation, ms], ...]}}}
with E = {"step_ms", "ratio" (to the group's PyTorch step), "encoder_tokens", ours: "gflops"}.
Our attention: `--attention` (default auto: the blocked attention of everest_jax/models/attention.py
on CPU); XLA counts a loop body once, so with more tokens than one block (~420 at 12 heads) "gflops" undercounts
the blocked attention (everest_cost.py counts model FLOPs with XLA's attention).
"""

import argparse
import json
import os
import pathlib
import platform
import re
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]  # everest_jax/ and everest_cost.py


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="S", choices=("tiny", "S", "B", "L"), help="model size")
    p.add_argument("--frames", type=int, default=8, help="frames per clip")
    p.add_argument("--image-size", type=int, default=112, help="square frame size (the paper: 224)")
    p.add_argument("--patch-size", type=int, default=16, help="spatial patch size")
    p.add_argument("--tubelet", type=int, default=2, help="frames per tubelet")
    p.add_argument("--batch", type=int, default=1, help="clips per step")
    p.add_argument("--iters", type=int, default=3, help="timed rounds (after one warm-up step each)")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="cores for both frameworks (default: all this process may use)")
    p.add_argument("--num-classes", type=int, default=400, help="classifier classes")
    p.add_argument("--profile", metavar="DIR",
                   help="after timing, trace one more step of every variant under DIR/GROUP/VARIANT (JAX: "
                        "jax.profiler, for TensorBoard / Perfetto; PyTorch: torch.profiler, a Chrome trace); "
                        "the record gets each step's operations that took the most time")
    p.add_argument("--attention", default="auto",
                   help="our model.attention, comma-separated (auto: blocked on CPU): the first fills the keys "
                        "above, each further one adds its own entries, e.g. ours_all_tokens+xla")
    args = p.parse_args(argv)
    from everest_jax.config import ATTENTIONS

    args.attention = args.attention.split(",")
    if not set(args.attention) <= set(ATTENTIONS):
        p.error(f"--attention: choose among {', '.join(ATTENTIONS)} (got {','.join(args.attention)})")
    return args


def machine_record(threads: int) -> dict:
    """CPU model and the vector extensions that decide how fast either framework can be."""
    info = {}
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "flags") and key.strip() not in info:
                info[key.strip()] = value.strip()
    except OSError:
        pass
    flags = set(info.get("flags", "").split())
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    return {"cpu": info.get("model name", platform.processor() or platform.machine()),
            "vector_extensions": [f for f in wanted if f in flags], "threads": threads,
            "cpu_count": os.cpu_count()}


def hf_config(model_config, num_labels: int = 0):
    """The Hugging Face VideoMAEConfig of our ModelConfig's shapes (dropout off, as ours)."""
    import transformers

    c = model_config
    return transformers.VideoMAEConfig(
        image_size=c.image_size[0], patch_size=c.patch_size, num_channels=c.in_channels, num_frames=c.num_frames,
        tubelet_size=c.tubelet_size, hidden_size=c.width, num_hidden_layers=c.depth,
        num_attention_heads=c.num_heads, intermediate_size=int(c.mlp_ratio * c.width),
        decoder_hidden_size=c.decoder_width, decoder_num_hidden_layers=c.decoder_depth,
        decoder_num_attention_heads=c.decoder_heads, decoder_intermediate_size=int(c.mlp_ratio * c.decoder_width),
        qkv_bias=True, norm_pix_loss=True, use_mean_pooling=num_labels > 0, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, num_labels=max(num_labels, 2),
        **({"id2label": {i: str(i) for i in range(num_labels)}} if num_labels else {}))


def torch_step(model, inputs_fn):
    """run() -> one AdamW step of `model` on inputs_fn() (kwargs), as the official recipe's optimiser."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)

    def run():
        loss = model(**inputs_fn()).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()
    return run


def tube_mask(rng, batch: int, grid, ratio: float = 0.9):
    """(B, N) bool, True = masked: the same spatial positions in every time slot (VideoMAE tube)."""
    import numpy as np

    t, h, w = grid
    num_masked = int(ratio * h * w)
    spatial = np.zeros((batch, h * w), bool)
    for row in spatial:
        row[rng.permutation(h * w)[:num_masked]] = True
    return np.tile(spatial[:, None], (1, t, 1)).reshape(batch, -1)


def interleaved(runners: dict, iters: int) -> dict:
    """{name: run} -> {name: median ms}; one warm-up step each, then `iters` rounds in turn."""
    for run in runners.values():
        run()
    times = {name: [] for name in runners}
    for _ in range(iters):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(1e3 * (time.perf_counter() - start))
    return {name: statistics.median(t) for name, t in times.items()}


OP_NAME = re.compile(r"[a-z][a-z0-9_\-]*(\.\d+)?")  # an XLA:CPU kernel's trace event (not a runtime wrapper)


def profile_steps(runners: dict, directory: pathlib.Path, top: int = 12) -> dict:
    """Trace one step of each runner -> {name: [[operation, ms], ...]}, the `top` longest, kernels of
    one kind summed (XLA: `ynn_fusion.17` and `ynn_fusion.18` are `ynn_fusion`; PyTorch: self CPU time).
    Threads run kernels concurrently, so the sums can exceed the step's wall time."""
    import collections
    import gzip

    import jax
    import torch

    out = {}
    for name, run in runners.items():
        where = directory / name
        where.mkdir(parents=True, exist_ok=True)
        totals = collections.Counter()
        if name.startswith("pytorch"):
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                run()
            prof.export_chrome_trace(str(where / "trace.json"))
            for e in prof.key_averages():
                totals[e.key] += e.self_cpu_time_total / 1e3
        else:
            with jax.profiler.trace(str(where)):
                run()
            trace = max(where.rglob("*.trace.json.gz"), key=lambda f: f.stat().st_mtime)
            for e in json.load(gzip.open(trace))["traceEvents"]:
                if e.get("ph") == "X" and OP_NAME.fullmatch(e.get("name", "")):
                    totals[re.sub(r"\.\d+$", "", e["name"])] += e["dur"] / 1e3
        out[name] = [[op, round(ms, 2)] for op, ms in totals.most_common(top)]
    return out


def measure(args) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    import transformers

    import everest_cost
    from everest_jax import ModelConfig, convert, objectives
    from everest_jax.models import Classifier, PretrainingModel

    torch.manual_seed(0)
    shape = ModelConfig(size=args.model, num_frames=args.frames, image_size=args.image_size,
                        patch_size=args.patch_size, tubelet_size=args.tubelet)
    rng = np.random.default_rng(0)
    video = rng.standard_normal((args.batch, args.frames, args.image_size, args.image_size, 3), np.float32)
    labels = rng.integers(0, args.num_classes, (args.batch,), np.int32)
    video_t = torch.from_numpy(video.transpose(0, 1, 4, 2, 3).copy())  # HF: (B, T, C, H, W)
    labels_t = torch.from_numpy(labels.astype(np.int64))
    video_j, labels_j = jax.device_put(video), jax.device_put(labels)
    result = {}

    # Pre-training: one HF model; ours converted from its weights, once per masking.
    print("pretrain: building", file=sys.stderr, flush=True)
    hf = transformers.VideoMAEForPreTraining(hf_config(shape)).train()
    state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    runners, ours = {}, {}
    mask_rng = np.random.default_rng(1)
    runners["pytorch_videomae_tube"] = torch_step(hf, lambda: dict(
        pixel_values=video_t, bool_masked_pos=torch.from_numpy(tube_mask(mask_rng, args.batch, shape.grid))))
    for name, masking, attention in ours_variants((("ours_videomae_tube", "tube"), ("ours_everest", "everest")),
                                                  args.attention):
        config = convert.hf_model_config(hf.config.to_dict(), masking=masking, attention=attention)
        _, params = convert.convert_state_dict(state, config)
        model = PretrainingModel(config)
        loss = lambda p, v, l, r, t, m=model: objectives.pretrain_loss(p, m, v, r, train=t)  # noqa: E731
        cost, runners[name] = everest_cost.compile_variant(loss, params, video_j, labels_j, True)
        ours[name] = dict(gflops=cost["gflops"], encoder_tokens=config.pretrain_counts[0])
    print("pretrain: timing", file=sys.stderr, flush=True)
    result["pretrain"] = group(interleaved(runners, args.iters), "pytorch_videomae_tube", ours,
                               shape.num_tokens - int(0.9 * shape.grid[1] * shape.grid[2]) * shape.grid[0])
    if args.profile:
        result["profile"] = {"pretrain": profile_steps(runners, pathlib.Path(args.profile) / "pretrain")}
    del hf, runners

    # Fine-tuning: classification with all tokens (HF) vs ours with all tokens and rho = 0.6.
    print("finetune: building", file=sys.stderr, flush=True)
    hf = transformers.VideoMAEForVideoClassification(hf_config(shape, args.num_classes)).train()
    state = {k: v.detach().numpy() for k, v in hf.state_dict().items()}
    runners, ours = {}, {}
    runners["pytorch_all_tokens"] = torch_step(hf, lambda: dict(pixel_values=video_t, labels=labels_t))
    for name, keep, attention in ours_variants((("ours_all_tokens", 1.0), ("ours_everest", 0.6)), args.attention):
        config = convert.hf_model_config(hf.config.to_dict(), finetune_keep_ratio=keep, attention=attention)
        _, params = convert.convert_state_dict(state, config)
        model = Classifier(config)
        if name == "ours_all_tokens":  # the same network: compare the logits before any step changes the weights
            with torch.no_grad():
                want = hf.eval()(pixel_values=video_t).logits.numpy()
            hf.train()
            got = np.asarray(model.apply({"params": params}, jnp.asarray(video))[0])
            result["parity"] = {"finetune_logits_max_abs_diff": float(np.abs(got - want).max())}
        loss = lambda p, v, l, r, t, m=model: objectives.classification_loss(p, m, v, l, r, train=t)  # noqa: E731
        cost, runners[name] = everest_cost.compile_variant(loss, params, video_j, labels_j, True)
        ours[name] = dict(gflops=cost["gflops"], encoder_tokens=config.finetune_keep_count)
    print("finetune: timing", file=sys.stderr, flush=True)
    result["finetune"] = group(interleaved(runners, args.iters), "pytorch_all_tokens", ours, shape.num_tokens)
    if args.profile:
        result["profile"]["finetune"] = profile_steps(runners, pathlib.Path(args.profile) / "finetune")
    resolved = {"auto": "blocked" if jax.default_backend() == "cpu" else "auto (JAX's choice)"}
    result["attention"] = {"pytorch": hf.config._attn_implementation,
                           "ours": [f"{a} ({resolved[a]})" if a in resolved else a for a in args.attention]}
    return result


def ours_variants(variants, attentions):
    """(name, setting) pairs x attention implementations -> (name[+impl], setting, impl); the first impl keeps the name."""
    return [(name if i == 0 else f"{name}+{a}", setting, a) for i, a in enumerate(attentions) for name, setting in variants]


def group(step_ms: dict, baseline: str, ours: dict, baseline_tokens: int) -> dict:
    out = {}
    for name, ms in step_ms.items():
        out[name] = dict(step_ms=ms, ratio=ms / step_ms[baseline], **ours.get(name, {}))
    out[baseline]["encoder_tokens"] = baseline_tokens
    return out


def print_table(result: dict) -> None:
    print(f"\n{'group':9s} {'variant':22s} {'enc tok':>7s} {'ms/step':>9s} {'x PyTorch':>9s} {'GFLOPs/clip':>12s}")
    for g in ("pretrain", "finetune"):
        for name, e in result[g].items():
            gflops = f"{e['gflops']:12.2f}" if "gflops" in e else f"{'-':>12s}"
            print(f"{g:9s} {name:22s} {e['encoder_tokens']:7d} {e['step_ms']:9.1f} {e['ratio']:9.3f} {gflops}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    # Pin before either framework starts its thread pools; both then see the same cores. Both
    # settings are restored at the end (the benchmark may run inside another process, e.g. a test).
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, sorted(cores)[:args.threads])
    import jax
    import torch
    import transformers

    torch_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        result = measure(args)
    finally:
        os.sched_setaffinity(0, cores)
        torch.set_num_threads(torch_threads)
    print_table(result)
    result["config"] = {"model": args.model, "frames": args.frames, "image_size": args.image_size,
                        "patch_size": args.patch_size, "tubelet": args.tubelet, "batch": args.batch,
                        "iters": args.iters, "dtype": "float32", "num_classes": args.num_classes,
                        "attention": args.attention}
    result["machine"] = dict(machine_record(args.threads), platform=jax.default_backend(), jax=jax.__version__,
                             torch=torch.__version__, transformers=transformers.__version__)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
