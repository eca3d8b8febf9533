"""ModelConfig: derived shapes and counts, and a clear error naming the field for each bad value."""

import pytest

from everest_jax import ConfigError, ModelConfig
from everest_jax.models import PretrainingModel


def test_official_vit_b_counts():
    c = ModelConfig(size="B")
    assert c.num_tokens == 1568 and c.grid == (8, 14, 14) and c.patch_dim == 1536
    assert c.pretrain_counts == (156, 314)
    assert ModelConfig(size="B", masking="tube").pretrain_counts == (160, 1408)
    assert ModelConfig(size="B", masking="random").pretrain_counts == (157, 1411)
    assert c.finetune_keep_count == 940 and (c.width, c.depth, c.num_heads) == (768, 12, 12)


def test_non_default_shapes():
    c = ModelConfig(size="tiny", num_frames=8, image_size=(96, 128), tubelet_size=4, patch_size=8)
    assert c.grid == (2, 12, 16) and c.num_tokens == 384 and c.patch_dim == 4 * 8 * 8 * 3
    assert c.pretrain_counts == (38, int(0.3 * 384) - 38) and c.finetune_keep_count == int(0.6 * 384)


@pytest.mark.parametrize("kwargs, message", [
    (dict(size="XL"), r"model\.size='XL' is not a known size"),
    (dict(image_size=225), r"model\.image_size height 225 is not divisible by model\.patch_size=16"),
    (dict(image_size=(224, 200)), r"model\.image_size width 200"),
    (dict(num_frames=15), r"model\.num_frames=15 is not divisible by model\.tubelet_size=2"),
    (dict(width=100), r"model\.width=100 is not divisible by model\.num_heads=12"),
    (dict(decoder_width=100), r"model\.decoder_width=100 is not divisible by model\.decoder_heads=6"),
    (dict(dtype="float8"), r"model\.dtype='float8'"),
    (dict(masking="block"), r"model\.masking='block'"),
    (dict(pretrain_keep_ratio=0.0), r"model\.pretrain_keep_ratio=0\.0 must be in \(0, 1\]"),
    (dict(mask_ratio=1.5), r"model\.mask_ratio=1\.5"),
    (dict(visible_ratio=0.3), r"visible_ratio must be < pretrain_keep_ratio"),
    (dict(num_frames=2), r"motion-based token selection needs at least 2 time steps"),
    (dict(num_classes=-1), r"model\.num_classes=-1"),
    (dict(depth=0), r"model\.depth=0 must be a positive integer"),
    (dict(patch_size=2.5), r"model\.patch_size=2\.5 must be a positive integer"),
    (dict(drop_path=1.0), r"model\.drop_path=1\.0"),
])
def test_each_bad_field_is_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**kwargs)


def test_unknown_field_and_no_model_without_a_valid_config():
    with pytest.raises(ConfigError, match=r"model\.patch is not a model config field"):
        ModelConfig.from_dict({"patch": 16})
    with pytest.raises(ConfigError):  # the error comes from the config, before any tracing
        PretrainingModel(ModelConfig(image_size=100))
