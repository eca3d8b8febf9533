"""Field rules of run configs: each field's type and range, checked before anything is built.

    check(config, {"batch_size": Int(lo=1), "optimizer.b2": Float(0, 1, hi_open=True), ...})

raises `ConfigError` naming the first field whose value is of the wrong type or out of range,
or a field the schema does not know (with the nearest known name). Every method's trainer
declares its own schema with these rules.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from typing import Any, Mapping

from everest_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Num:
    """A number in [lo, hi] (open ends with lo_open / hi_open); `also`: other allowed values."""

    integer: bool = False
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    also: tuple = ()

    def describe(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.lo is not None and self.hi is not None:
            rng = f" in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        elif self.lo is not None:
            rng = f" {'>' if self.lo_open else '>='} {self.lo:g}"
        elif self.hi is not None:
            rng = f" {'<' if self.hi_open else '<='} {self.hi:g}"
        else:
            rng = ""
        return kind + rng + "".join(f" or {a!r}" for a in self.also)

    def ok(self, v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral if self.integer else numbers.Real):
            return False
        if any(v == a for a in self.also):
            return True
        if not math.isfinite(v):
            return False
        if self.lo is not None and (v < self.lo or (self.lo_open and v == self.lo)):
            return False
        return not (self.hi is not None and (v > self.hi or (self.hi_open and v == self.hi)))


def Int(lo=None, hi=None, **kw) -> Num:  # noqa: N802 (a rule constructor, read like a type)
    return Num(True, lo, hi, **kw)


def Float(lo=None, hi=None, **kw) -> Num:  # noqa: N802
    return Num(False, lo, hi, **kw)


@dataclasses.dataclass(frozen=True)
class OneOf:
    options: tuple

    def describe(self) -> str:
        return "one of " + ", ".join(map(repr, self.options))

    def ok(self, v: Any) -> bool:
        return isinstance(v, str) and v in self.options


@dataclasses.dataclass(frozen=True)
class Is:
    """A value of a type (bool, str...) or of one of a tuple of types."""

    kind: type | tuple

    def describe(self) -> str:
        names = {bool: "true or false", str: "a string", tuple: "a tuple", list: "a list"}
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        return " or ".join(names.get(k, k.__name__) for k in kinds)

    def ok(self, v: Any) -> bool:
        return isinstance(v, self.kind)


def prefixed(prefix: str, rules: Mapping[str, Any]) -> dict[str, Any]:
    """{'b1': rule} -> {'optimizer.b1': rule}: a shared group of rules under a config section."""
    return {f"{prefix}.{name}": rule for name, rule in rules.items()}


def flatten(tree: Mapping, prefix: str = "", stop: tuple[str, ...] = ()) -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; paths in `stop` are kept whole (e.g. 'model')."""
    out = {}
    for key, value in tree.items():
        path = prefix + key
        if isinstance(value, Mapping) and path not in stop:
            out.update(flatten(value, path + ".", stop))
        else:
            out[path] = value
    return out


def check(config, schema: Mapping[str, Any], whole: tuple[str, ...] = ()) -> None:
    """Every field of `config` (a ConfigDict or dict) against `schema` (path -> rule); sections in
    `whole` (e.g. 'model', checked by its own dataclass) are not looked into."""
    values = flatten(config.to_dict() if hasattr(config, "to_dict") else config, stop=whole)
    for path, value in values.items():
        if path in whole:
            continue
        rule = schema.get(path)
        if rule is None:
            near = difflib.get_close_matches(path, list(schema) + list(whole), n=1)
            raise ConfigError(f"{path} is not a config field" + (f"; did you mean {near[0]!r}?" if near else ""))
        if not rule.ok(value):
            raise ConfigError(f"{path}={value!r} must be {rule.describe()}")
