"""`benchmarks/stmg_stream.py --quick`: trains first (no checkpoint given), then dense vs STMG on a
synthetic video with ground truth and on the bundled real clips; the JSON's schema and the FLOPs
bookkeeping; a missing clip is refused before anything trains."""

import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def bench(*args):
    return subprocess.run([sys.executable, "benchmarks/stmg_stream.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=900)


def test_quick_trains_then_compares_on_synthetic_and_real_clips():
    done = bench("--quick")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "checkpoint: none given; trained" in done.stdout
    out = json.loads(done.stdout.splitlines()[-1])
    assert set(out) == {"videos", "summary", "config", "machine"} and out["config"]["trained_here"]
    assert set(out["videos"]) == {"synthetic_0", "bikes.mp4", "carphone_pristine.mp4"}
    for name, v in out["videos"].items():
        dense, stmg = v["dense"], v["stmg"]
        assert dense["fps"] > 0 and stmg["fps"] > 0 and 0 <= stmg["skip_rate"] <= 1 and 0 <= stmg["agreement"] <= 1
        # STMG's count (its generators included) never falls below the always-dense layers
        assert stmg["gflops_per_frame"] >= out["config"]["ungated_gflops_per_frame"]["64x64"], name
        assert (dense["miou"] is None) == (name != "synthetic_0")
    for group, names in (("synthetic", ["synthetic_0"]), ("real", ["bikes.mp4", "carphone_pristine.mp4"])):
        s = out["summary"][group]
        assert s["videos"] == names
        mean = lambda model, key: sum(out["videos"][n][model][key] for n in names) / len(names)  # noqa: E731
        assert abs(s["flops_reduction"] - mean("dense", "gflops_per_frame") / mean("stmg", "gflops_per_frame")) < 1e-9


def test_a_missing_clip_is_refused_before_training(tmp_path):
    done = bench("--quick", "--real", str(tmp_path / "nope.mp4"))
    assert done.returncode != 0 and "video not found" in done.stderr and "training" not in done.stderr
