"""Random-access video sources (Grain data sources: `len()` and `[i]`).

- `VideoListSource`: video files named in a VideoMAE/EVEREST list file, decoded with PyAV.
  `[i]` decodes the whole video; `read_clip(i, choose)` decodes only the chosen frames (seeking).
- `TfdsVideoSource`: a TFDS dataset through `tfds.data_source` (e.g. `ucf101/ucf101_1_256`);
  needs tensorflow-datasets and tensorflow.
- `SyntheticVideos` (synthetic.py) and any other source whose examples hold a decoded `video`
  array work as they are.

`read_clip(source, i, choose)` is the one call the pipeline makes, whatever the source: it returns
{'video': S + (H, W, 3) uint8, 'label': int32 (, 'mask': S + (H, W) uint8)} for the frame positions
S = choose(num_frames) picks, and raises VideoError for a bad example.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any, Callable

import numpy as np

from everest_jax.data import decode
from everest_jax.data.errors import Reason, VideoError


@dataclasses.dataclass(frozen=True)
class VideoEntry:
    """One line of a list file: an absolute path, its label and the frame count it states (or None)."""

    path: str
    label: int
    num_frames: int | None = None


def _int(field: str, what: str, list_file, line_no: int, line: str) -> int:
    try:
        return int(field)
    except ValueError:
        raise ValueError(f"{list_file}:{line_no}: {what} {field!r} is not an integer in line {line!r}") from None


def parse_list_file(list_file: str | os.PathLike, root: str | os.PathLike | None = None,
                    num_classes: int | None = None) -> list[VideoEntry]:
    """Parse a list file into entries; ValueError naming the line number for a malformed line.

    Formats, one video per line (blank lines and lines starting with '#' are skipped):
      `path label`             whitespace separated (VideoMAE/EVEREST lists; the path has no spaces)
      `path num_frames label`  (the older three-column lists)
      `path,label` / `path,num_frames,label`  CSV (paths may contain spaces); a first line
                               `path,label` style header is skipped.
    Relative paths are joined to `root` (default: the list file's directory).
    """
    list_file = pathlib.Path(list_file)
    if not list_file.is_file():
        raise FileNotFoundError(f"video list file {str(list_file)!r} does not exist")
    base = pathlib.Path(root) if root is not None else list_file.parent
    entries = []
    with open(list_file, encoding="utf-8") as f:
        for line_no, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            fields = [x.strip() for x in line.split(",")] if "," in line else line.split()
            if line_no == 1 and "," in line and not fields[-1].lstrip("-").isdigit() and fields[-1].isidentifier():
                continue  # CSV header
            if len(fields) not in (2, 3) or not fields[0]:
                raise ValueError(f"{list_file}:{line_no}: expected 'path label', 'path num_frames label' or "
                                 f"CSV 'path,label', got {len(fields)} fields in line {line!r}")
            label = _int(fields[-1], "label", list_file, line_no, line)
            if num_classes is not None and not 0 <= label < num_classes:
                raise ValueError(f"{list_file}:{line_no}: label {label} outside [0, {num_classes}) in line {line!r}")
            frames = _int(fields[1], "frame count", list_file, line_no, line) if len(fields) == 3 else None
            if frames is not None and frames < 0:
                raise ValueError(f"{list_file}:{line_no}: negative frame count in line {line!r}")
            entries.append(VideoEntry(str(base / fields[0]), label, frames))
    if not entries:
        raise ValueError(f"{list_file}: no videos listed")
    return entries


class VideoListSource:
    """Videos of a list file. Example: {'video': (N, H, W, 3) uint8 (all frames), 'label': int32}.

    Construction parses the list (refusing a missing file or a malformed line with its number)
    but opens no video: bad videos are found, and replaced, while reading.
    """

    def __init__(self, list_file: str | os.PathLike, root: str | os.PathLike | None = None,
                 num_classes: int | None = None):
        self.list_file = str(list_file)
        self.entries: tuple[VideoEntry, ...] = tuple(parse_list_file(list_file, root, num_classes))

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> dict[str, Any]:
        e = self.entries[index]
        return {"video": decode.decode_all(e.path), "label": np.int32(e.label)}

    def describe(self, index: int) -> str:
        return self.entries[index].path

    def read_clip(self, index: int, choose: Callable[[int], np.ndarray]) -> dict[str, np.ndarray]:
        """{'video': S + (H, W, 3) uint8, 'label'} for positions S = choose(num_frames), seeking."""
        e = self.entries[index]
        frames, _ = decode.read_clip(e.path, choose)
        return {"video": frames, "label": np.int32(e.label)}

    def __repr__(self) -> str:
        return f"VideoListSource({self.list_file!r}, {len(self)} videos)"


class TfdsVideoSource:
    """A TFDS video dataset by random access, e.g. UCF101: {'video': (N, H, W, 3) uint8, 'label'}.

    Uses `tfds.data_source(name, split=..., data_dir=...)` (ArrayRecord files; build or download
    them first with `tfds.builder(name).download_and_prepare()`). The TFDS reader is opened lazily
    and not pickled, so the source can be shipped to Grain worker processes.
    """

    def __init__(self, name: str = "ucf101/ucf101_1_256", split: str = "train", data_dir: str | None = None,
                 video_key: str = "video", label_key: str = "label"):
        self.name, self.split, self.data_dir = name, split, data_dir
        self.video_key, self.label_key = video_key, label_key
        self._source = None
        self._len = len(self._data_source())

    def _data_source(self):
        if self._source is None:
            try:
                import tensorflow_datasets as tfds
            except ImportError as e:  # pragma: no cover - depends on the environment
                raise ImportError("TfdsVideoSource needs tensorflow-datasets and tensorflow "
                                  "(pip install tensorflow-cpu)") from e
            self._source = tfds.data_source(self.name, split=self.split, data_dir=self.data_dir)
        return self._source

    def __getstate__(self):
        return {**self.__dict__, "_source": None}

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        ex = self._data_source()[index]
        return {"video": np.asarray(ex[self.video_key], np.uint8), "label": np.int32(ex[self.label_key])}

    def describe(self, index: int) -> str:
        return f"{self.name}[{self.split}][{index}]"

    def __repr__(self) -> str:
        return f"TfdsVideoSource({self.name!r}, split={self.split!r}, {len(self)} videos)"


def describe(source, index: int) -> str:
    """A human-readable name of example `index` (its path where the source has one)."""
    return source.describe(index) if hasattr(source, "describe") else f"{type(source).__name__}[{index}]"


def read_clip(source, index: int, choose: Callable[[int], np.ndarray]) -> dict[str, np.ndarray]:
    """The clip of example `index` at positions S = choose(num_frames).

    Sources with a `read_clip` method decode only what is chosen; for the others `source[index]`
    must hold the decoded 'video' (N, H, W, C) (and optionally a per-frame 'mask' (N, H, W)).
    Returns {'video': S + (H, W, C) uint8, 'label': int32 (, 'mask': S + (H, W))}.
    """
    if hasattr(source, "read_clip"):
        return source.read_clip(index, choose)
    ex = source[index]
    video = np.asarray(ex["video"])
    if video.ndim != 4 or video.shape[0] == 0:
        raise VideoError(Reason.UNDECODABLE, describe(source, index), f"video of shape {video.shape}")
    try:
        idx = np.asarray(choose(video.shape[0]), np.int64)
    except VideoError as e:
        raise VideoError(e.reason, e.where or describe(source, index), e.detail) from None
    out = {"video": video[idx], "label": np.int32(ex["label"])}
    if "mask" in ex:
        out["mask"] = np.asarray(ex["mask"])[idx]
    return out
