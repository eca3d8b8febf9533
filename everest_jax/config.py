"""Model configuration: named sizes, shapes and the checks that run before anything compiles.

`ModelConfig` is a frozen dataclass, so a Flax module can hold it as an attribute and jit can
treat it as static. Every shape the model uses (token counts, keep counts) is derived from it
with Python ints, which is what keeps EVEREST's dynamic idea (per-video token sets) static for XLA.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Mapping

from everest_jax.errors import ConfigError
from everest_jax.fields import Float, Int, Is, OneOf

# encoder width/depth/heads; decoder width/heads (VideoMAE/EVEREST releases; "tiny" is ours).
SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(width=64, depth=2, num_heads=2, decoder_width=32, decoder_heads=2),
    "S": dict(width=384, depth=12, num_heads=6, decoder_width=192, decoder_heads=3),
    "B": dict(width=768, depth=12, num_heads=12, decoder_width=384, decoder_heads=6),
    "L": dict(width=1024, depth=24, num_heads=16, decoder_width=512, decoder_heads=8),
    "H": dict(width=1280, depth=32, num_heads=16, decoder_width=640, decoder_heads=8),
}
MASKINGS = ("everest", "tube", "random")
DISTANCES = ("l2", "l1", "cosine", "pixel")  # token scores: embedding distances, or raw pixels (RLT)
ORDERS = ("descending", "ascending")  # keep the most- (EVEREST) or least-changing tokens (ablation)
DTYPES = ("float32", "bfloat16", "float16")
ATTENTIONS = ("auto", "blocked", "xla", "cudnn")  # models/attention.py
_RATIO, _POSITIVE, _DROPOUT = Float(0, 1, lo_open=True), Float(0, lo_open=True), Float(0, 1, hi_open=True)
# Type and range of every ModelConfig field but image_size (normalised by _image_size); the checks
# that relate fields are in ModelConfig.validate.
MODEL_FIELDS = {
    "size": OneOf(tuple(SIZES)), **{name: Int(1) for name in (
        "num_frames", "tubelet_size", "patch_size", "in_channels", "width", "depth", "num_heads",
        "decoder_width", "decoder_depth", "decoder_heads")},
    "mlp_ratio": _POSITIVE, "norm_eps": _POSITIVE, "head_norm_eps": _POSITIVE, "num_classes": Int(0),
    "use_mean_pooling": Is(bool), "head_dropout": _DROPOUT, "head_init_scale": Float(0), "drop_path": _DROPOUT,
    "masking": OneOf(MASKINGS), "selection_distance": OneOf(DISTANCES), "selection_order": OneOf(ORDERS),
    "pretrain_keep_ratio": _RATIO, "visible_ratio": _RATIO, "mask_ratio": _RATIO, "finetune_keep_ratio": _RATIO,
    "dtype": OneOf(DTYPES), "attention": OneOf(ATTENTIONS), "remat": Is(bool), "scan": Is(bool),
}


def release_count(share: float, n: int) -> int:
    """How many of n tokens a share keeps, computed as the official release does.

    The release is parameterised by the share it drops, d (`mask_ratio` 0.9: visible tokens;
    `mcm_ratio` 0.7: kept in pre-training, 0.4: kept in fine-tuning) and evaluates
    `int((1 - d) * n)` in floating point. We take the kept share s and evaluate the same
    expression with d = 1 - s, which equals the release's d for the shares its recipes use
    (0.1, 0.3, 0.6). It can be one less than int(s * n): s = 0.1, n = 800 gives 79, not 80.
    """
    return int((1 - (1 - share)) * n)


def _image_size(value: Any) -> tuple:
    """An int, a 1-tuple (a command-line override of a tuple field) or (height, width) of ints.

    Anything else (None, floats, strings, bools) is refused rather than truncated.
    """
    def is_int(s):
        return isinstance(s, numbers.Integral) and not isinstance(s, bool)

    if is_int(value):
        value = (value, value)
    if not isinstance(value, (tuple, list)) or not all(is_int(s) for s in value):
        raise ConfigError(f"model.image_size={value!r} must be a positive int or (height, width) of ints")
    if len(value) == 1:
        value = (value[0], value[0])
    return tuple(int(s) for s in value)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the network and its static token counts.

    Video input is (B, T, H, W, C) with T = `num_frames`, (H, W) = `image_size`. Tokens are
    tubelets of `tubelet_size` x `patch_size` x `patch_size` pixels, N = T' * H' * W' of them.
    """

    size: str = "B"
    num_frames: int = 16
    image_size: tuple[int, int] = (224, 224)
    tubelet_size: int = 2
    patch_size: int = 16
    in_channels: int = 3
    # Encoder / decoder shape; None takes the value of `size`.
    width: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    mlp_ratio: float = 4.0
    decoder_width: int | None = None
    decoder_depth: int = 4
    decoder_heads: int | None = None
    # LayerNorm eps of the blocks and encoder norm; of the decoder norm and fc_norm.
    # The official release uses 1e-6 everywhere; Hugging Face uses 1e-12 and 1e-5.
    norm_eps: float = 1e-6
    head_norm_eps: float = 1e-6
    # Classifier.
    num_classes: int = 0
    use_mean_pooling: bool = True
    head_dropout: float = 0.0
    head_init_scale: float = 0.001
    drop_path: float = 0.0
    # Token selection (static counts are derived from these ratios by `release_count`).
    masking: str = "everest"  # pre-training: "everest", "tube" (VideoMAE) or "random" (ST-MAE)
    selection_distance: str = "l2"  # token scores (DISTANCES); "l2" is EVEREST
    selection_order: str = "descending"  # "ascending" keeps the least-changing tokens (ablation)
    pretrain_keep_ratio: float = 0.3  # EVEREST rho_pre: share of tokens kept (visible + targets)
    visible_ratio: float = 0.1  # share of all N tokens the encoder sees (EVEREST)
    mask_ratio: float = 0.9  # tube / random masking
    finetune_keep_ratio: float = 0.6  # fine-tuning / inference rho; 1.0 = all tokens
    # Execution.
    dtype: str = "float32"
    attention: str = "auto"  # auto (CPU: blocked; else JAX picks), blocked (models/attention.py), xla, cudnn
    remat: bool = False
    scan: bool = False

    def __post_init__(self):
        object.__setattr__(self, "image_size", _image_size(self.image_size))
        if not MODEL_FIELDS["size"].ok(self.size):
            raise ConfigError(f"model.size={self.size!r} is not a known size; choose one of {sorted(SIZES)}")
        for name, value in SIZES[self.size].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        for name, rule in MODEL_FIELDS.items():
            if not rule.ok(getattr(self, name)):
                raise ConfigError(f"model.{name}={getattr(self, name)!r} must be {rule.describe()}")
        self.validate()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ConfigError(f"model.{unknown[0]} is not a model config field (known: {sorted(fields)})")
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ---- derived shapes -------------------------------------------------------------------
    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid (T', H', W')."""
        h, w = self.image_size
        return (self.num_frames // self.tubelet_size, h // self.patch_size, w // self.patch_size)

    @property
    def num_tokens(self) -> int:
        t, h, w = self.grid
        return t * h * w

    @property
    def tokens_per_step(self) -> int:
        return self.grid[1] * self.grid[2]

    @property
    def patch_dim(self) -> int:
        """Pixels per tubelet times channels: the decoder's output width."""
        return self.tubelet_size * self.patch_size**2 * self.in_channels

    @property
    def mlp_dim(self) -> int:
        return int(self.width * self.mlp_ratio)

    @property
    def attention_impl(self) -> str | None:
        """`attention` as models.attention.dot_product_attention's `implementation` argument."""
        return None if self.attention == "auto" else self.attention

    @property
    def decoder_mlp_dim(self) -> int:
        return int(self.decoder_width * self.mlp_ratio)

    @property
    def pretrain_counts(self) -> tuple[int, int]:
        """(visible V, targets M) per clip for the configured pre-training masking."""
        n = self.num_tokens
        if self.masking == "everest":
            keep, visible = release_count(self.pretrain_keep_ratio, n), release_count(self.visible_ratio, n)
            return visible, keep - visible
        if self.masking == "tube":
            masked_per_step = int(self.mask_ratio * self.tokens_per_step)
            return self.grid[0] * (self.tokens_per_step - masked_per_step), self.grid[0] * masked_per_step
        masked = int(self.mask_ratio * n)
        return n - masked, masked

    @property
    def finetune_keep_count(self) -> int:
        return release_count(self.finetune_keep_ratio, self.num_tokens)

    # ---- validation -----------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ConfigError naming the field(s) for combinations the model cannot run with (each
        field's own type and range: MODEL_FIELDS, checked on construction)."""
        if len(self.image_size) != 2 or min(self.image_size) <= 0:
            raise ConfigError(f"model.image_size={self.image_size!r} must be a positive int or (height, width)")
        if self.mlp_dim < 1:
            raise ConfigError(f"model.mlp_ratio={self.mlp_ratio!r} gives an MLP of {self.mlp_dim} units")
        if self.num_frames % self.tubelet_size:
            raise ConfigError(f"model.num_frames={self.num_frames} is not divisible by "
                              f"model.tubelet_size={self.tubelet_size}")
        for axis, s in zip(("height", "width"), self.image_size):
            if s % self.patch_size:
                raise ConfigError(f"model.image_size {axis} {s} is not divisible by "
                                  f"model.patch_size={self.patch_size}")
        if self.width % self.num_heads:
            raise ConfigError(f"model.width={self.width} is not divisible by model.num_heads={self.num_heads}")
        if self.decoder_width % self.decoder_heads:
            raise ConfigError(f"model.decoder_width={self.decoder_width} is not divisible by "
                              f"model.decoder_heads={self.decoder_heads}")
        motion = self.masking == "everest" or self.finetune_keep_ratio < 1.0
        if motion and self.grid[0] < 2:
            raise ConfigError(
                f"motion-based token selection needs at least 2 time steps, but model.num_frames="
                f"{self.num_frames} / model.tubelet_size={self.tubelet_size} gives {self.grid[0]}")
        if self.masking == "everest":
            visible, targets = self.pretrain_counts
            if visible < 1 or targets < 1:
                raise ConfigError(
                    f"model.pretrain_keep_ratio={self.pretrain_keep_ratio} and model.visible_ratio="
                    f"{self.visible_ratio} give {visible} visible and {targets} target tokens of "
                    f"{self.num_tokens}; both must be >= 1 (visible_ratio must be < pretrain_keep_ratio)")
        else:
            visible, targets = self.pretrain_counts
            if visible < 1 or targets < 1:
                raise ConfigError(f"model.mask_ratio={self.mask_ratio} leaves {visible} visible and "
                                  f"{targets} masked tokens; both must be >= 1")
        if self.finetune_keep_count < 1:
            raise ConfigError(f"model.finetune_keep_ratio={self.finetune_keep_ratio} keeps no token of "
                              f"{self.num_tokens}")
