"""Input iterators for the trainer, built from `config.data` (Grain under the hood).

Sources (`data.name`):
  synthetic  procedural moving shapes (everest_jax.data.synthetic), no files needed;
  videos     video files named in list files (`data.train_list`, `data.eval_list`, paths relative
             to `data.root`), decoded with PyAV;
  tfds       a TFDS video dataset (`data.tfds_name`, splits `data.train_split` / `data.eval_split`).

Synthetic training data: the source is shuffled with the run's seed (a new order every epoch) and
cut into global batches; process i of n reads only rows [i*b, (i+1)*b) of each global batch, so
the global batches are the same whatever the number of processes. Video files and TFDS go through
the robust Grain pipeline of `everest_jax.data` (decoding threads or worker processes, the recipe's
sampling and augmentation, bad videos replaced and counted): each process reads its own strided
shard of the videos. All training iterators are checkpointable (get_state / set_state).
Evaluation: each video as `num_clips x num_crops` views, padded to whole batches with a `valid` flag.

`model_config` below is the clip shape the model takes: `num_frames`, `image_size`, `in_channels`,
`tubelet_size` (an EVEREST `ModelConfig`, or a `Clip` for other models).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterator

import grain
import ml_collections
import numpy as np

from everest_jax.config import ConfigError, ModelConfig
from everest_jax.data.sampling import num_candidate_frames
from everest_jax.data import SyntheticVideos, TfdsVideoSource, VideoListSource, normalize_video
from everest_jax.data.pipeline import build_dataset, clip_transforms, make_iterator
from everest_jax.fields import Float, Int, Is, OneOf

SOURCES = ("synthetic", "videos", "tfds")
SAMPLINGS = ("stride", "segment", "candidate")
EVAL_SEED_OFFSET = 1_000_003  # evaluation videos never coincide with training videos


@dataclasses.dataclass(frozen=True)
class Clip:
    """The clip shape a (non-EVEREST) model takes, where these functions want a `model_config`."""

    num_frames: int
    image_size: tuple[int, int]
    in_channels: int = 3
    tubelet_size: int = 1


_UNIT, _FRACTION, _POSITIVE = Float(0, 1), Float(0, 1, hi_open=True), Float(0, lo_open=True)
# The `data` and `eval` sections of a classification / pre-training run config (configs/common.py).
FIELDS = {
    "eval.num_clips": Int(1), "eval.num_crops": Int(1), "eval.crop_extent": Float(1), "eval.batch_size": Int(1),
    "data.name": OneOf(SOURCES), "data.num_classes": Int(1), "data.num_examples": Int(1),
    "data.num_eval_examples": Int(1), "data.camera_pan": Is(bool), "data.synthetic_seed": Int(0),
    "data.num_speeds": Int(1), "data.static_class": Is(bool), "data.min_travel": _POSITIVE, "data.max_travel": _POSITIVE,
    "data.background_drift": Float(0), "data.balanced_labels": Is(bool), "data.wrap": Is(bool),
    "data.root": Is(str), "data.train_list": Is(str), "data.eval_list": Is(str), "data.tfds_name": Is(str),
    "data.train_split": Is(str), "data.eval_split": Is(str), "data.tfds_data_dir": Is(str),
    "data.sampling": OneOf(SAMPLINGS), "data.stride": Int(1), "data.short_side": Int(0),
    "data.flip": Is(bool), "data.rand_augment": Is(bool), "data.erase_prob": _UNIT, "data.candidate_alpha": Float(1),
    "data.num_workers": Int(0), "data.read_threads": Int(1), "data.max_bad_fraction": _FRACTION,
}


def frame_selection(config: ml_collections.ConfigDict) -> bool:
    """Whether batches hold 2*alpha*tau candidate frames for the step to choose from (EVEREST's
    information-intensive frame selection, `data.sampling='candidate'`)."""
    return config.data.sampling == "candidate"


def clip_frames(config: ml_collections.ConfigDict, model_config: ModelConfig) -> int:
    """Frames per training clip: the model's, or the candidates' under frame selection."""
    if not frame_selection(config):
        return model_config.num_frames
    return num_candidate_frames(model_config.num_frames, config.data.candidate_alpha, model_config.tubelet_size)


def validate(data: ml_collections.ConfigDict, job: str, model_config: ModelConfig) -> None:
    """Refuse data settings that do not fit together (types and ranges: `train.RUN_FIELDS`), naming
    the field; list files are parsed here too, so a malformed line is reported with its number
    before anything compiles."""
    if data.sampling == "candidate":
        if job != "pretrain":
            raise ConfigError(f"data.sampling='candidate' (information-intensive frame selection) is for "
                              f"pre-training; job={job!r} samples clips with 'stride' or 'segment'")
        try:
            num_candidate_frames(model_config.num_frames, data.candidate_alpha, model_config.tubelet_size)
        except ValueError as e:
            raise ConfigError(f"data.candidate_alpha: {e}") from None
    if data.name == "synthetic":
        try:
            SyntheticVideos(num_classes=data.num_classes, num_speeds=data.num_speeds, min_travel=data.min_travel,
                            max_travel=data.max_travel, static_class=data.static_class)
        except ValueError as e:
            raise ConfigError(f"data: {e}") from None
        return
    needed = {"pretrain": ("train",), "finetune": ("train", "eval"), "evaluate": ("eval",)}[job]
    if data.name == "videos":
        for split in needed:
            field = f"{split}_list"
            if not data[field]:
                raise ConfigError(f"data.{field} is empty; data.name='videos' needs a list file for {split}")
            try:
                _video_source(data, split)
            except (OSError, ValueError) as e:
                raise ConfigError(f"data.{field}: {e}") from None
    elif not data.tfds_name:
        raise ConfigError("data.tfds_name is empty; data.name='tfds' needs a TFDS dataset name, e.g. 'ucf101'")


def _video_source(data, split: str) -> VideoListSource:
    return VideoListSource(data[f"{split}_list"], data.root or None, data.num_classes)


def _file_source(config, split: str):
    d = config.data
    if d.name == "videos":
        return _video_source(d, split)
    return TfdsVideoSource(d.tfds_name, d[f"{split}_split"], d.tfds_data_dir or None)


def synthetic_split(config, model_config: ModelConfig, train: bool, num_frames: int, image_size) -> SyntheticVideos:
    """The train or eval split: SyntheticVideos seeded by data.synthetic_seed (+ EVAL_SEED_OFFSET for eval)."""
    d = config.data
    return SyntheticVideos(num_examples=d.num_examples if train else d.num_eval_examples, num_frames=num_frames,
                           image_size=image_size, num_classes=d.num_classes,
                           seed=d.synthetic_seed + (0 if train else EVAL_SEED_OFFSET), camera_pan=d.camera_pan,
                           num_speeds=d.num_speeds, min_travel=d.min_travel, max_travel=d.max_travel,
                           background_drift=d.background_drift, balanced_labels=d.balanced_labels,
                           wrap=d.wrap, static_class=d.static_class)


def _to_model_input(example: dict) -> dict:
    return {"video": normalize_video(example["video"]), "label": np.int32(example["label"])}


def train_iterator(config: ml_collections.ConfigDict, model_config: ModelConfig, local_batch: int,
                   process_index: int, process_count: int) -> grain.DatasetIterator:
    """Endless batches {'video': (b, T, H, W, C) float32, 'label': (b,) int32, ...} of this process
    (b = local_batch, T = `clip_frames`: 2*alpha*tau candidates under frame selection); file
    sources add 'index' and 'error' (see everest_jax.data.pipeline) and a `report()` of the bad
    videos replaced so far."""
    d = config.data
    if d.name != "synthetic":
        mode = "pretrain" if config.job == "pretrain" else "finetune"
        sampler, augment = clip_transforms(
            mode, num_frames=model_config.num_frames, stride=d.stride, size=model_config.image_size,
            sampling_kind=d.sampling, alpha=d.candidate_alpha, tubelet_size=model_config.tubelet_size,
            flip=d.flip, rand_augment=d.rand_augment, erase_prob=d.erase_prob)
        return make_iterator(_file_source(config, "train"), sampler, augment, batch_size=local_batch,
                             seed=config.seed, shard_options=grain.sharding.ShardOptions(process_index, process_count,
                                                                                        drop_remainder=True),
                             worker_count=d.num_workers, read_threads=d.read_threads,
                             max_bad_fraction=d.max_bad_fraction)
    source = synthetic_split(config, model_config, True, clip_frames(config, model_config), model_config.image_size)
    if len(source) < local_batch * process_count:
        raise ConfigError(f"data.num_examples={len(source)} is smaller than the global batch "
                          f"{local_batch * process_count}")
    ds = (grain.MapDataset.source(source).shuffle(seed=config.seed).repeat().map(_to_model_input)
          .batch(local_batch, drop_remainder=True))[process_index::process_count]
    # Grain's default read-ahead (16 threads, 500 batches) would starve the step of CPU and the GIL.
    return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=d.read_threads, prefetch_buffer_size=4)))


def multi_view(video: np.ndarray, num_clips: int, num_crops: int, num_frames: int, size: tuple[int, int]) -> np.ndarray:
    """(T_long, H_long, W_long, C) -> (num_clips * num_crops, T, H, W, C): clips uniformly spaced in
    time, crops spaced along the longer spatial side (1 crop = centre)."""
    t_long, h_long, w_long = video.shape[:3]
    h, w = size
    starts_t = np.linspace(0, t_long - num_frames, num_clips).round().astype(int)
    if w_long - w >= h_long - h:
        offsets = [((h_long - h) // 2, x) for x in np.linspace(0, w_long - w, num_crops).round().astype(int)]
    else:
        offsets = [(y, (w_long - w) // 2) for y in np.linspace(0, h_long - h, num_crops).round().astype(int)]
    if num_crops == 1:
        offsets = [((h_long - h) // 2, (w_long - w) // 2)]
    return np.stack([video[t:t + num_frames, y:y + h, x:x + w] for t in starts_t for y, x in offsets])


def _file_views(config, model_config: ModelConfig, process_index: int, process_count: int):
    """(number of videos, iterator of this process's examples {'video': (V, T, H, W, C), 'label'})."""
    d, e = config.data, config.eval
    source = _file_source(config, "eval")
    sampler, augment = clip_transforms(
        "test", num_frames=model_config.num_frames, stride=d.stride, size=model_config.image_size,
        sampling_kind=d.sampling, num_clips=e.num_clips, num_crops=e.num_crops, short_side=d.short_side or None)
    shard = grain.sharding.ShardOptions(process_index, process_count, drop_remainder=False)
    return len(source), iter(build_dataset(source, sampler, augment, batch_size=None, shuffle=False, num_epochs=1,
                                           shard_options=shard, read_threads=d.read_threads,
                                           max_bad_fraction=d.max_bad_fraction))


def _synthetic_views(config, model_config: ModelConfig, process_index: int, process_count: int):
    e = config.eval
    h, w = model_config.image_size
    long_frames = model_config.num_frames + (e.num_clips - 1) * max(model_config.num_frames // 2, 1)
    long_size = (h, int(round(w * e.crop_extent))) if e.num_crops > 1 else (h, w)
    source = synthetic_split(config, model_config, False, long_frames, long_size)

    def examples():
        for i in range(process_index, len(source), process_count):
            ex = source[i]
            views = multi_view(ex["video"], e.num_clips, e.num_crops, model_config.num_frames, (h, w))
            yield {"video": normalize_video(views), "label": ex["label"]}

    return len(source), examples()


def eval_views(config: ml_collections.ConfigDict, model_config: ModelConfig, process_index: int,
               process_count: int) -> Iterator[dict]:
    """Batches {'video': (b, V, T, H, W, C), 'label': (b,), 'valid': (b,)} of this process's videos.

    Every process yields the same number of batches (padding with invalid entries), as the
    collective evaluation step needs.
    """
    views = _synthetic_views if config.data.name == "synthetic" else _file_views
    num_videos, examples = views(config, model_config, process_index, process_count)
    per_process = math.ceil(num_videos / process_count)
    e = config.eval
    blank = np.zeros((e.num_clips * e.num_crops, model_config.num_frames, *model_config.image_size,
                      model_config.in_channels), np.float32)
    for start in range(0, per_process, e.batch_size):
        chunk = [next(examples, None) for _ in range(min(e.batch_size, per_process - start))]
        chunk += [None] * (e.batch_size - len(chunk))
        yield {"video": np.stack([blank if ex is None else ex["video"] for ex in chunk]),
               "label": np.asarray([-1 if ex is None else ex["label"] for ex in chunk], np.int32),
               "valid": np.asarray([ex is not None for ex in chunk])}
