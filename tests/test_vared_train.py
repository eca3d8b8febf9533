"""VA-RED² on the shared training core: `python -m vared_jax.main` trains the dense R(2+1)D, then
the VA-RED² network from it (killed at a random step and resumed bit for bit), then evaluates; the
loss is cross-entropy + the FLOPs-budget term with the annealed temperature; initialisation from a
torchvision state dict."""

import json
import pathlib
import random
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import kill_at_step

from configs.vared_synthetic import get_config
from everest_jax.config import ConfigError
from vared_jax import train
from vared_jax.model import expected_flops

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 6
SMALL = [f"--config.total_steps={STEPS}", "--config.warmup_steps=1", "--config.log_every=1", "--config.batch_size=8",
         "--config.data.num_eval_examples=8", "--config.eval.num_clips=1", "--config.eval.num_crops=1",
         "--config.checkpoint.every_steps=2"]


def command(config, workdir, *extra):
    return [sys.executable, "-m", "vared_jax.main", "--config", config, "--workdir", str(workdir), *SMALL, *extra]


def main(config, workdir, *extra):
    done = subprocess.run(command(config, workdir, *extra), cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]


def flat(workdir):
    return {jax.tree_util.keystr(p): np.asarray(x)
            for p, x in jax.tree_util.tree_leaves_with_path(train.load_params(workdir / "final")[2])}


def test_dense_then_vared_killed_and_resumed_then_evaluate(tmp_path):
    dense = main("configs/vared_synthetic.py:vared=false", tmp_path / "dense")
    assert [r["step"] for r in dense if "loss" in r] == list(range(1, STEPS + 1)) and "eval_top1" in dense[-1]
    assert "eval_flops" not in dense[-1]

    init = f"--config.init_from={tmp_path}/dense/final"
    records = main("configs/vared_synthetic.py", tmp_path / "vared", init)
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, STEPS + 1))
    taus = [r["tau"] for r in steps]  # 5 -> 0.5 geometrically over the run, logged after each step
    np.testing.assert_allclose(taus, [5 * 0.1 ** (s / STEPS) for s in range(STEPS)], rtol=1e-5)
    assert all(0.2 < r["flops"] < 1.0 for r in steps)
    final = records[-1]
    assert 0.2 < final["eval_flops"] < 1.0 and 0 <= final["eval_temporal_reduced"] <= 1
    model, kind, params = train.load_params(tmp_path / "vared" / "final")
    assert kind == "vared" and model.num_classes == 4
    _, _, dense_params = train.load_params(tmp_path / "dense" / "final")
    # the backbone started from the dense run (the final weights moved, the gates exist)
    assert "gate_t" in params["stem_t"] and "gate_t" not in dense_params["stem_t"]

    # SIGKILLed at a random step after its first committed checkpoint, started again: the same
    # final network, gates and reconstructions, bit for bit (Gumbel noise and data from the step)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(command("configs/vared_synthetic.py", killed, init), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    kill_at = kill_at_step(proc, lambda line: int(line.split()[1].split("/")[0]) if line.startswith("step ") else None,
                           random.Random().randint(3, STEPS - 1),
                           lambda: any(p.name.isdigit() for p in (killed / "checkpoints").glob("*")))
    resumed = subprocess.run(command("configs/vared_synthetic.py", killed, init), cwd=REPO, capture_output=True,
                             text=True, timeout=900)
    assert resumed.returncode == 0 and "resumed from" in resumed.stdout, (kill_at, resumed.stderr[-3000:])
    a, b = flat(tmp_path / "vared"), flat(killed)
    assert a.keys() == b.keys() and any("recon" in k for k in a)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{k} (killed at step {kill_at})")

    evaluated = main("configs/vared_synthetic.py:job=evaluate", tmp_path / "eval",
                     f"--config.init_from={tmp_path}/vared/final")
    assert evaluated[-1]["eval_top1"] == final["eval_top1"] and evaluated[-1]["eval_flops"] == final["eval_flops"]


def test_loss_is_cross_entropy_plus_the_budget_term_at_the_annealed_temperature_and_excess_penalty():
    config = get_config()
    config.total_steps, config.warmup_steps = 10, 1
    model, clip = train.validate(config)
    task = train.ClassifyTask(config, model, clip)
    params = jax.jit(task.init_params)()
    rng = np.random.default_rng(0)
    batch = {"video": jnp.asarray(rng.normal(size=(2, *task.shape, 3)), jnp.float32), "label": jnp.asarray([1, 3])}
    key, step = jax.random.key(7), 4
    tau = 5.0 * (0.5 / 5.0) ** (step / 10)

    def both(p):  # one compilation for the loss and the reference forward
        return task.loss(p, batch, key, step), task.net.apply({"params": p}, batch["video"], mode="soft", tau=tau,
                                                              deterministic=False, rngs={"gumbel": key})
    (loss, metrics), (logits, choices) = jax.jit(both)(params)
    ce = optax.softmax_cross_entropy(logits, optax.smooth_labels(jax.nn.one_hot(batch["label"], 4), 0.1)).mean()
    flops = float(jnp.mean(expected_flops(model, task.shape, choices)))
    np.testing.assert_allclose(float(metrics["tau"]), tau, rtol=1e-6)
    np.testing.assert_allclose(float(metrics["flops"]), flops, rtol=1e-5)
    np.testing.assert_allclose(float(loss), float(ce) + 2.0 * (flops - 0.65) ** 2, rtol=1e-5)
    # "excess": FLOPs under the budget cost nothing (the same params, choices and cross-entropy)
    config.vared.flops_penalty, config.vared.budget = "excess", 0.99
    assert flops < 0.99
    excess = train.ClassifyTask(config, model, clip)
    np.testing.assert_allclose(float(jax.jit(excess.loss)(params, batch, key, step)[0]), float(ce), rtol=1e-5)
    config.vared.flops_penalty = "hinge"
    with pytest.raises(ConfigError, match="vared.flops_penalty"):
        train.validate(config)


def test_init_from_a_torchvision_state_dict_and_refusals(tmp_path):
    torch = pytest.importorskip("torch")
    from torch_r2plus1d import R2Plus1D18

    net = R2Plus1D18(num_classes=400)
    torch.save(net.state_dict(), tmp_path / "r21d.pth")
    config = get_config("size=18")
    config.init_from = str(tmp_path / "r21d.pth")
    model, clip = train.validate(config)
    task = train.ClassifyTask(config, model, clip)
    abstract = jax.eval_shape(task.init_params)
    given = task.initial_params(abstract)
    assert "fc" not in given  # 400 classes -> this config's 4: a fresh head
    assert "gate_t" not in given["stem_t"] and given["stem_t"]["kernel"].shape == abstract["stem_t"]["kernel"].shape
    np.testing.assert_allclose(given["layer4_1_conv2_t"]["kernel"][:, 0, 0],
                               net.state_dict()["layer4.1.conv2.0.3.weight"].numpy()[:, :, :, 0, 0].transpose(2, 1, 0),
                               rtol=1e-6)
    config = get_config()  # the small network cannot take R(2+1)D-18 weights
    config.init_from = str(tmp_path / "r21d.pth")
    model, clip = train.validate(config)
    small = train.ClassifyTask(config, model, clip)
    with pytest.raises(ConfigError, match="does not fit the model: parameter"):
        small.initial_params(jax.eval_shape(small.init_params))


def test_static_arg_adds_a_fifth_class_that_does_not_move():
    config = get_config("static=true")
    model, clip = train.validate(config)
    assert model.num_classes == config.data.num_classes == 5 and config.data.static_class
    assert get_config().data.num_classes == 4 and not get_config().data.static_class


def test_gates_only_is_refused_without_training_a_vared_network_from_a_backbone(tmp_path):
    # (the run itself: tests/test_vared_study.py, the backbone kept bit for bit)
    for job, enabled, init in (("evaluate", True, str(tmp_path)), ("train", False, str(tmp_path)), ("train", True, "")):
        bad = get_config(f"job={job},vared={str(enabled).lower()}")
        bad.init_from, bad.vared.train_backbone = init, False
        with pytest.raises(ConfigError, match="vared.train_backbone=False"):
            train.validate(bad)


@pytest.mark.parametrize("dataset", ["mini", "k400"])
def test_kinetics_recipe_traces_at_full_size(dataset):
    """configs/vared_kinetics.py: the VA-RED² loss and the evaluation's predictions of R(2+1)D-18
    on 16x112² clips trace (shapes only, nothing computed): its FLOPs counts exceed int32."""
    from configs.vared_kinetics import get_config as kinetics
    config = kinetics(f"dataset={dataset}")
    task = train.ClassifyTask(config, train.model_config(config), train.clip_of(config))
    params = jax.eval_shape(task.init_params)
    video = jax.ShapeDtypeStruct((2, *task.shape, 3), jnp.float32)
    batch = {"video": video, "label": jax.ShapeDtypeStruct((2,), jnp.int32)}
    loss, metrics = jax.eval_shape(task.loss, params, batch, jax.random.key(0), 0)
    assert loss.shape == () and metrics["flops"].shape == ()
    out = jax.eval_shape(task.predict, params, video)
    assert out["probs"].shape == (2, config.data.num_classes) and out["flops"].shape == (2,)


def test_vared_steps_on_a_device_mesh_match_one_device():
    """The VA-RED² loss (Gumbel noise drawn for the global batch, the batch-mean expected FLOPs)
    with the batch split over a 2 x 4 (data x fsdp) mesh of simulated devices gives the
    single-device run's losses, FLOPs and parameters."""
    from everest_jax import sharding, trainer

    config = get_config()
    config.batch_size, config.total_steps, config.warmup_steps = 8, 10, 0
    config.optimizer.base_lr = 0.128  # lr 4e-3 at batch 8: updates far above rounding noise
    model, clip = train.validate(config)
    task, spec = train.ClassifyTask(config, model, clip), train.run_spec(config)
    rng = np.random.default_rng(0)
    data = [{"video": rng.normal(size=(8, clip.num_frames, *clip.image_size, 3)).astype(np.float32),
             "label": rng.integers(0, 4, 8).astype(np.int32)} for _ in range(3)]

    def run(mesh_config, n):
        m = sharding.make_mesh(mesh_config, jax.devices()[:n])
        parts = trainer.setup(spec, task, m)
        state, out = parts.fresh_state(task, m, spec.rules), []
        for batch in data:
            state, metrics = parts.train_step(state, sharding.global_batch(batch, m, 8))
            out.append((float(metrics["loss"]), float(metrics["flops"])))
        return out, jax.device_get(state.params)

    one, p1 = run(dict(data=1, fsdp=1, tensor=1), 1)
    many, p8 = run(dict(data=2, fsdp=4, tensor=1), 8)
    np.testing.assert_allclose(many, one, atol=1e-5, rtol=0)
    assert len({f for _, f in one}) == 3  # the expected FLOPs move with the gates and the noise
    # (Adam: where a gradient is ~0, reduction-order noise can move a parameter by part of lr)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=5e-4, rtol=0), p8, p1)
    init = jax.device_get(task.init_params())
    assert max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(init))) > 5e-3
