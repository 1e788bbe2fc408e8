"""Section 13 of docs/ALGORITHMS.md as assertions: Pareto filter, HV, EU, sparsity."""

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feedalign.evaluation.pareto import (
    conditional_expected_utility,
    expected_utility,
    front_summary,
    hypervolume,
    monotonic_violations,
    nondominated,
    nondominated_mask,
    normalize,
    sparsity,
)
from feedalign.multiobjective.weights import simplex_grid


def hypervolume_2d(points, ref):
    """Exact 2-D sweep of ALGORITHMS.md 13.2 (maximisation); the oracle for moocore."""
    pts = [p for p in points if p[0] > ref[0] and p[1] > ref[1]]
    pts.sort(key=lambda p: (-p[0], -p[1]))
    hv, best2 = 0.0, ref[1]
    for p1, p2 in pts:
        if p2 > best2:
            hv += (p1 - ref[0]) * (p2 - best2)
            best2 = p2
    return hv


def hypervolume_3d(points, ref):
    """Exact 3-D slicing along objective 3 (ALGORITHMS.md 13.2)."""
    pts = sorted((p for p in points if all(p[j] > ref[j] for j in range(3))), key=lambda p: -p[2])
    hv = 0.0
    for i, p in enumerate(pts):
        below = pts[i + 1][2] if i + 1 < len(pts) else ref[2]
        hv += (p[2] - below) * hypervolume_2d([q[:2] for q in pts[: i + 1]], ref[:2])
    return hv


def brute_force_nondominated(points):
    out = []
    for i, q in enumerate(points):
        dominated = any(
            all(p[j] >= q[j] for j in range(len(q))) and any(p[j] > q[j] for j in range(len(q)))
            for p in points
        )
        if not dominated and tuple(q) not in {tuple(points[k]) for k in range(i)}:
            out.append(tuple(q))
    return out


# Small integer grids give many ties and duplicates; halves keep arithmetic exact.
coord = st.integers(-6, 6).map(lambda v: v / 2)
points2 = st.lists(st.tuples(coord, coord), min_size=0, max_size=25)
points3 = st.lists(st.tuples(coord, coord, coord), min_size=0, max_size=20)


# ---------------------------------------------------------------- nondominated filter


def test_nondominated_cases():
    pts = [[1, 2], [2, 1], [1, 2], [0, 0], [2, 1], [1, 1], [2, 2.5]]
    # [2, 2.5] dominates everything else.
    np.testing.assert_array_equal(nondominated(pts), [[2, 2.5]])
    pts = [[1, 2], [2, 1], [1, 2], [0, 0], [2, 1], [1, 1]]
    np.testing.assert_array_equal(nondominated(pts), [[1, 2], [2, 1]])  # duplicates dropped, order kept
    np.testing.assert_array_equal(nondominated_mask(pts), [True, True, False, False, False, False])
    # Weak dominance: equal in one objective, better in the other.
    np.testing.assert_array_equal(nondominated([[1, 1], [1, 2]]), [[1, 2]])
    assert nondominated(np.zeros((0, 3))).shape == (0, 3)
    np.testing.assert_array_equal(nondominated([[3, 3, 3]]), [[3, 3, 3]])


@settings(max_examples=150, deadline=None)
@given(points3)
def test_nondominated_matches_brute_force(points):
    got = [tuple(p) for p in nondominated(np.asarray(points, dtype=float).reshape(-1, 3))]
    assert got == brute_force_nondominated(points)


def test_nondominated_rejects_bad_shapes():
    with pytest.raises(ValueError, match="non-finite value at row 1"):
        nondominated([[1, 2], [np.nan, 1]])
    with pytest.raises(ValueError, match=r"expected an array \[N, m\]"):
        nondominated([1, 2, 3])


# ---------------------------------------------------------------- hypervolume


def test_hv_single_point_is_box_volume():
    assert hypervolume([[3.0, 2.0]], [1.0, 0.5]) == pytest.approx(2.0 * 1.5)
    assert hypervolume([[3.0, 2.0, 4.0]], [0.0, 0.0, 1.0]) == pytest.approx(3 * 2 * 3)
    assert hypervolume([[2.5]], [0.5]) == pytest.approx(2.0)


def test_hv_hand_worked_and_clipping():
    pts = [[5, 5], [4, 6], [2, 7], [7, 4]]
    assert hypervolume(pts, [0, 0]) == pytest.approx(28 + 5 + 4 + 2)
    # A point not strictly better than ref in every objective contributes nothing.
    assert hypervolume(pts + [[100, 0]], [0, 0]) == pytest.approx(39)
    assert hypervolume(pts + [[100, -1]], [0, 0]) == pytest.approx(39)
    assert hypervolume([[100, 0], [-1, 50]], [0, 0]) == 0.0
    assert hypervolume([], [0, 0]) == 0.0
    assert hypervolume(np.zeros((0, 2)), [0, 0]) == 0.0


def test_hv_errors():
    with pytest.raises(ValueError, match="expected 2 objectives"):
        hypervolume([[1, 2, 3]], [0, 0])
    with pytest.raises(ValueError, match="ref must be a finite vector"):
        hypervolume([[1, 2]], [0, np.inf])


@settings(max_examples=200, deadline=None)
@given(points2, st.tuples(coord, coord))
def test_hv_2d_equals_exact_sweep(points, ref):
    arr = np.asarray(points, dtype=float).reshape(-1, 2)
    assert hypervolume(arr, ref) == pytest.approx(hypervolume_2d(points, ref), rel=1e-12, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(points3, st.tuples(coord, coord, coord))
def test_hv_3d_equals_exact_slicing(points, ref):
    arr = np.asarray(points, dtype=float).reshape(-1, 3)
    assert hypervolume(arr, ref) == pytest.approx(hypervolume_3d(points, ref), rel=1e-12, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(points2, st.floats(0.5, 3.0))
def test_hv_3d_with_constant_third_objective_is_2d_times_height(points, c):
    ref = (-3.5, -3.5, 0.0)
    arr = np.asarray(points, dtype=float).reshape(-1, 2)
    lifted = np.column_stack([arr, np.full(len(arr), c)])
    expected = hypervolume_2d(points, ref[:2]) * (c - ref[2])
    assert hypervolume(lifted, ref) == pytest.approx(expected, rel=1e-12, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(points3.filter(len), st.data())
def test_hv_dominated_point_permutation_and_monotonicity(points, data):
    ref = np.array([-3.5, -3.5, -3.5])
    arr = np.asarray(points, dtype=float)
    base = hypervolume(arr, ref)
    # Adding a point dominated by (or equal to) an existing one changes nothing.
    i = data.draw(st.integers(0, len(arr) - 1))
    shrink = np.asarray(data.draw(st.tuples(*[st.integers(0, 4).map(lambda v: v / 2)] * 3)))
    assert hypervolume(np.vstack([arr, arr[i] - shrink]), ref) == pytest.approx(base, abs=1e-12)
    # Permutation invariance.
    perm = np.random.default_rng(data.draw(st.integers(0, 10**6))).permutation(len(arr))
    assert hypervolume(arr[perm], ref) == pytest.approx(base, abs=1e-12)
    # Monotone under improving any point (never decreases).
    improved = arr.copy()
    improved[i] += shrink
    assert hypervolume(improved, ref) >= base - 1e-12
    # Equal to the HV of the nondominated subset.
    assert hypervolume(nondominated(arr), ref) == pytest.approx(base, abs=1e-12)


def test_hv_strictly_increases_when_front_point_improves():
    pts = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]])
    better = pts.copy()
    better[1] += [0.5, 0.0]
    assert hypervolume(better, [0, 0]) > hypervolume(pts, [0, 0])


# ---------------------------------------------------------------- normalisation, EU, sparsity


def test_normalize_fixed_bounds():
    pts = np.array([[1.0, 10.0], [3.0, 30.0], [5.0, 0.0]])
    out = normalize(pts, [1.0, 0.0], [3.0, 20.0])
    np.testing.assert_allclose(out, [[0.0, 0.5], [1.0, 1.5], [2.0, 0.0]])  # no clipping
    np.testing.assert_allclose(normalize([2.0, 5.0], 0.0, 10.0), [0.2, 0.5])
    with pytest.raises(ValueError, match="upper > lower"):
        normalize(pts, [0, 1], [1, 1])


def test_expected_utility_hand_worked():
    pts = [[1.0, 0.0], [0.0, 1.0], [0.6, 0.6]]
    w = [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    # max w.J per row: 1.0, 0.6, 1.0 -> mean 2.6/3
    assert expected_utility(pts, w) == pytest.approx(2.6 / 3)
    # The grid w1 in {0, .1, ..., 1} on the single point (0.5, 0.5) gives 0.5.
    assert expected_utility([[0.5, 0.5]], simplex_grid(2, 11)) == pytest.approx(0.5)
    # Front {(1,0),(0,1)} on the 11-point grid: mean of max(w1, 1-w1).
    grid = simplex_grid(2, 11)
    expected = np.mean(np.maximum(grid[:, 0], grid[:, 1]))
    assert expected_utility([[1, 0], [0, 1]], grid) == pytest.approx(expected)
    assert expected == pytest.approx(8.5 / 11)  # (1+.9+.8+.7+.6+.5+.6+.7+.8+.9+1)/11
    # A single weight vector works too.
    assert expected_utility(pts, [0.5, 0.5]) == pytest.approx(0.6)


def test_conditional_expected_utility_hand_worked():
    w = [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    per_w = [[0.9, 0.1], [0.4, 0.8], [0.2, 0.7]]
    # 0.9, 0.6, 0.7 -> mean 2.2/3
    assert conditional_expected_utility(per_w, w) == pytest.approx(2.2 / 3)
    # EU_cond <= EU_front on the same points (max over the set >= the delivered point).
    assert conditional_expected_utility(per_w, w) <= expected_utility(per_w, w) + 1e-12
    with pytest.raises(ValueError, match="one point per weight vector"):
        conditional_expected_utility(per_w[:2], w)


def test_eu_rejects_bad_weights():
    with pytest.raises(ValueError, match=r"weights\[1\]=\[0.5, 0.6\]: weights must sum to 1"):
        expected_utility([[1, 0]], [[1, 0], [0.5, 0.6]])
    with pytest.raises(ValueError, match="expected 2 objectives"):
        expected_utility([[1, 0, 0]], [[1, 0]])


def test_sparsity_hand_worked():
    assert sparsity([[0, 1], [0.5, 0.5], [1, 0]]) == pytest.approx(0.5)
    # (0,3),(1,1),(3,0): objective 1 sorted 0,1,3 -> 1+4; objective 2 sorted 0,1,3 -> 1+4; /2
    assert sparsity([[0, 3], [1, 1], [3, 0]]) == pytest.approx(5.0)
    # Dominated points and duplicates are ignored; fewer than 2 front points gives 0.
    assert sparsity([[0, 3], [1, 1], [3, 0], [0.5, 0.5], [1, 1]]) == pytest.approx(5.0)
    assert sparsity([[1, 1], [0, 0], [1, 1]]) == 0.0
    assert sparsity(np.zeros((0, 2))) == 0.0
    # Denser sampling of the same front lowers sparsity.
    t = np.linspace(0, 1, 3)
    t_dense = np.linspace(0, 1, 9)
    assert sparsity(np.column_stack([t_dense, 1 - t_dense])) < sparsity(np.column_stack([t, 1 - t]))


def test_front_summary_normalises_points_and_ref():
    raw = np.array([[2.0, 10.0], [4.0, 0.0], [1.0, 1.0]])
    w = simplex_grid(2, 3)
    out = front_summary(raw, ref=[0.0, 0.0], weights=w, lower=[0.0, 0.0], upper=[4.0, 10.0],
                        points_per_weight=[[1.0, 1.0], [2.0, 10.0], [4.0, 0.0]])
    norm = np.array([[0.5, 1.0], [1.0, 0.0], [0.25, 0.1]])
    assert out["hv"] == pytest.approx(hypervolume_2d(norm.tolist(), (0.0, 0.0)))
    assert out["hv"] == pytest.approx(0.5)
    assert out["eu_front"] == pytest.approx(expected_utility(norm, w))
    # per-weight points normalise to (.25,.1), (.5,1), (1,0) for w = (0,1), (.5,.5), (1,0)
    assert out["eu_cond"] == pytest.approx((0.1 + 0.75 + 1.0) / 3)
    assert out["sparsity"] == pytest.approx(sparsity(norm))
    assert (out["n_points"], out["n_nondominated"]) == (3, 2)
    bare = front_summary(raw, ref=[0.0, 0.0], weights=w)
    assert bare["eu_cond"] is None and bare["hv"] == pytest.approx(20.0)
    with pytest.raises(ValueError, match="both lower and upper"):
        front_summary(raw, [0, 0], w, lower=[0, 0])


# ---------------------------------------------------------------- monotone sweeps


def test_monotonic_violations():
    w1 = [1.0, 0.0, 0.5, 0.75]  # unsorted on purpose
    vals = [[0.9, 0.1], [0.0, 1.0], [0.6, 0.5], [0.5, 0.6]]
    # sorted: w=0 (0,1), .5 (.6,.5), .75 (.5,.6), 1 (.9,.1): .5->.75 breaks both objectives.
    out = monotonic_violations(w1, vals, names=("helpful", "harmless"))
    assert [(v["objective"], v["w_prev"], v["w_next"]) for v in out] == [
        ("helpful", 0.5, 0.75),
        ("harmless", 0.5, 0.75),
    ]
    assert out[0]["expected"] == "non-decreasing" and out[1]["expected"] == "non-increasing"
    assert out[0]["value_prev"] == 0.6 and out[0]["value_next"] == 0.5
    assert monotonic_violations(w1, vals, tol=0.11) == []
    assert monotonic_violations([0, 0.5, 1], [[0, 1], [0.5, 0.5], [1, 0]]) == []
    with pytest.raises(ValueError, match="repeated values"):
        monotonic_violations([0, 0], [[0, 1], [1, 0]])


def test_pareto_module_does_not_import_torch():
    code = (
        "import sys, feedalign.evaluation, feedalign.evaluation.pareto, "
        "feedalign.evaluation.report, feedalign.evaluation.plots, feedalign.multiobjective; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_hv_2d_continuous_random_sets_match_exact_sweep():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 30, 200):
        pts = rng.normal(size=(n, 2))
        ref = rng.normal(size=2) - 1.0
        assert hypervolume(pts, ref) == pytest.approx(hypervolume_2d(pts.tolist(), ref), rel=1e-10)


def test_nondominated_across_blocks():
    # More points than one comparison block: 1100 on the line x + y = 1 (all nondominated)
    # and 150 strictly below it (each dominated by a line point), shuffled.
    rng = np.random.default_rng(1)
    t = rng.permutation(1100) / 1100
    front = np.column_stack([t, 1 - t])
    inner = front[:150] - rng.uniform(0.01, 0.1, size=(150, 2))
    pts = np.vstack([front, inner])
    order = rng.permutation(len(pts))
    mask = nondominated_mask(pts[order])
    np.testing.assert_array_equal(mask, order < 1100)


def test_trend_test_catches_reversed_and_flat_sweeps_that_neighbours_miss():
    from feedalign.evaluation.pareto import trend_test

    w1 = np.linspace(0, 1, 11)
    weights = np.stack([w1, 1 - w1], axis=1)
    se = np.full((11, 2), 0.02)
    # Reversed by 0.01 per step: every neighbouring step (0.01) is inside 1.96 * sqrt(2) * 0.02.
    reversed_vals = np.stack([0.6 - 0.1 * w1, 0.5 + 0.1 * w1], axis=1)
    found = monotonic_violations(w1, reversed_vals)
    noise = 1.96 * np.hypot(0.02, 0.02)
    assert all(abs(v["value_next"] - v["value_prev"]) < noise for v in found)  # none significant
    out = trend_test(weights, reversed_vals, se, names=("helpful", "concise"))
    assert [t["status"] for t in out] == ["reversed", "reversed"]
    assert all(t["significant"] for t in out)
    # slope of objective 1 in w_1 is -0.1 and of objective 2 in w_2 is -0.1; se = 0.02 / sqrt(sum (x - mean)^2)
    sxx = np.sum((w1 - w1.mean()) ** 2)
    assert out[0]["slope"] == pytest.approx(-0.1)
    assert out[0]["se"] == pytest.approx(0.02 / np.sqrt(sxx))
    # Flat (no steering, noise only): not significantly increasing.
    rng = np.random.default_rng(0)
    flat = 0.6 + rng.normal(0, 0.02, size=(11, 2))
    assert {t["status"] for t in trend_test(weights, flat, se)} == {"flat"}
    # A real trade-off passes.
    good = np.stack([0.2 + 0.5 * w1, 0.9 - 0.4 * w1], axis=1) + rng.normal(0, 0.02, size=(11, 2))
    assert [t["status"] for t in trend_test(weights, good, se)] == ["increasing", "increasing"]


def test_trend_test_inflates_se_by_scatter_and_handles_three_objectives():
    from feedalign.evaluation.pareto import trend_test
    from feedalign.multiobjective.weights import simplex_grid

    w1 = np.linspace(0, 1, 6)
    weights = np.stack([w1, 1 - w1], axis=1)
    zigzag = np.stack([0.1 * w1 + 0.3 * (np.arange(6) % 2), 1 - w1], axis=1)  # scatter >> stated se
    tiny_se = np.full((6, 2), 1e-4)
    out = trend_test(weights, zigzag, tiny_se)
    assert out[0]["status"] == "flat"  # the reduced chi-square, not the 1e-4, sets the error
    w3 = simplex_grid(3, 5)
    vals = w3 * 0.8 + 0.1
    res = trend_test(w3, vals, np.full_like(vals, 0.01))
    assert [t["status"] for t in res] == ["increasing"] * 3
    assert [t["slope"] for t in res] == pytest.approx([0.8] * 3)


def test_trend_test_is_not_set_by_a_saturated_end_of_the_sweep():
    from feedalign.evaluation.pareto import trend_test

    # A MODPO sweep measured on the text task: concise saturates at w_concise >= 0.75, where its
    # means have tiny errors; inverse-variance weights made this strong rise look flat (z 0.2).
    w_c = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    weights = np.stack([1 - w_c, w_c], axis=1)
    vals = np.stack([1 - w_c, [0.365, 0.537, 0.852, 0.917, 0.916]], axis=1)
    se = np.stack([np.full(5, 0.02), [0.019, 0.018, 0.012, 0.004, 0.004]], axis=1)
    out = trend_test(weights, vals, se, names=("helpful", "concise"))
    assert out[1]["status"] == "increasing" and out[1]["z"] > 3
    assert out[1]["slope"] == pytest.approx(np.polyfit(w_c, vals[:, 1], 1)[0])
