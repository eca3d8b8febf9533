"""Command line: python -m vared_jax.main --config configs/vared_synthetic.py --workdir DIR.

Overrides as everywhere: --config.total_steps=200 --config.vared.budget=0.6 ...; the config's
`job` is train or evaluate (`--config.init_from=DIR/final`). Writes to the workdir: config.json,
metrics.jsonl and tensorboard/, checkpoints/ (a killed run started again resumes where it stopped),
final/ (parameters + vared.json). Every config value is checked before anything compiles
(`config error: ...` naming the field).
"""

from __future__ import annotations

import pathlib

from absl import app, flags, logging

flags.DEFINE_string("workdir", None, "where metrics, the config and checkpoints are written")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    import jax

    from everest_jax.cli import user_errors
    from vared_jax.train import run

    with user_errors():
        final = run(_CONFIG.value, flags.FLAGS.workdir)
    if jax.process_index() == 0:
        summary = ", ".join(f"{k}={v:.4g}" for k, v in final.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool))
        where = final.get("final_params")
        print(f"done: {summary}" + (f"; parameters in {pathlib.Path(where)}" if where else ""), flush=True)


from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file (configs/vared_*.py[:args])",
                                          lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])

if __name__ == "__main__":
    from everest_jax import cli

    app.run(main, flags_parser=cli.parse_flags)
