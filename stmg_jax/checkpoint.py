"""STMG parameter checkpoints: an Orbax tree at <dir>/params plus <dir>/stmg.json.

The layout and the reading/writing are everest_jax.checkpoint's (`write_params_dir` /
`read_params_dir`, shared with EVEREST's parameter checkpoints); stmg.json holds
{'kind': 'stmg', 'net': SegNetConfig fields, 'stream': StreamConfig fields or null,
'has_generators': bool}; params = {'net': SegNet variables, 'gen': generator variables (optional)}.
`load_params` refuses a directory that is not such a checkpoint, and `check_architecture`
refuses parameters whose tree or shapes differ from a config's network, naming the first
offending parameter.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import jax
import jax.numpy as jnp

from everest_jax import checkpoint as everest_checkpoint
from everest_jax.checkpoint import read_params_dir, tree_mismatch, write_params_dir
from stmg_jax.config import SegNetConfig, StreamConfig
from stmg_jax.generator import init_generators
from stmg_jax.model import SegNet

CONFIG_FILE = "stmg.json"


class CheckpointError(everest_checkpoint.CheckpointError):
    """Not an STMG checkpoint, or one of another architecture."""


def save_params(out_dir: str | os.PathLike, params: dict, net: SegNetConfig,
                stream: StreamConfig | None = None) -> pathlib.Path:
    meta = {"kind": "stmg", "net": dataclasses.asdict(net),
            "stream": dataclasses.asdict(stream) if stream is not None else None,
            "has_generators": "gen" in params}
    return write_params_dir(out_dir, params, meta, CONFIG_FILE)


def load_params(path: str | os.PathLike) -> tuple[SegNetConfig, StreamConfig | None, dict]:
    """-> (net config, stream config or None, params {'net': ..., ['gen': ...]}) as NumPy arrays."""
    try:
        meta, params = read_params_dir(path, CONFIG_FILE, "an STMG")
    except everest_checkpoint.CheckpointError as e:
        raise CheckpointError(str(e)) from None
    if meta.get("kind") != "stmg":
        raise CheckpointError(f"{path}/{CONFIG_FILE}: kind {meta.get('kind')!r} is not 'stmg'")
    net = SegNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["net"].items()})
    stream = None
    if meta.get("stream"):
        s = meta["stream"]
        s["bin_grid"] = tuple(tuple(g) for g in s["bin_grid"])
        s["capacities"] = tuple(s["capacities"])
        stream = StreamConfig(**s)
    check_architecture(params["net"], net)
    if "gen" in params:
        if stream is None:
            raise CheckpointError(f"{path}/{CONFIG_FILE}: generators without a stream config")
        check_generators(params["gen"], net, stream)
    return net, stream, params


def load_streaming_params(path: str | os.PathLike) -> tuple[SegNetConfig, StreamConfig, dict]:
    """`load_params` for streaming: refuses a checkpoint without trained gates (a dense/ one)."""
    net, stream, params = load_params(path)
    if stream is None or "gen" not in params:
        raise CheckpointError(f"{path}: has no stream config / generators (a dense checkpoint); "
                              "train the gates first (python -m stmg_jax.main)")
    return net, stream, params


def check_architecture(net_vars: dict, net: SegNetConfig, image_size: tuple[int, int] = (64, 64)) -> None:
    """Raise CheckpointError unless `net_vars` has exactly the parameter tree and shapes of
    SegNet(net) (names the first missing, extra or mis-shaped parameter)."""
    want = jax.eval_shape(SegNet(net).init, jax.random.key(0), jnp.zeros((1, *image_size, 3)))
    mismatch = tree_mismatch(net_vars, want, "the config's network")
    if mismatch:
        raise CheckpointError(f"{mismatch}: the checkpoint is of another architecture")


def check_generators(gen_vars: dict, net: SegNetConfig, stream: StreamConfig) -> None:
    """Raise CheckpointError unless `gen_vars` are exactly the generators `init_generators` makes
    for (net, stream): one per gateable block (which depends on `gate_downsampling`), with its
    stage's bin count and width."""
    want = jax.eval_shape(lambda: init_generators(jax.random.key(0), net, stream))
    mismatch = tree_mismatch(gen_vars, want, "the generators of its network and stream config")
    if mismatch:
        raise CheckpointError(f"generator {mismatch}: the checkpoint's gates were not trained for its "
                              f"network and stream config (gate_downsampling={stream.gate_downsampling})")
