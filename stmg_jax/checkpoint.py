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
import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from everest_jax import checkpoint as everest_checkpoint
from everest_jax.checkpoint import read_params_dir, write_params_dir
from stmg_jax.config import SegNetConfig, StreamConfig
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
    flat_want = {jax.tree_util.keystr(p): v.shape for p, v in jax.tree_util.tree_leaves_with_path(want)}
    flat_got = {jax.tree_util.keystr(p): np.shape(v) for p, v in jax.tree_util.tree_leaves_with_path(net_vars)}
    for name in sorted(flat_want):
        if name not in flat_got:
            raise CheckpointError(f"parameter {name} is missing: the checkpoint is of another architecture")
        if tuple(flat_got[name]) != tuple(flat_want[name]):
            raise CheckpointError(f"parameter {name} has shape {tuple(flat_got[name])}, the config's network "
                                  f"needs {tuple(flat_want[name])}: the checkpoint is of another architecture")
    extra = sorted(set(flat_got) - set(flat_want))
    if extra:
        raise CheckpointError(f"parameter {extra[0]} is not in the config's network: the checkpoint is of "
                              "another architecture")
