"""Rewarded-soups interpolation of state dicts and the LoRA delta caution (ALGORITHMS.md 12.1)."""

import pytest
import torch

from feedalign.multiobjective.soups import (
    interpolate_lora_deltas,
    interpolate_state_dicts,
    lora_delta,
)


def _state_dict(seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return {
        "layer.weight": torch.randn(4, 3, generator=g, dtype=dtype),
        "layer.bias": torch.randn(4, generator=g, dtype=dtype),
        "half.weight": torch.randn(2, 2, generator=g).to(torch.bfloat16),
        "position_ids": torch.arange(5),
        "mask": torch.tensor([True, False, True]),
    }


def test_interpolation_is_weighted_sum_of_float_tensors():
    sds = [_state_dict(0), _state_dict(1), _state_dict(2)]
    lam = [0.2, 0.3, 0.5]
    out = interpolate_state_dicts(sds, lam)
    assert set(out) == set(sds[0])
    for key in ("layer.weight", "layer.bias"):
        expected = sum(c * sd[key] for c, sd in zip(lam, sds))
        torch.testing.assert_close(out[key], expected, rtol=1e-6, atol=1e-6)
        assert out[key].dtype == torch.float32
    # bf16 is accumulated in fp32 and cast back once.
    expected_half = sum(c * sd["half.weight"].float() for c, sd in zip(lam, sds)).to(torch.bfloat16)
    assert out["half.weight"].dtype == torch.bfloat16
    torch.testing.assert_close(out["half.weight"], expected_half)
    # Non-float tensors are copied unchanged (and not aliased).
    assert torch.equal(out["position_ids"], torch.arange(5))
    assert torch.equal(out["mask"], sds[0]["mask"])
    assert out["position_ids"].data_ptr() != sds[0]["position_ids"].data_ptr()


def test_vertex_weights_return_that_model_and_inputs_are_untouched():
    sds = [_state_dict(0, torch.float64), _state_dict(1, torch.float64)]
    before = {k: v.clone() for k, v in sds[1].items()}
    out = interpolate_state_dicts(sds, [0.0, 1.0])
    for key, value in sds[1].items():
        assert torch.equal(out[key], value)
        assert torch.equal(sds[1][key], before[key])
        assert out[key].data_ptr() != value.data_ptr()
    # Midpoint of two models is their mean; a single model is a copy of itself.
    mid = interpolate_state_dicts(sds, [0.5, 0.5])
    torch.testing.assert_close(mid["layer.weight"], (sds[0]["layer.weight"] + sds[1]["layer.weight"]) / 2)
    assert torch.equal(interpolate_state_dicts(sds[:1], [1.0])["layer.bias"], sds[0]["layer.bias"])


def test_interpolated_module_loads_and_is_linear_in_weights():
    torch.manual_seed(0)
    models = [torch.nn.Linear(3, 2) for _ in range(2)]
    merged = torch.nn.Linear(3, 2)
    merged.load_state_dict(interpolate_state_dicts([m.state_dict() for m in models], [0.25, 0.75]))
    x = torch.randn(5, 3)
    # A linear layer is linear in its parameters, so the soup's output is the output mix.
    torch.testing.assert_close(merged(x), 0.25 * models[0](x) + 0.75 * models[1](x))


def test_interpolation_errors():
    a, b = _state_dict(0), _state_dict(1)
    with pytest.raises(ValueError, match=r"state dict 1 keys differ.*missing \['mask'\]"):
        interpolate_state_dicts([a, {k: v for k, v in b.items() if k != "mask"}], [0.5, 0.5])
    with pytest.raises(ValueError, match=r"key 'layer.bias' is \(5,\) torch.float32 in state dict 1"):
        interpolate_state_dicts([a, {**b, "layer.bias": torch.zeros(5)}], [0.5, 0.5])
    with pytest.raises(ValueError, match=r"non-float key 'position_ids'.*differs"):
        interpolate_state_dicts([a, {**b, "position_ids": torch.arange(1, 6)}], [0.5, 0.5])
    with pytest.raises(ValueError, match=r"soup weights=\[0.5, 0.6\]: weights must sum to 1"):
        interpolate_state_dicts([a, b], [0.5, 0.6])
    with pytest.raises(ValueError, match=r"expected 2 weights"):
        interpolate_state_dicts([a, b], [1.0])
    with pytest.raises(ValueError, match="at least one state dict"):
        interpolate_state_dicts([], [])


def _lora(seed, out_f=6, in_f=5, r=2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(r, in_f, generator=g, dtype=torch.float64), torch.randn(
        out_f, r, generator=g, dtype=torch.float64
    )


def test_lora_delta_shape_and_value():
    A, B = _lora(0)
    delta = lora_delta(A, B, scaling=2.0)
    assert delta.shape == (6, 5)
    torch.testing.assert_close(delta, 2.0 * B @ A)
    with pytest.raises(ValueError, match=r"expected A \[r, in\] and B \[out, r\]"):
        lora_delta(A, B.T, 1.0)


def test_average_deltas_not_factors():
    (A1, B1), (A2, B2) = _lora(1), _lora(2)
    lam, scaling = (0.3, 0.7), 0.5
    delta_soup = interpolate_lora_deltas([(A1, B1), (A2, B2)], lam, scaling)
    # Averaging deltas equals the weighted sum of the deltas ...
    expected = lam[0] * lora_delta(A1, B1, scaling) + lam[1] * lora_delta(A2, B2, scaling)
    torch.testing.assert_close(delta_soup, expected)
    # ... and equals interpolating the merged state dicts (same base weight W0).
    W0 = torch.randn(6, 5, dtype=torch.float64)
    merged = interpolate_state_dicts(
        [{"w": W0 + lora_delta(A1, B1, scaling)}, {"w": W0 + lora_delta(A2, B2, scaling)}], lam
    )
    torch.testing.assert_close(merged["w"], W0 + delta_soup)
    # Averaging the factors gives a different matrix: the cross terms B_i A_j do not vanish.
    factors = interpolate_state_dicts([{"A": A1, "B": B1}, {"A": A2, "B": B2}], lam)
    factor_soup = lora_delta(factors["A"], factors["B"], scaling)
    assert (factor_soup - delta_soup).abs().max() > 1e-3
    # The gap is exactly -l1*l2*scaling*(B1 - B2)(A1 - A2).
    gap = -lam[0] * lam[1] * scaling * (B1 - B2) @ (A1 - A2)
    torch.testing.assert_close(factor_soup - delta_soup, gap)


def test_lora_deltas_different_ranks_and_scalings():
    (A1, B1), (A2, B2) = _lora(3, r=2), _lora(4, r=4)
    out = interpolate_lora_deltas([(A1, B1), (A2, B2)], [0.5, 0.5], [1.0, 0.25])
    torch.testing.assert_close(out, 0.5 * B1 @ A1 + 0.125 * B2 @ A2)
    with pytest.raises(ValueError, match="2 scalings for 1 adapters"):
        interpolate_lora_deltas([(A1, B1)], [1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="different shapes"):
        interpolate_lora_deltas([(A1, B1), _lora(5, out_f=3)], [0.5, 0.5], 1.0)
