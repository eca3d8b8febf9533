"""`benchmarks/vared_study.py --quick --static-class`: the study's bookkeeping (every run recorded,
the per-layer policy consistent with the network-wide shares, a second invocation resumes without
training, other settings refused)."""

import json
import pathlib
import subprocess
import sys

import numpy as np

from configs.vared_synthetic import get_config
from vared_jax import train
from vared_jax.model import conv_specs

REPO = pathlib.Path(__file__).resolve().parents[1]


def study(workdir, *extra):
    return subprocess.run([sys.executable, "benchmarks/vared_study.py", "--workdir", str(workdir), "--quick",
                           "--static-class", *extra], cwd=REPO, capture_output=True, text=True, timeout=900)


def test_quick_study_records_per_layer_policy_and_resumes(tmp_path):
    first = study(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    result = json.loads(first.stdout.splitlines()[-1])
    assert [r["name"] for r in result["runs"]] == ["dense", "dense_more", "vared"]
    vared = result["runs"][2]
    model, clip = train.validate(get_config("static=true"))
    specs = [s for s in conv_specs(model, (clip.num_frames, *clip.image_size)) if s.gated]
    layers = vared["layers"]
    assert set(layers) == {s.name for s in specs}
    for s in specs:
        row = layers[s.name]
        assert all(0 <= v <= 1 for v in row.values()), (s.name, row)
        if sum(s.avail_t) == 1:  # no temporal choice (e.g. T = 1): never reduced
            assert row["time_static"] == row["time_moving"] == 0, s.name
    # the network-wide shares are the per-layer shares averaged over the convs that have the choice
    for head, key, avail in (("time", "temporal_reduced", "avail_t"), ("channels", "channel_reduced", "avail_c")):
        names = [s.name for s in specs if sum(getattr(s, avail)) > 1]
        for group in ("static", "moving"):
            got = np.mean([layers[n][f"{head}_{group}"] for n in names])
            np.testing.assert_allclose(got, vared[f"class_{group}_{key}"], atol=1e-6, err_msg=f"{head} {group}")
    assert "layers" not in result["summary"]["vared"]

    again = study(tmp_path)  # every run is in runs.jsonl: nothing trains, the same result
    assert again.returncode == 0 and "== seed" not in again.stderr, again.stderr[-3000:]
    assert json.loads(again.stdout.splitlines()[-1]) == result
    other = study(tmp_path, "--budget", "0.5")
    assert other.returncode != 0 and "use another --workdir" in other.stderr
