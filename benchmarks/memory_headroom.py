"""Memory headroom: the largest per-device batch that fits a memory budget, from XLA's memory analysis.

For each model size, precision (float32; bfloat16 compute with float32 parameters and AdamW
state), remat (off / on) and train step (EVEREST and VideoMAE-tube pre-training, fine-tuning with
rho = 0.6 and with all tokens), the jitted AdamW step is compiled, never run, for abstract inputs
at two batch sizes. XLA's memory analysis (arguments + outputs + temporaries - aliased, donated
state) is linear in the batch, bytes = fixed + batch * per_clip, so the largest batch under a
budget is floor((budget - fixed) / per_clip). Blocks are scanned (compiled once, as the recipes'
`model.scan`). These are XLA:CPU's buffer assignments: an accelerator's compiler fuses and
schedules differently, so treat them as estimates of the same program, not as device figures.

    python benchmarks/memory_headroom.py                      # ViT-B and ViT-L, 16 x 224^2, ~10 min on 2 cores
    python benchmarks/memory_headroom.py --quick              # tiny, 8 x 64^2 (the test)

Table to stdout, progress to stderr, last line of stdout one JSON object:
    {"rows": [{"model", "dtype", "remat", "step", "fixed_gib", "per_clip_gib", "max_batch": {"24": n, ...}}],
     "budgets_gib": [...], "config": {...}, "machine": {...}}
"""

import argparse
import itertools
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

STEPS = (("pretrain", "everest"), ("pretrain", "videomae_tube"), ("finetune", "everest_rho0.6"),
         ("finetune", "all_tokens"))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="B,L", help="comma-separated sizes")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--remat", default="off,on")
    p.add_argument("--batches", default="2,4", help="the two batch sizes of the linear fit")
    p.add_argument("--budgets", default="24,40,80", help="GiB per device")
    p.add_argument("--num-classes", type=int, default=400)
    p.add_argument("--steps", default=",".join(f"{g}_{v}" for g, v in STEPS), help="comma-separated")
    p.add_argument("--quick", action="store_true", help="tiny, 8 x 64^2, float32, remat off (seconds)")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.frames, args.image_size, args.dtypes, args.remat = "tiny", 8, 64, "float32", "off"
    return args


def step_bytes(config, group: str, batch: int) -> int:
    """XLA's peak bytes of one compiled AdamW train step at `batch` (state donated)."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import optax
    from everest_jax import objectives
    from everest_jax.models import Classifier, PretrainingModel

    model = PretrainingModel(config) if group == "pretrain" else Classifier(config)
    video = jax.ShapeDtypeStruct((batch, config.num_frames, *config.image_size, 3), jnp.float32)
    labels = jax.ShapeDtypeStruct((batch,), jnp.int32)
    rngs = {"params": jax.random.key(0), "masking": jax.random.key(1), "dropout": jax.random.key(2)}
    params = nn.unbox(jax.eval_shape(lambda v: model.init(rngs, v), jax.ShapeDtypeStruct((1, *video.shape[1:]),
                                                                                          jnp.float32))["params"])
    tx = optax.adamw(1e-4, b1=0.9, b2=0.95, weight_decay=0.05)

    def loss_fn(p, v, l, r):
        if group == "pretrain":
            return objectives.pretrain_loss(p, model, v, r, train=True)[0]
        return objectives.classification_loss(p, model, v, l, r, train=True)[0]

    def step(p, opt_state, v, l, r):
        loss, grads = jax.value_and_grad(loss_fn)(p, v, l, r)
        updates, opt_state = tx.update(grads, opt_state, p)
        return optax.apply_updates(p, updates), opt_state, loss

    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(
        params, jax.eval_shape(tx.init, params), video, labels, jax.random.key(3)).compile()
    mem = compiled.memory_analysis()
    return (mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
            - getattr(mem, "alias_size_in_bytes", 0))


def headroom(fixed: float, per_clip: float, budget: float) -> int:
    """Largest batch with fixed + batch * per_clip <= budget (bytes); 0 if none."""
    return max(int((budget - fixed) // per_clip), 0) if per_clip > 0 else 0


def main(argv=None):
    args = parse_args(argv)
    from everest_jax import ModelConfig

    b1, b2 = (int(b) for b in args.batches.split(","))
    budgets = [float(b) for b in args.budgets.split(",")]
    rows = []
    steps = [(g, v) for g, v in STEPS if f"{g}_{v}" in args.steps.split(",")]
    for size, dtype, remat, (group, variant) in itertools.product(
            args.models.split(","), args.dtypes.split(","), args.remat.split(","), steps):
        base = dict(size=size, num_frames=args.frames, image_size=args.image_size, dtype=dtype, scan=True,
                    remat=remat == "on", num_classes=args.num_classes, attention="xla")
        if group == "pretrain":
            config = ModelConfig(**base, masking="everest" if variant == "everest" else "tube")
        else:
            config = ModelConfig(**base, finetune_keep_ratio=0.6 if variant.startswith("everest") else 1.0)
        start = time.perf_counter()
        small, large = step_bytes(config, group, b1), step_bytes(config, group, b2)
        per_clip = (large - small) / (b2 - b1)
        fixed = small - b1 * per_clip
        row = {"model": size, "dtype": dtype, "remat": remat == "on", "step": f"{group}_{variant}",
               "fixed_gib": fixed / 2**30, "per_clip_gib": per_clip / 2**30,
               "max_batch": {f"{b:g}": headroom(fixed, per_clip, b * 2**30) for b in budgets}}
        rows.append(row)
        print(f"{size} {dtype} remat={remat} {row['step']}: fixed {row['fixed_gib']:.2f} GiB + "
              f"{row['per_clip_gib']:.3f} GiB/clip ({time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)

    head = f"{'model':5s} {'dtype':8s} {'remat':5s} {'step':26s} {'fixed GiB':>9s} {'GiB/clip':>8s} " + \
        " ".join(f"{'<=' + format(b, 'g') + 'GiB':>8s}" for b in budgets)
    print(head)
    print("-" * len(head))
    for r in rows:
        print(f"{r['model']:5s} {r['dtype']:8s} {str(r['remat']):5s} {r['step']:26s} {r['fixed_gib']:9.2f} "
              f"{r['per_clip_gib']:8.3f} " + " ".join(f"{n:8d}" for n in r["max_batch"].values()))
    import jax

    print(json.dumps({"rows": rows, "budgets_gib": budgets,
                      "config": {"frames": args.frames, "image_size": args.image_size, "batches": [b1, b2],
                                 "scan": True, "optimizer": "adamw", "params": "float32"},
                      "machine": {"platform": jax.default_backend(), "jax": jax.__version__,
                                  "cpu": platform.processor() or platform.machine()}}))


if __name__ == "__main__":
    main()
