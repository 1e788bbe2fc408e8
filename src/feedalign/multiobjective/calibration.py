"""Is a reward model on the scale MODPO needs? Bradley-Terry slope and calibration of pair wins.

MODPO's margin for objective j enters the loss next to the implicit reward of the trained
objective, ``beta * log pi/pi_ref ~ r_k``, so it must be on the scale of a Bradley-Terry
reward: ``P(a preferred over b) = sigma(r_j(a) - r_j(b))`` (docs/ALGORITHMS.md 2.1, 10). A reward
head trained with the ``bt_reward`` loss on pairs labelled with temperature ``T`` learns
``u / T`` (plus a per-prompt constant that differences cancel) and is on that scale as it is;
normalising the head (e.g. to unit variance) or labels on another temperature changes the
scale by a factor, and margins weighed that much too little (or too much) bend the front.

Two checks on held-out pairs with the model's reward differences ``d = r(chosen) - r(rejected)``
(orientation free: a pair's label is which side was chosen):

  * :func:`bt_slope`: the maximum-likelihood ``b`` of ``P(chosen) = sigma(b * d)`` with its
    standard error ``1 / sqrt(sum sigma'(b d) d^2)`` (Fisher information). On the right scale
    ``b = 1``; ``b < 1`` means the margins are over-scaled, ``b > 1`` under-scaled, and
    ``b`` is the factor to multiply them by (they are ``1 / b`` times too large).
  * :func:`calibration_table`: predicted ``sigma(d)`` against the empirical win rate in bins.

numpy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["bt_slope", "calibration_table", "pair_differences"]


def pair_differences(chosen_rewards: Any, rejected_rewards: Any, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Oriented differences and labels: each pair is shown as (first, second) in a seeded
    random order, ``d = r(first) - r(second)``, ``label = first was chosen``; ``[N]`` each."""
    c = np.asarray(chosen_rewards, dtype=np.float64).reshape(-1)
    r = np.asarray(rejected_rewards, dtype=np.float64).reshape(-1)
    if c.shape != r.shape or c.size == 0:
        raise ValueError(f"pair_differences: need equal non-empty [N] arrays, got {c.shape} and {r.shape}")
    first_chosen = np.random.default_rng(seed).random(c.size) < 0.5
    return np.where(first_chosen, c - r, r - c), first_chosen


def _log1pexp(z: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, z)


def bt_slope(diffs: Any, labels: Any, *, iters: int = 50) -> dict[str, float]:
    """Maximum-likelihood slope of ``P(label) = sigma(b * d)`` (no intercept), by Newton's method.

    Args:
        diffs: ``[N]`` reward differences ``r(first) - r(second)``.
        labels: ``[N]`` bools (first was chosen) or win probabilities in [0, 1].

    Returns:
        ``{"slope", "se", "z_vs_1" ((b - 1) / se), "n", "log_loss"}``.
    """
    d = np.asarray(diffs, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if d.shape != y.shape or d.size < 2:
        raise ValueError(f"bt_slope: need equal [N] arrays with N >= 2, got {d.shape} and {y.shape}")
    if not np.all(np.isfinite(d)) or np.any((y < 0) | (y > 1)):
        raise ValueError("bt_slope: diffs must be finite and labels in [0, 1]")
    if not np.any(d != 0):
        raise ValueError("bt_slope: all reward differences are 0; the slope is undefined")
    b = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-b * d))
        grad = float(np.sum((y - p) * d))
        hess = float(np.sum(p * (1 - p) * d * d))
        if hess <= 0:
            break
        step = grad / hess
        b += float(np.clip(step, -10.0, 10.0))
        if abs(step) < 1e-10:
            break
    p = 1.0 / (1.0 + np.exp(-b * d))
    se = float(1.0 / np.sqrt(np.sum(p * (1 - p) * d * d)))
    log_loss = float(np.mean(y * _log1pexp(-b * d) + (1 - y) * _log1pexp(b * d)))
    return {"slope": b, "se": se, "z_vs_1": (b - 1.0) / se, "n": int(d.size), "log_loss": log_loss}


def calibration_table(diffs: Any, labels: Any, *, bins: int = 10) -> list[dict[str, float]]:
    """Predicted ``sigma(d)`` vs the empirical rate of ``label`` in equal-count bins of the
    prediction: rows ``{"predicted", "empirical", "se", "n"}`` (``se`` of the empirical rate)."""
    d = np.asarray(diffs, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if d.shape != y.shape or d.size == 0:
        raise ValueError(f"calibration_table: need equal non-empty [N] arrays, got {d.shape} and {y.shape}")
    pred = 1.0 / (1.0 + np.exp(-d))
    order = np.argsort(pred, kind="stable")
    rows = []
    for chunk in np.array_split(order, min(bins, d.size)):
        if chunk.size == 0:
            continue
        rate = float(y[chunk].mean())
        rows.append({"predicted": float(pred[chunk].mean()), "empirical": rate,
                     "se": float(np.sqrt(max(rate * (1 - rate), 1e-12) / chunk.size)), "n": int(chunk.size)})
    return rows
