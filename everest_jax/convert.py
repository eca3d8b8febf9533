"""Import official VideoMAE/EVEREST and Hugging Face VideoMAE checkpoints.

Three source layouts are recognised from their keys:

* ``official_pretrain``: the VideoMAE/EVEREST pre-training release (``encoder.patch_embed.proj``,
  ``encoder.blocks.{i}.attn.qkv`` fused with ``q_bias``/``v_bias``, ``encoder.norm``,
  ``encoder_to_decoder``, ``mask_token``, ``decoder.blocks.{i}``, ``decoder.norm``, ``decoder.head``);
* ``official_finetune``: the fine-tuned release (``patch_embed.proj``, ``blocks.{i}``, ``fc_norm``,
  ``head``);
* ``hf``: Hugging Face ``transformers`` ``VideoMAEForPreTraining`` / ``VideoMAEForVideoClassification``
  / ``VideoMAEModel`` state dicts.

Files are read without executing pickled code: ``.safetensors`` with safetensors, ``.pth``/``.bin``
with ``torch.load(weights_only=True)`` (torch is needed only for those). The converted parameters
are checked leaf by leaf against the shapes our model builds for the given `ModelConfig`, and
written with `everest_jax.checkpoint.save_params` (Orbax tree + model config), which
`everest_jax.checkpoint.load_params` reads back.

Command line::

    python -m everest_jax.convert SRC OUT --size B --num_frames 16 --image_size 224
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import re
import warnings
from typing import Any, Mapping

import flax.linen as nn
import jax
import numpy as np

from everest_jax import cli
from everest_jax.checkpoint import save_params
from everest_jax.errors import UserError
from everest_jax.config import SIZES, ModelConfig
from everest_jax.models import Classifier, PretrainingModel, stack_blocks

# Fixed sinusoidal tables and bookkeeping buffers: not parameters of ours.
IGNORED = re.compile(r"(^|\.)(pos_embed|position_embeddings|num_batches_tracked)$")


class ConvertError(UserError, ValueError):
    """The file is not a checkpoint we can convert; the message says why."""

    kind = "checkpoint"


# ---- reading ---------------------------------------------------------------------------------


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a checkpoint file into {name: float32 numpy array}, never unpickling arbitrary objects."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        try:
            raw = load_file(str(path))
        except Exception as e:  # safetensors raises its own error types
            raise ConvertError(f"{path}: not a readable safetensors file ({e})") from e
    else:
        try:
            import torch
        except ImportError as e:
            raise ConvertError(f"{path}: reading .pth/.bin checkpoints needs PyTorch "
                               "(pip install torch), or convert the file to .safetensors") from e
        try:
            with warnings.catch_warnings():  # torch warns about pickle protocols before failing
                warnings.simplefilter("ignore")
                raw = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # UnpicklingError for anything that is not plain tensors/containers
            # The unpickler's own reason only: torch's message goes on to suggest weights_only=False,
            # which would unpickle (run) whatever the file holds.
            found = re.search(r"WeightsUnpickler error:\s*(.+)", str(e))
            reason = (found.group(1) if found else str(e).splitlines()[0]).split(" (Could this")[0].strip()
            raise ConvertError(f"{path}: refused to load: not a plain tensor checkpoint (torch's weights-only "
                               f"loader: {reason}); nothing is unpickled") from e
    return _as_state_dict(raw, path)


def _as_state_dict(raw: Any, path: pathlib.Path) -> dict[str, np.ndarray]:
    if isinstance(raw, Mapping):
        for wrapper in ("model", "module", "state_dict", "model_state"):
            if wrapper in raw and isinstance(raw[wrapper], Mapping):
                raw = raw[wrapper]
                break
    if not isinstance(raw, Mapping) or not raw:
        raise ConvertError(f"{path}: not a state dict (found {type(raw).__name__}); expected a mapping "
                           "of parameter names to tensors, possibly under 'model'")
    out = {}
    for k, v in raw.items():
        if not isinstance(k, str) or not hasattr(v, "shape"):
            raise ConvertError(f"{path}: not a state dict: entry {k!r} is a {type(v).__name__}, not a tensor")
        if hasattr(v, "detach"):  # torch tensor
            v = v.detach().float().numpy()
        out[k] = np.asarray(v, dtype=np.float32)
    return out


def detect_layout(sd: Mapping[str, Any]) -> str:
    if any(k.startswith("videomae.") or k.startswith("embeddings.patch_embeddings") for k in sd):
        return "hf"
    if "encoder.patch_embed.proj.weight" in sd:
        return "official_pretrain"
    if "patch_embed.proj.weight" in sd:
        return "official_finetune"
    raise ConvertError("unrecognised checkpoint layout: expected official VideoMAE/EVEREST keys "
                       "('encoder.patch_embed.proj.weight' or 'patch_embed.proj.weight') or Hugging Face "
                       f"VideoMAE keys ('videomae.embeddings...'); first keys: {sorted(sd)[:5]}")


# ---- mapping ---------------------------------------------------------------------------------


class _Reader:
    """Takes tensors out of a state dict by name and remembers which ones were used."""

    def __init__(self, sd: Mapping[str, np.ndarray]):
        self.sd, self.used = sd, set()

    def has(self, key):
        return key in self.sd

    def __call__(self, key):
        if key not in self.sd:
            raise ConvertError(f"missing key {key!r} in checkpoint")
        self.used.add(key)
        return self.sd[key]

    def linear(self, prefix, bias=True):
        out = {"kernel": self(prefix + ".weight").T}
        if bias:
            out["bias"] = self(prefix + ".bias")
        return out

    def norm(self, prefix):
        return {"scale": self(prefix + ".weight"), "bias": self(prefix + ".bias")}

    def unused(self):
        return sorted(k for k in self.sd if k not in self.used and not IGNORED.search(k))


def _attention(q, k, v, qb, vb, out_w, out_b, heads):
    d = q.shape[1]
    hd = d // heads

    def split(w):  # torch (out, in) -> (in, heads, head_dim)
        return w.T.reshape(d, heads, hd)

    zeros = np.zeros((heads, hd), np.float32)
    return {
        "query": {"kernel": split(q), "bias": zeros if qb is None else qb.reshape(heads, hd)},
        "key": {"kernel": split(k)},
        "value": {"kernel": split(v), "bias": zeros if vb is None else vb.reshape(heads, hd)},
        "out": {"kernel": out_w.T.reshape(heads, hd, d), "bias": out_b},
    }


def _official_block(r: _Reader, p: str, heads: int) -> dict:
    q, k, v = np.split(r(p + "attn.qkv.weight"), 3, axis=0)
    get = lambda key: r(p + key) if r.has(p + key) else None  # noqa: E731  qkv_bias=False variants
    return {
        "norm1": r.norm(p + "norm1"), "norm2": r.norm(p + "norm2"),
        "attn": _attention(q, k, v, get("attn.q_bias"), get("attn.v_bias"),
                           r(p + "attn.proj.weight"), r(p + "attn.proj.bias"), heads),
        "mlp": {"fc1": r.linear(p + "mlp.fc1"), "fc2": r.linear(p + "mlp.fc2")},
    }


def _hf_block(r: _Reader, p: str, heads: int) -> dict:
    a = p + "attention.attention."
    if r.has(a + "key.bias") and np.any(r(a + "key.bias") != 0):
        raise ConvertError(f"{a}key.bias is non-zero; VideoMAE attention has no key bias")
    qb = r(a + "query.bias") if r.has(a + "query.bias") else (r(a + "q_bias") if r.has(a + "q_bias") else None)
    vb = r(a + "value.bias") if r.has(a + "value.bias") else (r(a + "v_bias") if r.has(a + "v_bias") else None)
    return {
        "norm1": r.norm(p + "layernorm_before"), "norm2": r.norm(p + "layernorm_after"),
        "attn": _attention(r(a + "query.weight"), r(a + "key.weight"), r(a + "value.weight"), qb, vb,
                           r(p + "attention.output.dense.weight"), r(p + "attention.output.dense.bias"), heads),
        "mlp": {"fc1": r.linear(p + "intermediate.dense"), "fc2": r.linear(p + "output.dense")},
    }


def _blocks(r: _Reader, prefix: str, block_fn, heads: int) -> dict:
    depth = len({m.group(1) for k in r.sd for m in [re.match(re.escape(prefix) + r"(\d+)\.", k)] if m})
    return {f"block_{i}": block_fn(r, f"{prefix}{i}.", heads) for i in range(depth)}


def _patch_embed(w, b):
    # Conv3d (out, in, t, h, w) -> flax (t, h, w, in, out)
    return {"proj": {"kernel": np.transpose(w, (2, 3, 4, 1, 0)), "bias": b}}


def convert_state_dict(sd: Mapping[str, np.ndarray], config: ModelConfig) -> tuple[str, dict]:
    """Map a state dict to our parameter tree for `config`.

    Returns:
      (kind, params): kind is "pretrain" (a `PretrainingModel` tree) or "classifier" (a
      `Classifier` tree, or an encoder only when the source has no head); params is a nested dict
      of numpy arrays in the per-layer layout (scanned configs get stacked blocks).
    Raises:
      ConvertError for an unknown layout, missing keys, unexpected keys or mismatched shapes.
    """
    layout = detect_layout(sd)
    r = _Reader(sd)
    if layout == "hf":
        pre = "videomae." if any(k.startswith("videomae.") for k in sd) else ""
        encoder = {
            "patch_embed": _patch_embed(r(pre + "embeddings.patch_embeddings.projection.weight"),
                                        r(pre + "embeddings.patch_embeddings.projection.bias")),
            "transformer": _blocks(r, pre + "encoder.layer.", _hf_block, config.num_heads),
        }
        if r.has(pre + "layernorm.weight"):
            encoder["norm"] = r.norm(pre + "layernorm")
        if r.has("decoder.head.weight"):
            kind, params = "pretrain", {
                "encoder": encoder,
                "encoder_to_decoder": r.linear("encoder_to_decoder", bias=False),
                "mask_token": r("mask_token"),
                "decoder": _blocks(r, "decoder.decoder_layers.", _hf_block, config.decoder_heads),
                "decoder_norm": r.norm("decoder.norm"),
                "decoder_head": r.linear("decoder.head"),
            }
        else:
            kind, params = "classifier", {"encoder": encoder}
            if r.has("fc_norm.weight"):
                params["fc_norm"] = r.norm("fc_norm")
            if r.has("classifier.weight"):
                params["head"] = r.linear("classifier")
    elif layout == "official_pretrain":
        kind, params = "pretrain", {
            "encoder": {
                "patch_embed": _patch_embed(r("encoder.patch_embed.proj.weight"), r("encoder.patch_embed.proj.bias")),
                "transformer": _blocks(r, "encoder.blocks.", _official_block, config.num_heads),
                "norm": r.norm("encoder.norm"),
            },
            "encoder_to_decoder": r.linear("encoder_to_decoder", bias=False),
            "mask_token": r("mask_token"),
            "decoder": _blocks(r, "decoder.blocks.", _official_block, config.decoder_heads),
            "decoder_norm": r.norm("decoder.norm"),
            "decoder_head": r.linear("decoder.head"),
        }
    else:
        encoder = {
            "patch_embed": _patch_embed(r("patch_embed.proj.weight"), r("patch_embed.proj.bias")),
            "transformer": _blocks(r, "blocks.", _official_block, config.num_heads),
        }
        if r.has("norm.weight"):
            encoder["norm"] = r.norm("norm")
        kind, params = "classifier", {"encoder": encoder}
        if r.has("fc_norm.weight"):
            params["fc_norm"] = r.norm("fc_norm")
        if r.has("head.weight"):
            params["head"] = r.linear("head")
    unused = r.unused()
    if unused:
        raise ConvertError(f"{len(unused)} unexpected key(s) in a {layout} checkpoint, e.g. {unused[:5]}")
    _check_shapes(kind, params, config)
    if config.scan:
        params = stack_blocks(params)
    return kind, params


def _check_shapes(kind: str, params: dict, config: ModelConfig) -> None:
    """Compare every converted leaf with the shape our model builds for `config`."""
    per_layer = dataclasses.replace(config, scan=False)
    if kind == "classifier":
        per_layer = dataclasses.replace(per_layer, use_mean_pooling="fc_norm" in params,
                                        num_classes=params["head"]["bias"].shape[0] if "head" in params else 1)
        model = Classifier(per_layer)
    else:
        model = PretrainingModel(per_layer)
    video = jax.ShapeDtypeStruct((1, config.num_frames, *config.image_size, config.in_channels), np.float32)
    rngs = {"params": jax.random.key(0), "masking": jax.random.key(0)}
    expected = nn.unbox(jax.eval_shape(model.init, rngs, video))["params"]
    if "head" not in params and kind == "classifier":
        expected.pop("head", None)
    want = {jax.tree_util.keystr(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(expected)}
    got = {jax.tree_util.keystr(p): tuple(x.shape) for p, x in jax.tree_util.tree_leaves_with_path(params)}
    for path in sorted(set(want) | set(got)):
        if want.get(path) != got.get(path):
            raise ConvertError(
                f"checkpoint does not fit the model config at {path}: checkpoint {got.get(path)}, model "
                f"{want.get(path)} (check --size/--num_heads/--tubelet_size/--patch_size/--num_frames/--image_size)")


def hf_model_config(hf_config: Mapping[str, Any], **overrides) -> ModelConfig:
    """Our ModelConfig for a Hugging Face `VideoMAEConfig` (as a dict, e.g. its config.json)."""
    c = dict(hf_config)
    width = c["hidden_size"]
    decoder_width = c.get("decoder_hidden_size", 384)
    kwargs = dict(
        size="B", num_frames=c.get("num_frames", 16), image_size=c.get("image_size", 224),
        tubelet_size=c.get("tubelet_size", 2), patch_size=c.get("patch_size", 16),
        in_channels=c.get("num_channels", 3), width=width, depth=c["num_hidden_layers"],
        num_heads=c["num_attention_heads"], mlp_ratio=c.get("intermediate_size", 4 * width) / width,
        decoder_width=decoder_width, decoder_depth=c.get("decoder_num_hidden_layers", 4),
        decoder_heads=c.get("decoder_num_attention_heads", 6),
        norm_eps=c.get("layer_norm_eps", 1e-12), head_norm_eps=1e-5,  # torch nn.LayerNorm default
        use_mean_pooling=c.get("use_mean_pooling", True),
        num_classes=len(c.get("id2label") or {}) if c.get("id2label") else 0)
    kwargs.update(overrides)
    return ModelConfig(**kwargs)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m everest_jax.convert", description=__doc__.split("\n\n")[0])
    p.add_argument("src", help="checkpoint file: .pth / .bin (official or HF) or .safetensors")
    p.add_argument("out", help="output directory (Orbax checkpoint + everest.json)")
    p.add_argument("--size", default=None, choices=sorted(SIZES),
                   help="model size; default: from the checkpoint's width (S/B/L/H)")
    p.add_argument("--hf_config", default=None, help="Hugging Face config.json to take the shapes from")
    p.add_argument("--num_frames", type=int, default=16)
    p.add_argument("--image_size", type=int, default=224)
    p.add_argument("--tubelet_size", type=int, default=None, help="default: from the patch embedding")
    p.add_argument("--patch_size", type=int, default=None, help="default: from the patch embedding")
    p.add_argument("--num_heads", type=int, default=None)
    p.add_argument("--decoder_heads", type=int, default=None)
    p.add_argument("--scan", action="store_true", help="write stacked (scanned) blocks")
    args = p.parse_args(argv)

    try:
        sd = load_state_dict(args.src)
        layout = detect_layout(sd)
        overrides = {k: getattr(args, k) for k in ("num_heads", "decoder_heads") if getattr(args, k)}
        if args.hf_config:
            config = hf_model_config(json.loads(pathlib.Path(args.hf_config).read_text()), scan=args.scan,
                                     **overrides)
        else:
            config = _infer_config(sd, layout, args, overrides)
        kind, params = convert_state_dict(sd, config)
        if kind == "classifier" and "head" in params:
            config = dataclasses.replace(config, num_classes=int(params["head"]["bias"].shape[0]),
                                         use_mean_pooling="fc_norm" in params)
        out = save_params(args.out, params, config, kind, args.src)
    except UserError as e:
        raise cli.fail(f"{e.kind} error: {e}") from None
    except ValueError as e:  # shapes or values the network cannot take
        raise cli.fail(f"checkpoint error: {e}") from None
    n = sum(x.size for x in jax.tree.leaves(params))
    print(f"converted {layout} checkpoint ({kind}, {n / 1e6:.1f}M parameters, size {config.size}, "
          f"width {config.width}, depth {config.depth}) -> {out}")


def _infer_config(sd, layout, args, overrides) -> ModelConfig:
    key = {"hf": next((k for k in sd if k.endswith("patch_embeddings.projection.weight")), None),
           "official_pretrain": "encoder.patch_embed.proj.weight",
           "official_finetune": "patch_embed.proj.weight"}[layout]
    width, _, tubelet, patch, _ = sd[key].shape
    size = args.size or next((name for name, s in SIZES.items() if s["width"] == width), None)
    if size is None:
        raise ConvertError(f"no named size has width {width}; pass --size and --num_heads")
    enc = "encoder.layer." if layout == "hf" else ("encoder.blocks." if layout == "official_pretrain" else "blocks.")
    depth = len({k.split(enc)[1].split(".")[0] for k in sd if enc in k and not k.startswith("decoder")})
    fc1 = next(v for k, v in sd.items() if re.search(r"(mlp\.fc1|intermediate\.dense)\.weight$", k))
    kwargs = dict(size=size, num_frames=args.num_frames, image_size=args.image_size, scan=args.scan,
                  tubelet_size=args.tubelet_size or tubelet, patch_size=args.patch_size or patch,
                  width=width, depth=depth, mlp_ratio=fc1.shape[0] / width)
    if layout == "hf":
        kwargs.update(norm_eps=1e-12, head_norm_eps=1e-5)
    dec_key = "decoder.head.weight"
    if dec_key in sd:
        kwargs["decoder_width"] = sd[dec_key].shape[1]
        dec = "decoder.decoder_layers." if layout == "hf" else "decoder.blocks."
        kwargs["decoder_depth"] = len({k.split(dec)[1].split(".")[0] for k in sd if k.startswith(dec)})
    kwargs.update(overrides)
    return ModelConfig(**kwargs)


if __name__ == "__main__":
    main()
