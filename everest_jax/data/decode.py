"""Reading frames of a video file with PyAV, seeking to the frames wanted instead of decoding it all.

Frames are addressed by their position in presentation order, 0..N-1. The frame table comes from
demuxing the stream's packets (no decoding): their timestamps, sorted, give every frame's pts and
which frames are keyframes, exactly, also for B-frames and variable frame rates. To read frame k
the reader seeks to the last keyframe at or before k and decodes forward to k; frames wanted later
in the same group of pictures are picked up on the way. Where seeking is impossible (no
timestamps, a seek that lands after the target, frames with unknown pts) it falls back to one
sequential decode from the start. Seeked and sequential reads give identical frames.

Every failure of a file is a `VideoError` with a `Reason` (missing, empty, no video stream,
undecodable, truncated); callers never see raw PyAV errors for bad files.

Shapes: frames are uint8 RGB (..., H, W, 3) with the leading shape of the requested indices.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from typing import Callable, Iterator

import av
import numpy as np

from everest_jax.data.errors import Reason, VideoError

# Errors of PyAV/FFmpeg and of the file system that mean "this file is bad", not "this code is wrong".
_AV_ERRORS = (av.error.FFmpegError, OSError, EOFError)


@dataclasses.dataclass(frozen=True)
class FrameTable:
    """The video stream's frames in presentation order.

    Attributes:
      pts: (N,) int64 presentation timestamps in the stream's time base, ascending.
      keyframe: (N,) bool, True where decoding can start.
      height, width: frame size in pixels.
      fps: average frame rate (0.0 when the container does not say).
    """

    pts: np.ndarray
    keyframe: np.ndarray
    height: int
    width: int
    fps: float

    @property
    def num_frames(self) -> int:
        return int(self.pts.shape[0])


def check_file(path: str | os.PathLike) -> None:
    """Raise VideoError(MISSING / EMPTY) for a path that cannot hold a video."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        raise VideoError(Reason.MISSING, path, "no such file") from None
    except OSError as e:
        raise VideoError(Reason.MISSING, path, str(e)) from None
    if size == 0:
        raise VideoError(Reason.EMPTY, path, "0 bytes")


@contextlib.contextmanager
def open_video(path: str | os.PathLike) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """(container, first video stream) of a file; VideoError when it is missing, empty, not a
    container or has no video stream. The container is closed on exit."""
    check_file(path)
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except _AV_ERRORS as e:
        raise VideoError(Reason.UNDECODABLE, path, f"cannot open: {e}") from None
    try:
        if not container.streams.video:
            kinds = ", ".join(s.type for s in container.streams) or "none"
            raise VideoError(Reason.NO_VIDEO_STREAM, path, f"streams: {kinds}")
        yield container, container.streams.video[0]
    finally:
        container.close()


def _build_table(path, container, stream) -> FrameTable | None:
    """Demux (no decoding) the stream's packets into a FrameTable; None when packets lack pts."""
    pts, key, packets = [], [], 0
    try:
        for packet in container.demux(stream):
            if packet.size == 0:  # the flush packet at the end
                continue
            packets += 1
            if packet.is_discard:  # e.g. cut by an MP4 edit list: the decoder drops its frame
                continue
            if packet.pts is None:
                return None
            pts.append(packet.pts)
            key.append(packet.is_keyframe)
    except _AV_ERRORS as e:
        raise VideoError(Reason.UNDECODABLE, path, f"demuxing failed: {e}") from None
    if not pts:
        raise VideoError(Reason.TRUNCATED if stream.frames else Reason.UNDECODABLE, path, "no video packets")
    if stream.frames and packets < stream.frames:
        raise VideoError(Reason.TRUNCATED, path, f"{packets} of the {stream.frames} frames its header announces")
    order = np.argsort(np.asarray(pts, np.int64), kind="stable")
    ctx = stream.codec_context
    rate = stream.average_rate or stream.guessed_rate
    return FrameTable(pts=np.asarray(pts, np.int64)[order], keyframe=np.asarray(key, bool)[order],
                      height=int(ctx.height), width=int(ctx.width), fps=float(rate) if rate else 0.0)


@functools.lru_cache(maxsize=512)
def _cached_table(path: str, size: int, mtime_ns: int) -> FrameTable | None:
    del size, mtime_ns  # part of the cache key only: a rewritten file is indexed again
    with open_video(path) as (container, stream):
        return _build_table(path, container, stream)


def frame_table(path: str | os.PathLike) -> FrameTable | None:
    """The FrameTable of a file (cached per process by path, size and mtime); None when its
    packets carry no timestamps (only sequential reading works then)."""
    check_file(path)
    st = os.stat(path)
    return _cached_table(str(path), st.st_size, st.st_mtime_ns)


def _rgb(frame: av.VideoFrame, height: int, width: int) -> np.ndarray:
    if frame.height == height and frame.width == width:
        return frame.to_ndarray(format="rgb24")
    return frame.reformat(width=width, height=height, format="rgb24").to_ndarray()  # mid-stream size change


def _sequential(path, wanted: np.ndarray, stats: dict | None) -> tuple[dict[int, np.ndarray], int]:
    """Decode from the start: ({position: frame} for the wanted positions, frames decoded).

    `wanted` empty means every frame (used when the number of frames is unknown)."""
    want_all = wanted.size == 0
    last = -1 if want_all else int(wanted.max())
    wanted_set = set(wanted.tolist())
    out, n = {}, 0
    with open_video(path) as (container, stream):
        h, w = stream.codec_context.height, stream.codec_context.width
        try:
            for frame in container.decode(stream):
                if want_all or n in wanted_set:
                    out[n] = _rgb(frame, h or frame.height, w or frame.width)
                n += 1
                if n > last >= 0:
                    break
        except _AV_ERRORS as e:
            raise VideoError(Reason.UNDECODABLE, path, f"decoding failed after {n} frames: {e}") from None
    if stats is not None:
        stats["decoded"] = stats.get("decoded", 0) + n
        stats["sequential"] = stats.get("sequential", 0) + 1
    return out, n


class _SeekFailed(Exception):
    pass


def _seeked(path, table: FrameTable, wanted: np.ndarray, stats: dict | None) -> dict[int, np.ndarray]:
    """Decode the wanted positions (sorted, unique) seeking to keyframes; _SeekFailed when the
    container does not seek where the frame table says."""
    position = {int(p): i for i, p in enumerate(table.pts)}
    key_positions = np.flatnonzero(table.keyframe)
    if key_positions.size == 0 or key_positions[0] != 0:
        raise _SeekFailed("no keyframe at the first frame")
    wanted_set = set(wanted.tolist())
    out: dict[int, np.ndarray] = {}
    decoded = seeks = 0
    with open_video(path) as (container, stream):
        frames, current = None, -1  # the decoding generator and the position it last gave
        for target in wanted.tolist():
            if target in out:
                continue
            key = int(key_positions[np.searchsorted(key_positions, target, side="right") - 1])
            first_after_seek = False
            if frames is None or key > current + 1:
                try:
                    container.seek(int(table.pts[key]), backward=True, any_frame=False, stream=stream)
                except _AV_ERRORS as e:
                    raise _SeekFailed(f"seek failed: {e}") from None
                frames, first_after_seek, seeks = container.decode(stream), True, seeks + 1
            ended = True
            try:
                for frame in frames:
                    decoded += 1
                    if frame.pts is None or frame.pts not in position:
                        raise _SeekFailed(f"decoded a frame with unknown pts {frame.pts}")
                    current = position[frame.pts]
                    if first_after_seek and current > key:
                        raise _SeekFailed(f"seek to frame {key} landed on frame {current}")
                    first_after_seek = False
                    if current in wanted_set and current not in out:
                        out[current] = _rgb(frame, table.height, table.width)
                    if current >= target:
                        ended = False
                        break
            except _AV_ERRORS as e:
                raise VideoError(Reason.UNDECODABLE, path, f"decoding failed near frame {target}: {e}") from None
            if target not in out:
                if ended:
                    raise VideoError(Reason.TRUNCATED, path,
                                     f"decoding ended before frame {target} of {table.num_frames}")
                raise VideoError(Reason.UNDECODABLE, path, f"the decoder gave no frame {target}")
    if stats is not None:
        stats["decoded"] = stats.get("decoded", 0) + decoded
        stats["seeks"] = stats.get("seeks", 0) + seeks
    return out


def read_clip(path: str | os.PathLike, choose: Callable[[int], np.ndarray],
              stats: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode the frames that `choose(num_frames)` picks.

    Args:
      path: a video file.
      choose: num_frames -> int array of frame positions in [0, num_frames), any shape S; it may
        raise VideoError (e.g. TOO_SHORT).
      stats: optional dict that receives counters: decoded (frames decoded), seeks, sequential.
    Returns:
      (frames S + (H, W, 3) uint8, the chosen positions S).
    """
    table = frame_table(path)
    if table is None:  # no timestamps: decode everything once, then choose
        frames, n = _sequential(path, np.zeros((0,), np.int64), stats)
        if n == 0:
            raise VideoError(Reason.UNDECODABLE, path, "no frames decoded")
        indices = _choose(path, choose, n)
        _check_range(path, indices, n)
        return np.stack([frames[int(i)] for i in indices.ravel()]).reshape(*indices.shape, *frames[0].shape), indices
    indices = _choose(path, choose, table.num_frames)
    _check_range(path, indices, table.num_frames)
    wanted = np.unique(indices)
    try:
        out = _seeked(path, table, wanted, stats)
    except _SeekFailed:
        out, n = _sequential(path, wanted, stats)
        if len(out) < wanted.size:
            raise VideoError(Reason.TRUNCATED, path, f"only {n} of {table.num_frames} frames decode") from None
    flat = np.stack([out[int(i)] for i in indices.ravel()])
    return flat.reshape(*indices.shape, *flat.shape[1:]), indices


def _choose(path, choose: Callable[[int], np.ndarray], n: int) -> np.ndarray:
    try:
        return np.asarray(choose(n), np.int64)
    except VideoError as e:  # e.g. a sampler's TOO_SHORT, which does not know the path
        raise VideoError(e.reason, e.where or path, e.detail) from None


def _check_range(path, indices: np.ndarray, n: int) -> None:
    if indices.size and (indices.min() < 0 or indices.max() >= n):
        raise ValueError(f"{path}: frame positions {indices.min()}..{indices.max()} outside [0, {n})")


def read_frames(path: str | os.PathLike, indices, stats: dict | None = None) -> np.ndarray:
    """Frames at the given positions (any int array shape S) -> S + (H, W, 3) uint8."""
    return read_clip(path, lambda n: np.asarray(indices, np.int64), stats)[0]


def decode_all(path: str | os.PathLike, stats: dict | None = None) -> np.ndarray:
    """Every frame, decoded sequentially from the start: (N, H, W, 3) uint8."""
    frames, n = _sequential(path, np.zeros((0,), np.int64), stats)
    if n == 0:
        raise VideoError(Reason.UNDECODABLE, path, "no frames decoded")
    table = frame_table(path)
    if table is not None and n < table.num_frames:
        raise VideoError(Reason.TRUNCATED, path, f"only {n} of {table.num_frames} frames decode")
    return np.stack([frames[i] for i in range(n)])


def iter_frames(path: str | os.PathLike, stats: dict | None = None) -> Iterator[np.ndarray]:
    """Every frame, decoded one at a time in presentation order: (H, W, 3) uint8, all at the
    first frame's size. Memory does not grow with the video's length (streaming a long video).

    A packet that fails to decode is skipped and counted in stats['skipped_packets'], so a damaged
    stretch does not end a long stream; if the container itself breaks off, iteration ends and
    stats['stopped'] says why. stats['decoded'] counts the frames yielded and stats['announced']
    is the frame count the header gives (0 when it gives none). A file that cannot be opened, has
    no video stream or decodes no frame at all is a `VideoError`.
    """
    stats = {} if stats is None else stats
    stats.update(decoded=0, skipped_packets=0)
    with open_video(path) as (container, stream):
        h, w = stream.codec_context.height, stream.codec_context.width
        stats["announced"] = int(stream.frames or 0)
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except _AV_ERRORS as e:
                stats["stopped"] = f"demuxing failed after {stats['decoded']} frames: {e}"
                break
            try:
                frames = packet.decode()
            except _AV_ERRORS:
                stats["skipped_packets"] += 1
                continue
            for frame in frames:
                stats["decoded"] += 1
                yield _rgb(frame, h or frame.height, w or frame.width)
    if stats["decoded"] == 0:
        raise VideoError(Reason.UNDECODABLE, path, stats.get("stopped", "no frames decoded"))


def num_frames(path: str | os.PathLike) -> int:
    """Number of frames (from the packet table, or by decoding when packets lack timestamps)."""
    table = frame_table(path)
    return table.num_frames if table is not None else _sequential(path, np.zeros((0,), np.int64), None)[1]
