"""RandAugment for clips: the same operations, with the same magnitudes, on every frame.

A NumPy/PIL port of timm's `rand_augment_transform('rand-m7-n4-mstd0.5-inc1')` as VideoMAE and
EVEREST use it for fine-tuning (through SlowFast's clip version): `num_layers` operations drawn with
replacement from the 15 "increasing" ops, each applied with probability `prob`, magnitude drawn
from N(magnitude, magnitude_std) clipped to [0, 10], a random sign for signed ops. All random
choices are made once per clip from the given Generator, so every frame changes alike.

Geometric ops (rotate, shear, translate) also move an optional per-pixel mask (nearest, fill 0).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

MAX_LEVEL = 10.0
OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
       "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
       "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
GEOMETRIC = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}


def _signed(v: float, rng: np.random.Generator) -> float:
    return -v if rng.random() < 0.5 else v


def _level_arg(name: str, level: float, rng: np.random.Generator, translate_pct: float = 0.45):
    """timm's level -> argument mapping (one draw of the random sign)."""
    f = level / MAX_LEVEL
    if name == "Rotate":
        return _signed(f * 30.0, rng)
    if name in ("ShearX", "ShearY"):
        return _signed(f * 0.3, rng)
    if name in ("TranslateXRel", "TranslateYRel"):
        return _signed(f * translate_pct, rng)
    if name in ("ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"):
        return 1.0 + _signed(f * 0.9, rng)
    if name == "PosterizeIncreasing":
        return 4 - int(f * 4)
    if name == "SolarizeIncreasing":
        return 256 - int(f * 256)
    if name == "SolarizeAdd":
        return int(f * 110)
    return None


def _affine(img: Image.Image, matrix, resample, fill) -> Image.Image:
    return img.transform(img.size, Image.AFFINE, matrix, resample=resample, fillcolor=fill)


def _apply(name: str, img: Image.Image, arg, resample, fill) -> Image.Image:
    if name == "AutoContrast":
        return ImageOps.autocontrast(img)
    if name == "Equalize":
        return ImageOps.equalize(img)
    if name == "Invert":
        return ImageOps.invert(img)
    if name == "Rotate":
        return img.rotate(arg, resample=resample, fillcolor=fill)
    if name == "ShearX":
        return _affine(img, (1, arg, 0, 0, 1, 0), resample, fill)
    if name == "ShearY":
        return _affine(img, (1, 0, 0, arg, 1, 0), resample, fill)
    if name == "TranslateXRel":
        return _affine(img, (1, 0, arg * img.size[0], 0, 1, 0), resample, fill)
    if name == "TranslateYRel":
        return _affine(img, (1, 0, 0, 0, 1, arg * img.size[1]), resample, fill)
    if name == "PosterizeIncreasing":
        return img if arg >= 8 else ImageOps.posterize(img, arg)
    if name == "SolarizeIncreasing":
        return ImageOps.solarize(img, arg)
    if name == "SolarizeAdd":
        lut = [min(255, i + arg) if i < 128 else i for i in range(256)]
        return img.point(lut * len(img.getbands()))
    enhancer = {"ColorIncreasing": ImageEnhance.Color, "ContrastIncreasing": ImageEnhance.Contrast,
                "BrightnessIncreasing": ImageEnhance.Brightness, "SharpnessIncreasing": ImageEnhance.Sharpness}[name]
    return enhancer(img).enhance(arg)


@dataclasses.dataclass(frozen=True)
class RandAugment:
    """Clip-consistent RandAugment (defaults: VideoMAE's rand-m7-n4-mstd0.5-inc1, bicubic)."""

    magnitude: float = 7.0
    num_layers: int = 4
    magnitude_std: float = 0.5
    prob: float = 0.5
    fill: tuple[int, int, int] = (124, 116, 104)  # ImageNet mean * 255
    resample: int = Image.BICUBIC

    def sample(self, rng: np.random.Generator) -> list[tuple[str, object]]:
        """The clip's (op name, argument) list; skipped ops (probability 1 - prob) are left out."""
        chosen = []
        for name in rng.choice(OPS, self.num_layers, replace=True):
            if rng.random() > self.prob:
                continue
            level = rng.normal(self.magnitude, self.magnitude_std) if self.magnitude_std > 0 else self.magnitude
            level = float(np.clip(level, 0.0, MAX_LEVEL))
            chosen.append((str(name), _level_arg(str(name), level, rng)))
        return chosen

    def __call__(self, video: np.ndarray, rng: np.random.Generator,
                 mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """(T, H, W, 3) uint8 (and (T, H, W) mask) -> the same shapes, every frame augmented alike."""
        ops = self.sample(rng)
        if not ops:
            return video, mask
        frames = [Image.fromarray(f) for f in video]
        masks = [Image.fromarray(m) for m in mask] if mask is not None else None
        for name, arg in ops:
            frames = [_apply(name, f, arg, self.resample, self.fill) for f in frames]
            if masks is not None and name in GEOMETRIC:
                masks = [_apply(name, m, arg, Image.NEAREST, 0) for m in masks]
        out_mask = np.stack([np.asarray(m) for m in masks]) if masks is not None else None
        return np.stack([np.asarray(f) for f in frames]), out_mask
