"""The Grain pipeline: shard -> shuffle -> repeat -> read + sample + augment -> batch -> workers.

    it = make_iterator(source, *clip_transforms("pretrain"), batch_size=8, seed=0)
    batch = next(it)        # {'video': (8, 16, 224, 224, 3) float32, 'label': (8,) int32,
                            #  'index': (8,) int32, 'error': (8,) int32}
    state = it.get_state()  # JSON-able; save beside the checkpoint, later it.set_state(state)
    it.report()             # the bad videos replaced so far

Order of operations (all on a MapDataset, so the output depends only on seed, sharding and data,
not on the number of threads or worker processes): this process's shard of the source indices
(strided, `ShardByJaxProcess` by default), a seeded shuffle (a new order each epoch), repeat,
`LoadClip` (a RandomMap: each element's Generator comes from the seed, the shard and its
position, so sampling and augmentation are reproducible), batch. Then decoding threads and
prefetch (`ReadOptions`), optional worker processes (`mp_prefetch`) and, in the main process,
the `BadExampleMonitor`. Batches are formed before the workers, so `worker_count` does not change
what comes out, only how fast.
"""

from __future__ import annotations

import functools

import grain
import numpy as np
from absl import flags

from everest_jax.data import augment as aug
from everest_jax.data import sampling, sources
from everest_jax.data.robust import BadExampleIterator, BadExampleMonitor, LoadClip


def shard_indices(num_examples: int, shard_index: int, shard_count: int, drop_remainder: bool = False) -> np.ndarray:
    """(n,) int64 global indices of one shard: every shard_count-th from shard_index; with
    drop_remainder, the last num_examples % shard_count examples go unused so shards are equal."""
    if not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index={shard_index} must be in [0, shard_count={shard_count})")
    usable = num_examples - num_examples % shard_count if drop_remainder else num_examples
    return np.arange(shard_index, usable, shard_count, dtype=np.int64)


def clip_transforms(mode: str, *, num_frames: int = 16, stride: int = 4, size: int | tuple[int, int] = 224,
                    sampling_kind: str = "stride", num_clips: int = 5, num_crops: int = 3,
                    short_side: int | None = None, alpha: float = 1.5, tubelet_size: int = 2,
                    flip: bool = True, rand_augment: bool = True, erase_prob: float = 0.25):
    """(sampler, augment) of a standard recipe.

    Args:
      mode: 'pretrain' (random clip, multi-scale crop), 'finetune' (random clip, random resized
        crop + RandAugment + flip + erasing) or 'test' (num_clips x num_crops views).
      sampling_kind: 'stride' (num_frames x stride), 'segment' (num_frames segments, SSv2) or
        'candidate' (EVEREST's 2*alpha*tau candidate frames, for training modes).
      flip, rand_augment, erase_prob: fine-tuning only; SSv2 turns flipping off (its labels
        name directions).
    """
    train = mode != "test"
    clips = 1 if train else num_clips
    if sampling_kind == "stride":
        sampler = sampling.StrideSampler(num_frames, stride, train=train, num_clips=clips)
    elif sampling_kind == "segment":
        sampler = sampling.SegmentSampler(num_frames, train=train, num_clips=clips)
    elif sampling_kind == "candidate":
        sampler = sampling.CandidateSampler(num_frames, alpha, tubelet_size, train=train)
    else:
        raise ValueError(f"sampling_kind={sampling_kind!r} must be 'stride', 'segment' or 'candidate'")
    if mode == "pretrain":
        augment = aug.PretrainAugment(size)
    elif mode == "finetune":
        augment = aug.FinetuneAugment(size, rand_augment=aug.RandAugment() if rand_augment else None,
                                      flip_prob=0.5 if flip else 0.0, erase_prob=erase_prob)
    elif mode == "test":
        augment = aug.EvalAugment(size, short_side, num_crops)
    else:
        raise ValueError(f"mode={mode!r} must be 'pretrain', 'finetune' or 'test'")
    return sampler, augment


def _map_seed(seed: int, shard_index: int) -> int:
    """Seed of the per-example Generators: differs between shards, fits Grain's uint32."""
    return int(np.random.SeedSequence([seed, shard_index]).generate_state(1)[0])


def build_dataset(source, sampler, augment, *, batch_size: int | None, seed: int = 0, shuffle: bool = True,
                  num_epochs: int | None = None, shard_options: grain.sharding.ShardOptions | None = None,
                  drop_remainder: bool = True, worker_count: int = 0, worker_buffer_size: int = 2,
                  read_threads: int = 2, prefetch_buffer_size: int = 4,
                  max_bad_fraction: float = 0.1) -> BadExampleMonitor:
    """The pipeline as a Grain IterDataset; iterate it (or call `make_iterator`) for batches.

    Args:
      source: random-access video source (sources.py, SyntheticVideos, ...).
      sampler, augment: see `clip_transforms`.
      batch_size: examples per batch (None: unbatched examples).
      seed: shuffle and augmentation seed.
      shuffle: shuffle (a new order every epoch); False keeps the shard's order (evaluation).
      num_epochs: passes over the shard; None repeats forever.
      shard_options: which part of the source this process reads; default
        `grain.sharding.ShardByJaxProcess(drop_remainder=True)`. Use
        `grain.sharding.ShardOptions(shard_index, shard_count)` to choose explicitly.
      drop_remainder: drop a last incomplete batch.
      worker_count: decoding worker processes (0: threads of this process only).
      worker_buffer_size: batches each worker prepares ahead.
      read_threads, prefetch_buffer_size: decoding threads per process and batches read ahead.
      max_bad_fraction: stop with TooManyBadExamples when more of the shard is bad.
    Returns:
      An IterDataset of {'video': (b, T, H, W, C) float32 (or (b, V, T, H, W, C) for multi-view
      tests), 'label': (b,) int32, 'index': (b,) int32 global source index, 'error': (b,) int32
      Reason of the slot's own example (0 = used as is, else it was replaced)}.
    """
    if shard_options is None:
        shard_options = grain.sharding.ShardByJaxProcess(drop_remainder=True)
    shard = shard_indices(len(source), shard_options.shard_index, shard_options.shard_count,
                          shard_options.drop_remainder)
    if len(shard) == 0:
        raise ValueError(f"shard {shard_options.shard_index} of {shard_options.shard_count} of {len(source)} "
                         "examples is empty")
    if batch_size is not None and drop_remainder and len(shard) < batch_size:
        raise ValueError(f"a shard of {len(shard)} examples cannot fill one batch of {batch_size}")
    ds = grain.MapDataset.range(len(shard))
    if shuffle:
        ds = ds.shuffle(seed=seed)
    if num_epochs != 1:
        ds = ds.repeat(num_epochs)
    ds = ds.random_map(LoadClip(source, shard, sampler, augment, max_bad_fraction),
                       seed=_map_seed(seed, shard_options.shard_index))
    if batch_size is not None:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch_buffer_size))
    if worker_count > 0:
        if not flags.FLAGS.is_parsed():
            # Grain reads its absl flags when starting workers; a program without absl.app has
            # not parsed them. Their defaults are what we want.
            flags.FLAGS.mark_as_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count,
                                                               per_worker_buffer_size=worker_buffer_size))
    return BadExampleMonitor(it_ds, functools.partial(sources.describe, source), len(shard), max_bad_fraction)


def make_iterator(source, sampler, augment, **kwargs) -> BadExampleIterator:
    """`iter(build_dataset(...))`: a checkpointable iterator (get_state / set_state) with `report()`."""
    return iter(build_dataset(source, sampler, augment, **kwargs))
