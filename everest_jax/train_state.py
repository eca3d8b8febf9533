"""The train state, created already sharded.

`create_sharded_state` never materialises an unsharded copy: shapes and logical axes come from
`jax.eval_shape`, shardings from the mesh rules, and `jax.jit(init, out_shardings=...)` creates
the parameters and optimizer state directly on their devices.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from everest_jax import sharding


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimizer steps taken
    params: Any
    opt_state: Any
    nonfinite_steps: jax.Array  # int32 scalar: steps whose update was skipped (non-finite)


def state_shardings(init_params: Callable[[], Any], tx: optax.GradientTransformation, mesh: Mesh,
                    rules) -> tuple[Any, Any]:
    """(abstract boxed params, TrainState of NamedShardings) for `init_params` and `tx`."""
    boxed = jax.eval_shape(init_params)
    param_shardings = sharding.logical_shardings(boxed, mesh, rules)
    abstract_params = nn.unbox(boxed)
    abstract_opt = jax.eval_shape(tx.init, abstract_params)
    # Optimizer leaves shaped like a parameter share its sharding; scalars (counts) are replicated.
    replicated = NamedSharding(mesh, P())
    opt_shardings = _match_param_shardings(abstract_opt, abstract_params, param_shardings, replicated)
    return boxed, TrainState(step=replicated, params=param_shardings, opt_state=opt_shardings,
                             nonfinite_steps=replicated)


def _match_param_shardings(opt_tree, params, param_shardings, replicated):
    """Map each optimizer-state subtree with the parameters' structure to their shardings."""
    params_struct = jax.tree.structure(params)

    def is_param_like(x):
        try:
            return jax.tree.structure(x) == params_struct
        except Exception:  # noqa: BLE001 - leaves of unusual types
            return False

    def assign(x):
        if is_param_like(x):
            return param_shardings
        return jax.tree.map(lambda _: replicated, x)

    return jax.tree.map(assign, opt_tree, is_leaf=is_param_like)


def create_sharded_state(init_params: Callable[[], Any], tx: optax.GradientTransformation, mesh: Mesh,
                         rules, params: Any | None = None) -> tuple[TrainState, TrainState]:
    """Initialise (or place given `params`) and the optimizer state directly on the mesh.

    Returns (state, shardings).
    """
    _, shardings = state_shardings(init_params, tx, mesh, rules)

    def init(p):
        p = nn.unbox(init_params()) if p is None else p
        return TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p),
                          nonfinite_steps=jnp.zeros((), jnp.int32))

    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        if params is None:
            state = jax.jit(lambda: init(None), out_shardings=shardings)()
        else:
            params = jax.device_put(params, shardings.params)
            state = jax.jit(init, in_shardings=(shardings.params,), out_shardings=shardings)(params)
    return state, shardings


def bytes_per_device(tree: Any) -> dict[jax.Device, int]:
    """Bytes of `tree`'s array shards held by each device."""
    out: dict[jax.Device, int] = {}
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            out[shard.device] = out.get(shard.device, 0) + shard.data.nbytes
    return out
