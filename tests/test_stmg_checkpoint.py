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
