"""Spatial augmentation of clips (NumPy + PIL), one set of random parameters per clip.

Every transform takes a clip dict from the sampler/reader, {'video': (V, T, H, W, 3) uint8,
'label', optional 'mask': (V, T, H, W)}, and a NumPy Generator, and returns the model input:
{'video': float32 ImageNet-normalised, channels last, 'label' (, 'mask')}. Crops, flips and
resizes are drawn once per clip and applied to all its frames (and masks, nearest-neighbour).

- `PretrainAugment`: VideoMAE's GroupMultiScaleCrop (crop side = short side x one of the scales
  1, .875, .75, .66, aspect distortion <= 1 step, 13 fixed offsets) resized to `size` -> (T, h, w, 3).
- `FinetuneAugment`: random resized crop (scale .08-1, ratio 3/4-4/3), clip-consistent RandAugment
  (m7 n4 mstd .5), horizontal flip, then random erasing (p .25, one box through all frames,
  per-pixel N(0, 1) noise) -> (T, h, w, 3).
- `EvalAugment`: resize the short side to `short_side`, then 1 centre crop or `num_crops` crops
  spaced along the longer side (3: left/centre/right or top/middle/bottom) -> (V * num_crops,
  T, h, w, 3), views ordered clip-major.
- `NoAugment`: the decoded uint8 frames as they are -> (T, H, W, 3) (or (V, T, ...) for V > 1).

Resampling is PIL bilinear as in VideoMAE. Deviation: fine-tuning crops before RandAugment
(VideoMAE augments the full frame first); it is cheaper and the op magnitudes are relative.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image

from everest_jax.data.randaugment import RandAugment
from everest_jax.data.normalize import normalize_video

def _hw(size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def resize(frames: np.ndarray, size: tuple[int, int], resample: int = Image.BILINEAR) -> np.ndarray:
    """(T, H, W[, C]) uint8 -> (T, h, w[, C]) with PIL, frame by frame; a no-op at the same size."""
    h, w = size
    if frames.shape[1:3] == (h, w):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((w, h), resample)) for f in frames])


def short_side_size(height: int, width: int, short: int) -> tuple[int, int]:
    """(h, w) with the shorter side `short` and the aspect kept (VideoMAE's Resize(int))."""
    if width < height:
        return int(short * height / width), short
    return short, int(short * width / height)


def _geometric(clip: dict, fn) -> dict:
    """Apply fn(array, is_mask) to the video and the mask of a clip dict."""
    out = dict(clip)
    out["video"] = fn(clip["video"], False)
    if "mask" in clip:
        out["mask"] = fn(clip["mask"], True)
    return out


def crop(clip: dict, top: int, left: int, height: int, width: int) -> dict:
    """Crop (T, H, W, ...) arrays of a clip dict to rows top:top+height, cols left:left+width."""
    return _geometric(clip, lambda a, _: a[:, top:top + height, left:left + width])


def resize_clip(clip: dict, size: tuple[int, int]) -> dict:
    return _geometric(clip, lambda a, is_mask: resize(a, size, Image.NEAREST if is_mask else Image.BILINEAR))


def hflip(clip: dict) -> dict:
    return _geometric(clip, lambda a, _: a[:, :, ::-1])


def multi_scale_crop_params(height: int, width: int, out_size: tuple[int, int], rng: np.random.Generator,
                            scales=(1, .875, .75, .66), max_distort: int = 1,
                            more_fix_crop: bool = True) -> tuple[int, int, int, int]:
    """VideoMAE GroupMultiScaleCrop (fix_crop=True): (top, left, crop_h, crop_w) of one clip."""
    base = min(height, width)
    sizes = [int(base * s) for s in scales]
    crop_h = [out_size[0] if abs(x - out_size[0]) < 3 else x for x in sizes]
    crop_w = [out_size[1] if abs(x - out_size[1]) < 3 else x for x in sizes]
    pairs = [(h, w) for i, h in enumerate(crop_h) for j, w in enumerate(crop_w) if abs(i - j) <= max_distort]
    ch, cw = pairs[rng.integers(len(pairs))]
    ws, hs = (width - cw) // 4, (height - ch) // 4
    offsets = [(0, 0), (0, 4 * ws), (4 * hs, 0), (4 * hs, 4 * ws), (2 * hs, 2 * ws)]
    if more_fix_crop:
        offsets += [(2 * hs, 0), (2 * hs, 4 * ws), (4 * hs, 2 * ws), (0, 2 * ws),
                    (hs, ws), (hs, 3 * ws), (3 * hs, ws), (3 * hs, 3 * ws)]
    top, left = offsets[rng.integers(len(offsets))]
    return top, left, ch, cw


def random_resized_crop_params(height: int, width: int, rng: np.random.Generator, scale=(0.08, 1.0),
                               ratio=(3 / 4, 4 / 3), attempts: int = 10) -> tuple[int, int, int, int]:
    """Inception-style crop box (top, left, h, w): area share in `scale`, log-uniform aspect in
    `ratio`; after `attempts` misses, the centre crop clamped to the ratio range (as VideoMAE)."""
    area = height * width
    for _ in range(attempts):
        target = rng.uniform(*scale) * area
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def spatial_crop_offsets(height: int, width: int, size: tuple[int, int], num_crops: int) -> list[tuple[int, int]]:
    """(top, left) of `num_crops` test crops: 1 = centre; more = evenly spaced along the longer
    side from one edge to the other (VideoMAE's spatial_step), centred on the shorter side."""
    h, w = size
    if num_crops == 1:
        return [((height - h) // 2, (width - w) // 2)]
    if height > width:
        step = (height - h) / (num_crops - 1)
        return [(int(i * step), (width - w) // 2) for i in range(num_crops)]
    step = (width - w) / (num_crops - 1)
    return [((height - h) // 2, int(i * step)) for i in range(num_crops)]


def random_erase(video: np.ndarray, rng: np.random.Generator, prob: float = 0.25, min_area: float = 0.02,
                 max_area: float = 1 / 3, min_aspect: float = 0.3, attempts: int = 10) -> np.ndarray:
    """timm RandomErasing (mode 'pixel', one box) on a normalised clip (T, H, W, C) float32: with
    probability `prob` one box, the same in every frame, is filled with N(0, 1) noise."""
    if rng.random() >= prob:
        return video
    _, height, width, c = video.shape
    for _ in range(attempts):
        target = rng.uniform(min_area, max_area) * height * width
        aspect = math.exp(rng.uniform(math.log(min_aspect), math.log(1 / min_aspect)))
        h, w = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if w < width and h < height:
            top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            video = video.copy()
            video[:, top:top + h, left:left + w] = rng.standard_normal((video.shape[0], h, w, c), np.float32)
            return video
    return video


def _single_view(clip: dict) -> dict:
    """Drop the view axis V = 1 of a training clip: (1, T, ...) -> (T, ...)."""
    if clip["video"].shape[0] != 1:
        raise ValueError(f"a training augmentation needs one clip per example, got {clip['video'].shape[0]}")
    return _geometric(clip, lambda a, _: a[0])


def _output(clip: dict) -> dict:
    out = {"video": normalize_video(clip["video"]), "label": np.int32(clip["label"])}
    if "mask" in clip:
        out["mask"] = np.ascontiguousarray(clip["mask"], np.uint8)
    return out


@dataclasses.dataclass(frozen=True)
class PretrainAugment:
    """Multi-scale crop to `size` + normalisation: (1, T, H, W, 3) uint8 -> (T, h, w, 3) float32."""

    size: int | tuple[int, int] = 224
    scales: tuple[float, ...] = (1, .875, .75, .66)
    max_distort: int = 1
    more_fix_crop: bool = True

    def __call__(self, clip: dict, rng: np.random.Generator) -> dict:
        clip = _single_view(clip)
        size = _hw(self.size)
        top, left, h, w = multi_scale_crop_params(*clip["video"].shape[1:3], size, rng, self.scales,
                                                  self.max_distort, self.more_fix_crop)
        return _output(resize_clip(crop(clip, top, left, h, w), size))


@dataclasses.dataclass(frozen=True)
class FinetuneAugment:
    """Random resized crop, RandAugment, flip, normalisation, random erasing:
    (1, T, H, W, 3) uint8 -> (T, h, w, 3) float32."""

    size: int | tuple[int, int] = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    rand_augment: RandAugment | None = RandAugment()
    flip_prob: float = 0.5
    erase_prob: float = 0.25

    def __call__(self, clip: dict, rng: np.random.Generator) -> dict:
        clip = _single_view(clip)
        size = _hw(self.size)
        top, left, h, w = random_resized_crop_params(*clip["video"].shape[1:3], rng, self.scale, self.ratio)
        clip = resize_clip(crop(clip, top, left, h, w), size)
        if self.rand_augment is not None:
            video, mask = self.rand_augment(clip["video"], rng, clip.get("mask"))
            clip = {**clip, "video": video, **({"mask": mask} if mask is not None else {})}
        if rng.random() < self.flip_prob:
            clip = hflip(clip)
        out = _output(clip)
        out["video"] = random_erase(out["video"], rng, self.erase_prob)
        return out


@dataclasses.dataclass(frozen=True)
class EvalAugment:
    """Short-side resize + crops: (V, T, H, W, 3) uint8 -> (V * num_crops, T, h, w, 3) float32."""

    size: int | tuple[int, int] = 224
    short_side: int | None = None  # default: the crop's shorter side
    num_crops: int = 3

    def views(self, clip: dict) -> dict:
        """The uint8 views {'video': (V * num_crops, T, h, w, 3), ...} before normalisation."""
        size = _hw(self.size)
        v, _, height, width = clip["video"].shape[:4]
        new = short_side_size(height, width, self.short_side or min(size))
        per_clip = [resize_clip(_geometric(clip, lambda a, _: a[i]), new) for i in range(v)]
        offsets = spatial_crop_offsets(*new, size, self.num_crops)
        crops = [crop(c, top, left, *size) for c in per_clip for top, left in offsets]
        out = {"video": np.stack([c["video"] for c in crops]), "label": clip["label"]}
        if "mask" in clip:
            out["mask"] = np.stack([c["mask"] for c in crops])
        return out

    def __call__(self, clip: dict, rng: np.random.Generator | None = None) -> dict:
        return _output(self.views(clip))


@dataclasses.dataclass(frozen=True)
class NoAugment:
    """The decoded frames unchanged: (V, T, H, W, 3) uint8 -> (T, H, W, 3) for V = 1, else as is."""

    def __call__(self, clip: dict, rng: np.random.Generator | None = None) -> dict:
        if clip["video"].shape[0] == 1:
            clip = _single_view(clip)
        out = {"video": clip["video"], "label": np.int32(clip["label"])}
        if "mask" in clip:
            out["mask"] = clip["mask"]
        return out
