"""Command line: python -m stmg_jax.main --config configs/stmg_synthetic.py --workdir DIR.

Overrides as in everest_jax: --config.dense_steps=100 --config.gates.budget=0.2 ...

Runs the two phases: dense training of the segmentation network (skipped when
--config.init_from names an STMG checkpoint directory, whose network is then loaded and must match
config.net), then gate training with the network frozen. Writes to the workdir: config.json,
metrics.jsonl (one JSON object per logged step and per evaluation, with its phase) and
tensorboard/, checkpoints/{dense,gates}/ (a killed run started again resumes where it stopped),
dense/ (network only) and final/ (network + generators + stream config), both `stmg_jax.checkpoint`
directories that `python -m stmg_jax.stream_eval --checkpoint DIR/final ...` reads. Every config
value is checked before anything compiles (`config error: ...` naming the field).
"""

from __future__ import annotations

import pathlib

from absl import app, flags, logging

flags.DEFINE_string("workdir", None, "where metrics, the config and checkpoints are written")


def check_config(cfg) -> None:
    """Build the dataclass configs, check the data size against the stream's bin grids and, for a
    real dataset, its class count and folders (a missing one is a `DatasetError` naming it),
    all before anything is compiled."""
    from stmg_jax.config import ConfigError, check_input_size
    from everest_jax.fields import check
    from stmg_jax.train import RUN_FIELDS, dataset, net_config, stream_config

    check(cfg, RUN_FIELDS, whole=("net", "stream"))
    stream = stream_config(cfg)
    net = net_config(cfg)
    h, w = cfg.data.image_size
    check_input_size(h, w, stream, field="data.image_size")
    if cfg.batch_size % max(1, cfg.mesh.data * cfg.mesh.fsdp) and cfg.mesh.data > 0:
        raise ConfigError(f"batch_size={cfg.batch_size} is not divisible by the mesh's data axes")
    source = cfg.data.source
    if source == "synthetic":
        return
    for split in ("train", "eval"):
        data = dataset(cfg, split)
        if data.num_classes != net.num_classes:
            raise ConfigError(f"net.num_classes={net.num_classes} but data.source={source!r} has "
                              f"{data.num_classes} classes")


def run(cfg, workdir: str, log=print) -> dict:
    """Both phases on the shared trainer core (each resumes from its checkpoints after a kill);
    returns the final evaluation (dense/STMG mIoU, cost, agreement)."""
    from everest_jax import trainer
    from stmg_jax.checkpoint import CheckpointError, load_params
    from stmg_jax.train import DenseTask, GateTask, net_config, phase_spec

    check_config(cfg)
    work = pathlib.Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(cfg.to_json_best_effort(indent=2))
    if cfg.init_from:
        net, _, params = load_params(cfg.init_from)
        if net != net_config(cfg):
            raise CheckpointError(f"{cfg.init_from}: network {net} differs from config.net {net_config(cfg)}")
        net_vars = params["net"]
    else:
        result, params = trainer.run(phase_spec(cfg, "dense"), work, DenseTask(cfg))
        log(f"dense eval: dense_miou={result['dense_miou']:.4g}")
        net_vars = {"params": params}
    result, _ = trainer.run(phase_spec(cfg, "gates"), work, GateTask(cfg, net_vars))
    result = {k: result[k] for k in ("dense_miou", "stmg_miou", "cost", "agreement")}
    log("STMG eval: " + ", ".join(f"{k}={v:.4g}" for k, v in result.items()))
    return result


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from everest_jax.cli import user_errors

    with user_errors():
        result = run(_CONFIG.value, flags.FLAGS.workdir)
    print("done: " + ", ".join(f"{k}={v:.4g}" for k, v in result.items())
          + f"; parameters in {pathlib.Path(flags.FLAGS.workdir) / 'final'}", flush=True)


from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file (configs/stmg_*.py)",
                                          lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])

if __name__ == "__main__":
    from everest_jax import cli

    app.run(main, flags_parser=cli.parse_flags)
