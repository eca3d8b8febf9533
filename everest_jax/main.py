"""Command line: python -m everest_jax.main --config configs/<experiment>.py[:args] --workdir DIR.

Overrides: --config.total_steps=100 --config.model.masking=tube --config.mesh.fsdp=4 ...

Multi-host: see `everest_jax.cli` (EVEREST_DISTRIBUTED=1, or EVEREST_COORDINATOR,
EVEREST_NUM_PROCESSES and EVEREST_PROCESS_ID in each process).
"""

from absl import flags
from ml_collections import config_flags

flags.DEFINE_string("workdir", None, "where metrics, the config and checkpoints are written")
_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file (configs/*.py[:args])",
                                          lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    from everest_jax import cli
    from everest_jax.train import run

    cli.train_command(argv, run, _CONFIG.value, flags.FLAGS.workdir)


if __name__ == "__main__":
    from absl import app

    from everest_jax import cli

    app.run(main, flags_parser=cli.parse_flags)
