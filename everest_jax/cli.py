"""What every command line shares: a user's bad input ends in one line naming the cause, exit
status 2, no traceback. Bugs keep their traceback.

    app.run(main, flags_parser=cli.parse_flags)   # absl commands: flag and config-override errors
    with cli.user_errors():                        # any command: UserError -> "<kind> error: ...";
        ...                                        # a non-finite stop -> "stopped: ...", exit 1
"""

from __future__ import annotations

import contextlib
import re
import sys
from typing import Iterator, Sequence

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
