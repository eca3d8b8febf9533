"""Training throughput of the sharded pre-training step: EVEREST versus VideoMAE tube masking.

Uses the trainer's own pieces (mesh from the flags, sharded state, the jitted step with donated
state) on random clips, so the figures are those of `python -m everest_jax.main`. Reports clips/s
and encoder tokens/s (visible tokens per clip x clips/s), measured in one run.

    python benchmarks/train_throughput.py                          # small default, about a minute on CPU
    python benchmarks/train_throughput.py --model B --frames 16 --image-size 224 --batch 64 --mesh 8,1,1
The last line of stdout is one JSON object:
    {"everest": {"clips_per_s", "tokens_per_s"}, "videomae_tube": {...}}
"""

import argparse
import json
import os
import sys
import time


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny", help="tiny, S, B, L, H")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--patch-size", type=int, default=16)
    p.add_argument("--batch", type=int, default=8, help="global batch")
    p.add_argument("--mesh", default="-1,1,1", help="data,fsdp,tensor sizes (-1: the remaining devices)")
    p.add_argument("--steps", type=int, default=5, help="timed steps (after one compiling step)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--cpu-devices", type=int, default=0, help="simulate this many CPU devices (0: as is)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.cpu_devices:
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.cpu_devices}"
    import jax
    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from configs import quickstart
    from everest_jax import cli, sharding, train, trainer

    mesh_sizes = dict(zip(sharding.MESH_AXES, (int(x) for x in args.mesh.split(","))))
    mesh = sharding.make_mesh(mesh_sizes)
    result = {}
    for name, masking in (("everest", "everest"), ("videomae_tube", "tube")):
        config = quickstart.get_config(f"masking={masking}")
        config.batch_size = args.batch
        config.model.update(dict(size=args.model, num_frames=args.frames, image_size=(args.image_size,) * 2,
                                 patch_size=args.patch_size, dtype=args.dtype))
        config.update(total_steps=1000, warmup_steps=10)
        config.mesh.update(mesh_sizes)
        with cli.user_errors():  # e.g. a batch the mesh cannot split: one line naming the field
            model_config = train.validate(config)
        task, spec = train.PretrainTask(config, model_config), train.run_spec(config)
        parts = trainer.setup(spec, task, mesh)
        state, step = parts.fresh_state(task, mesh, spec.rules), parts.train_step
        rng = np.random.default_rng(0)
        local = {"video": rng.normal(size=(args.batch, args.frames, args.image_size, args.image_size, 3)).astype(np.float32),
                 "label": np.zeros((args.batch,), np.int32)}
        batch = sharding.global_batch(local, mesh, args.batch)
        state, metrics = step(state, batch)  # compiles
        jax.block_until_ready(metrics["loss"])
        start = time.perf_counter()
        for _ in range(args.steps):
            state, metrics = step(state, batch)
        jax.block_until_ready(metrics["loss"])
        clips_per_s = args.steps * args.batch / (time.perf_counter() - start)
        visible = model_config.pretrain_counts[0]
        result[name] = {"clips_per_s": clips_per_s, "tokens_per_s": clips_per_s * visible,
                        "visible_tokens": visible, "target_tokens": model_config.pretrain_counts[1]}
        print(f"{name:14s} {clips_per_s:10.2f} clips/s {clips_per_s * visible:12.0f} encoder tokens/s", flush=True)
    result["speedup"] = result["everest"]["clips_per_s"] / result["videomae_tube"]["clips_per_s"]
    result["config"] = {"model": args.model, "frames": args.frames, "image_size": args.image_size,
                        "patch_size": args.patch_size, "batch": args.batch, "mesh": dict(mesh.shape),
                        "device": jax.devices()[0].device_kind, "devices": jax.device_count(),
                        "cpu_count": os.cpu_count(), "jax": jax.__version__}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
