"""Validators for loss hyperparameters: range and type, checked when a config is checked.

A validator is called as ``validator(name, value)`` and returns the value to use, or raises
:class:`HParamError` naming the hyperparameter, the value and what is valid. Every
hyperparameter a loss (or its state) has must come with one (``register_loss`` refuses a
loss otherwise), so a bad value stops a run before any model is loaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

Validator = Callable[[str, Any], Any]


class HParamError(ValueError):
    """A hyperparameter value of the wrong type or out of range; ``name`` is the hyperparameter."""

    def __init__(self, name: str, value: Any, expected: str) -> None:
        super().__init__(f"{name}={value!r} is invalid: expected {expected}")
        self.name = name
        self.value = value
        self.expected = expected


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _interval(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is None:
        return f"a finite real number {'>' if lo_open else '>='} {lo:g}"
    if lo is None and hi is not None:
        return f"a finite real number {'<' if hi_open else '<='} {hi:g}"
    if lo is None:
        return "a finite real number"
    return f"a real number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"


def real(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False) -> Validator:
    """A finite real number (int or float, not bool) in the given interval."""
    expected = _interval(lo, hi, lo_open, hi_open)

    def validate(name: str, value: Any) -> Any:
        if not _is_real(value) or not math.isfinite(value):
            raise HParamError(name, value, expected)
        below = lo is not None and (value <= lo if lo_open else value < lo)
        above = hi is not None and (value >= hi if hi_open else value > hi)
        if below or above:
            raise HParamError(name, value, expected)
        return value

    validate.expected = expected  # type: ignore[attr-defined]
    return validate


positive = real(0.0, lo_open=True)
nonnegative = real(0.0)
finite = real()
unit_interval = real(0.0, 1.0)
flip_rate = real(0.0, 0.5, hi_open=True)
momentum = real(0.0, 1.0, hi_open=True)


def flag(name: str, value: Any) -> bool:
    """A boolean (true / false)."""
    if not isinstance(value, bool):
        raise HParamError(name, value, "true or false")
    return value


def choice(*options: str) -> Validator:
    """One of ``options``."""

    def validate(name: str, value: Any) -> Any:
        if value not in options:
            raise HParamError(name, value, f"one of {list(options)}")
        return value

    return validate


def real_vector(element: Validator) -> Validator:
    """A non-empty list of numbers, each accepted by ``element``; returned as a tuple."""

    def validate(name: str, value: Any) -> Any:
        if _is_real(value):
            value = (value,)
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
            raise HParamError(name, value, f"a non-empty list of numbers, each {getattr(element, 'expected', '')}")
        return tuple(element(f"{name}.{i}", v) for i, v in enumerate(value))

    return validate
