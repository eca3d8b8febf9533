"""ImageNet normalisation of video pixels: the input every model here (and VideoMAE) expects."""

from __future__ import annotations

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_video(video: np.ndarray) -> np.ndarray:
    """uint8 (..., C) in [0, 255] -> float32 ImageNet-normalised."""
    return ((video.astype(np.float32) / 255.0 - np.asarray(IMAGENET_MEAN, np.float32))
            / np.asarray(IMAGENET_STD, np.float32))
