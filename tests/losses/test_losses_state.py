"""State providers' math: KTO reference point, BCO reward shift (both rules), MODPO margins."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from feedalign.losses import get_loss
from feedalign.losses._state import KLReferencePoint, MarginRewards, RewardShift


@dataclass
class FakeContext:
    policy_logps: torch.Tensor
    reference_logps: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    feedback: str = "unpaired"
    training: bool = True
    weights: torch.Tensor | None = None
    scored: tuple | None = None
    margins: torch.Tensor | None = None

    @property
    def size(self):
        return len(self.policy_logps) // (2 if self.feedback == "pair" else 1)

    def total(self, values):
        return values.sum() if self.weights is None else (values * self.weights.to(values.dtype)).sum()

    def score_mismatched(self, partners):
        self.partners = list(partners)
        return self.scored

    def margin_rewards(self):
        return self.margins


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_kl_reference_point_scores_rotated_rows_and_takes_the_weighted_mean():
    ctx = FakeContext(t(0.0, 0.0, 0.0), scored=(t(-1.0, -2.0, -4.0), t(-1.5, -1.0, -4.5)))
    out = KLReferencePoint({}).compute(ctx)
    assert ctx.partners == [1, 2, 0]  # (x_i, y_{i+1})
    assert out["kl_ref"].item() == pytest.approx((0.5 - 1.0 + 0.5) / 3)
    ctx.weights = t(1.0, 2.0, 1.0)  # multiplicities count
    assert KLReferencePoint({}).compute(ctx)["kl_ref"].item() == pytest.approx((0.5 - 2.0 + 0.5) / 4)
    with pytest.raises(ValueError, match="at least 2"):
        KLReferencePoint({}).compute(FakeContext(t(0.0)))


def test_midpoint_shift_is_the_midpoint_of_per_class_moving_averages():
    shift = RewardShift({"beta": 0.5, "delta_rule": "midpoint", "delta_momentum": 0.5})
    first = FakeContext(t(2.0, -2.0, 0.0), t(0.0, 0.0, 0.0), torch.tensor([True, False, False]))
    assert shift.compute(first)["delta"].item() == 0.0  # before any batch
    shift.update(first)  # rhat = [1, -1, 0]: m+ = 1, m- = -0.5
    assert shift.compute(first)["delta"].item() == pytest.approx(0.25)
    only_pos = FakeContext(t(6.0), t(0.0), torch.tensor([True]))  # rhat 3; no negatives
    shift.update(only_pos)  # m+ = 0.5*1 + 0.5*3 = 2, m- kept
    assert shift.compute(only_pos)["delta"].item() == pytest.approx((2.0 - 0.5) / 2)
    clone = RewardShift({"beta": 0.5, "delta_rule": "midpoint", "delta_momentum": 0.5})
    clone.load_state_dict(shift.state_dict())
    assert clone.compute(only_pos)["delta"].item() == pytest.approx(0.75)
    with pytest.raises(ValueError, match="rule"):
        clone.load_state_dict({"mean": 0.1, "count": 3, "beta": 0.5})  # the older cumulative format


def test_one_class_stream_gives_that_class_mean():
    shift = RewardShift({"beta": 1.0, "delta_rule": "midpoint", "delta_momentum": 0.9})
    shift.update(FakeContext(t(1.0, 3.0), None, torch.tensor([False, False])))
    assert shift.compute(FakeContext(t(0.0)))["delta"].item() == pytest.approx(2.0)


def test_cumulative_shift_is_the_count_weighted_mean_of_every_row():
    shift = RewardShift({"beta": 0.5, "delta_rule": "cumulative", "delta_momentum": 0.9})
    shift.update(FakeContext(t(-1.0, -3.0), t(-2.0, -2.0), torch.tensor([True, False])))  # [0.5, -0.5]
    shift.update(FakeContext(t(0.0, 0.0, 0.0), t(-1.0, -2.0, -3.0), torch.tensor([True] * 3)))  # [.5, 1, 1.5]
    assert shift.compute(FakeContext(t(0.0)))["delta"].item() == pytest.approx((0.5 - 0.5 + 0.5 + 1.0 + 1.5) / 5)
    # the midpoint rule differs on the same stream (unbalanced classes)
    mid = RewardShift({"beta": 0.5, "delta_rule": "midpoint", "delta_momentum": 0.0})
    mid.update(FakeContext(t(0.0, 0.0, 0.0), t(-1.0, -2.0, -3.0), torch.tensor([True, True, False])))
    assert mid.compute(FakeContext(t(0.0)))["delta"].item() == pytest.approx((0.75 + 1.5) / 2)


def test_bco_ships_the_midpoint_rule_and_declares_it_as_a_hyperparameter():
    spec = get_loss("bco")
    assert spec.hparams["delta_rule"] == "midpoint"
    providers = spec.make_state(spec.resolve_hparams({"beta": 0.2, "delta_rule": "cumulative"}))
    assert providers["delta"].rule == "cumulative" and providers["delta"].beta == 0.2


def test_margins_split_chosen_and_rejected_rows_and_check_the_shape():
    ctx = FakeContext(torch.zeros(4), feedback="pair", margins=torch.tensor([[3.0, 1.0], [1.0, 1.0], [2.0, 1.0],
                                                                             [4.0, 1.0]]))
    out = MarginRewards({}).compute(ctx)
    assert out["chosen_margins"].tolist() == [[3.0, 1.0], [1.0, 1.0]]
    assert out["rejected_margins"].tolist() == [[2.0, 1.0], [4.0, 1.0]]
    ctx.margins = torch.zeros(3, 1)
    with pytest.raises(ValueError, match="expected one row"):
        MarginRewards({}).compute(ctx)
