"""benchmarks/memory_headroom.py: schema, the linear fit, and EVEREST's pre-training step needing
less memory per clip than VideoMAE's tube masking (it encodes and decodes fewer tokens)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import memory_headroom  # noqa: E402


def test_quick_run_schema_and_ordering(capsys):
    memory_headroom.main(["--quick", "--steps", "pretrain_everest,pretrain_videomae_tube", "--budgets", "1,2"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = {r["step"]: r for r in result["rows"]}
    assert set(rows) == {"pretrain_everest", "pretrain_videomae_tube"} and result["budgets_gib"] == [1.0, 2.0]
    for r in rows.values():
        assert r["per_clip_gib"] > 0 and set(r["max_batch"]) == {"1", "2"}
        fixed, per = r["fixed_gib"], r["per_clip_gib"]
        for budget, n in r["max_batch"].items():  # the largest batch under the budget, by the fit
            assert fixed + n * per <= float(budget) < fixed + (n + 1) * per
    assert rows["pretrain_everest"]["per_clip_gib"] < rows["pretrain_videomae_tube"]["per_clip_gib"]
    assert memory_headroom.headroom(1.0, 2.0, 10.0) == 4 and memory_headroom.headroom(5.0, 1.0, 4.0) == 0
