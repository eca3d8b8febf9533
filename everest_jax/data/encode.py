"""Writing clips as H.264 MP4 files with PyAV (test fixtures, exporting synthetic datasets, overlays).

`write_video` encodes a whole array; `VideoWriter` encodes frame by frame (a stream of any length
in constant memory); `replaced_on_success` gives a temporary path that becomes the output only
when writing finished, so an error or an interrupted run never leaves a partial file behind.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator

import av
import numpy as np


class VideoWriter:
    """Incremental H.264/yuv420p MP4 encoder: `with VideoWriter(path, fps=25) as w: w.write(frame)`.

    Frames are (H, W, 3) uint8 RGB, H and W even, all of the first frame's size. The encoder is
    flushed when the block ends without an error.
    Args:
      gop: keyframe interval (small values give seekable test files); scene cuts may add keyframes.
      crf: quality (0 = lossless luma, 18 = visually lossless).
      faststart: put the index (moov) before the data, so a truncated file still opens.
    """

    def __init__(self, path: str | os.PathLike, fps: int = 25, gop: int = 8, crf: int = 18, faststart: bool = False):
        self.path, self.fps, self.gop, self.crf, self.faststart = str(path), fps, gop, crf, faststart
        self.container = self.stream = None
        self.frames = 0

    def __enter__(self) -> "VideoWriter":
        options = {"movflags": "faststart"} if self.faststart else {}
        self.container = av.open(self.path, "w", format="mp4", options=options)
        return self

    def write(self, frame: np.ndarray) -> None:
        frame = np.asarray(frame, np.uint8)
        if self.stream is None:
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] % 2 or frame.shape[1] % 2:
                raise ValueError(f"need (H, W, 3) frames with even H and W, got {frame.shape}")
            self.stream = self.container.add_stream("libx264", rate=self.fps)
            self.stream.width, self.stream.height, self.stream.pix_fmt = frame.shape[1], frame.shape[0], "yuv420p"
            self.stream.options = {"g": str(self.gop), "crf": str(self.crf)}
        elif frame.shape != (self.stream.height, self.stream.width, 3):
            raise ValueError(f"frame {self.frames} has shape {frame.shape}, the video "
                             f"({self.stream.height}, {self.stream.width}, 3)")
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self.container.mux(packet)
        self.frames += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None and self.stream is not None:
                for packet in self.stream.encode():
                    self.container.mux(packet)
        finally:
            self.container.close()


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int = 25, gop: int = 8, crf: int = 18,
                faststart: bool = False) -> None:
    """Encode (T, H, W, 3) uint8 RGB frames (H and W even) as H.264/yuv420p in an MP4 (`VideoWriter`'s
    options)."""
    frames = np.asarray(frames, np.uint8)
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(f"need (T, H, W, 3) with even H and W, got {frames.shape}")
    with VideoWriter(path, fps, gop, crf, faststart) as writer:
        for frame in frames:
            writer.write(frame)


@contextlib.contextmanager
def replaced_on_success(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path in `path`'s folder (created if needed, same suffix) that replaces
    `path` when the block ends without an error and is removed otherwise, so readers never see a
    partial output file. The result gets the permissions of a normally created file."""
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=os.path.splitext(path)[1], dir=folder)
    os.close(fd)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_audio_only(path: str | os.PathLike, seconds: float = 0.5, rate: int = 16000) -> None:
    """An AAC-in-MP4 file without a video stream (silence)."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate)
        samples = int(seconds * rate)
        for start in range(0, samples, 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
