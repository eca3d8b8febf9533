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
from everest_jax.errors import UserError

CONFIG_FILE = "everest.json"


class CheckpointError(UserError, ValueError):
    """A directory that is not a parameter checkpoint of ours."""

    kind = "checkpoint"


def write_params_dir(out_dir: str | os.PathLike, params: dict, meta: dict, meta_file: str) -> pathlib.Path:
    """Write `params` (a nested dict of arrays) as an Orbax tree at <out_dir>/params and `meta`
    (JSON) at <out_dir>/<meta_file>. Shared by EVEREST and STMG parameter checkpoints.

    With sharded jax.Arrays every process must call this (Orbax writes each shard once); the
    JSON file is written by process 0.
    """
    import orbax.checkpoint as ocp

    out_dir = pathlib.Path(out_dir).absolute()
    if jax.process_index() == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    params = jax.tree.map(lambda x: x if isinstance(x, jax.Array) else np.asarray(x), params)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(out_dir / "params", params, force=True)
    if jax.process_index() == 0:
        (out_dir / meta_file).write_text(json.dumps(meta, indent=2))
    return out_dir


def read_params_dir(path: str | os.PathLike, meta_file: str, what: str = "a parameter") -> tuple[dict, dict]:
    """Read a directory written by `write_params_dir` -> (meta, params as NumPy arrays).

    Arrays are restored onto this host's first device, whatever mesh or hosts wrote them; nothing
    is unpickled. A directory without <meta_file> and params/ raises CheckpointError.
    """
    import orbax.checkpoint as ocp

    path = pathlib.Path(path).absolute()
    if not (path / meta_file).is_file() or not (path / "params").is_dir():
        raise CheckpointError(f"{path}: not {what} checkpoint (needs {meta_file} and params/)")
    meta = json.loads((path / meta_file).read_text())
    with ocp.StandardCheckpointer() as ckptr:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                              ckptr.metadata(path / "params").item_metadata.tree)
        params = ckptr.restore(path / "params", target)
    return meta, jax.tree.map(np.asarray, params)


def tree_mismatch(got, want, model: str = "the model", partial: bool = False) -> str | None:
    """The first difference between two parameter trees (paths and shapes; arrays or
    ShapeDtypeStructs) in words, or None when they match (`partial`: `got` may lack leaves)."""
    shapes = lambda tree: {jax.tree_util.keystr(p): tuple(getattr(x, "shape", np.shape(x)))  # noqa: E731
                           for p, x in jax.tree_util.tree_leaves_with_path(tree)}
    got, want = shapes(got), shapes(want)
    for key in sorted(set(want) | set(got)):
        if key not in got:
            if partial:
                continue
            return f"parameter {key} is missing"
        if key not in want:
            return f"parameter {key} is not in {model}"
        if got[key] != want[key]:
            return f"parameter {key} has shape {got[key]}, {model} needs {want[key]}"
    return None


def save_params(out_dir: str | os.PathLike, params: dict, config: ModelConfig, kind: str,
                source: str = "") -> pathlib.Path:
    """Write `params` and `config`; kind is "pretrain" or "classifier"."""
    return write_params_dir(out_dir, params, {"kind": kind, "source": str(source), "model": config.to_dict()},
                            CONFIG_FILE)


def load_params(path: str | os.PathLike) -> tuple[ModelConfig, str, dict]:
    """Read a directory written by `save_params` -> (config, kind, params)."""
    meta, params = read_params_dir(path, CONFIG_FILE)
    return ModelConfig.from_dict(meta["model"]), meta["kind"], params


class TrainCheckpointer:
    """Periodic train-state checkpoints with the data iterator's state saved beside them.

    Layout: <workdir>/checkpoints/<step>/{state, data}. `state` is any pytree of jax.Arrays (the
    TrainState), restored onto the shardings of the abstract target given to `restore`, so a run
    can resume on another mesh or device count. `data` is a Grain iterator state (one JSON file
    per process), so a resumed run reads exactly the batches it would have read.
    """

    def __init__(self, directory: str | os.PathLike, every_steps: int, keep: int, async_save: bool = True):
        import grain
        import orbax.checkpoint as ocp

        self._ocp, self._grain = ocp, grain
        self.every_steps = every_steps
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                               save_interval_steps=1)
        self.manager = ocp.CheckpointManager(
            pathlib.Path(directory).absolute(), options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(), "data": grain.checkpoint.CheckpointHandler()})

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def should_save(self, step: int) -> bool:
        return step % self.every_steps == 0

    def save(self, step: int, state, data_iterator) -> None:
        args = self._ocp.args.Composite(state=self._ocp.args.StandardSave(state),
                                        data=self._grain.checkpoint.CheckpointSave(data_iterator))
        self.manager.save(step, args=args, force=True)

    def restore(self, step: int, abstract_state, data_iterator):
        """Restore `state` onto the shardings of `abstract_state` and the iterator in place."""
        args = self._ocp.args.Composite(state=self._ocp.args.StandardRestore(abstract_state),
                                        data=self._grain.checkpoint.CheckpointRestore(data_iterator))
        return self.manager.restore(step, args=args)["state"]

    def restore_state(self, step: int, abstract_state=None):
        """Restore only the train state (e.g. to initialise another run from it); without a target,
        as arrays on this host's first device."""
        if abstract_state is None:
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            tree = self.manager.item_metadata(step)["state"]
            tree = getattr(tree, "tree", tree)
            abstract_state = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
        args = self._ocp.args.Composite(state=self._ocp.args.StandardRestore(abstract_state))
        return self.manager.restore(step, args=args)["state"]

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
