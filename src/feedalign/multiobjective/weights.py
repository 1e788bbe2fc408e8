"""Preference weight vectors on the probability simplex.

A weight vector ``w`` (length ``m``, ``w_j >= 0``, ``sum_j w_j = 1``) scalarises ``m``
objectives as ``w . r`` (docs/ALGORITHMS.md section 1). This module builds the weight sets
used for training sweeps and for expected-utility evaluation (section 13.3), and checks
user-given vectors.

numpy only at import time; a ``torch.Generator`` is accepted by :func:`sample_simplex` and
torch is imported only when one is passed.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["simplex_grid", "sample_simplex", "validate_weights", "parse_weights"]

#: Tolerance on ``|sum(w) - 1|`` accepted by :func:`validate_weights`.
SUM_ATOL = 1e-6


def simplex_grid(m: int, n_per_axis: int) -> np.ndarray:
    """Regular grid on the simplex: every ``w`` with ``w_j in {0, 1/(n-1), ..., 1}``.

    For ``m = 2`` and ``n_per_axis = 11`` this is ``w1 in {0, 0.1, ..., 1}`` (ALGORITHMS.md
    13.3), rows ordered by ascending ``w1``. In general the rows are the
    ``C(n_per_axis + m - 2, m - 1)`` integer compositions of ``n_per_axis - 1`` into ``m``
    parts divided by ``n_per_axis - 1``, in lexicographic order of their coordinates.

    Args:
        m: number of objectives (>= 1).
        n_per_axis: number of grid values per coordinate (>= 2; for ``m = 1`` any value >= 1).

    Returns:
        float64 array ``[K, m]``; each row sums to 1 (the last coordinate is computed from
        the others' integer counts, so rounding error is one division).
    """
    m = _positive_int(m, "m")
    n_per_axis = _positive_int(n_per_axis, "n_per_axis")
    if m == 1:
        return np.ones((1, 1))
    if n_per_axis < 2:
        raise ValueError(f"simplex_grid: n_per_axis must be >= 2 for m={m}, got {n_per_axis}")
    steps = n_per_axis - 1
    rows = [
        (*head, steps - sum(head))
        for head in itertools.product(range(steps + 1), repeat=m - 1)
        if sum(head) <= steps
    ]
    return np.asarray(rows, dtype=np.float64) / steps


def sample_simplex(m: int, n: int, generator: Any = 0) -> np.ndarray:
    """``n`` i.i.d. draws from the uniform distribution on the simplex (Dirichlet(1, ..., 1)).

    Sampled as normalised i.i.d. Exp(1) variables, which is exactly Dirichlet(1).

    Args:
        m: number of objectives (>= 1).
        n: number of weight vectors (>= 0).
        generator: an ``int`` seed, a ``numpy.random.Generator`` or a ``torch.Generator``.
            The same seed always gives the same weights (default seed 0).

    Returns:
        float64 array ``[n, m]`` with nonnegative rows summing to 1.
    """
    m = _positive_int(m, "m")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"sample_simplex: n must be an int >= 0, got {n!r}")
    exponentials = _standard_exponential((int(n), m), generator)
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def _standard_exponential(shape: tuple[int, int], generator: Any) -> np.ndarray:
    if isinstance(generator, np.random.Generator):
        return generator.standard_exponential(shape)
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        return np.random.default_rng(int(generator)).standard_exponential(shape)
    if type(generator).__module__.startswith("torch") and type(generator).__name__ == "Generator":
        import torch

        draws = torch.empty(shape, dtype=torch.float64, device=generator.device)
        return draws.exponential_(generator=generator).cpu().numpy()
    raise TypeError(
        "sample_simplex: generator must be an int seed, numpy.random.Generator or "
        f"torch.Generator, got {type(generator).__name__}"
    )


def validate_weights(
    w: Any, m: int | None = None, *, name: str = "weights", atol: float = SUM_ATOL
) -> np.ndarray:
    """Check that ``w`` is a weight vector (or a matrix of row vectors) on the simplex.

    Args:
        w: sequence or array, shape ``[m]`` or ``[K, m]``.
        m: expected number of objectives; ``None`` accepts any length >= 1.
        name: how errors refer to ``w`` (e.g. ``"config.weights"``).
        atol: tolerance on ``|sum(w) - 1|``.

    Returns:
        ``w`` as a float64 array of the same shape (not renormalised).

    Raises:
        ValueError: naming the offending vector and what was expected: wrong shape or
            length, non-finite or negative entries, or a sum other than 1.
    """
    try:
        arr = np.asarray(w, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}={w!r}: not a numeric vector ({err})") from None
    if arr.ndim == 1:
        _check_vector(arr, m, name, atol)
    elif arr.ndim == 2:
        if arr.shape[0] == 0 and m is not None and arr.shape[1] not in (0, m):
            raise ValueError(f"{name}: expected rows of length {m}, got shape {arr.shape}")
        for k, row in enumerate(arr):
            _check_vector(row, m, f"{name}[{k}]", atol)
    else:
        raise ValueError(f"{name}: expected a vector [m] or matrix [K, m], got shape {arr.shape}")
    return arr


def _check_vector(vec: np.ndarray, m: int | None, name: str, atol: float) -> None:
    shown = _fmt(vec)
    if vec.size == 0:
        raise ValueError(f"{name}={shown}: empty weight vector")
    if m is not None and vec.size != m:
        raise ValueError(f"{name}={shown}: expected {m} weights (one per objective), got {vec.size}")
    if not np.all(np.isfinite(vec)):
        raise ValueError(f"{name}={shown}: weights must be finite")
    if np.any(vec < 0):
        raise ValueError(f"{name}={shown}: weights must be >= 0, got negative entries")
    total = float(vec.sum())
    if abs(total - 1.0) > atol:
        raise ValueError(
            f"{name}={shown}: weights must sum to 1 (got {total:.6g}); divide by the sum to "
            "normalise"
        )


def parse_weights(text: str, m: int | None = None, *, name: str = "weights") -> np.ndarray:
    """Parse a comma-separated weight vector such as ``"0.3,0.7"`` and validate it.

    Whitespace around entries is ignored. Returns a float64 vector ``[m]``.

    Raises:
        ValueError: naming the text and the entry that is not a number, or any
            :func:`validate_weights` error.
    """
    if not isinstance(text, str):
        raise ValueError(f"{name}: expected a string like '0.3,0.7', got {type(text).__name__}")
    tokens = [tok.strip() for tok in text.split(",")]
    values = []
    for i, tok in enumerate(tokens):
        try:
            values.append(float(tok))
        except ValueError:
            raise ValueError(
                f"{name}={text!r}: entry {i} ({tok!r}) is not a number; expected "
                "comma-separated floats like '0.3,0.7'"
            ) from None
    return validate_weights(values, m, name=f"{name} (parsed from {text!r})")


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be an int >= 1, got {value!r}")
    return int(value)


def _fmt(vec: Sequence[float] | np.ndarray) -> str:
    return "[" + ", ".join(f"{float(v):.6g}" for v in np.ravel(vec)) + "]"
