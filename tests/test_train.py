"""The quickstart job: learning happens, outputs land in the workdir, bad configs are refused early."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import quickstart
from everest_jax import checkpoint, train
from everest_jax.config import ConfigError


def small_config(job="pretrain", **overrides):
    config = quickstart.get_config(f"job={job}")
    config.total_steps = 25
    config.log_every = 5
    config.data.num_examples = 64
    config.optimizer.base_lr = 0.032  # 1e-3 at batch 8
    config.update_from_flattened_dict(overrides)
    return config


@pytest.mark.parametrize("masking", ["everest", "tube"])
def test_pretraining_reduces_reconstruction_loss(tmp_path, masking):
    final = train.run(small_config(**{"model.masking": masking}), str(tmp_path))
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [5, 10, 15, 20, 25]
    assert lines[-1]["loss"] < 0.95 * lines[0]["loss"], lines
    config, kind, params = checkpoint.load_params(final["checkpoint"])
    assert kind == "pretrain" and config.masking == masking
    assert params["mask_token"].shape == (1, 1, config.decoder_width)
    assert json.loads((tmp_path / "config.json").read_text())["model"]["masking"] == masking


def test_finetuning_learns_motion_direction(tmp_path):
    config = small_config("finetune", total_steps=60, **{"data.num_examples": 128})
    config.batch_size = 16
    config.optimizer.base_lr = 0.016 * 3  # 3e-3 at batch 16
    config.warmup_steps = 5
    train.run(config, str(tmp_path))
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["loss"] < lines[0]["loss"] - 0.05, lines


def test_weight_decay_mask_skips_biases_norms_and_mask_token():
    params = {"mask_token": np.zeros((1, 1, 4)), "dense": {"kernel": np.zeros((2, 2)), "bias": np.zeros(2)},
              "norm": {"scale": np.zeros(2)}}
    mask = train.weight_decay_mask(params)
    assert mask == {"mask_token": False, "dense": {"kernel": True, "bias": False}, "norm": {"scale": False}}


@pytest.mark.parametrize("override, field", [
    ({"job": "distill"}, "job"),
    ({"batch_size": 0}, "batch_size"),
    ({"warmup_steps": 50}, "warmup_steps"),
    ({"model.size": "XL"}, "model.size"),
    ({"model.patch_size": 7}, "model.patch_size"),
    ({"data.num_examples": 4}, "data.num_examples"),
])
def test_bad_run_config_is_refused_before_compiling(tmp_path, override, field, monkeypatch):
    compiled = []
    monkeypatch.setattr(jax, "jit", lambda *a, **k: compiled.append(1))
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        train.run(small_config(**override), str(tmp_path))
    assert not compiled


def test_cli_reports_config_errors_without_traceback(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "everest_jax.main", "--config", "configs/quickstart.py",
         "--workdir", str(tmp_path), "--config.model.num_frames=7"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "model.num_frames=7 is not divisible by model.tubelet_size=2" in out.stderr + out.stdout
    assert "Traceback" not in out.stderr
