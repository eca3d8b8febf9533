"""Writing clips as H.264 MP4 files with PyAV (test fixtures, exporting synthetic datasets)."""

from __future__ import annotations

import os

import av
import numpy as np


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: int = 25, gop: int = 8, crf: int = 18,
                faststart: bool = False) -> None:
    """Encode (T, H, W, 3) uint8 RGB frames (H and W even) as H.264/yuv420p in an MP4.

    Args:
      gop: keyframe interval (small values give seekable test files); scene cuts may add keyframes.
      crf: quality (0 = lossless luma, 18 = visually lossless).
      faststart: put the index (moov) before the data, so a truncated file still opens.
    """
    frames = np.asarray(frames, np.uint8)
    t, h, w, c = frames.shape
    if c != 3 or h % 2 or w % 2:
        raise ValueError(f"need (T, H, W, 3) with even H and W, got {frames.shape}")
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"g": str(gop), "crf": str(crf)}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


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
