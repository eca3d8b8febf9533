"""Command line: python -m vared_jax.main --config configs/vared_synthetic.py --workdir DIR.

Overrides as everywhere: --config.total_steps=200 --config.vared.budget=0.6 ...; the config's
`job` is train or evaluate (`--config.init_from=DIR/final`). Writes to the workdir: config.json,
metrics.jsonl and tensorboard/, checkpoints/ (a killed run started again resumes where it stopped),
final/ (parameters + vared.json). Every config value is checked before anything compiles
(`config error: ...` naming the field).
"""

from absl import flags
from ml_collections import config_flags

flags.DEFINE_string("workdir", None, "where metrics, the config and checkpoints are written")
_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file (configs/vared_*.py[:args])",
                                          lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    from everest_jax import cli
    from vared_jax.train import run

    cli.train_command(argv, run, _CONFIG.value, flags.FLAGS.workdir)


if __name__ == "__main__":
    from absl import app

    from everest_jax import cli

    app.run(main, flags_parser=cli.parse_flags)
