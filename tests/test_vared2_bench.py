"""benchmarks/vared2.py --quick: four classifiers trained on the same data and measured on the same
clips, the JSON schema, FLOPs that follow from the models, and resume (finished runs not retrained)."""

import importlib.util
import json
import pathlib

import pytest

from configs.vared_synthetic import get_config
from vared_jax.model import dense_flops, small

REPO = pathlib.Path(__file__).resolve().parents[1]
NAMES = {"r2plus1d_dense", "vared2", "vit_all_tokens", "everest_rho0.6"}


def load_bench():
    spec = importlib.util.spec_from_file_location("vared2", REPO / "benchmarks" / "vared2.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_vared2_quick_schema_flops_and_resume(tmp_path, capsys, monkeypatch):
    bench = load_bench()
    result = bench.main(["--workdir", str(tmp_path), "--quick"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line == json.loads(json.dumps(result)) and set(line["models"]) == NAMES
    models = line["models"]
    for name, m in models.items():
        for where in (m, m["real"]):
            assert where["gflops_per_clip"] > 0 and where["peak_gib"] > 0
            assert where["clips_per_s_b1"] > 0 and where["clips_per_s_b8"] > 0
        metrics = [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        assert m["top1"] == pytest.approx(metrics[-1]["eval_top1"]) and 0 <= m["top1"] <= 1
    config = get_config()
    dense = dense_flops(small(4), (config.clip.num_frames, *config.clip.image_size)) / 1e9
    assert models["r2plus1d_dense"]["gflops_per_clip"] == pytest.approx(dense)
    assert 0.25 * dense < models["vared2"]["gflops_per_clip"] < 1.05 * dense  # chosen branches (+ gates)
    # rho = 0.6 keeps 60 % of the tokens: the encoder costs ~0.6x (plus the motion scores)
    ratio = models["everest_rho0.6"]["gflops_per_clip"] / models["vit_all_tokens"]["gflops_per_clip"]
    assert 0.4 < ratio < 0.7
    # the CNNs again on the real clips at --speed-size (quick: 8x48²), the ViTs not
    assert {n for n, m in models.items() if "real_large" in m} == {"r2plus1d_dense", "vared2"}
    big = models["r2plus1d_dense"]["real_large"]
    assert big["gflops_per_clip"] == pytest.approx(dense_flops(small(4), (8, 48, 48)) / 1e9)
    assert 0.25 * big["gflops_per_clip"] < models["vared2"]["real_large"]["gflops_per_clip"] < 1.05 * big["gflops_per_clip"]
    assert big["clips_per_s_b1"] > 0 and big["clips_per_s_b8"] > 0 and big["peak_gib"] > models["r2plus1d_dense"]["peak_gib"]
    for name in NAMES - {"vared2"}:  # fixed networks cost the same on any clip
        assert models[name]["real"]["gflops_per_clip"] == pytest.approx(models[name]["gflops_per_clip"])
    assert line["settings"]["held_out_videos"] == 16 and line["machine"]["cpu"] and line["machine"]["threads"] > 0

    def no_training(*args):
        raise AssertionError("a finished run was trained again")
    monkeypatch.setattr(bench.cnn_train, "run", no_training)
    monkeypatch.setattr(bench.vit_train, "run", no_training)
    again = bench.train_all(bench.parse_args(["--workdir", str(tmp_path), "--quick"]))
    assert {n: a[2]["eval_top1"] for n, a in again.items()} == {n: m["top1"] for n, m in models.items()}


def test_vared2_input_dependent_flag_sets_the_three_options_on_both_cnns(tmp_path):
    bench = load_bench()
    models = {}
    for flag in ([], ["--input-dependent"]):
        args = bench.parse_args(["--workdir", str(tmp_path), "--quick", *flag])
        models[bool(flag)] = [bench.vared_study.run_config(args, 0, vared, 2).model for vared in (False, True)]
    for model in models[False]:
        assert (model.temporal_padding, model.gate_motion, model.gate_norm) == ("zeros", False, False)
    for model in models[True]:  # dense and VA-RED² alike: the same backbone
        assert (model.temporal_padding, model.gate_motion, model.gate_norm) == ("edge", True, True)
    for vared in ("false", "true"):  # the recipe as a config argument: the same model section
        assert get_config(f"vared={vared},input_dependent=true").model == models[True][vared == "true"]
