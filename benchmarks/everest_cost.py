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

import json
import os
import platform
import time

from absl import app, flags

flags.DEFINE_string("model", "tiny", "model size: tiny, S, B, L, H")
flags.DEFINE_integer("frames", 16, "frames per clip")
flags.DEFINE_integer("image_size", 64, "square frame size")
flags.DEFINE_integer("patch_size", 16, "patch size")
flags.DEFINE_integer("batch", 2, "clips per step")
flags.DEFINE_integer("iters", 3, "timed steps per variant (after one warm-up step)")
flags.DEFINE_string("dtype", "float32", "compute dtype")
FLAGS = flags.FLAGS


def _cost(compiled):
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    mem = compiled.memory_analysis()
    peak = (mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
            - getattr(mem, "alias_size_in_bytes", 0))
    return float(cost["flops"]), peak


def measure(model, loss_fn, batch):
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
    for i in range(FLAGS.iters):
        start = time.perf_counter()
        params, opt_state, loss = compiled(params, opt_state, video, labels, jax.random.key(4 + i))
        jax.block_until_ready(loss)
        times.append(time.perf_counter() - start)
    return {"gflops": flops / batch / 1e9, "peak_gib": peak / 2**30, "step_ms": 1e3 * sorted(times)[len(times) // 2]}


def main(argv):
    del argv
    import jax

    from everest_jax import ModelConfig, objectives
    from everest_jax.models import Classifier, PretrainingModel

    base = dict(size=FLAGS.model, num_frames=FLAGS.frames, image_size=FLAGS.image_size,
                patch_size=FLAGS.patch_size, dtype=FLAGS.dtype, num_classes=101)

    def pretrain(masking):
        model = PretrainingModel(ModelConfig(**base, masking=masking))
        return measure(model, lambda p, v, l, r: objectives.pretrain_loss(p, model, v, r), FLAGS.batch)

    def finetune(keep):
        model = Classifier(ModelConfig(**base, finetune_keep_ratio=keep))
        return measure(model, lambda p, v, l, r: objectives.classification_loss(p, model, v, l, r), FLAGS.batch)

    result = {"pretrain": {"everest": pretrain("everest"), "videomae_tube": pretrain("tube"),
                           "random": pretrain("random")},
              "finetune": {"everest": finetune(0.6), "all_tokens": finetune(1.0)}}
    for group, baseline in (("pretrain", "videomae_tube"), ("finetune", "all_tokens")):
        ref = result[group][baseline]
        for entry in result[group].values():
            for key in ("gflops", "peak_gib", "step_ms"):
                entry[key + "_ratio"] = entry[key] / ref[key]
    config = ModelConfig(**base)
    result["config"] = {"model": FLAGS.model, "frames": FLAGS.frames, "image_size": FLAGS.image_size,
                        "patch_size": FLAGS.patch_size, "batch": FLAGS.batch, "tokens": config.num_tokens,
                        "dtype": FLAGS.dtype}
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
    app.run(main)
