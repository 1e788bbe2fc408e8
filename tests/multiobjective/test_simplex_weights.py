"""Weight grids, simplex sampling and weight validation."""

import math

import numpy as np
import pytest
import torch

from feedalign.multiobjective.weights import (
    parse_weights,
    sample_simplex,
    simplex_grid,
    validate_weights,
)


def test_simplex_grid_two_objectives():
    grid = simplex_grid(2, 11)
    np.testing.assert_allclose(grid[:, 0], np.arange(11) / 10)
    np.testing.assert_allclose(grid[:, 1], 1 - np.arange(11) / 10)
    np.testing.assert_array_equal(simplex_grid(2, 2), [[0.0, 1.0], [1.0, 0.0]])


@pytest.mark.parametrize("m,n", [(1, 1), (1, 5), (2, 3), (3, 4), (3, 11), (4, 5)])
def test_simplex_grid_counts_and_membership(m, n):
    grid = simplex_grid(m, n)
    expected = 1 if m == 1 else math.comb(n - 1 + m - 1, m - 1)
    assert grid.shape == (expected, m)
    np.testing.assert_allclose(grid.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(grid >= 0)
    if m > 1:
        steps = grid * (n - 1)
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-9)  # on the lattice
        assert len({tuple(np.round(r, 9)) for r in grid}) == expected  # no duplicates
        # Every vertex of the simplex is included.
        for j in range(m):
            assert any(np.allclose(r, np.eye(m)[j]) for r in grid)


def test_simplex_grid_errors():
    with pytest.raises(ValueError, match="n_per_axis must be >= 2 for m=3"):
        simplex_grid(3, 1)
    with pytest.raises(ValueError, match="m must be an int >= 1"):
        simplex_grid(0, 3)
    with pytest.raises(ValueError, match="n_per_axis must be an int >= 1"):
        simplex_grid(2, 2.5)


def test_sample_simplex_properties_and_seeding():
    w = sample_simplex(3, 4000, 123)
    assert w.shape == (4000, 3) and w.dtype == np.float64
    assert np.all(w >= 0)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(w, sample_simplex(3, 4000, 123))
    assert not np.array_equal(w, sample_simplex(3, 4000, 124))
    np.testing.assert_array_equal(w, sample_simplex(3, 4000, np.random.default_rng(123)))
    # Dirichlet(1,1,1): each marginal is Beta(1, 2): mean 1/3, variance 2/36 = 1/18.
    np.testing.assert_allclose(w.mean(axis=0), 1 / 3, atol=0.02)
    np.testing.assert_allclose(w.var(axis=0), 1 / 18, atol=0.006)
    # Uniform on the simplex for m = 2 means w1 ~ Uniform(0, 1): P(w1 < 0.25) = 0.25.
    w2 = sample_simplex(2, 4000, 7)
    assert abs((w2[:, 0] < 0.25).mean() - 0.25) < 0.03
    assert sample_simplex(4, 0, 0).shape == (0, 4)
    np.testing.assert_array_equal(sample_simplex(1, 3, 0), np.ones((3, 1)))


def test_sample_simplex_torch_generator():
    a = sample_simplex(3, 50, torch.Generator().manual_seed(5))
    b = sample_simplex(3, 50, torch.Generator().manual_seed(5))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(a >= 0)
    with pytest.raises(TypeError, match="generator must be an int seed"):
        sample_simplex(3, 5, "seed")
    with pytest.raises(ValueError, match="n must be an int >= 0"):
        sample_simplex(3, -1, 0)


def test_validate_weights_accepts_and_returns_array():
    out = validate_weights([0.25, 0.75], 2)
    assert out.dtype == np.float64 and out.tolist() == [0.25, 0.75]
    assert validate_weights(np.array([[1.0, 0.0], [0.5, 0.5]]), 2).shape == (2, 2)
    validate_weights([1 / 3] * 3)  # sums to 1 within tolerance


@pytest.mark.parametrize(
    "w,m,message",
    [
        ([0.5, -0.1, 0.6], 3, r"weights=\[0.5, -0.1, 0.6\]: weights must be >= 0"),
        ([0.5, 0.5], 3, r"weights=\[0.5, 0.5\]: expected 3 weights \(one per objective\), got 2"),
        ([0.3, 0.6], 2, r"weights=\[0.3, 0.6\]: weights must sum to 1 \(got 0.9\)"),
        ([0.5, float("nan")], 2, r"weights=\[0.5, nan\]: weights must be finite"),
        ([], None, r"weights=\[\]: empty weight vector"),
        ([[1.0, 0.0], [0.2, 0.2]], 2, r"weights\[1\]=\[0.2, 0.2\]: weights must sum to 1"),
        ([[[1.0]]], None, r"expected a vector \[m\] or matrix \[K, m\]"),
        (["a", "b"], None, r"not a numeric vector"),
    ],
)
def test_validate_weights_errors_name_the_vector(w, m, message):
    with pytest.raises(ValueError, match=message):
        validate_weights(w, m)


def test_validate_weights_uses_given_name():
    with pytest.raises(ValueError, match=r"config.weights=\[0.7, 0.7\]: weights must sum to 1"):
        validate_weights([0.7, 0.7], 2, name="config.weights")


def test_parse_weights():
    np.testing.assert_array_equal(parse_weights("0.3,0.7"), [0.3, 0.7])
    np.testing.assert_array_equal(parse_weights(" 0.2 , 0.3,0.5 ", 3), [0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match=r"'0.3,x': entry 1 \('x'\) is not a number"):
        parse_weights("0.3,x")
    with pytest.raises(ValueError, match=r"parsed from '0.3,0.8'.*must sum to 1"):
        parse_weights("0.3,0.8")
    with pytest.raises(ValueError, match=r"expected 3 weights"):
        parse_weights("0.3,0.7", 3)
    with pytest.raises(ValueError, match=r"expected a string"):
        parse_weights([0.3, 0.7])
