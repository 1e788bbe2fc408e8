"""Multi-objective evaluation of a set of objective vectors (docs/ALGORITHMS.md section 13).

Every function here MAXIMISES: a point ``J = (E[r_1], ..., E[r_m])`` is better when larger.
Points are passed as ``[N, m]`` array-likes (``N`` policies or weight settings, ``m``
objectives). Normalise objectives with FIXED bounds (:func:`normalize`) before comparing
methods, and use one reference point and one weight set for all of them.

numpy only, plus ``moocore`` for the hypervolume (moocore minimises; we negate).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from feedalign.multiobjective.weights import validate_weights

__all__ = [
    "as_points",
    "nondominated_mask",
    "nondominated",
    "hypervolume",
    "normalize",
    "expected_utility",
    "conditional_expected_utility",
    "sparsity",
    "front_summary",
    "monotonic_violations",
    "trend_test",
]

# Rows compared at once in the O(N^2 m) dominance test; bounds memory to ~BLOCK*N*m bools.
_BLOCK = 512


def as_points(points: Any, m: int | None = None, *, name: str = "points") -> np.ndarray:
    """``points`` as a finite float64 array ``[N, m]`` (an empty input gives ``[0, m]``)."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.size == 0:
        width = m if m is not None else (arr.shape[-1] if arr.ndim == 2 else 0)
        return np.zeros((0, width))
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected an array [N, m] (one row per point), got shape {arr.shape}")
    if m is not None and arr.shape[1] != m:
        raise ValueError(f"{name}: expected {m} objectives per point, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise ValueError(f"{name}: non-finite value at row {bad[0]}, objective {bad[1]}")
    return arr


def nondominated_mask(points: Any) -> np.ndarray:
    """Boolean mask ``[N]`` of the nondominated points (maximisation, section 13.1).

    ``p`` dominates ``q`` iff ``p_j >= q_j`` for all ``j`` and ``p_j > q_j`` for some ``j``.
    Of several identical nondominated points only the first (lowest index) is kept.
    """
    pts = as_points(points)
    n = pts.shape[0]
    dominated = np.zeros(n, dtype=bool)
    for start in range(0, n, _BLOCK):
        block = pts[start : start + _BLOCK]  # candidates q
        geq = (pts[:, None, :] >= block[None, :, :]).all(axis=2)  # [N, b]: p >= q
        gt = (pts[:, None, :] > block[None, :, :]).any(axis=2)
        dominated[start : start + _BLOCK] = (geq & gt).any(axis=0)
    _, first = np.unique(pts, axis=0, return_index=True)
    is_first = np.zeros(n, dtype=bool)
    is_first[first] = True
    return ~dominated & is_first


def nondominated(points: Any) -> np.ndarray:
    """The nondominated points ``[K, m]``, duplicates dropped, in their original order."""
    pts = as_points(points)
    return pts[nondominated_mask(pts)]


def hypervolume(points: Any, ref: Any) -> float:
    """Hypervolume of ``points`` w.r.t. ``ref`` (maximisation, section 13.2).

    The Lebesgue measure of the union of boxes ``[ref, p]``. Points that are not strictly
    better than ``ref`` in every objective are clipped out; no contributing point gives 0.0.
    Computed exactly by moocore (O(N log N) for m <= 3) on the negated problem.

    Args:
        points: ``[N, m]`` objective vectors.
        ref: ``[m]`` reference point, fixed per benchmark and identical for all methods.
    """
    ref_arr = np.asarray(ref, dtype=np.float64).reshape(-1)
    if ref_arr.size == 0 or not np.all(np.isfinite(ref_arr)):
        raise ValueError(f"hypervolume: ref must be a finite vector, got {ref!r}")
    pts = as_points(points, ref_arr.size)
    pts = pts[(pts > ref_arr).all(axis=1)]
    if pts.shape[0] == 0:
        return 0.0
    import moocore

    return float(moocore.hypervolume(-pts, ref=-ref_arr))


def normalize(points: Any, lower: Any, upper: Any) -> np.ndarray:
    """Map each objective affinely so that ``lower -> 0`` and ``upper -> 1``.

    Bounds must be FIXED per benchmark (e.g. the reference policy's value and a fixed best
    value), never taken from the points being compared. Values outside the bounds are kept
    (no clipping), so a method beating ``upper`` shows values > 1.

    Args:
        points: ``[N, m]`` (or a single point ``[m]``; the shape is preserved).
        lower, upper: scalars or ``[m]`` with ``upper > lower`` elementwise.
    """
    arr = np.asarray(points, dtype=np.float64)
    lo = np.broadcast_to(np.asarray(lower, dtype=np.float64), arr.shape[-1:])
    hi = np.broadcast_to(np.asarray(upper, dtype=np.float64), arr.shape[-1:])
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(hi > lo)):
        raise ValueError(
            f"normalize: need finite bounds with upper > lower in every objective, "
            f"got lower={lo.tolist()}, upper={hi.tolist()}"
        )
    return (arr - lo) / (hi - lo)


def expected_utility(points: Any, weights: Any) -> float:
    """EU_front = mean over weight rows ``w`` of ``max_{J in points} w . J`` (section 13.3).

    Rewards having the right point somewhere in the set (Zintgraf et al. 2015 style).

    Args:
        points: ``[N, m]`` (normalised) objective vectors, ``N >= 1``.
        weights: ``[K, m]`` weight vectors on the simplex (the distribution W, uniform over
            rows), e.g. ``simplex_grid(2, 11)`` or ``sample_simplex(m, K, seed)``.
    """
    w = _weight_rows(weights)
    pts = as_points(points, w.shape[1])
    if pts.shape[0] == 0:
        raise ValueError("expected_utility: needs at least one point")
    return float((w @ pts.T).max(axis=1).mean())


def conditional_expected_utility(points_per_weight: Any, weights: Any) -> float:
    """EU_cond = mean over ``k`` of ``w_k . J(pi_{w_k})`` (section 13.3).

    Checks that steering by ``w`` delivers the point for that ``w``.

    Args:
        points_per_weight: ``[K, m]``; row ``k`` is the objective vector of the policy
            produced for weight ``weights[k]``.
        weights: ``[K, m]`` weight vectors on the simplex.
    """
    w = _weight_rows(weights)
    pts = as_points(points_per_weight, w.shape[1], name="points_per_weight")
    if pts.shape[0] != w.shape[0]:
        raise ValueError(
            f"conditional_expected_utility: {pts.shape[0]} points for {w.shape[0]} weight "
            "vectors; expected one point per weight vector"
        )
    return float(np.einsum("km,km->k", w, pts).mean())


def sparsity(points: Any) -> float:
    """PGMORL-style sparsity of the nondominated subset ``S`` of ``points`` (section 13.4).

    ``SP(S) = 1/(|S|-1) * sum_j sum_i (s_j(i) - s_j(i+1))^2`` with ``s_j`` the sorted values
    of objective ``j`` over ``S``; 0 when ``|S| < 2``. Lower means a denser front; report it
    next to the hypervolume. Pass normalised points.
    """
    front = nondominated(points)
    if front.shape[0] < 2:
        return 0.0
    gaps = np.diff(np.sort(front, axis=0), axis=0)
    return float((gaps**2).sum() / (front.shape[0] - 1))


def front_summary(
    points: Any,
    ref: Any,
    weights: Any,
    lower: Any = None,
    upper: Any = None,
    points_per_weight: Any = None,
) -> dict[str, Any]:
    """All section-13 metrics for one method, as a JSON-ready dict.

    If ``lower`` and ``upper`` are given, ``points``, ``ref`` and ``points_per_weight`` (all
    in raw objective units) are normalised with them first.

    Returns:
        ``{"hv", "eu_front", "eu_cond" (None without points_per_weight), "sparsity",
        "n_points", "n_nondominated"}``.
    """
    if (lower is None) != (upper is None):
        raise ValueError("front_summary: give both lower and upper bounds, or neither")
    pts = as_points(points)
    ref_arr = np.asarray(ref, dtype=np.float64)
    per_w = None if points_per_weight is None else as_points(points_per_weight)
    if lower is not None:
        pts, ref_arr = normalize(pts, lower, upper), normalize(ref_arr, lower, upper)
        per_w = None if per_w is None else normalize(per_w, lower, upper)
    return {
        "hv": hypervolume(pts, ref_arr),
        "eu_front": expected_utility(pts, weights),
        "eu_cond": None if per_w is None else conditional_expected_utility(per_w, weights),
        "sparsity": sparsity(pts),
        "n_points": int(pts.shape[0]),
        "n_nondominated": int(nondominated_mask(pts).sum()),
    }


def monotonic_violations(
    weights_1d: Sequence[float],
    values: Any,
    *,
    tol: float = 0.0,
    names: tuple[str, str] = ("objective_1", "objective_2"),
) -> list[dict[str, Any]]:
    """Where a 2-objective sweep over ``w1`` is not monotone.

    Raising ``w1`` (the weight of objective 1) should never lower objective 1 nor raise
    objective 2. After sorting by ``w1``, every consecutive pair where objective 1 drops by
    more than ``tol`` or objective 2 rises by more than ``tol`` is one violation.

    Args:
        weights_1d: ``[K]`` distinct values of ``w1``.
        values: ``[K, 2]`` objective vectors, row ``k`` for ``weights_1d[k]``.
        tol: allowed slack (e.g. the evaluation's standard error).
        names: objective names used in the report.

    Returns:
        One dict per violation: ``objective`` (name), ``index`` (0 or 1), ``expected``
        ("non-decreasing" or "non-increasing"), ``w_prev``, ``w_next``, ``value_prev``,
        ``value_next``; sorted by ``w_prev`` then ``index``.
    """
    w = np.asarray(weights_1d, dtype=np.float64).reshape(-1)
    vals = as_points(values, 2, name="values")
    if vals.shape[0] != w.size:
        raise ValueError(f"monotonic_violations: {w.size} weights but {vals.shape[0]} value rows")
    order = np.argsort(w, kind="stable")
    w, vals = w[order], vals[order]
    if np.any(np.diff(w) == 0):
        raise ValueError(f"monotonic_violations: weights_1d has repeated values {w.tolist()}")
    out = []
    for k in range(w.size - 1):
        for index, sign, expected in ((0, 1.0, "non-decreasing"), (1, -1.0, "non-increasing")):
            change = sign * (vals[k + 1, index] - vals[k, index])
            if change < -tol:
                out.append(
                    {
                        "objective": names[index],
                        "index": index,
                        "expected": expected,
                        "w_prev": float(w[k]),
                        "w_next": float(w[k + 1]),
                        "value_prev": float(vals[k, index]),
                        "value_next": float(vals[k + 1, index]),
                    }
                )
    return out


def trend_test(weights: Any, values: Any, stderr: Any = None, *, names: Sequence[str] | None = None,
               z: float = 1.96) -> list[dict[str, Any]]:
    """End-to-end trend of each objective in its own weight, with its standard error.

    Steering should make objective ``j`` rise with ``w_j``. For each ``j`` this fits the
    least-squares line ``J_j(w) ~ a + b * w_j`` over the whole sweep and reports the slope
    ``b = sum_k c_k J_kj`` (``c_k = (w_kj - mean_w) / sum (w_kj - mean_w)^2``) with its standard
    error ``se = sqrt(sum_k c_k^2 se_kj^2 * max(1, chi2 / (K - 2)))``,
    ``chi2 = sum_k resid_k^2 / mean_k(se_kj^2)`` (the reduced chi-square inflates ``se`` when
    the points scatter around the line more than the errors say). Equal weights, not ``1 / se^2``: a saturated end of the sweep,
    whose means have tiny errors, would otherwise set the slope alone.
    ``status`` is ``"increasing"`` when ``b > z * se``, ``"reversed"`` when ``b < -z * se``
    and ``"flat"`` otherwise: a reversed or flat trend is a significant failure to steer,
    which comparing neighbouring weights only cannot see (small steps hide in the noise).

    Args:
        weights: ``[K, m]`` the sweep's weight vectors.
        values: ``[K, m]`` the mean objective vector per weight.
        stderr: ``[K, m]`` standard errors of ``values`` (None: unweighted, residual error).
        names: objective names for the report.
        z: the two-sided threshold (1.96 for 95%).

    Returns:
        One dict per objective whose weight varies in the sweep: ``objective``, ``index``,
        ``slope``, ``se``, ``z`` (slope / se), ``status``, ``significant`` (status != increasing).
    """
    w = validate_weights(weights, name="weights")
    w = np.atleast_2d(w)
    vals = as_points(values, w.shape[1], name="values")
    if vals.shape[0] != w.shape[0]:
        raise ValueError(f"trend_test: {w.shape[0]} weights but {vals.shape[0]} value rows")
    se_in = np.zeros_like(vals) if stderr is None else as_points(stderr, w.shape[1], name="stderr")
    names = list(names) if names is not None else [f"objective_{j + 1}" for j in range(w.shape[1])]
    out = []
    for j in range(w.shape[1]):
        x, y = w[:, j], vals[:, j]
        if np.ptp(x) <= 0 or x.size < 2:
            continue
        s = se_in[:, j]
        # Ordinary least squares: a saturated end of a sweep (means with tiny errors) must
        # not outweigh the rest, as inverse-variance weights would let it.
        xm, ym = float(x.mean()), float(y.mean())
        sxx = float(np.sum((x - xm) ** 2))
        slope = float(np.sum((x - xm) * (y - ym)) / sxx)
        resid = y - ym - slope * (x - xm)
        dof = x.size - 2
        if np.all(s <= 0):  # no stated errors (e.g. deterministic scores): the residuals
            se = float(np.sqrt(np.sum(resid**2) / dof / sxx)) if dof > 0 else 0.0
        else:  # the means' errors propagated, inflated when the points scatter more than them
            # Residuals against the mean squared error, not each point's own: a mean with a
            # near-zero error (every sample alike) must not blow the ratio up.
            chi2 = float(np.sum(resid**2) / np.mean(s**2)) / dof if dof > 0 else 0.0
            se = float(np.sqrt(np.sum(((x - xm) / sxx * s) ** 2) * max(1.0, chi2)))
        zval = slope / se if se > 0 else (np.inf if slope > 0 else -np.inf if slope < 0 else 0.0)
        status = "increasing" if zval > z else "reversed" if zval < -z else "flat"
        out.append({"objective": names[j], "index": j, "slope": slope, "se": se, "z": float(zval),
                    "status": status, "significant": status != "increasing"})
    return out


def _weight_rows(weights: Any) -> np.ndarray:
    w = validate_weights(weights, name="weights")
    w = np.atleast_2d(w)
    if w.shape[0] == 0:
        raise ValueError("weights: need at least one weight vector")
    return w
