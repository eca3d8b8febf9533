"""The benchmarks without a study of their own, each run from its command line at a tiny size: it
finishes, prints its JSON record last, and the figures follow from what it measured."""

import json
import pathlib
import subprocess
import sys

import pytest

from vared_jax.model import conv_specs, dense_flops, fixed_flops, small

REPO = pathlib.Path(__file__).resolve().parents[1]


def bench(script, *args):
    done = subprocess.run([sys.executable, f"benchmarks/{script}", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_vared_latency_rows_flops_and_per_conv():
    out = bench("vared_latency.py", "--rounds", "1", "--iters", "1", "--per-conv")
    rows, config, shape = out["rows"], small(4), (8, 32, 32)
    assert set(rows) == {"dense", "forced_0_0", "forced_1_0", "forced_0_1", "forced_1_1", "switch"}
    assert all(r["ms"] > 0 for r in rows.values()) and rows["dense"]["flops_ratio"] == 1
    for pt, pc in ((0, 0), (1, 0), (0, 1), (1, 1)):
        want = fixed_flops(config, shape, (pt, pc)) / dense_flops(config, shape)
        assert rows[f"forced_{pt}_{pc}"]["flops_ratio"] == pytest.approx(want)
    # the switch's gates prefer (1, 1): forced (1, 1)'s branches plus the gates' own FLOPs
    assert rows["forced_1_1"]["flops_ratio"] < rows["switch"]["flops_ratio"] < 1.05 * rows["forced_1_1"]["flops_ratio"]
    per = out["per_conv"]
    assert set(per) == {s.name for s in conv_specs(config, shape) if s.gated} | {"total"}
    variants = {"full_ms", "half_channels_ms", "half_time_ms", "recon_ms"}
    for name, row in per.items():
        assert set(row) == variants and all(v > 0 for v in row.values()), name
    for v in variants:
        assert per["total"][v] == pytest.approx(sum(row[v] for name, row in per.items() if name != "total"))
    assert out["machine"]["threads"] > 0 and out["settings"]["per_conv"]


def test_vared_latency_input_dependent_networks_count_the_motion_cue():
    out = bench("vared_latency.py", "--rounds", "1", "--iters", "1", "--input-dependent")
    shape = (8, 32, 32)
    dense = dense_flops(small(4), shape)  # (edge padding does not change the FLOPs)
    cue = small(4, temporal_padding="edge", gate_motion=True, gate_norm=True)
    assert out["settings"]["input_dependent"]
    want = fixed_flops(cue, shape, (1, 1), include_gates=True) / dense
    assert out["rows"]["switch"]["flops_ratio"] == pytest.approx(want)
    assert want > fixed_flops(small(4), shape, (1, 1), include_gates=True) / dense + 0.005  # the cue: ~1 % of dense


def test_train_throughput_everest_and_tube():
    out = bench("train_throughput.py", "--frames", "8", "--image-size", "32", "--patch-size", "8", "--batch", "8",
                "--steps", "1")
    for name in ("everest", "videomae_tube"):
        r = out[name]
        assert r["clips_per_s"] > 0 and r["tokens_per_s"] == pytest.approx(r["clips_per_s"] * r["visible_tokens"])
        assert 0 < r["visible_tokens"] < r["visible_tokens"] + r["target_tokens"] <= 4 * 4 * 4  # 64 tokens
    assert out["speedup"] == pytest.approx(out["everest"]["clips_per_s"] / out["videomae_tube"]["clips_per_s"])
    assert out["config"]["batch"] == 8 and out["config"]["devices"] >= 1
    done = subprocess.run([sys.executable, "benchmarks/train_throughput.py", "--cpu-devices", "8", "--batch", "4"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and done.stderr.strip().splitlines()[-1] == (
        "config error: batch_size=4 is not divisible by the data axes (mesh data x fsdp = 8)")


def test_input_pipeline_sequential_and_grain():
    out = bench("input_pipeline.py", "--frames", "4", "--size", "64", "--clips", "8", "--batch", "4",
                "--workers", "0", "--repeat", "2", "--no-train-step")
    assert out["sequential"] > 0 and set(out["grain"]) == {"0"} and out["grain"]["0"] > 0
    assert "train_step" not in out and out["config"]["size"] == 64 and len(out["config"]["videos"]) == 3
