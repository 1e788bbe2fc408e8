"""The loss contract: declarations checked at registration, hyperparameter validation,
``call_loss`` and the reward verdict every loss declares."""

from __future__ import annotations

import math

import pytest
import torch

from feedalign.losses import HParamError, call_loss, get_loss, list_losses, register_loss, unregister_loss
from feedalign.losses import _hparams as hp
from feedalign.losses._state import KLReferencePoint

BETA_LOSSES = ["dpo", "ipo", "cdpo", "rdpo", "kto", "bco", "modpo"]


@pytest.mark.parametrize("name", BETA_LOSSES)
@pytest.mark.parametrize("value", [-0.5, 0, 0.0, "abc", math.nan, math.inf, True, None])
def test_invalid_beta_is_rejected_naming_key_value_and_range(name, value):
    with pytest.raises(HParamError) as info:
        get_loss(name).resolve_hparams({"beta": value})
    assert info.value.name == "beta"
    assert "beta=" in str(info.value) and "> 0" in info.value.expected


def test_every_hyperparameter_default_is_valid_and_validated():
    for name in list_losses():
        spec = get_loss(name)
        assert set(spec.validators) == set(spec.hparams), name
        assert spec.resolve_hparams() == dict(spec.hparams) or name == "modpo", name


@pytest.mark.parametrize(
    "loss, key, value",
    [("cdpo", "epsilon", 0.5), ("rdpo", "epsilon", -0.1), ("pmpo", "alpha", 1.2), ("pmpo", "beta", -1.0),
     ("kto", "desirable_weight", 0.0), ("bco", "delta_rule", "ema"), ("bco", "delta_momentum", 1.0),
     ("ipo", "length_normalize", "yes"), ("modpo", "weight", 0.0), ("modpo", "margin_weights", (0.5, -1.0)),
     ("bt_reward", "center_coef", -0.01), ("bce_reward", "positive_weight", "1")],
)
def test_out_of_range_and_wrong_type_values_fail(loss, key, value):
    with pytest.raises(HParamError) as info:
        get_loss(loss).resolve_hparams({key: value})
    assert info.value.name.split(".")[0] == key


def test_pmpo_beta_zero_is_valid_but_positive_losses_need_beta_above_zero():
    assert get_loss("pmpo").resolve_hparams({"alpha": 1.0, "beta": 0})["beta"] == 0
    assert get_loss("dpo").resolve_hparams({"beta": 2})["beta"] == 2


def test_registration_checks_the_declaration_against_the_signature():
    def wrong_positional(policy_logps, labels, *, beta: float = 0.1):
        return policy_logps, {}

    with pytest.raises(ValueError, match="positional inputs"):
        register_loss("_t_pos", feedback="unpaired", needs_reference=False, validators={"beta": hp.positive})(
            wrong_positional)

    def seq(policy_logps, *, scale: float = 1.0, lengths=None):
        return policy_logps * scale, {}

    with pytest.raises(ValueError, match="without a validator"):
        register_loss("_t_noval", feedback="sequence", needs_reference=False)(seq)
    with pytest.raises(ValueError, match="optional input 'kl'"):
        register_loss("_t_opt", feedback="sequence", needs_reference=False, optional=("kl",),
                      validators={"scale": hp.positive})(seq)

    def no_kl_ref(policy_logps, reference_logps, labels, *, beta: float = 0.1):
        return policy_logps, {}

    with pytest.raises(ValueError, match="supplies"):
        register_loss("_t_state", feedback="unpaired", needs_reference=True, state={"z": KLReferencePoint},
                      validators={"beta": hp.positive})(no_kl_ref)
    assert not {"_t_pos", "_t_noval", "_t_opt", "_t_state"} & set(list_losses())


def test_call_loss_lays_out_rows_and_passes_only_declared_optional_inputs():
    seen = {}

    def probe(policy_logps, *, lengths=None, scale: float = 1.0):
        seen.update(lengths=lengths, scale=scale)
        return policy_logps * scale, {}

    register_loss("_t_probe", feedback="sequence", needs_reference=False, optional=("lengths",),
                  validators={"scale": hp.positive})(probe)
    try:
        spec = get_loss("_t_probe")
        out = call_loss(spec, policy=torch.tensor([1.0, 2.0]), lengths=torch.tensor([3, 4]),
                        hparams={"scale": 2.0}, extra={"kl": torch.tensor(1.0)})
        assert out.losses.tolist() == [2.0, 4.0] and seen["lengths"].tolist() == [3, 4]
        assert out.correct is None and out.margins is None
    finally:
        unregister_loss("_t_probe")
    # a pair loss gets chosen rows then rejected rows; dpo takes no lengths, so none are passed
    rows = torch.tensor([0.0, -1.0, -2.0, -1.0])  # chosen [0, -1], rejected [-2, -1]
    out = call_loss(get_loss("dpo"), policy=rows, reference=torch.zeros(4), lengths=torch.ones(4),
                    hparams={"beta": 1.0})
    assert out.losses.tolist() == pytest.approx([-math.log(1 / (1 + math.exp(-2.0))), math.log(2)])
    assert out.correct.tolist() == [True, False] and out.margins.tolist() == [2.0, 0.0]
    with pytest.raises(ValueError, match="state inputs"):
        call_loss(get_loss("kto"), policy=torch.zeros(2), reference=torch.zeros(2),
                  labels=torch.tensor([True, False]), hparams=get_loss("kto").resolve_hparams())


def _inputs(name, g):
    spec = get_loss(name)
    rows = 16 if spec.feedback in ("pair", "reward_pair") else 8
    policy = torch.randn(rows, generator=g, dtype=torch.float64)
    reference = None if spec.feedback.startswith("reward") else torch.randn(rows, generator=g, dtype=torch.float64)
    labels = torch.rand(8, generator=g) < 0.5
    state = {
        "kl_ref": torch.tensor(0.3, dtype=torch.float64),
        "delta": torch.tensor(-0.2, dtype=torch.float64),
        "chosen_margins": torch.randn(8, 1, generator=g, dtype=torch.float64),
        "rejected_margins": torch.randn(8, 1, generator=g, dtype=torch.float64),
    }
    outputs = {o for p in spec.state.values() for o in p.outputs}
    return spec, dict(policy=policy, reference=reference, labels=labels,
                      hparams=spec.resolve_hparams({"beta": 0.7} if "beta" in spec.hparams else {}),
                      state={k: v for k, v in state.items() if k in outputs})


@pytest.mark.parametrize("name", ["dpo", "ipo", "cdpo", "rdpo", "kto", "bco", "modpo", "bt_reward", "bce_reward"])
def test_declared_verdict_is_the_losses_own_accuracy_metric(name):
    g = torch.Generator().manual_seed(7)
    spec, kwargs = _inputs(name, g)
    out = call_loss(spec, **kwargs)
    assert out.correct.shape == (8,) and out.correct.dtype == torch.bool
    assert out.correct.float().mean().item() == pytest.approx(out.metrics["rewards/accuracies"].item())
    assert 0 < out.correct.float().mean().item() < 1  # the random batch is mixed: the test can fail


def test_kto_verdict_uses_its_reference_point_and_pmpo_ignores_its_kl_coefficient():
    labels = torch.tensor([True, True])
    policy, reference = torch.tensor([0.2, 0.5]), torch.zeros(2)
    kto = call_loss(get_loss("kto"), policy=policy, reference=reference, labels=labels,
                    hparams=get_loss("kto").resolve_hparams(), state={"kl_ref": torch.tensor(0.3)})
    assert kto.correct.tolist() == [False, True]  # D = 0.2 is below z = 0.3
    for beta in (0.0, 5.0):
        pmpo = call_loss(get_loss("pmpo"), policy=torch.tensor([0.2, -0.5]), reference=reference,
                         labels=labels, hparams={"alpha": 1.0, "beta": beta})
        assert pmpo.correct.tolist() == [True, False]
