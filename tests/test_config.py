"""ModelConfig: every invalid field is refused with a ConfigError naming it, before anything is
traced or compiled; valid non-default shapes give the right derived token counts."""

import dataclasses
import math

import flax.linen as nn
import jax
import pytest

from everest_jax import ConfigError, ModelConfig
from everest_jax.config import SIZES
from everest_jax.models import Classifier, PretrainingModel

TINY = dict(size="tiny")  # small widths, so only the field under test is wrong


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


# (overrides, regex the message must contain: the field's name)
INVALID = {
    "unknown size": (dict(size="XL"), r"model\.size"),
    "size None": (dict(size=None), r"model\.size"),
    "image 225 not divisible by 16": (dict(image_size=225), r"model\.image_size.*225.*patch_size"),
    "image width not divisible": (dict(image_size=(224, 230)), r"model\.image_size width 230"),
    "image height not divisible": (dict(image_size=(100, 224)), r"model\.image_size height 100"),
    "image patch too large": (dict(image_size=16, patch_size=32), r"model\.image_size"),
    "frames not divisible by tubelet": (dict(num_frames=15), r"model\.num_frames=15.*model\.tubelet_size=2"),
    "frames not divisible by tubelet 3": (dict(tubelet_size=3),
                                          r"model\.num_frames=16.*model\.tubelet_size=3"),
    "width vs heads": (dict(TINY, width=65), r"model\.width=65.*model\.num_heads=2"),
    "heads vs width": (dict(TINY, num_heads=3), r"model\.width=64.*model\.num_heads=3"),
    "B width vs heads": (dict(num_heads=7), r"model\.num_heads=7"),
    "decoder width vs heads": (dict(TINY, decoder_width=33),
                               r"model\.decoder_width=33.*model\.decoder_heads=2"),
    "decoder heads vs width": (dict(TINY, decoder_heads=5), r"model\.decoder_heads=5"),
    "dtype float64": (dict(TINY, dtype="float64"), r"model\.dtype"),
    "dtype typo": (dict(TINY, dtype="bf16"), r"model\.dtype"),
    "masking": (dict(TINY, masking="block"), r"model\.masking"),
    "masking case": (dict(TINY, masking="EVEREST"), r"model\.masking"),
    "negative classes": (dict(TINY, num_classes=-1), r"model\.num_classes"),
    "drop_path 1": (dict(TINY, drop_path=1.0), r"model\.drop_path"),
    "drop_path negative": (dict(TINY, drop_path=-0.1), r"model\.drop_path"),
    "head_dropout 1": (dict(TINY, head_dropout=1.0), r"model\.head_dropout"),
    # EVEREST needs both sets non-empty: visible_ratio must be below pretrain_keep_ratio.
    "visible == keep": (dict(TINY, visible_ratio=0.3, pretrain_keep_ratio=0.3), r"model\.visible_ratio"),
    "visible > keep": (dict(TINY, visible_ratio=0.5, pretrain_keep_ratio=0.3), r"model\.visible_ratio"),
    "visible rounds to 0": (dict(TINY, visible_ratio=0.0001), r"model\.visible_ratio"),
    # Baselines: mask_ratio 1.0 leaves nothing visible.
    "tube masks everything": (dict(TINY, masking="tube", mask_ratio=1.0), r"model\.mask_ratio"),
    "random masks everything": (dict(TINY, masking="random", mask_ratio=1.0), r"model\.mask_ratio"),
    "finetune keeps nothing": (dict(TINY, finetune_keep_ratio=0.0001), r"model\.finetune_keep_ratio"),
    # Motion scores compare a time step with the one before: one time step cannot be scored.
    "one step, everest": (dict(TINY, num_frames=2), r"model\.num_frames=2.*model\.tubelet_size=2"),
    "one step, tube + finetune selection": (dict(TINY, num_frames=4, tubelet_size=4, masking="tube"),
                                            r"model\.num_frames=4.*model\.tubelet_size=4"),
}
RATIOS = ("pretrain_keep_ratio", "visible_ratio", "mask_ratio", "finetune_keep_ratio")
for _name in RATIOS:
    for _value in (0.0, -0.1, 1.01, 2.0, math.nan, math.inf):
        INVALID[f"{_name}={_value}"] = (dict(TINY, **{_name: _value}), rf"model\.{_name}")
POSITIVE_INTS = ("num_frames", "tubelet_size", "patch_size", "in_channels", "width", "depth",
                 "num_heads", "decoder_width", "decoder_depth", "decoder_heads")
for _name in POSITIVE_INTS:
    for _value in (0, -2, 2.0, 2.5, 16.0, True, "16"):  # None means "the size's value"
        INVALID[f"{_name}={_value!r}"] = (dict(TINY, **{_name: _value}), rf"model\.{_name}")


@pytest.mark.parametrize("overrides, field", list(INVALID.values()), ids=list(INVALID))
def test_invalid_field_raises_config_error_naming_it(overrides, field):
    with pytest.raises(ConfigError, match=field):
        ModelConfig(**overrides)


@pytest.mark.parametrize("image_size", [(0, 224), (224, 0), (-16, 224), (224, 224, 224), ()])
def test_invalid_image_size_shape(image_size):
    with pytest.raises(ConfigError, match=r"model\.image_size"):
        ModelConfig(**TINY, image_size=image_size)


@pytest.mark.parametrize("image_size", [224.5, (224.5, 224), (224, 224.9), None, "224"],
                         ids=["float", "float-height", "float-width", "None", "str"])
def test_non_integer_image_size_raises_config_error(image_size):
    # A fractional size must not be truncated to a valid one, nor fail with a TypeError.
    with pytest.raises(ConfigError, match=r"model\.image_size"):
        ModelConfig(**TINY, image_size=image_size)


@pytest.mark.parametrize("overrides, field", [
    (dict(num_classes=2.5), r"model\.num_classes"),
    (dict(num_classes="10"), r"model\.num_classes"),
    (dict(mlp_ratio=0.0), r"model\.mlp_ratio"),
    (dict(mlp_ratio=-4.0), r"model\.mlp_ratio"),
], ids=["num_classes-float", "num_classes-str", "mlp_ratio-0", "mlp_ratio-negative"])
def test_other_invalid_model_fields_raise_config_error(overrides, field):
    # Fields the network cannot be built with: a fractional class count, an MLP of width <= 0.
    with pytest.raises(ConfigError, match=field):
        ModelConfig(**TINY, **overrides)


def test_from_dict_refuses_unknown_fields():
    with pytest.raises(ConfigError, match=r"model\.sizee"):
        ModelConfig.from_dict({"sizee": "B"})
    with pytest.raises(ConfigError, match=r"model\.mask_ration"):
        ModelConfig.from_dict({"size": "tiny", "mask_ration": 0.9})
    # from_dict validates the values too.
    with pytest.raises(ConfigError, match=r"model\.image_size"):
        ModelConfig.from_dict({"size": "tiny", "image_size": [225, 225]})


def test_replace_revalidates():
    config = ModelConfig(**TINY)
    with pytest.raises(ConfigError, match=r"model\.patch_size"):
        dataclasses.replace(config, patch_size=0)
    with pytest.raises(ConfigError, match=r"model\.image_size"):
        dataclasses.replace(config, patch_size=15)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.patch_size = 15


# ---- valid configurations and derived values ----------------------------------------------------


def test_official_vit_b_16x224():
    config = ModelConfig()
    assert (config.width, config.depth, config.num_heads) == (768, 12, 12)
    assert (config.decoder_width, config.decoder_heads, config.decoder_depth) == (384, 6, 4)
    assert config.image_size == (224, 224)
    assert config.grid == (8, 14, 14)
    assert config.num_tokens == 1568 and config.tokens_per_step == 196
    assert config.patch_dim == 2 * 16 * 16 * 3 == 1536
    assert config.mlp_dim == 3072 and config.decoder_mlp_dim == 1536
    assert config.pretrain_counts == (156, 314)  # V = int(0.1 N), K - V = int(0.3 N) - V
    assert ModelConfig(masking="tube").pretrain_counts == (160, 1408)  # 8 * (196 - int(0.9*196))
    assert ModelConfig(masking="random").pretrain_counts == (157, 1411)  # 1568 - int(0.9*1568)
    assert config.finetune_keep_count == 940  # int(0.6 * 1568)
    assert ModelConfig(finetune_keep_ratio=1.0).finetune_keep_count == 1568


def test_non_default_shapes_and_derived_counts():
    # 8 frames of 96x128 in 4x8x8 tubelets: T' = 2, H' = 12, W' = 16, N = 384, L = 192.
    config = ModelConfig(**TINY, num_frames=8, image_size=(96, 128), tubelet_size=4, patch_size=8)
    assert config.grid == (2, 12, 16)
    assert config.num_tokens == 384 and config.tokens_per_step == 192
    assert config.patch_dim == 4 * 8 * 8 * 3 == 768
    assert config.pretrain_counts == (38, 77)  # int(38.4); int(115.2) - 38
    assert config.finetune_keep_count == 230  # int(230.4)
    assert dataclasses.replace(config, masking="tube").pretrain_counts == (2 * 20, 2 * 172)  # int(172.8)
    assert dataclasses.replace(config, masking="random").pretrain_counts == (39, 345)  # 384 - int(345.6)
    # Other ratios and one input channel.
    other = dataclasses.replace(config, pretrain_keep_ratio=0.5, visible_ratio=0.25, in_channels=1,
                                finetune_keep_ratio=0.45)
    assert other.pretrain_counts == (96, 96) and other.patch_dim == 256
    assert other.finetune_keep_count == 172  # int(172.8)
    assert dataclasses.replace(config, masking="tube", mask_ratio=0.75).pretrain_counts == (2 * 48, 2 * 144)


def test_image_size_forms_and_size_defaults():
    assert ModelConfig(**TINY, image_size=112).image_size == (112, 112)
    assert ModelConfig(**TINY, image_size=(112,)).image_size == (112, 112)
    assert ModelConfig(**TINY, image_size=[96, 128]).image_size == (96, 128)
    for size, shape in SIZES.items():
        config = ModelConfig(size=size)
        assert {k: getattr(config, k) for k in shape} == shape
    # Explicit fields override the size's values.
    config = ModelConfig(size="S", depth=3, decoder_width=96)
    assert (config.width, config.depth, config.decoder_width, config.decoder_heads) == (384, 3, 96, 3)


def test_single_time_step_is_fine_without_motion_selection():
    config = ModelConfig(**TINY, num_frames=2, masking="tube", finetune_keep_ratio=1.0)
    assert config.grid[0] == 1
    assert ModelConfig(**TINY, num_frames=2, masking="random", finetune_keep_ratio=1.0).grid[0] == 1


def test_round_trip_and_hashable():
    config = ModelConfig(**TINY, num_frames=8, image_size=(96, 128), masking="tube", num_classes=5)
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert hash(config) == hash(ModelConfig.from_dict(config.to_dict()))  # usable as a static jit arg


# ---- refused before anything is traced or compiled ----------------------------------------------


@pytest.fixture
def no_jax(monkeypatch):
    """Make any tracing, compilation or Flax init/apply fail loudly."""
    def forbidden(*args, **kwargs):
        raise AssertionError("JAX was used before the config was validated")
    for name in ("jit", "eval_shape", "make_jaxpr", "vmap", "grad", "value_and_grad"):
        monkeypatch.setattr(jax, name, forbidden)
    monkeypatch.setattr(nn.Module, "init", forbidden)
    monkeypatch.setattr(nn.Module, "apply", forbidden)
    monkeypatch.setattr(nn.Module, "init_with_output", forbidden)


@pytest.mark.parametrize("overrides", [
    dict(TINY, image_size=225),
    dict(TINY, num_frames=2),
    dict(TINY, visible_ratio=0.3),
    dict(TINY, width=65),
    dict(TINY, masking="block"),
])
def test_invalid_config_fails_before_any_jax(no_jax, overrides):
    with pytest.raises(ConfigError) as info:
        ModelConfig(**overrides)
    assert info.traceback[-1].path.name == "config.py"  # raised by the config itself
    # A model cannot even be built: the error comes from the config, not from tracing.
    with pytest.raises(ConfigError) as info:
        PretrainingModel(ModelConfig(**overrides))
    assert info.traceback[-1].path.name == "config.py"
    with pytest.raises(ConfigError):
        Classifier(ModelConfig(**dict(overrides, num_classes=3)))


def test_valid_config_and_model_construction_need_no_jax(no_jax):
    config = ModelConfig(**TINY, num_frames=8, image_size=(96, 128), tubelet_size=4, patch_size=8)
    assert PretrainingModel(config).config.pretrain_counts == (38, 77)
    assert Classifier(dataclasses.replace(config, num_classes=3)).config.finetune_keep_count == 230
