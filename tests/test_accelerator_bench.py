"""benchmarks/accelerator.py on CPU: the record's schema on a tiny shape, the OOM and time-budget
bookkeeping (no accelerator figures are produced here)."""

import importlib.util
import json
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--models", "tiny", "--frames", "4", "--image-size", "32", "--patch-size", "8", "--iters", "1"]


def load():
    spec = importlib.util.spec_from_file_location("accelerator", REPO / "benchmarks" / "accelerator.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_reports_every_step_with_its_schema(capsys):
    result = load().main(TINY + ["--batches", "2"])
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line == json.loads(json.dumps(result))
    assert line["device"]["platform"] == "cpu" and line["device"]["peak_tflops"] is None
    runs = line["runs"]
    assert [(r["group"], r["variant"]) for r in runs] == [("pretrain", "everest"), ("pretrain", "videomae_tube"),
                                                          ("finetune", "everest"), ("finetune", "all_tokens")]
    for r in runs:
        assert r["status"] == "ok" and r["batch"] == 2 and r["attention"] == "xla" and r["mfu"] is None
        assert r["step_ms"] > 0 and r["clips_per_s"] > 0 and r["tflops_per_s"] > 0 and r["xla_peak_gib"] > 0
        assert abs(r["tokens_per_s"] - r["clips_per_s"] * r["encoder_tokens"]) < 1e-6 * r["tokens_per_s"]
    assert line["pytorch"] is None  # no CUDA here


def test_oom_ends_a_sweep_and_the_time_budget_skips_runs(capsys, monkeypatch):
    bench = load()

    def fake_run(args, size, group, variant, attention, batch):
        if batch >= 4:
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate")
        return {"status": "ok", "step_ms": 1.0, "clips_per_s": batch * 1e3, "tokens_per_s": 1.0,
                "encoder_tokens": 1, "tflops_per_s": 500.0, "xla_peak_gib": 1.0}

    monkeypatch.setattr(bench, "one_run", fake_run)
    result = bench.main(TINY + ["--batches", "2,4,8", "--attention", "xla"])
    statuses = [r["status"] for r in result["runs"] if r["variant"] == "everest" and r["group"] == "pretrain"]
    assert statuses == ["ok", "oom", "skipped_after_oom"]
    skipped = bench.main(TINY + ["--batches", "2", "--time-limit", "0"])["runs"]
    assert {r["status"] for r in skipped} == {"skipped_time"}
    assert bench.peak_tflops("NVIDIA H200") == 989.0 and bench.peak_tflops("TPU v5 lite") == 197.0
    assert bench.peak_tflops("cpu") is None
    capsys.readouterr()
