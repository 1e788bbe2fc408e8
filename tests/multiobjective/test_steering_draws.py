"""Where a steered source's weights come from: the trainable region, the concentration and
the scalarize mode's Dirichlet(alpha + e_k)."""

import numpy as np
import pytest

from feedalign.multiobjective.steering import SteeringSpec, spec_for_source

OBJ = ("helpful", "concise")


def _draws(spec, n=20000):
    return spec.weights_for([f"id{i}" for i in range(n)])


def test_region_is_uniform_above_the_bound_not_piled_on_it():
    spec = SteeringSpec(OBJ, trained="helpful", grid=100, min_weight=0.5)
    w = _draws(spec)
    assert w[:, 0].min() >= 0.5 - 1e-12
    # uniform on [0.5, 1]: mean 0.75, and the bound level holds ~ 1/100 of the mass, not half
    assert abs(w[:, 0].mean() - 0.75) < 0.01
    assert np.mean(np.isclose(w[:, 0], 0.5)) < 0.02
    # snapping alone (the old rule) would put every draw below 0.5 onto 0.5
    assert np.mean(w[:, 0] < 0.6) == pytest.approx(0.2, abs=0.02)


@pytest.mark.parametrize("alpha", [0.3, 1.0, 2.0])
def test_concentration_draws_beta_alpha_alpha(alpha):
    spec = SteeringSpec(OBJ, grid=1000, concentration=alpha)
    x = _draws(spec)[:, 0]
    var = 1.0 / (4.0 * (2.0 * alpha + 1.0))  # Beta(alpha, alpha)
    assert abs(x.mean() - 0.5) < 0.01
    assert x.var() == pytest.approx(var, rel=0.05)


def test_low_concentration_puts_the_draws_near_the_vertices():
    near = {a: np.mean(_draws(SteeringSpec(OBJ, grid=20, concentration=a)).max(axis=1) >= 0.9)
            for a in (0.3, 1.0)}
    assert near[1.0] == pytest.approx(0.2 + 0.05 * 0.5 * 2, abs=0.02)  # levels 18..20 of 20, both ends
    assert near[0.3] > 0.45


def test_scalarize_draws_have_density_proportional_to_w_k():
    # Dirichlet(alpha * 1 + e_k): E[w_k] = (alpha + 1) / (m alpha + 1); no lower bound on w_k
    for alpha, k in ((1.0, 0), (0.5, 1)):
        spec = SteeringSpec(OBJ, trained=OBJ[k], grid=1000, mode="scalarize", concentration=alpha)
        w = _draws(spec)
        assert w[:, k].mean() == pytest.approx((alpha + 1) / (2 * alpha + 1), abs=0.01)
        assert spec.min_level == 0 and spec.snap([0.0, 1.0]).tolist() == [0.0, 1.0]


def test_draws_are_seeded_and_invalid_settings_refused():
    spec = SteeringSpec(OBJ, trained="helpful", concentration=0.3, seed=4)
    assert np.array_equal(_draws(spec, 50), _draws(SteeringSpec(OBJ, trained="helpful", concentration=0.3, seed=4), 50))
    assert not np.array_equal(_draws(spec, 50), _draws(SteeringSpec(OBJ, trained="helpful", concentration=0.3, seed=5), 50))
    for bad in (0, -1.0, float("inf"), "0.3"):
        with pytest.raises(ValueError, match="concentration"):
            SteeringSpec(OBJ, concentration=bad)
    with pytest.raises(ValueError, match="mode"):
        SteeringSpec(OBJ, mode="sum")
    block = spec_for_source({"objectives": list(OBJ), "concentration": 0.3, "mode": "scalarize"},
                            trained="concise", beta=0.1)
    assert block.concentration == 0.3 and block.mode == "scalarize"
