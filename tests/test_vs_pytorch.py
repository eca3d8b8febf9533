"""benchmarks/vs_pytorch.py on a tiny shape: the same network in both frameworks, the JSON schema."""

import importlib.util
import json
import os
import pathlib

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_vs_pytorch_compares_the_same_network_and_prints_its_record(capsys, tmp_path):
    spec = importlib.util.spec_from_file_location("vs_pytorch", REPO / "benchmarks" / "vs_pytorch.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cores = len(os.sched_getaffinity(0))
    result = bench.main(["--model", "tiny", "--frames", "4", "--image-size", "32", "--patch-size", "8",
                         "--iters", "1", "--threads", "1", "--num-classes", "5",
                         "--attention", "auto,xla", "--profile", str(tmp_path)])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line == json.loads(json.dumps(result))
    assert set(line["pretrain"]) == {"pytorch_videomae_tube", "ours_videomae_tube", "ours_everest",
                                     "ours_videomae_tube+xla", "ours_everest+xla"}
    assert set(line["finetune"]) == {"pytorch_all_tokens", "ours_all_tokens", "ours_everest",
                                     "ours_all_tokens+xla", "ours_everest+xla"}
    assert line["attention"]["ours"] == ["auto (blocked)", "xla"]
    for group in ("pretrain", "finetune"):  # one block of 32 tokens: no loop, XLA counts both alike
        for name in ("ours_everest", "ours_" + ("videomae_tube" if group == "pretrain" else "all_tokens")):
            assert line[group][name]["gflops"] == pytest.approx(line[group][name + "+xla"]["gflops"], rel=0.05)
    for group, baseline in (("pretrain", "pytorch_videomae_tube"), ("finetune", "pytorch_all_tokens")):
        entries = line[group]
        for name, e in entries.items():
            assert e["step_ms"] > 0 and e["ratio"] == pytest.approx(e["step_ms"] / entries[baseline]["step_ms"])
            assert ("gflops" in e) == name.startswith("ours")
        assert entries[baseline]["encoder_tokens"] == entries["ours_" + baseline.split("_", 1)[1]]["encoder_tokens"]
        assert entries["ours_everest"]["gflops"] < entries["ours_" + baseline.split("_", 1)[1]]["gflops"]
    # Tube 90 % of a 2 x 4 x 4 grid keeps 16 - int(0.9 * 16) = 2 positions in each of 2 time slots.
    assert line["pretrain"]["ours_videomae_tube"]["encoder_tokens"] == 4
    assert line["finetune"]["ours_all_tokens"]["encoder_tokens"] == 32
    assert line["parity"]["finetune_logits_max_abs_diff"] < 1e-4  # converted weights: the same network
    assert line["machine"]["threads"] == 1 and line["machine"]["torch"] and line["machine"]["cpu"]
    assert len(os.sched_getaffinity(0)) == cores  # the pinning is undone
    # --profile: a trace of every variant, and its longest operations in the record
    for group in ("pretrain", "finetune"):
        assert set(line["profile"][group]) == set(line[group])
        for name, ops in line["profile"][group].items():
            assert ops and all(ms > 0 for _, ms in ops), (name, ops)
            traces = list((tmp_path / group / name).rglob("*.json*"))
            assert traces, name
            if name.startswith("ours"):  # XLA:CPU kernels (fusions, dots), not runtime wrappers
                assert any("fusion" in op or op.startswith("dot") for op, _ in ops), ops
            else:
                assert any(op.startswith("aten::") for op, _ in ops), ops
