"""Parameter checkpoints: an Orbax tree at <dir>/params plus the model config at <dir>/everest.json.

Written by the checkpoint converter and by runs that finish; read by anything that initialises a
model from weights. (Periodic train-state checkpoints with resume are the trainer's business.)
"""

from __future__ import annotations

import json
import os
import pathlib

import jax
import numpy as np

from everest_jax.config import ModelConfig

CONFIG_FILE = "everest.json"


class CheckpointError(ValueError):
    """A directory that is not a parameter checkpoint of ours."""


def save_params(out_dir: str | os.PathLike, params: dict, config: ModelConfig, kind: str,
                source: str = "") -> pathlib.Path:
    """Write `params` (a nested dict of arrays) and `config`; kind is "pretrain" or "classifier"."""
    import orbax.checkpoint as ocp

    out_dir = pathlib.Path(out_dir).absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(out_dir / "params", jax.tree.map(np.asarray, params), force=True)
    meta = {"kind": kind, "source": str(source), "model": config.to_dict()}
    (out_dir / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    return out_dir


def load_params(path: str | os.PathLike) -> tuple[ModelConfig, str, dict]:
    """Read a directory written by `save_params` -> (config, kind, params)."""
    import orbax.checkpoint as ocp

    path = pathlib.Path(path).absolute()
    if not (path / CONFIG_FILE).is_file() or not (path / "params").is_dir():
        raise CheckpointError(f"{path}: not a parameter checkpoint (needs {CONFIG_FILE} and params/)")
    meta = json.loads((path / CONFIG_FILE).read_text())
    config = ModelConfig.from_dict(meta["model"])
    with ocp.StandardCheckpointer() as ckptr:
        params = ckptr.restore(path / "params")
    return config, meta["kind"], params
