"""Cost of one training step: EVEREST versus VideoMAE (tube 90 %) and random 90 % masking, and
fine-tuning with rho = 0.6 token dropping versus all tokens.

For each variant one train step (forward, backward, AdamW update) is compiled; reported per clip
are XLA's counted FLOPs, XLA's peak-memory estimate for the step (temp + arguments + outputs -
aliased) and the measured step time, each also as a ratio to the baseline, in one run.

Targets (paper, ViT-B, 16x224^2): pre-training FLOPs ratio <= 0.60 (~20 vs ~36 GFLOPs forward),
fine-tuning <= 0.56 (98 vs 180). XLA counts a multiply-add as 2 FLOPs and includes the backward
pass, so absolute figures are ~6x the paper's forward GMACs; the ratios are what compare.

    python benchmarks/everest_cost.py                                   # small default, ~1 min on CPU
    python benchmarks/everest_cost.py --model B --frames 16 --image-size 224 --batch 1
The last line of stdout is one JSON object.
"""

import argparse
import json
import os
import platform
import sys
import time


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny", help="model size: tiny, S, B, L, H")
    p.add_argument("--frames", type=int, default=16, help="frames per clip")
    p.add_argument("--image-size", type=int, default=64, help="square frame size")
    p.add_argument("--patch-size", type=int, default=16)
    p.add_argument("--batch", type=int, default=2, help="clips per step")
    p.add_argument("--iters", type=int, default=3, help="timed steps per variant (after one warm-up step)")
    p.add_argument("--dtype", default="float32", help="compute dtype")
    return p.parse_args(argv)


def _cost(compiled):
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    mem = compiled.memory_analysis()
    peak = (mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
            - getattr(mem, "alias_size_in_bytes", 0))
    return float(cost["flops"]), peak


def measure(model, loss_fn, batch, iters):
    """Compile a full train step for `model` and return {gflops, peak_gib, step_ms}."""
    import flax.linen as nn
    import jax
    import optax

    c = model.config
    video = jax.random.normal(jax.random.key(0), (batch, c.num_frames, *c.image_size, 3))
    params = nn.unbox(model.init({"params": jax.random.key(1), "masking": jax.random.key(2)}, video[:1]))["params"]
    tx = optax.adamw(1e-4, b1=0.9, b2=0.95, weight_decay=0.05)
    opt_state = tx.init(params)
    labels = jax.numpy.zeros((batch,), jax.numpy.int32)

    def step(params, opt_state, video, labels, rng):
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, video, labels, rng)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt_state, video, labels, jax.random.key(3)).compile()
    flops, peak = _cost(compiled)
    params, opt_state, loss = compiled(params, opt_state, video, labels, jax.random.key(3))
    jax.block_until_ready(loss)
    times = []
    for i in range(iters):
        start = time.perf_counter()
        params, opt_state, loss = compiled(params, opt_state, video, labels, jax.random.key(4 + i))
        jax.block_until_ready(loss)
        times.append(time.perf_counter() - start)
    return {"gflops": flops / batch / 1e9, "peak_gib": peak / 2**30, "step_ms": 1e3 * sorted(times)[len(times) // 2]}


def main(argv=None):
    args = parse_args(argv)
    import jax

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from everest_jax import ModelConfig, objectives
    from everest_jax.models import Classifier, PretrainingModel

    base = dict(size=args.model, num_frames=args.frames, image_size=args.image_size,
                patch_size=args.patch_size, dtype=args.dtype, num_classes=101)

    def pretrain(masking):
        model = PretrainingModel(ModelConfig(**base, masking=masking))
        return measure(model, lambda p, v, l, r: objectives.pretrain_loss(p, model, v, r), args.batch, args.iters)

    def finetune(keep):
        model = Classifier(ModelConfig(**base, finetune_keep_ratio=keep))
        return measure(model, lambda p, v, l, r: objectives.classification_loss(p, model, v, l, r), args.batch, args.iters)

    result = {"pretrain": {"everest": pretrain("everest"), "videomae_tube": pretrain("tube"),
                           "random": pretrain("random")},
              "finetune": {"everest": finetune(0.6), "all_tokens": finetune(1.0)}}
    for group, baseline in (("pretrain", "videomae_tube"), ("finetune", "all_tokens")):
        ref = result[group][baseline]
        for entry in result[group].values():
            for key in ("gflops", "peak_gib", "step_ms"):
                entry[key + "_ratio"] = entry[key] / ref[key]
    config = ModelConfig(**base)
    result["config"] = {"model": args.model, "frames": args.frames, "image_size": args.image_size,
                        "patch_size": args.patch_size, "batch": args.batch, "tokens": config.num_tokens,
                        "dtype": args.dtype}
    result["machine"] = {"device": jax.devices()[0].device_kind, "platform": jax.default_backend(),
                         "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                         "jax": jax.__version__}

    print(f"{'':10s} {'variant':14s} {'GFLOPs/clip':>12s} {'peak GiB':>9s} {'step ms':>9s} "
          f"{'FLOPs x':>8s} {'peak x':>7s} {'time x':>7s}")
    for group in ("pretrain", "finetune"):
        for name, e in result[group].items():
            print(f"{group:10s} {name:14s} {e['gflops']:12.2f} {e['peak_gib']:9.3f} {e['step_ms']:9.1f} "
                  f"{e['gflops_ratio']:8.3f} {e['peak_gib_ratio']:7.3f} {e['step_ms_ratio']:7.3f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
