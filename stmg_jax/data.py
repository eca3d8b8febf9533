"""Real video-segmentation data for STMG: Cityscapes sequences and CamVid sequences.

Both are random-access sources (`len`, `[i]`) over the labelled frames; example i is a short clip
of `clip_length` consecutive frames that ENDS at the labelled frame (streaming is causal: the
frames before the annotation are the ones a camera has already seen), with the labelled frame's
mask. `clip_length=2` gives the (t-1, t) pairs the gate training uses.

Example dict: video (T, H, W, 3) uint8 RGB, mask (H, W) uint8 train ids with 255 = ignore,
name str (the labelled frame's file stem). With `image_size=(H, W)` frames are resized with PIL
bilinear and masks with nearest neighbour (aspect not kept). PNGs are read with PIL.
`pairs_batch` turns a source into the batch dict of `stmg_jax.train.frame_pairs`; training uses
them with `data.source = 'cityscapes' | 'camvid'` (configs/stmg_cityscapes.py, stmg_camvid.py).

Cityscapes (https://www.cityscapes-dataset.com, packages leftImg8bit_sequence_trainvaltest.zip
and gtFine_trainvaltest.zip), under `root`:
    leftImg8bit_sequence/<split>/<city>/<city>_<seq:06d>_<frame:06d>_leftImg8bit.png
    gtFine/<split>/<city>/<city>_<seq:06d>_<frame:06d>_gtFine_labelIds.png
Each 30-frame snippet has its 20th frame annotated (the gtFine frame number is that frame's);
the clip is frames frame-T+1 .. frame (T <= 20 stays inside the snippet). labelIds are mapped to
the 19 train ids (road 0 ... bicycle 18) of the official `labels.py`; every other id -> 255.

CamVid (the 11-class version of SegNet's release, whose labels are class-index PNGs 0..10 and
11 = void), under `root`:
    <split>/<SEQ>_<frame>.png          labelled frames (split: train, val, test)
    <split>annot/<SEQ>_<frame>.png     class-index labels (0 sky ... 10 bicyclist, 11 void -> 255)
    sequences/<SEQ>/<SEQ>_<frame>.png  the 30 Hz frames extracted from the original videos, named
                                       like the labelled frames (e.g. 0001TP_006689.png,
                                       0006R0_f00929.png, 0016E5_07958.png, Seq05VD_f00029.png)
`<frame>` is an optional letter prefix and digits; the frame before `0006R0_f00930` is
`0006R0_f00929` (same prefix and width). The labelled frame itself may come from `<split>/` when
`sequences/` lacks it. Colour-coded labels (the original 32-class `_L.png`) are refused with an
error saying so.

Every missing folder or file is a `DatasetError` naming it. Label 255 is left out of the
training loss and of mIoU (`stmg_jax.train.cross_entropy`, `stmg_jax.metrics.confusion`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import numpy as np

from everest_jax.errors import UserError

# Cityscapes labelId -> trainId (official cityscapesscripts/helpers/labels.py), others -> 255.
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11,
                        25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
                      "motorcycle", "bicycle")
CAMVID_CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car",
                  "pedestrian", "bicyclist")
CAMVID_VOID = 11
IGNORE = 255


class DatasetError(UserError, FileNotFoundError):
    """A dataset folder or file is missing or not in the expected layout (the message names it)."""

    kind = "data"


def cityscapes_lut() -> np.ndarray:
    lut = np.full(256, IGNORE, np.uint8)
    for label_id, train_id in CITYSCAPES_TRAIN_IDS.items():
        lut[label_id] = train_id
    return lut


def _need_dir(path: str, what: str) -> str:
    if not os.path.isdir(path):
        raise DatasetError(f"missing folder {path} ({what})")
    return path


def _need_file(path: str, what: str) -> str:
    if not os.path.isfile(path):
        raise DatasetError(f"missing file {path} ({what})")
    return path


def read_rgb(path: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """PNG/JPEG -> (H, W, 3) uint8 RGB; resized to size (H, W) with bilinear when given."""
    from PIL import Image
    with Image.open(_need_file(path, "frame")) as im:
        im = im.convert("RGB")
        if size is not None and im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.BILINEAR)
        return np.asarray(im, np.uint8)


def read_label(path: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """Class-index PNG (mode L / P / I) -> (H, W) int array; nearest-neighbour resize when given."""
    from PIL import Image
    with Image.open(_need_file(path, "label")) as im:
        if im.mode not in ("L", "P", "I", "I;16"):
            raise DatasetError(f"{path}: label PNG has mode {im.mode}; expected a class-index image (L or P), "
                               "colour-coded labels are not supported")
        if size is not None and im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.NEAREST)
        return np.asarray(im).astype(np.int64)


def _check_clip_length(clip_length: int, most: int | None = None) -> None:
    if not isinstance(clip_length, int) or clip_length < 1:
        raise ValueError(f"clip_length={clip_length!r} must be a positive integer")
    if most is not None and clip_length > most:
        raise ValueError(f"clip_length={clip_length} exceeds {most} (frames before the labelled one in a snippet)")


@dataclasses.dataclass
class CityscapesSequences:
    """Clips of `leftImg8bit_sequence` ending at each `gtFine` labelled frame (see the module doc)."""

    root: str
    split: str = "train"
    clip_length: int = 2
    image_size: tuple[int, int] | None = None
    verify: bool = True  # check at construction that every clip frame exists

    LABELLED_INDEX = 19  # 0-based index of the annotated frame in a 30-frame snippet

    def __post_init__(self):
        _check_clip_length(self.clip_length, self.LABELLED_INDEX + 1)
        _need_dir(self.root, "Cityscapes root")
        gt = _need_dir(os.path.join(self.root, "gtFine", self.split),
                       "Cityscapes gtFine/<split>/<city>/*_gtFine_labelIds.png, from gtFine_trainvaltest.zip")
        self.seq_dir = _need_dir(os.path.join(self.root, "leftImg8bit_sequence", self.split),
                                 "Cityscapes leftImg8bit_sequence/<split>/<city>/*_leftImg8bit.png, "
                                 "from leftImg8bit_sequence_trainvaltest.zip")
        pattern = re.compile(r"^(.+)_(\d{6})_(\d{6})_gtFine_labelIds\.png$")
        self.items: list[tuple[str, str, str, int]] = []  # (label path, city, seq, frame)
        for city in sorted(os.listdir(gt)):
            if not os.path.isdir(os.path.join(gt, city)):
                continue
            for f in sorted(os.listdir(os.path.join(gt, city))):
                m = pattern.match(f)
                if m:
                    self.items.append((os.path.join(gt, city, f), m.group(1), m.group(2), int(m.group(3))))
        if not self.items:
            raise DatasetError(f"no *_gtFine_labelIds.png under {gt}/<city>/")
        self.lut = cityscapes_lut()
        if self.verify:
            for i in range(len(self.items)):
                for p in self.frame_paths(i):
                    _need_file(p, f"frame of the clip ending at {os.path.basename(self.items[i][0])}")

    def __len__(self) -> int:
        return len(self.items)

    def frame_paths(self, i: int) -> list[str]:
        _, city, seq, frame = self.items[i]
        return [os.path.join(self.seq_dir, city, f"{city}_{seq}_{t:06d}_leftImg8bit.png")
                for t in range(frame - self.clip_length + 1, frame + 1)]

    def __getitem__(self, i: int) -> dict[str, Any]:
        label_path = self.items[i][0]
        video = np.stack([read_rgb(p, self.image_size) for p in self.frame_paths(i)])
        label = read_label(label_path, self.image_size)
        if label.max(initial=0) > 255 or label.min(initial=0) < 0:
            raise DatasetError(f"{label_path}: label ids outside 0..255")
        mask = self.lut[label]
        _check_same_size(video, mask, label_path)
        return {"video": video, "mask": mask, "name": os.path.basename(label_path)[:-len("_gtFine_labelIds.png")]}

    @property
    def num_classes(self) -> int:
        return len(CITYSCAPES_CLASSES)


@dataclasses.dataclass
class CamVidSequences:
    """Clips of CamVid's 30 Hz sequences ending at each labelled frame (see the module doc)."""

    root: str
    split: str = "train"
    clip_length: int = 2
    image_size: tuple[int, int] | None = None
    verify: bool = True

    def __post_init__(self):
        _check_clip_length(self.clip_length)
        _need_dir(self.root, "CamVid root")
        self.image_dir = _need_dir(os.path.join(self.root, self.split), f"CamVid labelled frames <split>/*.png")
        self.annot_dir = _need_dir(os.path.join(self.root, self.split + "annot"),
                                   f"CamVid class-index labels <split>annot/*.png")
        self.seq_root = os.path.join(self.root, "sequences")
        if self.clip_length > 1:
            _need_dir(self.seq_root, "CamVid 30 Hz frames sequences/<SEQ>/<SEQ>_<frame>.png")
        pattern = re.compile(r"^(.+)_([A-Za-z]*)(\d+)\.png$")
        self.items: list[tuple[str, str, str, int, int]] = []  # (stem, seq, prefix, frame, digits)
        for f in sorted(os.listdir(self.annot_dir)):
            m = pattern.match(f)
            if m:
                self.items.append((f[:-4], m.group(1), m.group(2), int(m.group(3)), len(m.group(3))))
        if not self.items:
            raise DatasetError(f"no <SEQ>_<frame>.png labels under {self.annot_dir}")
        if self.verify:
            for i in range(len(self.items)):
                for p in self.frame_paths(i):
                    _need_file(p, f"frame of the clip ending at {self.items[i][0]}")

    def __len__(self) -> int:
        return len(self.items)

    def frame_paths(self, i: int) -> list[str]:
        stem, seq, prefix, frame, digits = self.items[i]
        paths = []
        for t in range(frame - self.clip_length + 1, frame + 1):
            if t < 0:
                raise DatasetError(f"{stem}: clip_length={self.clip_length} reaches before frame 0")
            name = f"{seq}_{prefix}{t:0{digits}d}.png"
            p = os.path.join(self.seq_root, seq, name)
            if t == frame and not os.path.isfile(p):
                p = os.path.join(self.image_dir, name)
            paths.append(p)
        return paths

    def __getitem__(self, i: int) -> dict[str, Any]:
        stem = self.items[i][0]
        video = np.stack([read_rgb(p, self.image_size) for p in self.frame_paths(i)])
        label_path = os.path.join(self.annot_dir, stem + ".png")
        label = read_label(label_path, self.image_size)
        if label.max(initial=0) > CAMVID_VOID or label.min(initial=0) < 0:
            raise DatasetError(f"{label_path}: class ids up to {label.max()} but CamVid-11 labels are 0..10 "
                               f"and {CAMVID_VOID} = void (colour-coded or 32-class labels are not supported)")
        mask = np.where(label == CAMVID_VOID, IGNORE, label).astype(np.uint8)
        _check_same_size(video, mask, label_path)
        return {"video": video, "mask": mask, "name": stem}

    @property
    def num_classes(self) -> int:
        return len(CAMVID_CLASSES)


def _check_same_size(video: np.ndarray, mask: np.ndarray, label_path: str) -> None:
    if video.shape[1:3] != mask.shape:
        raise DatasetError(f"{label_path}: label {mask.shape[1]}x{mask.shape[0]} differs from its frames "
                           f"{video.shape[2]}x{video.shape[1]} (pass image_size to resize both)")


def pairs_batch(source, batch_size: int, step: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Batch `step` of (t-1, t) pairs from a source with clip_length >= 2, in the format of
    `stmg_jax.train.frame_pairs`: prev, cur (B, H, W, 3) float32 ImageNet-normalised, label (B, H, W)
    int32 (255 = ignore). A pure function of (seed, step); all examples must share one size."""
    from everest_jax.data import normalize_video
    if source.clip_length < 2:
        raise ValueError("pairs_batch needs a source with clip_length >= 2")
    rng = np.random.default_rng((seed, step))
    ex = [source[int(i)] for i in rng.integers(len(source), size=batch_size)]
    video = normalize_video(np.stack([e["video"][-2:] for e in ex]))
    return {"prev": video[:, 0], "cur": video[:, 1], "label": np.stack([e["mask"] for e in ex]).astype(np.int32)}
