"""Procedural video dataset: textured shapes moving over textured backgrounds.

Each example is a pure function of (seed, index), so the dataset needs no files and every process
or worker sees the same example for the same index; datasets with different seeds are disjoint
splits (pre-training, labelled, test). Per-pixel masks of the moving shape come with each example
(for segmentation). It is a random-access source (`len()` and `[i]`), usable directly as a Grain
data source.

Why each property is there:
  * The label is the direction of motion (one of `num_classes / num_speeds` equally spaced
    angles), times a speed band when `num_speeds > 1`; shape and background look alike in every
    class, so a model must use motion. The trajectory's midpoint is uniform in the central half of
    the frame whatever the label, yet where a fast shape starts still hints at its direction. With
    `wrap` the shape moves on a torus (leaving the frame on one side, it comes back on the other)
    from a start anywhere in the frame: its position in any single frame is then uniform whatever
    the class, so no single frame carries any information about the label.
  * Speed bands are separated by gaps (`min_travel`..`max_travel` cut into 2 * num_speeds equal
    pieces, every other one used), so "slow" and "fast" are distinct classes, not a continuum. The
    speed is a share of the frame per clip: evaluate on clips of the training length.
  * The background is large, textured and static (or drifting by `background_drift` pixels per
    frame, sub-pixel, interpolated); the shape covers a minority of the frame (radius 10-20 % of the
    shorter side). Most tokens are therefore (nearly) redundant over time: the premise of EVEREST's
    token selection. A slow drift keeps background tokens from being exactly equal, so that the
    selection criterion, not a tie-break by token index, decides what is dropped.
  * `camera_pan` moves the whole background by up to the shape's speed: every token moves, the
    hard case for motion-based selection.
  * `static_class` makes the last class a shape that does not move (the others: num_classes - 1
    directions x speed bands): clips with and without motion in one dataset, for models whose
    compute may depend on the input (VA-RED²: static clips need fewer time steps).
  * `balanced_labels` sets label = index % num_classes (instead of a random class), so a small
    labelled split of k * num_classes clips has exactly k clips per class.
"""

from __future__ import annotations

import dataclasses

import numpy as np



def _texture(rng: np.random.Generator, h: int, w: int, scale: int) -> np.ndarray:
    """(h, w, 3) float in [0, 1]: smooth random colour noise (upsampled coarse noise) plus stripes."""
    coarse = rng.random((h // scale + 2, w // scale + 2, 3))
    tex = np.repeat(np.repeat(coarse, scale, 0), scale, 1)[:h, :w]
    yy, xx = np.mgrid[0:h, 0:w]
    angle, freq = rng.uniform(0, np.pi), rng.uniform(0.2, 0.6)
    stripes = 0.5 + 0.5 * np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy))
    return 0.7 * tex + 0.3 * stripes[..., None]


def _window(image: np.ndarray, offset: np.ndarray, h: int, w: int) -> np.ndarray:
    """The (h, w) window of `image` (H, W, C) at a real-valued (y, x) `offset`, bilinear."""
    base = np.floor(offset).astype(int)
    fy, fx = offset - base
    y, x = base
    if fy == 0 and fx == 0:  # whole pixels: a plain slice (bit-identical to no interpolation)
        return image[y:y + h, x:x + w].copy()
    top = (1 - fx) * image[y:y + h, x:x + w] + fx * image[y:y + h, x + 1:x + 1 + w]
    bottom = (1 - fx) * image[y + 1:y + 1 + h, x:x + w] + fx * image[y + 1:y + 1 + h, x + 1:x + 1 + w]
    return (1 - fy) * top + fy * bottom


@dataclasses.dataclass(frozen=True)
class SyntheticVideos:
    """`num_examples` clips of (num_frames, height, width, 3) uint8 with a motion label.

    Example dict: video (T, H, W, 3) uint8, label int32 in [0, num_classes), mask (T, H, W) uint8
    (1 on the moving shape). label = direction * num_speeds + speed band; the defaults (one speed,
    travel 30-60 % of the frame, static background, random labels) are the original dataset.
    """

    num_examples: int = 1024
    num_frames: int = 16
    image_size: tuple[int, int] = (64, 64)
    num_classes: int = 4
    seed: int = 0
    camera_pan: bool = False
    num_speeds: int = 1  # speed bands; num_classes / num_speeds directions
    min_travel: float = 0.3  # share of the shorter side the shape travels over the clip
    max_travel: float = 0.6
    background_drift: float = 0.0  # pixels per frame, random direction per clip
    balanced_labels: bool = False  # label = index % num_classes
    wrap: bool = False  # the shape moves on a torus and starts anywhere
    static_class: bool = False  # label num_classes - 1: the shape stays put

    @property
    def moving_classes(self) -> int:
        return self.num_classes - int(self.static_class)

    def __post_init__(self):
        if self.num_speeds < 1 or self.moving_classes < 1 or self.moving_classes % self.num_speeds:
            what = "num_classes - 1 (static_class)" if self.static_class else "num_classes"
            raise ValueError(f"{what}={self.moving_classes} must be a positive multiple of num_speeds={self.num_speeds}")
        if not 0 < self.min_travel <= self.max_travel:
            raise ValueError(f"need 0 < min_travel={self.min_travel} <= max_travel={self.max_travel}")
        if self.background_drift < 0:
            raise ValueError(f"background_drift={self.background_drift} must be >= 0")

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        if not 0 <= index < self.num_examples:
            raise IndexError(f"index {index} out of range for {self.num_examples} examples")
        h, w = (self.image_size, self.image_size) if isinstance(self.image_size, int) else self.image_size
        rng = np.random.default_rng((self.seed, index))
        drawn = int(rng.integers(self.num_classes))  # drawn even when balanced: the rest of the clip stays put
        label = index % self.num_classes if self.balanced_labels else drawn
        direction, band = divmod(label, self.num_speeds)
        angle = 2 * np.pi * direction / (self.moving_classes // self.num_speeds) + rng.normal(0, 0.1)
        # The shape travels a band of min_travel..max_travel of the frame over the clip; the
        # trajectory's midpoint is uniform in the central half of the frame, independent of the
        # label, so that no single frame (e.g. where the shape starts) gives the class away.
        edges = np.linspace(self.min_travel, self.max_travel, 2 * self.num_speeds)
        speed = rng.uniform(edges[2 * band], edges[2 * band + 1]) * min(h, w) / max(self.num_frames - 1, 1)
        if label >= self.moving_classes:  # the static class
            speed = 0.0
        radius = rng.uniform(0.1, 0.2) * min(h, w)
        reach = int(np.ceil(speed * self.num_frames)) + 2  # camera pan: up to the shape's speed
        pad = reach + int(np.ceil(self.background_drift * self.num_frames))
        # A muted background and a brighter, mostly solid-coloured shape.
        background = 0.25 + 0.5 * _texture(rng, h + 2 * pad, w + 2 * pad, scale=max(2, min(h, w) // 8))
        colour = rng.uniform(0, 1, 3)
        colour[rng.integers(3)] = 1.0
        foreground = 0.7 * colour + 0.3 * _texture(rng, h, w, scale=max(2, min(h, w) // 16))
        travel = speed * (self.num_frames - 1)
        if self.wrap:  # the same draws, stretched to a start anywhere in the frame
            cy, cx = (2 * rng.uniform(0.25, 0.75) - 0.5) * h, (2 * rng.uniform(0.25, 0.75) - 0.5) * w
        else:
            cy = rng.uniform(0.25, 0.75) * h - np.sin(angle) * travel / 2
            cx = rng.uniform(0.25, 0.75) * w - np.cos(angle) * travel / 2
        pan = rng.uniform(-1, 1, 2) * (reach / self.num_frames) if self.camera_pan else np.zeros(2)
        yy, xx = np.mgrid[0:h, 0:w]
        square = rng.random() < 0.5
        drift = np.zeros(2)
        if self.background_drift > 0:
            drift_angle = rng.uniform(0, 2 * np.pi)
            drift = self.background_drift * np.array([np.sin(drift_angle), np.cos(drift_angle)])
        video = np.empty((self.num_frames, h, w, 3), np.uint8)
        mask = np.empty((self.num_frames, h, w), np.uint8)
        for t in range(self.num_frames):
            py, px = cy + np.sin(angle) * speed * t, cx + np.cos(angle) * speed * t
            dy, dx = yy - py, xx - px
            if self.wrap:  # distances on the torus
                dy, dx = (dy + h / 2) % h - h / 2, (dx + w / 2) % w - w / 2
            if square:
                inside = (np.abs(dy) < radius) & (np.abs(dx) < radius)
            else:
                inside = dy**2 + dx**2 < radius**2
            frame = _window(background, pad + np.round(pan * t) + drift * t, h, w)
            # The shape carries its texture along with it.
            shifted = np.roll(foreground, (int(round(py - cy)), int(round(px - cx))), axis=(0, 1))
            frame[inside] = shifted[inside]
            video[t] = np.clip(frame * 255, 0, 255).astype(np.uint8)
            mask[t] = inside
        return {"video": video, "label": np.int32(label), "mask": mask}
