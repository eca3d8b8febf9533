"""Cost of one training step: EVEREST versus VideoMAE (tube 90 %) and random 90 % masking, and
fine-tuning with rho = 0.6 token dropping versus all tokens.

For each variant one train step (forward, backward of the library's loss, AdamW update, state
donated as in the trainer) is lowered and compiled with `jax.jit(step).lower(...).compile()`.
Reported, in one run and also as ratios to the baseline (VideoMAE tube for pre-training, all
tokens for fine-tuning):
  gflops    XLA-counted FLOPs of the step (`compiled.cost_analysis()["flops"]`) / batch / 1e9: per clip
  peak_gib  XLA's memory estimate of the whole step (`compiled.memory_analysis()`): temp + arguments
            + outputs - aliased (donated) bytes, in GiB, for the whole batch
  step_ms   median wall time of one step of the whole batch over `--iters` runs after one warm-up
            run; the variants of a group are timed in interleaved rounds so that load from other
            processes falls on all of them alike
With `--inference` (alias `--forward-only`) the same five variants are also compiled as forward passes alone (no
gradient, no update, train=False: the inference cost) and reported under the "inference" key.

Targets (paper, ViT-B, 16x224^2): pre-training FLOPs ratio <= 0.60 (~20 vs ~36 GFLOPs forward),
fine-tuning <= 0.56 (98 vs 180). The paper's figures count a multiply-add once; XLA counts it as
2 FLOPs, and a train step adds the backward pass (~2x the forward), so a train step reads ~6x and
a forward pass ~2x the paper's numbers. The ratios are what compare.

    python benchmarks/everest_cost.py                       # small default, about a minute on 2 CPU cores
    python benchmarks/everest_cost.py --model B --frames 16 --image-size 224 --batch 1 --iters 2 --inference
The tables go to stdout, progress to stderr; the last line of stdout is one JSON object:
    {"pretrain": {"everest": F, "videomae_tube": F, "random": F}, "finetune": {"everest": F, "all_tokens": F},
     ["inference": {"pretrain": {...}, "finetune": {...}},] "config": {...}, "machine": {...}}
with F = {"gflops", "peak_gib", "step_ms", their "*_ratio"s, "encoder_tokens"}.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

PRETRAIN = (("everest", "everest"), ("videomae_tube", "tube"), ("random", "random"))  # (key, masking)
FINETUNE = (("everest", 0.6), ("all_tokens", 1.0))  # (key, finetune_keep_ratio)
BASELINE = {"pretrain": "videomae_tube", "finetune": "all_tokens"}


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    p.add_argument("--model", default="tiny", choices=("tiny", "S", "B", "L", "H"), help="model size")
    p.add_argument("--frames", type=int, default=16, help="frames per clip")
    p.add_argument("--image-size", type=int, default=64, help="square frame size (the paper: 224)")
    p.add_argument("--patch-size", type=int, default=16, help="spatial patch size")
    p.add_argument("--tubelet", type=int, default=2, help="frames per tubelet")
    p.add_argument("--batch", type=int, default=2, help="clips per step")
    p.add_argument("--iters", type=int, default=3, help="timed steps per variant (after one warm-up step)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="compute dtype")
    p.add_argument("--num-classes", type=int, default=101, help="classifier classes (fine-tuning)")
    from everest_jax.config import ATTENTIONS

    p.add_argument("--attention", default="xla", choices=ATTENTIONS,
                   help="model.attention; 'blocked' (auto on CPU) runs a loop whose body XLA counts once, "
                        "so its gflops undercount the attention")
    p.add_argument("--inference", "--forward-only", dest="inference", action="store_true",
                   help="also measure forward passes alone (inference cost), under the 'inference' key")
    return p.parse_args(argv)


def init_params(model, video):
    """Parameters from `model.init`, unboxed (optax must not see LogicallyPartitioned), on the host.

    The variants of a group share one parameter tree (masking and rho change no parameter), so
    each group is initialised once and every variant gets its own device copy.
    """
    import flax.linen as nn
    import jax

    k_init, k_mask = jax.random.split(jax.random.key(0))
    variables = jax.jit(model.init)({"params": k_init, "masking": k_mask}, video[:1])
    return jax.device_get(nn.unbox(variables)["params"])


def compile_variant(loss_fn, host_params, video, labels, train):
    """Compile one step; return (cost dict, run) where run() executes one step and blocks on it."""
    import jax
    import optax

    params = jax.device_put(host_params)
    if train:
        tx = optax.adamw(1e-4, b1=0.9, b2=0.95, weight_decay=0.05)

        def step(params, opt_state, video, labels, rng):
            (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, video, labels, rng, True)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        state, donate = [params, tx.init(params)], (0, 1)  # donated, as the trainer's step
    else:
        def step(params, video, labels, rng):
            return loss_fn(params, video, labels, rng, False)[0]

        state, donate = [params], ()
    start = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=donate).lower(*state, video, labels, jax.random.key(1)).compile()
    print(f"  compiled in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)

    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    mem = compiled.memory_analysis()
    peak = (mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
            - getattr(mem, "alias_size_in_bytes", 0))
    calls = [0]

    def run():
        calls[0] += 1
        out = compiled(*state, video, labels, jax.random.key(1 + calls[0]))
        if train:
            state[:] = out[:2]
        jax.block_until_ready(out)

    return {"gflops": float(cost["flops"]) / video.shape[0] / 1e9, "peak_gib": peak / 2**30}, run


def measure_group(variants, iters):
    """variants: {name: (cost, run)} -> {name: cost + step_ms}; timed in interleaved rounds."""
    for _, run in variants.values():
        run()  # warm-up
    times = {name: [] for name in variants}
    for _ in range(iters):
        for name, (_, run) in variants.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: dict(cost, step_ms=1e3 * statistics.median(times[name])) for name, (cost, _) in variants.items()}


def measure_all(args, train, params_cache):
    import jax
    import numpy as np
    from everest_jax import ModelConfig, objectives
    from everest_jax.models import Classifier, PretrainingModel

    base = dict(size=args.model, num_frames=args.frames, image_size=args.image_size, patch_size=args.patch_size,
                tubelet_size=args.tubelet, dtype=args.dtype, num_classes=args.num_classes, attention=args.attention)
    rng = np.random.default_rng(0)  # a random clip in ImageNet-normalised space, random labels
    video = rng.standard_normal((args.batch, args.frames, args.image_size, args.image_size, 3), np.float32)
    labels = rng.integers(0, args.num_classes, (args.batch,), np.int32)
    video, labels = jax.device_put(video), jax.device_put(labels)
    result, mode = {}, "train step" if train else "forward"
    for group, entries in (("pretrain", PRETRAIN), ("finetune", FINETUNE)):
        variants, tokens = {}, {}
        for name, setting in entries:
            print(f"{mode}: {group}/{name}", file=sys.stderr, flush=True)
            if group == "pretrain":
                config = ModelConfig(**base, masking=setting)
                model = PretrainingModel(config)
                loss = lambda p, v, l, r, t, m=model: objectives.pretrain_loss(p, m, v, r, train=t)
                tokens[name] = config.pretrain_counts[0]
            else:
                config = ModelConfig(**base, finetune_keep_ratio=setting)
                model = Classifier(config)
                loss = lambda p, v, l, r, t, m=model: objectives.classification_loss(p, m, v, l, r, train=t)
                tokens[name] = config.finetune_keep_count
            if group not in params_cache:
                params_cache[group] = init_params(model, video)
            variants[name] = compile_variant(loss, params_cache[group], video, labels, train)
        result[group] = measure_group(variants, args.iters)
        del variants  # free this group's parameters and optimizer states before the next
        ref = result[group][BASELINE[group]]
        for name, entry in result[group].items():
            entry.update({f"{key}_ratio": entry[key] / ref[key] for key in ("gflops", "peak_gib", "step_ms")})
            entry["encoder_tokens"] = tokens[name]
    return result


def print_table(title, result):
    print(f"\n{title}  (GFLOPs per clip; peak GiB and ms per step of the whole batch; x = ratio to baseline)")
    print(f"{'group':9s} {'variant':14s} {'enc tok':>7s} {'GFLOPs/clip':>12s} {'peak GiB':>9s} "
          f"{'ms/step':>9s} {'FLOPs x':>8s} {'peak x':>7s} {'time x':>7s}")
    for group in ("pretrain", "finetune"):
        for name, e in result[group].items():
            print(f"{group:9s} {name:14s} {e['encoder_tokens']:7d} {e['gflops']:12.3f} {e['peak_gib']:9.3f} "
                  f"{e['step_ms']:9.1f} {e['gflops_ratio']:8.3f} {e['peak_gib_ratio']:7.3f} {e['step_ms_ratio']:7.3f}")


def main(argv=None):
    args = parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import jax
    from everest_jax import ModelConfig

    config = ModelConfig(size=args.model, num_frames=args.frames, image_size=args.image_size,
                         patch_size=args.patch_size, tubelet_size=args.tubelet, dtype=args.dtype)
    params_cache = {}
    result = measure_all(args, True, params_cache)
    print_table("Train step (forward + backward + AdamW)", result)
    if args.inference:
        result["inference"] = measure_all(args, False, params_cache)
        print_table("Forward only (inference; paper figures ~ GFLOPs/2)", result["inference"])
    result["config"] = {"model": args.model, "frames": args.frames, "image_size": args.image_size,
                        "patch_size": args.patch_size, "tubelet": args.tubelet, "batch": args.batch,
                        "iters": args.iters, "dtype": args.dtype, "num_classes": args.num_classes,
                        "tokens": config.num_tokens}
    result["machine"] = {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                         "device": jax.devices()[0].device_kind, "platform": jax.default_backend(),
                         "jax": jax.__version__}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
