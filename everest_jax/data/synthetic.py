"""Procedural video dataset: textured shapes moving over textured backgrounds.

Each example is a pure function of (seed, index), so the dataset needs no files and every process
or worker sees the same example for the same index. The label is the direction of motion (one of
`num_classes` equally spaced angles), which no single frame reveals: a model must use motion.
Per-pixel masks of the moving shape come with each example (for segmentation).

It is a random-access source (`len()` and `[i]`), usable directly as a Grain data source.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from everest_jax.targets import IMAGENET_MEAN, IMAGENET_STD


def normalize_video(video: np.ndarray) -> np.ndarray:
    """uint8 (..., C) in [0, 255] -> float32 ImageNet-normalised."""
    return ((video.astype(np.float32) / 255.0 - np.asarray(IMAGENET_MEAN, np.float32))
            / np.asarray(IMAGENET_STD, np.float32))


def _texture(rng: np.random.Generator, h: int, w: int, scale: int) -> np.ndarray:
    """(h, w, 3) float in [0, 1]: smooth random colour noise (upsampled coarse noise) plus stripes."""
    coarse = rng.random((h // scale + 2, w // scale + 2, 3))
    tex = np.repeat(np.repeat(coarse, scale, 0), scale, 1)[:h, :w]
    yy, xx = np.mgrid[0:h, 0:w]
    angle, freq = rng.uniform(0, np.pi), rng.uniform(0.2, 0.6)
    stripes = 0.5 + 0.5 * np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy))
    return 0.7 * tex + 0.3 * stripes[..., None]


@dataclasses.dataclass(frozen=True)
class SyntheticVideos:
    """`num_examples` clips of (num_frames, height, width, 3) uint8 with a motion-direction label.

    Example dict: video (T, H, W, 3) uint8, label int32 in [0, num_classes), mask (T, H, W) uint8
    (1 on the moving shape).
    """

    num_examples: int = 1024
    num_frames: int = 16
    image_size: tuple[int, int] = (64, 64)
    num_classes: int = 4
    seed: int = 0
    camera_pan: bool = False

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if not 0 <= index < self.num_examples:
            raise IndexError(f"index {index} out of range for {self.num_examples} examples")
        h, w = (self.image_size, self.image_size) if isinstance(self.image_size, int) else self.image_size
        rng = np.random.default_rng((self.seed, index))
        label = int(rng.integers(self.num_classes))
        angle = 2 * np.pi * label / self.num_classes + rng.normal(0, 0.1)
        # The shape travels 30-60% of the frame over the clip; the trajectory's midpoint is uniform
        # in the central half of the frame, independent of the label, so that no single frame
        # (e.g. where the shape starts) gives the direction away.
        speed = rng.uniform(0.3, 0.6) * min(h, w) / max(self.num_frames - 1, 1)  # pixels per frame
        radius = rng.uniform(0.1, 0.2) * min(h, w)
        pad = int(np.ceil(speed * self.num_frames)) + 2
        # A muted background and a brighter, mostly solid-coloured shape.
        background = 0.25 + 0.5 * _texture(rng, h + 2 * pad, w + 2 * pad, scale=max(2, min(h, w) // 8))
        colour = rng.uniform(0, 1, 3)
        colour[rng.integers(3)] = 1.0
        foreground = 0.7 * colour + 0.3 * _texture(rng, h, w, scale=max(2, min(h, w) // 16))
        travel = speed * (self.num_frames - 1)
        cy = rng.uniform(0.25, 0.75) * h - np.sin(angle) * travel / 2
        cx = rng.uniform(0.25, 0.75) * w - np.cos(angle) * travel / 2
        pan = rng.uniform(-1, 1, 2) * (pad / self.num_frames) if self.camera_pan else np.zeros(2)
        yy, xx = np.mgrid[0:h, 0:w]
        square = rng.random() < 0.5
        video = np.empty((self.num_frames, h, w, 3), np.uint8)
        mask = np.empty((self.num_frames, h, w), np.uint8)
        for t in range(self.num_frames):
            py, px = cy + np.sin(angle) * speed * t, cx + np.cos(angle) * speed * t
            if square:
                inside = (np.abs(yy - py) < radius) & (np.abs(xx - px) < radius)
            else:
                inside = (yy - py) ** 2 + (xx - px) ** 2 < radius**2
            oy, ox = (pad + np.round(pan * t)).astype(int)
            frame = background[oy:oy + h, ox:ox + w].copy()
            # The shape carries its texture along with it.
            shifted = np.roll(foreground, (int(round(py - cy)), int(round(px - cx))), axis=(0, 1))
            frame[inside] = shifted[inside]
            video[t] = np.clip(frame * 255, 0, 255).astype(np.uint8)
            mask[t] = inside
        return {"video": video, "label": np.int32(label), "mask": mask}
