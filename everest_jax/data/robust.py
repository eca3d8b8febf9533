"""Bad examples never stop a run: replace them deterministically, count them, refuse too many.

`LoadClip` (a Grain RandomMap, runs wherever decoding runs, worker processes included) turns a
position of the shard into a model example. If the example there is bad (VideoError: missing,
empty, truncated, corrupt, no video stream, too short) it takes the next valid example of the
shard instead (positions p+1, p+2, ... wrapping), so the output depends only on the seed and the
data. Each example carries two bookkeeping ints that survive worker processes and batching:
  index: the global source index of its slot; error: the slot's `Reason` (0 when it was valid).

`BadExampleMonitor` (after the workers, in the main process) reads those fields from each batch,
logs every bad example once with its path and reason, counts replacements, and raises
TooManyBadExamples as soon as more than `max_bad_fraction` of the shard has proven bad. Its
`report()` says what was replaced; its state (with the pipeline's) is checkpointable as JSON.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from typing import Any, Callable

import grain
import numpy as np
from absl import logging

from everest_jax.data import sources
from everest_jax.data.errors import Reason, TooManyBadExamples, VideoError


def max_bad_examples(dataset_size: int, max_bad_fraction: float) -> int:
    """How many bad examples a dataset (shard) of `dataset_size` may hold: floor(fraction * size)."""
    return int(math.floor(max_bad_fraction * dataset_size + 1e-9))


_seen_lock = threading.Lock()
_seen: set[tuple[str, int]] = set()  # per process: details of each bad example are logged once


class LoadClip(grain.transforms.RandomMap):
    """position in [0, len(shard)) -> {'video', 'label'(, 'mask'), 'index': int32, 'error': int32}.

    Args:
      source: a random-access source (see sources.read_clip).
      shard: (n,) global indices of the examples this process reads.
      sampler: frame sampler, (num_frames, rng) -> (V, T) positions (sampling.py).
      augment: (clip dict, rng) -> model example (augment.py).
      max_bad_fraction: more consecutive failures than this share of the shard is an error.
    """

    def __init__(self, source, shard: np.ndarray, sampler, augment, max_bad_fraction: float = 0.1):
        self.source, self.shard = source, np.asarray(shard, np.int64)
        self.sampler, self.augment = sampler, augment
        self.max_bad_fraction = max_bad_fraction

    def random_map(self, position: int, rng: np.random.Generator) -> dict[str, Any]:
        n = len(self.shard)
        allowed = max_bad_examples(n, self.max_bad_fraction)
        first_error = Reason.OK
        failed: list[str] = []  # 'path (reason)' of each bad example tried for this slot
        for attempt in range(min(n, allowed + 1)):
            index = int(self.shard[(int(position) + attempt) % n])
            try:
                clip = sources.read_clip(self.source, index, lambda frames: self.sampler(frames, rng))
            except VideoError as e:
                if attempt == 0:
                    first_error = e.reason
                failed.append(f"{sources.describe(self.source, index)} ({e.reason.name.lower()})")
                key = (str(self.source), index)
                with _seen_lock:
                    new = key not in _seen
                    _seen.add(key)
                if new:
                    logging.vlog(1, "Bad example %d: %s", index, e)
                continue
            out = self.augment(clip, rng)
            out["index"] = np.int32(self.shard[int(position) % n])
            out["error"] = np.int32(first_error)
            return out
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        raise TooManyBadExamples(
            f"{len(failed)} videos in a row are bad, more than max_bad_fraction={self.max_bad_fraction} of "
            f"{n} allows ({allowed}); check the data: " + "; ".join(failed[:5]) + more)


@dataclasses.dataclass
class BadExampleReport:
    """What a run replaced so far.

    Attributes:
      bad: {global index: (path or description, reason name)} of every bad example seen.
      replaced: slots filled by a replacement (a bad example counts again in each epoch).
      examples: examples delivered.
      dataset_size: size of the (shard of the) dataset; max_bad: the most bad ones allowed.
    """

    bad: dict[int, tuple[str, str]]
    replaced: int
    examples: int
    dataset_size: int
    max_bad: int

    @property
    def num_bad(self) -> int:
        return len(self.bad)


class BadExampleIterator(grain.DatasetIterator):
    """Passes batches through; logs, counts and limits the bad examples they report."""

    def __init__(self, parent: grain.DatasetIterator, describe: Callable[[int], str], dataset_size: int,
                 max_bad_fraction: float):
        super().__init__(parent)
        self._describe, self._size = describe, dataset_size
        self._max_bad = max_bad_examples(dataset_size, max_bad_fraction)
        self._fraction = max_bad_fraction
        self._bad: dict[int, int] = {}
        self._replaced = self._examples = 0

    def __next__(self):
        batch = next(self._parent)
        index, error = np.atleast_1d(batch["index"]), np.atleast_1d(batch["error"])
        self._examples += index.size
        self._replaced += int(np.count_nonzero(error))
        for i, e in zip(index[error != 0].tolist(), error[error != 0].tolist()):
            if i not in self._bad:
                self._bad[i] = e
                logging.warning("Bad video replaced by the next valid one: %s (%s); %d bad so far of %d",
                                self._describe(i), Reason(e).name.lower(), len(self._bad), self._size)
        if len(self._bad) > self._max_bad:
            worst = "; ".join(f"{self._describe(i)} ({Reason(e).name.lower()})" for i, e in list(self._bad.items())[:5])
            raise TooManyBadExamples(
                f"{len(self._bad)} of {self._size} examples are bad, more than max_bad_fraction="
                f"{self._fraction} allows ({self._max_bad}); check the data. First: {worst}")
        return batch

    def report(self) -> BadExampleReport:
        return BadExampleReport(bad={i: (self._describe(i), Reason(e).name.lower()) for i, e in self._bad.items()},
                                replaced=self._replaced, examples=self._examples, dataset_size=self._size,
                                max_bad=self._max_bad)

    def get_state(self) -> dict[str, Any]:
        return {"pipeline": self._parent.get_state(), "bad": [[i, e] for i, e in sorted(self._bad.items())],
                "replaced": self._replaced, "examples": self._examples}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["pipeline"])
        self._bad = {int(i): int(e) for i, e in state["bad"]}
        self._replaced, self._examples = int(state["replaced"]), int(state["examples"])

    def __str__(self) -> str:
        return f"BadExampleIterator(size={self._size}, max_bad={self._max_bad})"


class BadExampleMonitor(grain.IterDataset):
    """IterDataset whose iterator is a BadExampleIterator (see the module docstring)."""

    def __init__(self, parent: grain.IterDataset, describe: Callable[[int], str], dataset_size: int,
                 max_bad_fraction: float):
        super().__init__(parent)
        self._describe, self._size, self._fraction = describe, dataset_size, max_bad_fraction

    def __iter__(self) -> BadExampleIterator:
        return BadExampleIterator(self._parent.__iter__(), self._describe, self._size, self._fraction)

    def __str__(self) -> str:
        return "BadExampleMonitor"
