"""The trainer core's documented example (README, "The training core"): a third method plugs in
as a Task, trains on the simulated 8-device mesh, logs, checkpoints, and resumes."""

import json
import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def example_source(workdir):
    section = README.read_text().split("### The training core, and how a method plugs in")[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "/tmp/motion_probe" in code
    return code.replace("/tmp/motion_probe", str(workdir))


def test_readme_example_task_trains_and_resumes(tmp_path):
    scope = {}
    exec(compile(example_source(tmp_path / "probe"), "README example", "exec"), scope)
    final = scope["final"]
    records = [json.loads(x) for x in (tmp_path / "probe" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [20, 40, 60] and final["step"] == 60
    # above chance (25 %) on its training batches: the task, the step and the data all work
    assert np.mean([r["accuracy"] for r in records[1:]]) > 0.5, records
    assert all(r["examples_per_s"] > 0 and "eta" not in r for r in records)
    # a second run finds the step-60 checkpoint: it resumes at the end and trains nothing more
    again, params = scope["trainer"].run(scope["spec"], tmp_path / "probe", scope["MotionProbe"]())
    assert again["step"] == 60 and "loss" not in again
    np.testing.assert_array_equal(np.asarray(params["kernel"]), np.asarray(scope["params"]["kernel"]))


def test_the_train_step_donates_the_state_it_is_given(tmp_path):
    """The step updates parameters and optimizer state in place (no copy of the state per step)."""
    import jax

    from everest_jax import sharding

    scope = {}
    source = example_source(tmp_path / "probe").replace("final, params = trainer.run(", "# ")
    exec(compile(source, "README example", "exec"), scope)
    spec, task, trainer = scope["spec"], scope["MotionProbe"](), scope["trainer"]
    mesh = sharding.make_mesh(spec.mesh)
    parts = trainer.setup(spec, task, mesh)
    state = parts.fresh_state(task, mesh, spec.rules)
    local = next(task.train_data(spec.batch_size, 0, 1))
    batch = sharding.global_batch({k: local[k] for k in task.batch_keys}, mesh, spec.batch_size)
    new_state, _ = parts.train_step(state, batch)
    # donation took effect: the buffers it was given are gone (JAX only warns when it cannot donate)
    assert all(x.is_deleted() for x in jax.tree.leaves(state))
    assert not any(x.is_deleted() for x in jax.tree.leaves(new_state))
