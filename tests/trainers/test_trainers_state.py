"""State providers: KTO reference point, BCO reward shift, MODPO margins."""

from __future__ import annotations

import pytest
import torch

from feedalign.config import ConfigError, DataSourceConfig, MarginsConfig, TrainConfig
from feedalign.losses import get_loss
from feedalign.data.batching import Batch, Example
from feedalign.trainers.state import (
    KLReferencePoint,
    MarginRewards,
    RunningRewardShift,
    StateContext,
    check_state,
    make_providers,
)


def _batch(prompts, completions, ids=None):
    ids = ids or [str(i) for i in range(len(prompts))]
    examples = [Example(i, p, c) for i, p, c in zip(ids, prompts, completions)]
    return Batch(examples, {}, ids, list(prompts), list(completions), torch.ones(len(prompts)))


def _ctx(batch, policy, reference=None, *, feedback="unpaired", score_texts=None, hparams=None):
    return StateContext(
        batch=batch,
        feedback=feedback,
        policy_logps=torch.as_tensor(policy, dtype=torch.float32),
        reference_logps=None if reference is None else torch.as_tensor(reference, dtype=torch.float32),
        hparams=hparams or {},
        score_texts=score_texts,
        gather=lambda t: t,
        training=True,
    )


def test_kl_ref_scores_rotated_pairs_and_averages():
    calls = []

    def score_texts(prompts, completions, ids):
        calls.append((list(prompts), list(completions), list(ids)))
        policy = torch.tensor([-1.0, -2.0, -4.0])
        reference = torch.tensor([-1.5, -1.0, -4.5])
        return policy, reference

    batch = _batch(["x0", "x1", "x2"], ["y0", "y1", "y2"])
    out = KLReferencePoint().compute(_ctx(batch, [0.0, 0.0, 0.0], score_texts=score_texts))
    prompts, completions, ids = calls[0]
    assert prompts == ["x0", "x1", "x2"] and completions == ["y1", "y2", "y0"]  # (x_i, y_{i+1})
    assert len(set(ids)) == 3 and all("|kl|" in i for i in ids)
    assert out["kl_ref"].item() == pytest.approx((0.5 - 1.0 + 0.5) / 3)
    assert not out["kl_ref"].requires_grad


def test_kl_ref_needs_two_examples():
    with pytest.raises(ValueError, match="at least 2"):
        KLReferencePoint().compute(_ctx(_batch(["x"], ["y"]), [0.0], score_texts=lambda *a: None))


def test_reward_shift_is_the_count_weighted_cumulative_mean():
    shift = RunningRewardShift(beta=0.5)
    first = _ctx(_batch(["a", "b"], ["c", "d"]), [-1.0, -3.0], [-2.0, -2.0])
    assert shift.compute(first)["delta"].item() == 0.0  # before any batch
    shift.update(first)  # rewards 0.5*[1, -1] -> mean 0
    second = _ctx(_batch(["a", "b", "c"], ["d", "e", "f"]), [0.0, 0.0, 0.0], [-1.0, -2.0, -3.0])
    assert shift.compute(second)["delta"].item() == 0.0
    shift.update(second)  # rewards [0.5, 1.0, 1.5]
    expected = (0.5 + -0.5 + 0.5 + 1.0 + 1.5) / 5
    assert shift.compute(second)["delta"].item() == pytest.approx(expected)
    clone = RunningRewardShift(beta=0.5)
    clone.load_state_dict(shift.state_dict())
    assert (
        clone.state_dict() == shift.state_dict() == {"mean": pytest.approx(expected), "count": 5, "beta": 0.5}
    )


def test_margins_split_chosen_and_rejected_rows():
    def margins(prompts, completions):
        return torch.tensor([[float(len(c)), 1.0] for c in completions])

    batch = _batch(["p", "q", "p", "q"], ["aaa", "b", "cc", "dddd"])
    batch.examples = batch.examples[:2]  # 2 pairs -> 4 rows
    out = MarginRewards(margins).compute(_ctx(batch, [0.0] * 4, feedback="pair"))
    assert out["chosen_margins"].tolist() == [[3.0, 1.0], [1.0, 1.0]]
    assert out["rejected_margins"].tolist() == [[2.0, 1.0], [4.0, 1.0]]
    with pytest.raises(ValueError, match="expected one row"):
        MarginRewards(lambda p, c: torch.zeros(3, 1)).compute(_ctx(batch, [0.0] * 4, feedback="pair"))


def test_check_state_and_provider_construction():
    train = TrainConfig(output_dir="o", micro_batch_size=1)
    with pytest.raises(ConfigError, match="micro_batch_size >= 2"):
        check_state(get_loss("kto"), DataSourceConfig(loss="kto"), train, "data.0")
    with pytest.raises(ConfigError) as info:
        check_state(get_loss("modpo"), DataSourceConfig(loss="modpo"), train, "data.3")
    assert info.value.key == "data.3.margins"
    source = DataSourceConfig(loss="modpo", margins=MarginsConfig(target="trainer_fixtures:length_margins"))
    check_state(get_loss("modpo"), source, train, "data.0")
    providers = make_providers(get_loss("modpo"), source, {"beta": 0.1})
    assert isinstance(providers["margins"], MarginRewards)
    bad = DataSourceConfig(loss="modpo", margins=MarginsConfig(target="no_such_module_xyz:fn"))
    with pytest.raises(ConfigError) as info:
        make_providers(get_loss("modpo"), bad, {"beta": 0.1}, prefix="data.1")
    assert info.value.key == "data.1.margins"
    assert isinstance(
        make_providers(get_loss("bco"), DataSourceConfig(loss="bco"), {"beta": 0.1})["delta"],
        RunningRewardShift,
    )
