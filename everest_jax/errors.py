"""The errors a user's input causes (a config field, a checkpoint, a video, a dataset). Every
command turns them into one line naming the cause and exit status 2 (`everest_jax.cli`); any
other exception is a bug and keeps its traceback. A leaf module: data modules may import it."""


class UserError(Exception):
    """Bad input; the message names the cause. `kind` says what was at fault (the line's prefix)."""

    kind = "input"


class ConfigError(UserError, ValueError):
    """An invalid configuration; the message names the offending field(s)."""

    kind = "config"
