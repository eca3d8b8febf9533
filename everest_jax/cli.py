"""What every command line shares: a user's bad input ends in one line naming the cause, exit
status 2, no traceback. Bugs keep their traceback.

    app.run(main, flags_parser=cli.parse_flags)   # absl commands: flag and config-override errors
    with cli.user_errors():                        # any command: UserError -> "<kind> error: ...";
        ...                                        # a non-finite stop -> "stopped: ...", exit 1
    cli.train_command(argv, run, config, workdir)  # the body of every `python -m <method>.main`

Multi-host: on Cloud TPU and SLURM `jax.distributed.initialize()` finds its peers by itself
(set EVEREST_DISTRIBUTED=1); elsewhere set EVEREST_COORDINATOR=host:port,
EVEREST_NUM_PROCESSES and EVEREST_PROCESS_ID in each process.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from typing import Any, Callable, Iterator, Sequence

from everest_jax.errors import UserError


class InputError(SystemExit):
    """Exit status 2; str() is the one-line message (already printed to stderr)."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


def fail(message: str) -> InputError:
    """Print `message` (one line) to stderr and return the exit to raise."""
    message = " ".join(message.split())
    print(message, file=sys.stderr, flush=True)
    return InputError(message)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except UserError as e:
        raise fail(f"{e.kind} error: {e}") from None
    except FloatingPointError as e:  # the trainer's non-finite guard: not the user's input, not a bug
        raise SystemExit(f"stopped: {e}") from None


def parse_flags(argv: Sequence[str]) -> list[str]:
    """absl `flags_parser`: an unknown flag, a bad value or a config override naming no field
    (`--config.batchsize=8`) is one line, exit 2, instead of absl's usage dump or a traceback."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as e:  # a value of the wrong type for a config field is a config error
        raise fail(f"{'config' if str(e).startswith('flag --config') else 'flag'} error: {e}") from None
    except (AttributeError, KeyError) as e:  # ml_collections: the override's field does not exist
        text = str(e.args[0] if e.args else e)
        field = text.splitlines()[0].strip("'\"") if text else "?"
        hint = re.search(r'Did you mean "([^"]+)"', text)
        raise fail(f"config error: no config field {field!r}"
                   + (f"; did you mean {hint.group(1)!r}?" if hint else "")) from None


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


def train_command(argv: Sequence[str], run: Callable[[Any, str], dict], config: Any, workdir: str) -> None:
    """`python -m <method>.main --config ... --workdir DIR`: join a multi-host run if asked, run
    `run(config, workdir)` (-> final metrics, 'final_params' naming the exported directory) with
    user errors as one line, and print `done: k=v, ...; parameters in DIR` (process 0)."""
    from absl import app, flags, logging

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # keep library INFO chatter (Orbax) off the console
    initialize_distributed()
    import jax

    with user_errors():
        final = run(config, workdir)
    if jax.process_index() == 0:
        summary = ", ".join(f"{k}={v:.4g}" for k, v in final.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool))
        where = final.get("final_params", "")
        print(f"done: {summary}" + (f"; parameters in {where}" if where else ""), flush=True)
