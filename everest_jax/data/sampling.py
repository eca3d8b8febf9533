"""Which frames of a video make a clip: temporal samplers.

A sampler is called as `sampler(n, rng)` with the video's frame count n and a NumPy Generator, and
returns an int64 array (V, T) of frame positions in [0, n): V clips (views) of T frames each,
ascending within a clip. It raises VideoError(TOO_SHORT) when n < `sampler.min_frames`. Training
samplers draw from `rng`; test samplers (`train=False`) ignore it and are deterministic.

- `StrideSampler`: T frames `stride` apart (VideoMAE/EVEREST: 16 x 4 on Kinetics, 16 x 2 ...).
  Training: one clip at a uniformly random start. Test: `num_clips` starts evenly spaced from the
  first to the last possible start (num_clips=1: the centre clip) -- the temporal half of
  multi-view testing. Videos shorter than the clip's span repeat their last frame (as VideoMAE).
- `SegmentSampler`: SSv2 style. Split [0, n-1] into T equal segments, one frame per segment:
  random within the segment in training, at (c+1)/(num_clips+1) of it for test clip c
  (num_clips=1: the middle). Follows VideoMAE's `_get_seq_frames` (np.round, inclusive ends).
- `CandidateSampler`: EVEREST's information-intensive frame selection on long videos: the
  2*alpha*tau candidate frames (`num_candidate_frames`) uniformly spaced over the
  whole video, floor((k + u) * n / count), with one random phase u in [0, 1) for training and
  u = 0.5 for test.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from everest_jax.data.errors import Reason, VideoError


def _require(n: int, min_frames: int) -> None:
    if n < min_frames:
        raise VideoError(Reason.TOO_SHORT, "", f"{n} frames, the clip needs at least {min_frames}")


def stride_starts(n: int, span: int, num_clips: int) -> np.ndarray:
    """Deterministic starts of `num_clips` clips spanning `span` frames each: (num_clips,) int64,
    evenly spaced over [0, max(n - span, 0)]; one clip is centred."""
    room = max(n - span, 0)
    if num_clips == 1:
        return np.asarray([room // 2], np.int64)
    return np.asarray([int(c * room / (num_clips - 1)) for c in range(num_clips)], np.int64)


@dataclasses.dataclass(frozen=True)
class StrideSampler:
    """(V, T) positions start + t * stride (clamped to n - 1); V = 1 in training, num_clips at test."""

    num_frames: int = 16
    stride: int = 4
    train: bool = True
    num_clips: int = 1
    min_frames: int | None = None  # default: num_frames distinct frames

    @property
    def span(self) -> int:
        return (self.num_frames - 1) * self.stride + 1

    def __call__(self, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
        _require(n, self.min_frames if self.min_frames is not None else self.num_frames)
        if self.train:
            starts = rng.integers(0, max(n - self.span, 0) + 1, size=self.num_clips)
        else:
            starts = stride_starts(n, self.span, self.num_clips)
        idx = starts[:, None] + self.stride * np.arange(self.num_frames)[None, :]
        return np.minimum(idx, n - 1).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class SegmentSampler:
    """(V, T) positions, one frame in each of T = num_segments equal segments of the video."""

    num_segments: int = 16
    train: bool = True
    num_clips: int = 1
    min_frames: int | None = None  # default: num_segments

    def __call__(self, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
        _require(n, self.min_frames if self.min_frames is not None else self.num_segments)
        t = self.num_segments
        seg = (n - 1) / t
        starts = np.round(seg * np.arange(t)).astype(np.int64)
        ends = np.round(seg * np.arange(1, t + 1)).astype(np.int64)
        if self.train:
            idx = rng.integers(starts, ends + 1, size=(self.num_clips, t))  # inclusive ends
        else:
            offsets = [int(seg / (self.num_clips + 1) * (c + 1)) for c in range(self.num_clips)]
            idx = starts[None, :] + np.asarray(offsets, np.int64)[:, None]
        return np.minimum(idx, n - 1).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class CandidateSampler:
    """(1, 2*alpha*tau) uniformly spaced candidate positions for information-intensive selection."""

    num_frames: int = 16
    alpha: float = 1.5
    tubelet_size: int = 2
    train: bool = True
    min_frames: int | None = None  # default: the number of candidates

    @property
    def num_candidates(self) -> int:
        return num_candidate_frames(self.num_frames, self.alpha, self.tubelet_size)

    def __call__(self, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
        count = self.num_candidates
        _require(n, self.min_frames if self.min_frames is not None else count)
        phase = rng.random() if self.train else 0.5
        idx = np.floor((np.arange(count) + phase) * n / count).astype(np.int64)
        return np.minimum(idx, n - 1)[None, :]


def num_candidate_frames(num_frames: int = 16, alpha: float = 1.5, tubelet_size: int = 2) -> int:
    """2*alpha*tau candidate frames for a clip of `num_frames` (tau = num_frames / tubelet_size pairs)."""
    pairs = alpha * (num_frames // tubelet_size)
    if alpha < 1 or pairs != int(pairs):
        raise ValueError(f"alpha={alpha} must be >= 1 and make alpha*{num_frames // tubelet_size} an integer")
    return int(pairs) * tubelet_size
