"""Command line: python -m everest_jax.main --config configs/<experiment>.py[:args] --workdir DIR.

Overrides: --config.total_steps=100 --config.model.masking=tube ...
"""

from absl import app, flags, logging
from ml_collections import config_flags

from everest_jax import train
from everest_jax.config import ConfigError

config_flags.DEFINE_config_file("config", None, "experiment config file (configs/*.py[:args])", lock_config=True)
flags.DEFINE_string("workdir", None, "where metrics, the config and checkpoints are written")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # keep library INFO chatter (Orbax) off the console
    try:
        final = train.run(flags.FLAGS.config, flags.FLAGS.workdir)
    except ConfigError as e:
        raise SystemExit(f"config error: {e}")
    summary = ", ".join(f"{k}={v:.4g}" for k, v in final.items() if isinstance(v, float))
    print(f"done: step {final['step']}: {summary}; parameters saved to {final['checkpoint']}")


if __name__ == "__main__":
    app.run(main)
