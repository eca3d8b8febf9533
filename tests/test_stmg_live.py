"""`python -m stmg_jax.live`: STMG alone over a video, frame by frame in constant memory. Same
decisions and FLOPs as the in-memory `stream_eval` path, the overlay video it encodes, damaged
packets skipped, and bad input refused without leaving a file."""

import json
import os

import jax
import numpy as np
import pytest

from conftest import sample_video_path
from everest_jax.data import encode
from everest_jax.data.decode import decode_all, iter_frames
from stmg_jax.checkpoint import save_params
from stmg_jax.config import SegNetConfig, StreamConfig
from stmg_jax.generator import init_generators
from stmg_jax.live import main
from stmg_jax.stream_eval import load_video, overlay, stream_video, to_uint8
from stmg_jax.streaming import Streamer
from stmg_jax.testing import random_net_variables

NET = SegNetConfig(num_classes=3, widths=(16, 32, 64, 128), decoder_width=32)
STREAM = StreamConfig(bin_grid=((4, 4), (4, 4), (2, 2), (1, 1)), key_every=4)
SIZE = (64, 64)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("stmg") / "final"
    params = {"net": random_net_variables(NET, SIZE, seed=4), "gen": init_generators(jax.random.key(0), NET, STREAM)}
    save_params(path, params, NET, STREAM)
    return path, params


def run(capsys, *args):
    result = main([str(a) for a in args])
    out = capsys.readouterr().out.strip().splitlines()
    assert json.loads(out[-1])["frames"] == result["frames"]
    return result, out[-2]


def test_live_equals_the_in_memory_stream_and_encodes_the_overlay(checkpoint, tmp_path, capsys):
    path, params = checkpoint
    video = sample_video_path("bikes.mp4")
    out = tmp_path / "overlay.mp4"
    result, line = run(capsys, "--checkpoint", path, "--video", video, "--size", *SIZE, "--max-frames", 9,
                       "--out", out, "--log-every", 0)
    # the same frames through stream_eval's in-memory path: the same decisions and FLOPs
    frames = load_video(str(video), SIZE, 9)
    ref = stream_video(Streamer(NET, STREAM, SIZE), params, frames)
    assert result["frames"] == 9 and result["decode"]["decoded"] == 9 and result["key_frames"] == 3
    assert result["gflops_per_frame"] == pytest.approx(ref["gflops_per_frame"], rel=1e-6)
    assert result["skip_rate"] == pytest.approx(ref["skip_rate"])
    assert result["unit_skip_rates"] == pytest.approx(ref["unit_skip_rates"])
    assert 0 < result["gflops_per_frame"] < result["dense_gflops_per_frame"]
    assert result["step_fps"] > 0 and result["end_to_end_fps"] > 0
    assert "9 frames at 64x64" in line and "block_0=" in line and str(out) in line
    # the overlay video: 9 frames of (segmentation | recompute map), close to the expected panels
    written = decode_all(out)
    expected = overlay(to_uint8(frames), ref["pred"], ref["recompute_map"])
    assert written.shape == expected.shape == (9, 64, 128, 3)
    err = np.abs(written.astype(float) - expected).mean()
    wrong = np.abs(written.astype(float) - overlay(to_uint8(frames), ref["pred"] + 1, 1 - ref["recompute_map"])).mean()
    assert err < 4 and wrong > 3 * err, (err, wrong)
    assert sorted(os.listdir(tmp_path)) == ["overlay.mp4"]  # no temporary file left


def test_damaged_packets_are_skipped_and_counted(checkpoint, tmp_path, capsys):
    path, _ = checkpoint
    rng = np.random.default_rng(0)
    blocks = np.kron(rng.integers(0, 256, (30, 8, 8, 3)), np.ones((1, 8, 8, 1), int)).astype(np.uint8)
    good = tmp_path / "good.mp4"
    encode.write_video(good, blocks, gop=5, faststart=True)
    data = bytearray(good.read_bytes())
    data[len(data) // 2:len(data) // 2 + 3000] = rng.bytes(3000)  # a damaged stretch mid-file
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    stats = {}
    n = sum(1 for _ in iter_frames(damaged, stats))
    assert 0 < n < 30 and stats["skipped_packets"] > 0 and stats["announced"] == 30
    result, line = run(capsys, "--checkpoint", path, "--video", damaged, "--size", *SIZE,
                       "--out", tmp_path / "o.mp4", "--log-every", 0)
    assert result["frames"] == n and result["decode"]["skipped_packets"] == stats["skipped_packets"]
    assert f"decoder skipped {stats['skipped_packets']} packets" in line
    assert len(decode_all(tmp_path / "o.mp4")) == n


def test_bad_input_is_one_error_and_no_file(checkpoint, tmp_path):
    path, _ = checkpoint
    video = sample_video_path("bikes.mp4")
    out = tmp_path / "out" / "o.mp4"
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video\n" * 20)
    with pytest.raises(SystemExit, match="video error: .*notes.mp4"):
        main(["--checkpoint", str(path), "--video", str(bad), "--size", "64", "64", "--out", str(out)])
    with pytest.raises(SystemExit, match="video error: .*missing.mp4"):
        main(["--checkpoint", str(path), "--video", str(tmp_path / "missing.mp4"), "--out", str(out)])
    with pytest.raises(SystemExit, match="config error: --size width 72"):
        main(["--checkpoint", str(path), "--video", str(video), "--size", "64", "72", "--out", str(out)])
    with pytest.raises(SystemExit, match="checkpoint error"):
        main(["--checkpoint", str(tmp_path), "--video", str(video), "--out", str(out)])
    assert not out.exists() and (not out.parent.exists() or os.listdir(out.parent) == [])
