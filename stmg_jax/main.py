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

from absl import flags
from ml_collections import config_flags

flags.DEFINE_string("workdir", None, "where metrics, the config and checkpoints are written")
_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file (configs/stmg_*.py)",
                                          lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    from everest_jax import cli
    from stmg_jax.train import run

    cli.train_command(argv, run, _CONFIG.value, flags.FLAGS.workdir)


if __name__ == "__main__":
    from absl import app

    from everest_jax import cli

    app.run(main, flags_parser=cli.parse_flags)
