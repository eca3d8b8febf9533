"""STMG on the shared trainer core: `python -m stmg_jax.main` killed (SIGKILL) at a random step of
the dense phase or of the gate phase resumes to the same final parameters bit for bit; metrics with
phases; each phase's evaluation compiled once."""

import json
import pathlib
import random
import subprocess
import sys

import jax
import numpy as np
from conftest import kill_at_step

from stmg_jax.checkpoint import load_params

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 8


def command(workdir):
    return [sys.executable, "-m", "stmg_jax.main", "--config", "configs/stmg_synthetic.py", "--workdir", str(workdir),
            f"--config.dense_steps={STEPS}", f"--config.gate_steps={STEPS}", "--config.warmup_steps=1",
            "--config.log_every=1", "--config.batch_size=2", "--config.data.num_examples=16",
            "--config.data.num_eval_examples=8", "--config.checkpoint.every_steps=2"]


def flat(workdir):
    _, _, params = load_params(pathlib.Path(workdir) / "final")
    return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(params)}


def kill_during(workdir, phase):
    """Start the run, SIGKILL it at a random step of `phase` after that phase's first committed
    (asynchronous) checkpoint; -> the step it was killed at."""
    proc = subprocess.Popen(command(workdir), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    prefix = f"[{phase}] step "
    kill_at = kill_at_step(proc, lambda line: int(line.split()[2].split("/")[0]) if line.startswith(prefix) else None,
                           random.Random().randint(3, STEPS - 1),
                           lambda: any(p.name.isdigit() for p in (workdir / "checkpoints" / phase).glob("*")))
    assert not (workdir / "final").exists()
    return kill_at


def test_killed_stmg_run_resumes_to_the_same_parameters_bit_for_bit(tmp_path):
    """Killed in the dense phase, started again and killed in the gate phase, started again: the
    final network and generators equal those of an uninterrupted run bit for bit."""
    straight = tmp_path / "straight"
    done = subprocess.run(command(straight), cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    workdir = tmp_path / "killed"
    killed = {"dense": kill_during(workdir, "dense")}
    killed["gates"] = kill_during(workdir, "gates")  # resumes the dense phase first
    resumed = subprocess.run(command(workdir), cwd=REPO, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "checkpoints/gates at step" in resumed.stdout, (killed, resumed.stdout[-2000:])
    a, b = flat(straight), flat(workdir)
    assert a.keys() == b.keys() and any("gen" in k for k in a)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{k} (killed at {killed})")

    # metrics of both phases, every step, with the phase named; evaluations at each phase's end
    records = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    for p in ("dense", "gates"):
        steps = [r["step"] for r in records if r.get("phase") == p and "loss" in r]
        assert steps == list(range(1, STEPS + 1)), (p, steps)
        assert all(r["frames_per_s"] > 0 for r in records if r.get("phase") == p and r["step"] > 1 and "loss" in r)
    assert [r["phase"] for r in records if "dense_miou" in r] == ["dense", "gates"]
    assert any("stmg_miou" in r and "cost" in r for r in records)
    assert any(pathlib.Path(straight, "tensorboard").iterdir())


def test_stmg_evaluation_compiles_once_per_run(tmp_path, monkeypatch):
    """The dense phase evaluating every 2 of 6 steps and at its end (3 evaluations) traces its
    evaluation (the confusion matrix) once: the evaluator is built once per run."""
    from configs.stmg_synthetic import get_config
    from everest_jax import trainer
    from stmg_jax import train

    traces, confusion = [], train.confusion
    monkeypatch.setattr(train, "confusion", lambda *a: traces.append(1) or confusion(*a))
    cfg = get_config()
    cfg.update(dense_steps=6, warmup_steps=1, log_every=0, eval_every=2, batch_size=2)
    cfg.data.update(num_examples=8, num_eval_examples=8)
    cfg.checkpoint.async_save = False
    trainer.run(train.phase_spec(cfg, "dense"), tmp_path, train.DenseTask(cfg))
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["phase"], r["step"]) for r in records if "dense_miou" in r] == [("dense", 2), ("dense", 4), ("dense", 6)]
    assert len(traces) == 1, traces
