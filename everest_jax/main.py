"""Command line: python -m everest_jax.main --config configs/<experiment>.py[:args] --workdir DIR.

Overrides: --config.total_steps=100 --config.model.masking=tube --config.mesh.fsdp=4 ...

Multi-host: on Cloud TPU and SLURM `jax.distributed.initialize()` finds its peers by itself
(set EVEREST_DISTRIBUTED=1); elsewhere set EVEREST_COORDINATOR=host:port,
EVEREST_NUM_PROCESSES and EVEREST_PROCESS_ID in each process.
"""

import os

from absl import app, flags, logging

flags.DEFINE_string("workdir", None, "where metrics, the config and checkpoints are written")


def initialize_distributed() -> None:
    """Join a multi-process run when the environment asks for one (before JAX is used)."""
    import jax

    coordinator = os.environ.get("EVEREST_COORDINATOR")
    if coordinator:
        if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS") == "cpu":
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator, num_processes=int(os.environ["EVEREST_NUM_PROCESSES"]),
                                   process_id=int(os.environ["EVEREST_PROCESS_ID"]))
    elif os.environ.get("EVEREST_DISTRIBUTED") == "1":
        jax.distributed.initialize()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # keep library INFO chatter (Orbax) off the console
    initialize_distributed()
    import jax

    from everest_jax import cli, train

    with cli.user_errors():
        final = train.run(_CONFIG.value, flags.FLAGS.workdir)
    if jax.process_index() == 0:
        summary = ", ".join(f"{k}={v:.4g}" for k, v in final.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool))
        where = final.get("final_params", "")
        print(f"done: {summary}" + (f"; parameters in {where}" if where else ""), flush=True)


from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file (configs/*.py[:args])",
                                          lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])

if __name__ == "__main__":
    from everest_jax import cli

    app.run(main, flags_parser=cli.parse_flags)
