"""Every field of every EVEREST config file through a table of invalid values: each is refused
with a ConfigError naming the field (before anything compiles: train.validate runs first)."""

import dataclasses
import importlib
import math
import re

import ml_collections
import pytest

from everest_jax import train
from everest_jax.config import ConfigError, ModelConfig
from everest_jax.fields import Is, Num, OneOf, flatten

# (config module, its arg) for every EVEREST config file, each job it has.
CONFIGS = [("quickstart", None), ("quickstart", "job=finetune"), ("k400", None), ("k400", "job=finetune"),
           ("ssv2", "job=finetune"), ("ucf101", "job=finetune"), ("hmdb51", "job=finetune"), ("long_videos", None),
           ("reproduce", None), ("reproduce", "job=finetune")]


def invalid(rule) -> list:
    """Values that break `rule`: wrong types, and just outside each end of its range."""
    if isinstance(rule, Num):
        bad = ["x", True, None]
        if rule.integer:
            bad.append(1.5)
        else:
            bad += [math.nan, math.inf]
        if rule.lo is not None:
            bad.append(rule.lo if rule.lo_open else rule.lo - (1 if rule.integer else 1e-3))
        if rule.hi is not None:
            bad.append(rule.hi if rule.hi_open else rule.hi + (1 if rule.integer else 1e-3))
        return [b for b in bad if not any(b == a for a in rule.also if b is not None)]
    if isinstance(rule, OneOf):
        return ["nonsense", 3]
    if isinstance(rule, Is):
        return [3.5] if rule.kind is str else ["x"]
    raise AssertionError(rule)


def load(name, arg):
    return importlib.import_module(f"configs.{name}").get_config(arg)


def with_value(config, path, value):
    """A copy of `config` with `path` set (ConfigDict type checks bypassed, as a config file could)."""
    d = config.to_dict()
    *parents, leaf = path.split(".")
    node = d
    for p in parents:
        node = node[p]
    node[leaf] = value  # a new key when `path` is not a field
    return ml_collections.ConfigDict(d)


@pytest.mark.parametrize("name, arg", CONFIGS, ids=[f"{n}:{a}" for n, a in CONFIGS])
def test_every_run_field_refuses_invalid_values_naming_the_field(name, arg):
    config = load(name, arg)
    if config.data.name == "synthetic":  # (the others need their dataset's list files)
        train.validate(config)  # the config as shipped is valid
    fields = flatten(config.to_dict(), stop=("model",))
    assert set(fields) - {"model"} <= set(train.RUN_FIELDS), "a field without a rule"
    tried = 0
    for path in fields:
        if path == "model":
            continue
        for value in invalid(train.RUN_FIELDS[path]):
            with pytest.raises(ConfigError, match=re.escape(path) + r"=.* must be"):
                train.validate(with_value(config, path, value))
            tried += 1
        misspelt = path + path[-1]  # a doubled last letter, e.g. 'batch_sizee'
        with pytest.raises(ConfigError, match=re.escape(misspelt) + " is not a config field; did you mean "
                           + re.escape(repr(path))):
            train.validate(with_value(config, misspelt, 1))
    assert tried > 150


# Hand-written invalid values per field type (independent of the rules in MODEL_FIELDS).
MODEL_INVALID = {int: ["x", 1.5, True, -1, 0], float: ["x", -1.0, math.nan], str: [3, "nonsense"], bool: ["x", 1],
                 tuple: ["x", (0, 0), (-32, 32), (32, 32, 32)]}


@pytest.mark.parametrize("name, arg", [("quickstart", None), ("quickstart", "job=finetune")])
def test_every_model_field_refuses_invalid_values_naming_the_field(name, arg):
    config = load(name, arg)
    missing = []
    for f in dataclasses.fields(ModelConfig):
        default = getattr(ModelConfig(), f.name)
        values = MODEL_INVALID[type(default)]
        if f.name == "num_classes":
            values = [v for v in values if v != 0]  # 0: no classifier (pre-training)
        for value in values:
            try:
                train.validate(with_value(config, f"model.{f.name}", value))
            except ConfigError as e:
                if f"model.{f.name}" not in str(e):
                    missing.append((f.name, value, str(e)[:100]))
            else:
                missing.append((f.name, value, "accepted"))
    assert not missing, missing


STMG_CONFIGS = [("stmg_synthetic", None), ("stmg_synthetic", "side=128,network=resnet18"), ("stmg_cityscapes", None),
                ("stmg_camvid", None)]


@pytest.mark.parametrize("name, arg", STMG_CONFIGS, ids=[f"{n}:{a}" for n, a in STMG_CONFIGS])
def test_every_stmg_run_field_refuses_invalid_values_naming_the_field(name, arg):
    from stmg_jax.train import check_config
    from stmg_jax.train import RUN_FIELDS

    config = load(name, arg)
    if config.data.source == "synthetic":
        check_config(config)  # as shipped: valid
    fields = flatten(config.to_dict(), stop=("net", "stream"))
    assert set(fields) - {"net", "stream"} <= set(RUN_FIELDS), "a field without a rule"
    for path in set(fields) - {"net", "stream"}:
        for value in invalid(RUN_FIELDS[path]):
            with pytest.raises(ConfigError, match=re.escape(path) + r"=.* must be"):
                check_config(with_value(config, path, value))
        with pytest.raises(ConfigError, match=re.escape(path + path[-1]) + " is not a config field"):
            check_config(with_value(config, path + path[-1], 1))


# Hand-written invalid values of the network and streaming fields.
STMG_SECTION_INVALID = {
    "net.num_classes": ["x", 0, 1.5], "net.widths": ["x", (16, 32), (16, 32, 64, 0)],
    "net.blocks_per_stage": [(2, 2, 2), (2, 2, 2, -1)], "net.decoder_width": [0, "x"],
    "net.residual_scale_init": ["x", math.nan], "stream.bin_grid": ["x", (0, 4), ((4, 4),) * 3],
    "stream.capacities": ["x", (0.0,), (1.5,)], "stream.gate_threshold": [-0.1, "x"],
    "stream.bin_threshold": [-1.0, None], "stream.key_every": [-1, 1.5], "stream.stem_threshold": [-0.1, "x"],
    "stream.decoder_threshold": [-1, None], "stream.key_distortion": [0.0, -1.0, "x"],
    "stream.gate_downsampling": ["yes", 2],
}


def test_every_stmg_network_and_stream_field_refuses_invalid_values_naming_the_field():
    from stmg_jax.config import SegNetConfig, StreamConfig
    from stmg_jax.train import check_config

    config = load("stmg_synthetic", None)
    names = {f"net.{f.name}" for f in dataclasses.fields(SegNetConfig)} | \
        {f"stream.{f.name}" for f in dataclasses.fields(StreamConfig)}
    assert names == set(STMG_SECTION_INVALID)
    wrong = []
    for path, values in STMG_SECTION_INVALID.items():
        for value in values:
            try:
                check_config(with_value(config, path, value))
            except ConfigError as e:
                if path not in str(e):
                    wrong.append((path, value, str(e)[:100]))
            else:
                wrong.append((path, value, "accepted"))
    assert not wrong, wrong
    with pytest.raises(ConfigError, match="net: .*num_clases"):
        check_config(with_value(config, "net.num_clases", 3))


VARED_CONFIGS = [("vared_synthetic", None), ("vared_synthetic", "vared=false,size=18"),
                 ("vared_synthetic", "static=true,input_dependent=true"), ("vared_kinetics", None)]


@pytest.mark.parametrize("name, arg", VARED_CONFIGS, ids=[f"{n}:{a}" for n, a in VARED_CONFIGS])
def test_every_vared_field_refuses_invalid_values_naming_the_field(name, arg):
    from vared_jax.model import R2Plus1DConfig
    from vared_jax.train import RUN_FIELDS, validate

    config = load(name, arg)
    if config.data.name == "synthetic":
        validate(config)  # as shipped: valid
    fields = flatten(config.to_dict(), stop=("model",))
    assert set(fields) - {"model"} <= set(RUN_FIELDS), "a field without a rule"
    for path in set(fields) - {"model"}:
        for value in invalid(RUN_FIELDS[path]) if path != "clip.image_size" else ["x", (0, 32), (32,)]:
            with pytest.raises(ConfigError, match=re.escape(path) + r"=.* must be"):
                validate(with_value(config, path, value))
        with pytest.raises(ConfigError, match=re.escape(path + path[-1]) + " is not a config field"):
            validate(with_value(config, path + path[-1], 1))
    wrong = []  # the model section: hand-written invalid values of each R2Plus1DConfig field
    bad = {int: ["x", 1.5, True, -1], float: ["x", True], bool: ["x", 1, 0], tuple: ["x", (16, 32), (16, 32, 64, 0)],
           str: ["reflect", 1, True]}
    for f in dataclasses.fields(R2Plus1DConfig):
        values = bad[type(getattr(R2Plus1DConfig(), f.name))] + ([3] if "levels" in f.name else [])
        for value in values if f.name != "stem_widths" else ["x", (16,), (16, 0)]:
            try:
                validate(with_value(config, f"model.{f.name}", value))
            except ConfigError as e:
                wrong += [] if f"model.{f.name}" in str(e) else [(f.name, value, str(e)[:100])]
            else:
                wrong.append((f.name, value, "accepted"))
    assert not wrong, wrong
