"""Throughput, model FLOPs utilisation and memory on one accelerator (GPU or TPU), bfloat16.

For each model size and each attention implementation (GPU: XLA and cuDNN; TPU/CPU: JAX's
choice), the four train steps of benchmarks/everest_cost.py (EVEREST and VideoMAE-tube
pre-training, fine-tuning with rho = 0.6 and with all tokens), each over a per-device batch sweep
(ascending; a batch that runs out of memory ends that sweep). Per run: median step time over
`--iters` steps after a warm-up, clips/s, encoder tokens/s, TFLOP/s from XLA's FLOP count, MFU
against the device's dense bf16 peak (`PEAK_TFLOPS`; null for an unknown device), XLA's peak
memory estimate and the device's `memory_stats()` peak so far. With a CUDA PyTorch and
`transformers` installed, the Hugging Face VideoMAE steps (autocast bf16) at the largest batch
that ran for ours are measured too. A wall-clock budget (`--time-limit`) skips what would not fit:
skipped runs are listed with their status.

    python benchmarks/accelerator.py                  # ViT-B and ViT-L, 16 x 224^2, within ~8 min
    python benchmarks/accelerator.py --models tiny --frames 4 --image-size 32 --batches 1,2 --iters 1

Tables to stdout, progress to stderr, last line of stdout one JSON object:
    {"device": {"kind", "platform", "count", "peak_tflops"}, "runs": [{"model", "group", "variant",
     "attention", "batch", "status", "step_ms", "clips_per_s", "tokens_per_s", "tflops_per_s", "mfu",
     "xla_peak_gib", "device_peak_gib"}], "pytorch": {...} | null, "config": {...}}
"""

import argparse
import json
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

# Dense bf16 peak TFLOP/s per chip (a multiply-add counted as 2, as XLA counts), by device_kind
# substring, most specific first.
PEAK_TFLOPS = (("H200", 989.0), ("H100", 989.0), ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0),
               ("TPU v6", 918.0), ("TPU v5p", 459.0), ("TPU v5 lite", 197.0), ("TPU v5e", 197.0),
               ("TPU v4", 275.0))
VARIANTS = (("pretrain", "everest"), ("pretrain", "videomae_tube"), ("finetune", "everest"),
            ("finetune", "all_tokens"))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="B,L", help="comma-separated sizes")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--patch-size", type=int, default=16)
    p.add_argument("--batches", default="4,16,64", help="per-device batch sweep, ascending")
    p.add_argument("--iters", type=int, default=5, help="timed steps per run (after one warm-up)")
    p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    p.add_argument("--attention", default=None,
                   help="comma-separated: auto, xla, cudnn, blocked (default: xla,cudnn on GPU, xla elsewhere; "
                        "XLA counts the loop body of 'blocked' once, so its TFLOP/s and MFU undercount)")
    p.add_argument("--time-limit", type=float, default=450.0, help="seconds; later runs are skipped")
    p.add_argument("--num-classes", type=int, default=400)
    return p.parse_args(argv)


def peak_tflops(kind: str):
    return next((tf for name, tf in PEAK_TFLOPS if name.lower() in kind.lower()), None)


def device_peak_gib(device):
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    return stats["peak_bytes_in_use"] / 2**30 if stats and "peak_bytes_in_use" in stats else None


def is_oom(error: Exception) -> bool:
    text = str(error)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def median_seconds(run, iters: int) -> float:
    """One warm-up call of `run` (which blocks until done), then the median of `iters` timed calls."""
    run()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def one_run(args, size, group, variant, attention, batch):
    """-> the run's record (status ok), raising on failure."""
    import jax
    import numpy as np
    import everest_cost
    from everest_jax import ModelConfig, objectives
    from everest_jax.models import Classifier, PretrainingModel

    base = dict(size=size, num_frames=args.frames, image_size=args.image_size, patch_size=args.patch_size,
                dtype=args.dtype, attention=attention, num_classes=args.num_classes)
    if group == "pretrain":
        config = ModelConfig(**base, masking="everest" if variant == "everest" else "tube")
        model, tokens = PretrainingModel(config), config.pretrain_counts[0]
        loss = lambda p, v, l, r, t: objectives.pretrain_loss(p, model, v, r, train=t)  # noqa: E731
    else:
        config = ModelConfig(**base, finetune_keep_ratio=0.6 if variant == "everest" else 1.0)
        model, tokens = Classifier(config), config.finetune_keep_count
        loss = lambda p, v, l, r, t: objectives.classification_loss(p, model, v, l, r, train=t)  # noqa: E731
    rng = np.random.default_rng(0)
    video = jax.device_put(rng.standard_normal((batch, args.frames, args.image_size, args.image_size, 3),
                                               np.float32))
    labels = jax.device_put(rng.integers(0, args.num_classes, (batch,), np.int32))
    params = everest_cost.init_params(model, video)
    cost, run = everest_cost.compile_variant(loss, params, video, labels, True)
    step = median_seconds(run, args.iters)
    flops = cost["gflops"] * 1e9 * batch
    return {"status": "ok", "step_ms": 1e3 * step, "clips_per_s": batch / step, "tokens_per_s": batch * tokens / step,
            "encoder_tokens": tokens, "tflops_per_s": flops / step / 1e12, "xla_peak_gib": cost["peak_gib"]}


def pytorch_reference(args, size, batch):
    """Hugging Face VideoMAE steps on CUDA (autocast bf16) at `batch`, or None without CUDA."""
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    import numpy as np
    import vs_pytorch
    from everest_jax import ModelConfig

    shape = ModelConfig(size=size, num_frames=args.frames, image_size=args.image_size, patch_size=args.patch_size)
    video = torch.randn(batch, args.frames, 3, args.image_size, args.image_size, device="cuda")
    labels = torch.randint(0, args.num_classes, (batch,), device="cuda")
    mask_rng = np.random.default_rng(1)
    out = {"batch": batch, "size": size, "torch": torch.__version__}
    for name, model, inputs in (
            ("pretrain_videomae_tube", transformers.VideoMAEForPreTraining(vs_pytorch.hf_config(shape)),
             lambda: dict(pixel_values=video, bool_masked_pos=torch.from_numpy(
                 vs_pytorch.tube_mask(mask_rng, batch, shape.grid)).cuda())),
            ("finetune_all_tokens", transformers.VideoMAEForVideoClassification(
                vs_pytorch.hf_config(shape, args.num_classes)), lambda: dict(pixel_values=video, labels=labels))):
        model = model.cuda().train()
        step = vs_pytorch.torch_step(model, inputs)

        def run():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                step()
            torch.cuda.synchronize()
        seconds = median_seconds(run, args.iters)
        out[name] = {"step_ms": 1e3 * seconds, "clips_per_s": batch / seconds}
        del model
        torch.cuda.empty_cache()
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    import jax

    start = time.perf_counter()
    device = jax.local_devices()[0]
    platform = jax.default_backend()
    attentions = (args.attention.split(",") if args.attention else
                  ["xla", "cudnn"] if platform == "gpu" else ["xla"])
    peak = peak_tflops(device.device_kind)
    batches = [int(b) for b in args.batches.split(",")]
    runs = []
    for size in args.models.split(","):
        for attention in attentions:
            for group, variant in VARIANTS:
                stop = False
                for batch in batches:
                    record = {"model": size, "group": group, "variant": variant, "attention": attention,
                              "batch": batch}
                    if stop:
                        record["status"] = "skipped_after_oom"
                    elif time.perf_counter() - start > args.time_limit:
                        record["status"] = "skipped_time"
                    else:
                        print(f"{size} {group}/{variant} attention={attention} batch={batch}", file=sys.stderr,
                              flush=True)
                        try:
                            record.update(one_run(args, size, group, variant, attention, batch))
                            record["mfu"] = record["tflops_per_s"] / peak if peak else None
                            record["device_peak_gib"] = device_peak_gib(device)
                        except Exception as e:  # noqa: BLE001 (an OOM ends the sweep; anything else is recorded)
                            stop = is_oom(e)
                            record["status"] = "oom" if stop else f"error: {type(e).__name__}: {str(e)[:200]}"
                    runs.append(record)
    ok = [r for r in runs if r["status"] == "ok"]
    reference = None
    tube = [r for r in ok if r["variant"] == "videomae_tube"]
    if tube and time.perf_counter() - start < args.time_limit:
        best = max(tube, key=lambda r: r["batch"])
        reference = pytorch_reference(args, best["model"], best["batch"])
    print(f"\n{'model':5s} {'step':22s} {'attn':6s} {'batch':>5s} {'ms/step':>9s} {'clips/s':>9s} "
          f"{'TFLOP/s':>8s} {'MFU':>6s} {'XLA GiB':>8s}")
    for r in ok:
        mfu = f"{r['mfu']:6.3f}" if r["mfu"] is not None else f"{'-':>6s}"
        print(f"{r['model']:5s} {r['group'] + '/' + r['variant']:22s} {r['attention']:6s} {r['batch']:5d} "
              f"{r['step_ms']:9.1f} {r['clips_per_s']:9.2f} {r['tflops_per_s']:8.2f} {mfu} {r['xla_peak_gib']:8.2f}")
    result = {"device": {"kind": device.device_kind, "platform": platform, "count": jax.device_count(),
                         "peak_tflops": peak},
              "runs": runs, "pytorch": reference,
              "config": {"frames": args.frames, "image_size": args.image_size, "patch_size": args.patch_size,
                         "dtype": args.dtype, "iters": args.iters, "batches": batches,
                         "wall_s": time.perf_counter() - start}}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
