"""STMG parameter checkpoints: round trip, and refusal of other architectures / other directories."""

import jax
import numpy as np
import pytest

from stmg_jax.checkpoint import CheckpointError, check_architecture, load_params, save_params
from stmg_jax.config import SegNetConfig, StreamConfig
from stmg_jax.testing import random_net_variables

NET = SegNetConfig(num_classes=3, widths=(16, 32, 64, 128), decoder_width=32)
STREAM = StreamConfig(bin_grid=((4, 4), (4, 4), (2, 2), (1, 1)), key_every=10)


def test_roundtrip(tmp_path):
    params = {"net": random_net_variables(NET, (64, 64), seed=3)}
    save_params(tmp_path / "ck", params, NET, STREAM)
    net, stream, loaded = load_params(tmp_path / "ck")
    assert net == NET and stream == STREAM
    jax.tree.map(np.testing.assert_array_equal, loaded["net"], jax.tree.map(np.asarray, params["net"]))


def test_other_architecture_and_other_directories_are_refused(tmp_path):
    params = random_net_variables(NET, (64, 64), seed=3)
    wider = SegNetConfig(num_classes=3, widths=(16, 32, 64, 256), decoder_width=32)
    with pytest.raises(CheckpointError, match=r"parameter \['params'\]\['blocks_6'\]\['conv1'\]\['bias'\] has shape \(128,\), the config's network needs \(256,\)"):
        check_architecture(params, wider)
    deeper = SegNetConfig(num_classes=3, widths=(16, 32, 64, 128), blocks_per_stage=(2, 2, 3, 2), decoder_width=32)
    with pytest.raises(CheckpointError, match="another architecture"):
        check_architecture(params, deeper)
    with pytest.raises(CheckpointError, match="not an STMG checkpoint"):
        load_params(tmp_path)


def test_stream_eval_cli_refuses_bad_checkpoint_video_and_size(tmp_path):
    from stmg_jax.stream_eval import main
    with pytest.raises(SystemExit, match="checkpoint error: .*not an STMG checkpoint"):
        main(["--checkpoint", str(tmp_path), "--synthetic", "1"])
    save_params(tmp_path / "dense", {"net": random_net_variables(NET, (64, 64), seed=3)}, NET)
    with pytest.raises(SystemExit, match="checkpoint error: .*train the gates first"):
        main(["--checkpoint", str(tmp_path / "dense"), "--synthetic", "1"])
    from stmg_jax.generator import init_generators
    params = {"net": random_net_variables(NET, (64, 64), seed=3),
              "gen": init_generators(jax.random.key(0), NET, STREAM)}
    save_params(tmp_path / "final", params, NET, STREAM)
    with pytest.raises(SystemExit, match="config error: --size width 72"):
        main(["--checkpoint", str(tmp_path / "final"), "--size", "64", "72"])
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(SystemExit, match="video error: .*bad.mp4"):
        main(["--checkpoint", str(tmp_path / "final"), "--video", str(bad)])


def test_overlay_video_and_no_partial_file_on_error(tmp_path):
    from everest_jax.data.decode import read_frames
    from stmg_jax.stream_eval import overlay, write_overlay
    frames = np.full((4, 32, 48, 3), 100, np.uint8)
    pred = np.zeros((4, 32, 48), np.int64)
    pred[:, :16] = 1
    rec = np.zeros((4, 32, 48), np.float32)
    rec[:, :, 24:] = 1.0
    img = overlay(frames, pred, rec)
    assert img.shape == (4, 32, 96, 3)
    assert (img[0, 20, 5] == 100).all() and img[0, 5, 5, 0] > img[0, 5, 5, 1]       # class 1 tinted
    assert img[0, 5, 48 + 30, 0] > img[0, 5, 48 + 5, 0]                               # recomputed brighter/redder
    write_overlay(str(tmp_path / "o.mp4"), frames, pred, rec)
    assert read_frames(tmp_path / "o.mp4", [0, 3]).shape == (2, 32, 96, 3)
    with pytest.raises(ValueError):
        write_overlay(str(tmp_path / "bad.mp4"), frames[:, :31], pred[:, :31], rec[:, :31])  # odd height
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.mp4"]


def test_generators_of_another_stream_config_or_extra_ones_are_refused(tmp_path):
    """A checkpoint whose generators do not match its network / stream config (trained without
    gate_downsampling, one missing, one extra, another width) is refused naming the generator."""
    from stmg_jax.generator import init_generators

    net_vars = random_net_variables(NET, (64, 64), seed=3)
    down = StreamConfig(bin_grid=STREAM.bin_grid, gate_downsampling=True)
    gen = init_generators(jax.random.key(0), NET, STREAM)  # identity-shortcut blocks only
    save_params(tmp_path / "ok", {"net": net_vars, "gen": gen}, NET, STREAM)
    assert set(load_params(tmp_path / "ok")[2]["gen"]) == set(gen)
    save_params(tmp_path / "a", {"net": net_vars, "gen": gen}, NET, down)  # claims gate_downsampling
    with pytest.raises(CheckpointError, match=r"generator parameter \['block_2'\].* is missing.*gate_downsampling=True"):
        load_params(tmp_path / "a")
    extra = dict(gen, block_99=gen["block_0"])
    save_params(tmp_path / "b", {"net": net_vars, "gen": extra}, NET, STREAM)
    with pytest.raises(CheckpointError, match=r"generator parameter \['block_99'\].* is not in the generators"):
        load_params(tmp_path / "b")
    other = init_generators(jax.random.key(0), SegNetConfig(num_classes=3, widths=(8, 32, 64, 128), decoder_width=32),
                            STREAM)
    save_params(tmp_path / "c", {"net": net_vars, "gen": other}, NET, STREAM)
    with pytest.raises(CheckpointError, match=r"generator parameter \['block_0'\].* has shape"):
        load_params(tmp_path / "c")
    from stmg_jax.stream_eval import main  # the command: one line, no traceback
    with pytest.raises(SystemExit, match="checkpoint error: .*generator parameter"):
        main(["--checkpoint", str(tmp_path / "b"), "--synthetic", "1"])
