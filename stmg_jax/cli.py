"""What the command lines share: errors caused by the user's input become one line and exit status 1.

    with input_errors_exit():
        ...  # a ConfigError becomes SystemExit("config error: ...")

The prefixes name the kind of input at fault: config (a config field, --size, a frame of
another size), checkpoint (not an STMG checkpoint, another architecture, gates not trained),
data (a dataset tree: missing folder, class count), video (a file that cannot be opened or
decoded). Other exceptions are bugs and keep their traceback.
"""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def input_errors_exit() -> Iterator[None]:
    from everest_jax.data.errors import VideoError
    from stmg_jax.checkpoint import CheckpointError
    from stmg_jax.config import ConfigError
    from stmg_jax.data import DatasetError

    prefixes = ((ConfigError, "config"), (CheckpointError, "checkpoint"), (DatasetError, "data"),
                (VideoError, "video"))
    try:
        yield
    except tuple(kind for kind, _ in prefixes) as e:
        prefix = next(p for kind, p in prefixes if isinstance(e, kind))
        raise SystemExit(f"{prefix} error: {e}") from None
