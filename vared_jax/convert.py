"""torchvision `r2plus1d_18` (or any `VideoResNet` with `Conv2Plus1D` blocks) -> dense param tree.

Each BatchNorm (running mean/var, weight, bias, eps) is folded into the following affine:
scale = weight / sqrt(var + eps), bias = bias - mean * scale. Conv weights (O, I, kt, kh, kw)
-> (kt, kh, kw, I, O); fc (N, C) -> kernel (C, N). Use `model.merge_params` to put the result
into a VA-RED² tree.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from everest_jax.errors import UserError
from vared_jax.model import R2Plus1DConfig, block_specs, midplanes


class StateDictError(UserError, ValueError):
    """A state dict that does not match the config; the message names the key."""

    kind = "checkpoint"


def _np(v) -> np.ndarray:
    return v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)


def torch_layout(config: R2Plus1DConfig) -> dict[str, tuple[str, str]]:
    """Our conv name -> (torch conv weight key, torch BN prefix)."""
    out = {"stem_s": ("stem.0.weight", "stem.1"), "stem_t": ("stem.3.weight", "stem.4")}
    for name, cin, cout, st in block_specs(config):
        p = name.replace("_", ".")  # layer<s>_<b> -> torch layer<s>.<b>
        out[f"{name}_conv1_s"] = (f"{p}.conv1.0.0.weight", f"{p}.conv1.0.1")
        out[f"{name}_conv1_t"] = (f"{p}.conv1.0.3.weight", f"{p}.conv1.1")
        out[f"{name}_conv2_s"] = (f"{p}.conv2.0.0.weight", f"{p}.conv2.0.1")
        out[f"{name}_conv2_t"] = (f"{p}.conv2.0.3.weight", f"{p}.conv2.1")
        if st != 1 or cin != cout:
            out[f"{name}_proj"] = (f"{p}.downsample.0.weight", f"{p}.downsample.1")
    return out


def from_torchvision(state: Any, config: R2Plus1DConfig | None = None, eps: float = 1e-5) -> dict:
    """torch state dict (or module) -> {"stem_s": {kernel, scale, bias}, ..., "fc": {kernel, bias}}.

    `config` defaults to r2plus1d_18 with num_classes from `fc.weight`. Missing, unexpected or
    mis-shaped keys raise `StateDictError` naming the key.
    """
    sd: Mapping[str, Any] = state.state_dict() if hasattr(state, "state_dict") else state
    if "fc.weight" not in sd:
        raise StateDictError("state dict has no key 'fc.weight'")
    if config is None:
        config = R2Plus1DConfig.r2plus1d_18(int(sd["fc.weight"].shape[0]))
    used, params = set(), {}

    def get(key, shape):
        if key not in sd:
            raise StateDictError(f"state dict is missing key {key!r} (expected shape {shape})")
        v = _np(sd[key]).astype(np.float32)
        if tuple(v.shape) != tuple(shape):
            raise StateDictError(f"state dict key {key!r} has shape {tuple(v.shape)}, expected {tuple(shape)}")
        used.add(key)
        return v

    shapes = {"stem_s": (3, config.stem_widths[0], (1, 7, 7)),
              "stem_t": (config.stem_widths[0], config.stem_widths[1], (3, 1, 1))}
    for name, cin, cout, st in block_specs(config):
        mid = midplanes(cin, cout)
        shapes.update({f"{name}_conv1_s": (cin, mid, (1, 3, 3)), f"{name}_conv1_t": (mid, cout, (3, 1, 1)),
                       f"{name}_conv2_s": (cout, mid, (1, 3, 3)), f"{name}_conv2_t": (mid, cout, (3, 1, 1)),
                       f"{name}_proj": (cin, cout, (1, 1, 1))})
    for ours, (wkey, bn) in torch_layout(config).items():
        cin, cout, k = shapes[ours]
        w = get(wkey, (cout, cin, *k))
        gamma, beta = get(f"{bn}.weight", (cout,)), get(f"{bn}.bias", (cout,))
        mean, var = get(f"{bn}.running_mean", (cout,)), get(f"{bn}.running_var", (cout,))
        if f"{bn}.num_batches_tracked" in sd:
            used.add(f"{bn}.num_batches_tracked")
        scale = gamma / np.sqrt(var + eps)
        params[ours] = {"kernel": np.ascontiguousarray(w.transpose(2, 3, 4, 1, 0)), "scale": scale,
                        "bias": beta - mean * scale}
    params["fc"] = {"kernel": get("fc.weight", (config.num_classes, config.widths[3])).T.copy(),
                    "bias": get("fc.bias", (config.num_classes,))}
    extra = sorted(set(sd) - used)
    if extra:
        raise StateDictError(f"state dict has unexpected key {extra[0]!r} ({len(extra)} unexpected in all)")
    return params
