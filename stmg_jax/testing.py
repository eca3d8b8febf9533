"""Random weights for tests and benchmarks, drawn with NumPy (no XLA compile).

`SegNet.init` under jit compiles one threefry stream per parameter, which costs 7-20 s on a busy
2-core CPU; tests only need *some* well-scaled random network. `random_net_variables` takes the
shapes from `jax.eval_shape(SegNet.init)` and draws: conv kernels N(0, 2 / fan_in) (He), affine
scales 1 + N(0, noise) (times `residual_scale` for the last affine of every residual branch) and
affine biases N(0, noise), so that every scale and bias of the network matters in a comparison.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from stmg_jax.config import SegNetConfig
from stmg_jax.model import SegNet


def random_net_variables(config: SegNetConfig, image_size: tuple[int, int], seed: int = 0,
                         noise: float = 0.1, residual_scale: float = 0.3) -> dict:
    shapes = jax.eval_shape(SegNet(config).init, jax.random.key(0), jnp.zeros((1, *image_size, 3)))
    rng = np.random.default_rng(seed)

    def draw(path, s):
        name = jax.tree_util.keystr(path)
        if name.endswith("['kernel']"):
            fan_in = int(np.prod(s.shape[:-1]))
            v = rng.normal(0, np.sqrt(2.0 / fan_in), s.shape)
        elif name.endswith("['scale']"):
            v = 1.0 + noise * rng.normal(size=s.shape)
            if "conv2" in name:
                v = v * residual_scale
        else:
            v = noise * rng.normal(size=s.shape)
        return jnp.asarray(v.astype(np.float32))
    return jax.tree_util.tree_map_with_path(draw, shapes)
