"""Input iterators for the trainer, built from `config.data` (Grain under the hood).

Training: the source is shuffled with the run's seed (a new order every epoch) and cut into
global batches; process i of n reads (and decodes) only rows [i*b, (i+1)*b) of each global
batch. The global batches are therefore the same whatever the number of processes, so a
multi-host run sees exactly the data of a single-host one. The iterator's state is checkpointable. Evaluation:
each video as `num_clips x num_crops` views, padded to whole batches with a `valid` flag.
"""

from __future__ import annotations

from typing import Iterator

import grain
import ml_collections
import numpy as np

from everest_jax.config import ConfigError, ModelConfig
from everest_jax.data import SyntheticVideos, normalize_video

SOURCES = ("synthetic",)
EVAL_SEED_OFFSET = 1_000_003  # evaluation videos never coincide with training videos


def validate(data: ml_collections.ConfigDict) -> None:
    if data.name not in SOURCES:
        raise ConfigError(f"data.name={data.name!r} must be one of {SOURCES}")
    if data.num_examples <= 0:
        raise ConfigError(f"data.num_examples={data.num_examples} must be positive")


def _synthetic(config, model_config: ModelConfig, train: bool, num_frames: int, image_size) -> SyntheticVideos:
    d = config.data
    return SyntheticVideos(num_examples=d.num_examples if train else d.num_eval_examples, num_frames=num_frames,
                           image_size=image_size, num_classes=d.num_classes,
                           seed=config.seed + (0 if train else EVAL_SEED_OFFSET), camera_pan=d.camera_pan)


def _to_model_input(example: dict) -> dict:
    return {"video": normalize_video(example["video"]), "label": np.int32(example["label"])}


def train_iterator(config: ml_collections.ConfigDict, model_config: ModelConfig, local_batch: int,
                   process_index: int, process_count: int) -> grain.DatasetIterator:
    """Endless batches {'video': (b, T, H, W, C) float32, 'label': (b,) int32}: this process's rows
    of each global batch (b = local_batch)."""
    source = _synthetic(config, model_config, True, model_config.num_frames, model_config.image_size)
    if len(source) < local_batch * process_count:
        raise ConfigError(f"data.num_examples={len(source)} is smaller than the global batch "
                          f"{local_batch * process_count}")
    ds = (grain.MapDataset.source(source).shuffle(seed=config.seed).repeat().map(_to_model_input)
          .batch(local_batch, drop_remainder=True))[process_index::process_count]
    return iter(ds.to_iter_dataset())


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


def eval_views(config: ml_collections.ConfigDict, model_config: ModelConfig, process_index: int,
               process_count: int) -> Iterator[dict]:
    """Batches {'video': (b, V, T, H, W, C), 'label': (b,), 'valid': (b,)} of this process's videos.

    Every process yields the same number of batches (padding with invalid entries), as the
    collective evaluation step needs.
    """
    e = config.eval
    h, w = model_config.image_size
    long_frames = model_config.num_frames + (e.num_clips - 1) * max(model_config.num_frames // 2, 1)
    long_size = (h, int(round(w * e.crop_extent))) if e.num_crops > 1 else (h, w)
    source = _synthetic(config, model_config, False, long_frames, long_size)
    indices = list(range(process_index, len(source), process_count))
    per_process = -(-len(source) // process_count)
    indices += [-1] * (per_process - len(indices))
    b = e.batch_size
    for start in range(0, per_process, b):
        chunk = indices[start:start + b]
        chunk += [-1] * (b - len(chunk))
        videos, labels = [], []
        for i in chunk:
            ex = source[max(i, 0)]
            views = multi_view(ex["video"], e.num_clips, e.num_crops, model_config.num_frames, (h, w))
            videos.append(normalize_video(views))
            labels.append(ex["label"])
        yield {"video": np.stack(videos), "label": np.asarray(labels, np.int32),
               "valid": np.asarray([i >= 0 for i in chunk])}
