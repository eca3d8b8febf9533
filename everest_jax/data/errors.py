"""Why an example could not be used: the reasons the input pipeline tells apart.

A bad example (missing, empty, truncated or corrupt file, no video stream, too few frames) raises
`VideoError`; the pipeline replaces it by the next valid example and reports it by its `Reason`,
which travels through worker processes and batches as a plain int (`Reason.OK` = 0).
"""

from __future__ import annotations

import enum

from everest_jax.errors import UserError


class Reason(enum.IntEnum):
    OK = 0
    MISSING = 1  # no such file
    EMPTY = 2  # zero bytes
    NO_VIDEO_STREAM = 3  # a container without a video stream (audio only, ...)
    UNDECODABLE = 4  # not a container we can open, or the decoder failed (corrupt bytes)
    TRUNCATED = 5  # fewer frames in the file than its header announces, or decoding stopped early
    TOO_SHORT = 6  # fewer frames than the clip sampler needs


class VideoError(UserError):
    """A video (or an example of an array source) that cannot give a clip.

    Attributes:
      reason: a `Reason`.
      where: the file path or example description.
      detail: what went wrong, for the log.
    """

    kind = "video"

    def __init__(self, reason: Reason, where: str, detail: str = ""):
        self.reason, self.where, self.detail = Reason(reason), str(where), detail
        super().__init__(f"{where}: {self.reason.name.lower()}" + (f" ({detail})" if detail else ""))


class TooManyBadExamples(UserError, RuntimeError):
    """More than the allowed share of a dataset (shard) failed: training on the rest would mislead."""

    kind = "data"
