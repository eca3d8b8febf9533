"""STMG parameter checkpoints: an Orbax tree at <dir>/params plus <dir>/stmg.json.

Same layout idea as `everest_jax.checkpoint` (whose `save_params`/`load_params` are tied to the
EVEREST `ModelConfig`, so they cannot store a `SegNetConfig`). stmg.json holds
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

from stmg_jax.config import SegNetConfig, StreamConfig
from stmg_jax.model import SegNet

CONFIG_FILE = "stmg.json"


class CheckpointError(ValueError):
    """Not an STMG checkpoint, or one of another architecture."""


def save_params(out_dir: str | os.PathLike, params: dict, net: SegNetConfig,
                stream: StreamConfig | None = None) -> pathlib.Path:
    import orbax.checkpoint as ocp

    out_dir = pathlib.Path(out_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    params = jax.tree.map(np.asarray, params)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(out_dir / "params", params, force=True)
    meta = {"kind": "stmg", "net": dataclasses.asdict(net),
            "stream": dataclasses.asdict(stream) if stream is not None else None,
            "has_generators": "gen" in params}
    (out_dir / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    return out_dir


def load_params(path: str | os.PathLike) -> tuple[SegNetConfig, StreamConfig | None, dict]:
    """-> (net config, stream config or None, params {'net': ..., ['gen': ...]}) as NumPy arrays."""
    import orbax.checkpoint as ocp

    path = pathlib.Path(path).absolute()
    if not (path / CONFIG_FILE).is_file() or not (path / "params").is_dir():
        raise CheckpointError(f"{path}: not an STMG checkpoint (needs {CONFIG_FILE} and params/)")
    meta = json.loads((path / CONFIG_FILE).read_text())
    if meta.get("kind") != "stmg":
        raise CheckpointError(f"{path}/{CONFIG_FILE}: kind {meta.get('kind')!r} is not 'stmg'")
    net = SegNetConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["net"].items()})
    stream = None
    if meta.get("stream"):
        s = meta["stream"]
        s["bin_grid"] = tuple(tuple(g) for g in s["bin_grid"])
        s["capacities"] = tuple(s["capacities"])
        stream = StreamConfig(**s)
    with ocp.StandardCheckpointer() as ckptr:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                              ckptr.metadata(path / "params").item_metadata.tree)
        params = ckptr.restore(path / "params", target)
    params = jax.tree.map(np.asarray, params)
    check_architecture(params["net"], net)
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
