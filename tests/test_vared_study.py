"""`benchmarks/vared_study.py --quick` with every option (static class, gates only, gate motion,
edge padding, excess penalty): the study's bookkeeping (every run recorded, the per-layer policy
consistent with the network-wide shares, a second invocation resumes without training, other
settings refused), gates-only training (the VA-RED² run keeps the dense run's backbone bit for
bit; its gates and reconstructions train) and the reduction cost (none for static clips with edge
padding)."""

import json
import pathlib
import subprocess
import sys

import jax
import numpy as np

from configs.vared_synthetic import get_config
from vared_jax import train
from vared_jax.model import conv_specs

REPO = pathlib.Path(__file__).resolve().parents[1]


def study(workdir, *extra):
    return subprocess.run([sys.executable, "benchmarks/vared_study.py", "--workdir", str(workdir), "--quick",
                           "--static-class", "--gates-only", "--gate-motion", "--edge-padding",
                           "--flops-penalty", "excess", *extra], cwd=REPO, capture_output=True, text=True, timeout=900)


def test_quick_study_records_per_layer_policy_and_resumes(tmp_path):
    first = study(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    result = json.loads(first.stdout.splitlines()[-1])
    assert [r["name"] for r in result["runs"]] == ["dense", "dense_more", "vared"]
    assert result["settings"]["flops_penalty"] == "excess" and result["settings"]["edge_padding"]
    vared = result["runs"][2]
    config = get_config("static=true")
    config.model.gate_motion, config.model.temporal_padding = True, "edge"
    model, clip = train.validate(config)
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

    dense = train.load_params(tmp_path / "seed0" / "dense" / "final")[2]
    config.init_from, config.vared.train_backbone = str(tmp_path / "seed0" / "dense" / "final"), False
    config.seed = 0  # the study's seed
    fresh = jax.jit(train.ClassifyTask(config, model, clip).init_params)()  # gates and reconstructions, untrained
    _, kind, params = train.load_params(tmp_path / "seed0" / "vared" / "final")
    assert kind == "vared"
    for layer, leaves in dense.items():
        for k, v in leaves.items():
            np.testing.assert_array_equal(params[layer][k], v, err_msg=f"{layer}/{k}")
    moved = [(layer, k) for layer, leaves in fresh.items() for k, v in leaves.items()
             if not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params[layer][k]), jax.tree.leaves(v)))]
    assert moved, "no gate or reconstruction trained"

    again = study(tmp_path)  # every run is in runs.jsonl: nothing trains, the same result
    assert again.returncode == 0 and "== seed" not in again.stderr, again.stderr[-3000:]
    assert json.loads(again.stdout.splitlines()[-1]) == result
    cost = study(tmp_path, "--reduction-cost")  # the dense network's CE cost of halving time, per stage
    assert cost.returncode == 0, cost.stderr[-3000:]
    stages = json.loads(cost.stdout.splitlines()[-1])["reduction_cost"]
    assert set(stages) == {"stem_t", "layer1", "layer2", "layer3"}
    assert all(np.isfinite(v) for s in stages.values() for v in (s["static"], s["moving"]))
    assert all(abs(s["static"]) < 1e-4 for s in stages.values()), stages  # edge padding: exact on still clips
    other = study(tmp_path, "--budget", "0.5")
    assert other.returncode != 0 and "use another --workdir" in other.stderr
