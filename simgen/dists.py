"""Distributions as small value objects built from config, each with ``sample(rng)``.

Config forms accepted by :func:`dist` (so YAML stays readable):
  ``3``               -> Constant(3)
  ``[lo, hi]``        -> Uniform(lo, hi)
  ``{uniform: [lo, hi]}``, ``{loguniform: [lo, hi]}``, ``{randint: [lo, hi]}`` (inclusive),
  ``{choice: [a, b, ...], p: [...]}``, ``{normal: [mean, std]}``
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConfigError


@dataclass(frozen=True)
class Constant:
    value: Any

    def sample(self, rng: np.random.Generator) -> Any:
        return self.value

    @property
    def max(self) -> Any:
        return self.value

    @property
    def min(self) -> Any:
        return self.value


@dataclass(frozen=True)
class _Range:
    """A distribution on [lo, hi]; subclasses say how to draw."""

    lo: float
    hi: float

    def __post_init__(self) -> None:
        if self.hi < self.lo:
            raise ConfigError(f"range [{self.lo}, {self.hi}] is reversed: write it as [low, high].")

    @property
    def max(self) -> float:
        return self.hi

    @property
    def min(self) -> float:
        return self.lo


@dataclass(frozen=True)
class Uniform(_Range):
    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.lo, self.hi))


@dataclass(frozen=True)
class LogUniform(_Range):
    def __post_init__(self) -> None:
        if not 0 < self.lo <= self.hi:
            raise ConfigError(f"LogUniform needs 0 < low <= high, got [{self.lo}, {self.hi}].")

    def sample(self, rng: np.random.Generator) -> float:
        return float(math.exp(rng.uniform(math.log(self.lo), math.log(self.hi))))


@dataclass(frozen=True)
class RandInt(_Range):
    """Integer uniform on the closed interval [lo, hi]."""

    def sample(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.lo, self.hi + 1))


@dataclass(frozen=True)
class Normal:
    mean: float
    std: float

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.normal(self.mean, self.std))


@dataclass(frozen=True)
class Choice:
    options: tuple
    p: tuple | None = None

    def __post_init__(self) -> None:
        if not self.options:
            raise ConfigError("Choice needs at least one option.")
        if self.p is not None and (len(self.p) != len(self.options) or abs(sum(self.p) - 1) > 1e-6):
            raise ConfigError(f"Choice weights {list(self.p)} must match the options and sum to 1.")

    def sample(self, rng: np.random.Generator) -> Any:
        idx = int(rng.choice(len(self.options), p=None if self.p is None else np.asarray(self.p)))
        return self.options[idx]


Dist = Constant | Uniform | LogUniform | RandInt | Normal | Choice


def dist(spec: Any, integer: bool = False, name: str = "value") -> Dist:
    """Build a distribution from its config form (see module doc)."""
    if isinstance(spec, (Constant, Uniform, LogUniform, RandInt, Normal, Choice)):
        return spec
    if isinstance(spec, bool) or spec is None or isinstance(spec, str):
        return Constant(spec)
    if isinstance(spec, (int, float)):
        return Constant(int(spec) if integer else float(spec))
    if isinstance(spec, Sequence):
        if len(spec) != 2:
            raise ConfigError(f"{name}: a range is [low, high], got {list(spec)}.")
        lo, hi = spec
        return RandInt(int(lo), int(hi)) if integer else Uniform(float(lo), float(hi))
    if isinstance(spec, dict):
        keys = set(spec) - {"p"}
        if len(keys) != 1:
            raise ConfigError(f"{name}: expected one of uniform/loguniform/randint/choice/normal, got {sorted(spec)}.")
        (kind,) = keys
        args = spec[kind]
        if kind == "uniform":
            return Uniform(float(args[0]), float(args[1]))
        if kind == "loguniform":
            return LogUniform(float(args[0]), float(args[1]))
        if kind == "randint":
            return RandInt(int(args[0]), int(args[1]))
        if kind == "normal":
            return Normal(float(args[0]), float(args[1]))
        if kind == "choice":
            p = spec.get("p")
            return Choice(tuple(args), None if p is None else tuple(float(x) for x in p))
        raise ConfigError(f"{name}: unknown distribution `{kind}`; use uniform, loguniform, randint, choice or normal.")
    raise ConfigError(f"{name}: cannot read {spec!r} as a value or distribution.")
