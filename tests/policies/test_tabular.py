"""Tabular policies and the tabular training loop (fit_tabular + state providers)."""

from __future__ import annotations

import pytest
import torch

from feedalign.envs import exact_feedback as fb
from feedalign.envs.exact import ExactEnv, tv_distance
from feedalign.losses import get_loss
from feedalign.policies.tabular import OffsetImplicitReward, SteerableTabularPolicy, TabularPolicy, TabularReward
from feedalign.policies.tabular_fit import (
    StepContext,
    TabularStateContext,
    batch_objective,
    exact_kl,
    fit_tabular,
)

torch.set_num_threads(1)
W = torch.tensor([0.7, 0.3], dtype=torch.float64)


@pytest.fixture(scope="module")
def env() -> ExactEnv:
    return ExactEnv(4, 5, 2, beta=1.0, seed=3)


def test_tabular_policy_normalised_and_gathers():
    logits = torch.randn(3, 4)
    policy = TabularPolicy(3, 4, logits)
    assert torch.allclose(policy.probs().sum(-1), torch.ones(3))
    prompt, response = torch.tensor([0, 2, 2]), torch.tensor([1, 0, 3])
    expected = torch.log_softmax(logits, -1)[prompt, response]
    assert torch.allclose(policy.sequence_logps(prompt, response), expected)
    assert torch.allclose(TabularPolicy(2, 5).probs(), torch.full((2, 5), 0.2))
    with pytest.raises(ValueError, match="expected shape"):
        TabularPolicy(3, 4, torch.zeros(3, 5))


def test_steerable_linear_family_contains_every_optimum(env):
    # base = log pi_ref, head_i = r_i / beta reproduces pi*_w for every w (the per-prompt
    # normaliser log Z_w is ignored by the softmax).
    policy = SteerableTabularPolicy(4, 5, 2, init_logits=env.ref_logp.float())
    with torch.no_grad():
        policy.heads.copy_((env.rewards / env.beta).permute(2, 0, 1).float())
    for w1 in (0.0, 0.13, 0.5, 0.92, 1.0):
        w = torch.tensor([w1, 1 - w1], dtype=torch.float64)
        assert tv_distance(policy.probs(w).detach(), env.optimum(w)) < 1e-6


def test_steerable_per_example_logps_match_snapshot():
    torch.manual_seed(0)
    policy = SteerableTabularPolicy(3, 4, 2, init_logits=torch.randn(3, 4))
    with torch.no_grad():
        policy.heads.normal_()
    prompt, response = torch.tensor([0, 1, 2, 1]), torch.tensor([3, 0, 2, 2])
    w = torch.tensor([[0.2, 0.8], [0.5, 0.5], [1.0, 0.0], [0.9, 0.1]])
    per_example = policy.sequence_logps(prompt, response, w)
    for b in range(4):
        snapshot = policy.at(w[b]).sequence_logps(prompt[b : b + 1], response[b : b + 1])
        assert torch.allclose(per_example[b], snapshot[0], atol=1e-6)
    mlp = SteerableTabularPolicy(3, 4, 2, hidden=8)  # zero-initialised residual: same start
    assert torch.allclose(mlp.sequence_logps(prompt, response, w), torch.full((4,), -torch.log(torch.tensor(4.0))))


def test_fit_dpo_population_reaches_pi_star(env):
    policy = TabularPolicy(4, 5, env.ref_logp.float())
    fit_tabular(policy, "dpo", fb.population_pairs(env, w=W), hparams={"beta": env.beta},
                reference=env.ref_logp.float(), steps=400, lr=0.1)
    assert tv_distance(policy.probs().detach(), env.optimum(W)) < 1e-4


def test_weighted_rows_equal_repeated_rows(env):
    # Reduction invariance: a compressed set (weights = multiplicities) has the same objective
    # and gradient as the raw rows.
    raw = fb.sample_pairs(env, 3000, w=W, generator=5)
    compressed = fb.compress(raw)
    spec, ref = get_loss("dpo"), env.ref_logp.float()
    grads = []
    for data in (raw, compressed):
        policy = TabularPolicy(4, 5, torch.randn(4, 5, generator=torch.Generator().manual_seed(1)))
        loss, _ = batch_objective(spec, policy, data, reference=ref, hparams={"beta": 1.0})
        loss.backward()
        grads.append((loss.detach(), policy.logits.grad.clone()))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-5)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-6)


def test_minibatch_adam_and_lbfgs_agree(env):
    data = fb.compress(fb.sample_pairs(env, 20000, w=W, generator=2))
    ref = env.ref_logp.float()
    full = TabularPolicy(4, 5, ref)
    fit_tabular(full, "dpo", data, hparams={"beta": 1.0}, reference=ref, steps=10, lr=1.0, optimizer="lbfgs")
    mini = TabularPolicy(4, 5, ref)
    fit_tabular(mini, "dpo", fb.sample_pairs(env, 20000, w=W, generator=2), hparams={"beta": 1.0},
                reference=ref, steps=600, lr=0.02, batch_size=4000)
    assert tv_distance(full.probs().detach(), mini.probs().detach()) < 0.01


def test_fit_errors_name_the_problem(env):
    policy, data = TabularPolicy(4, 5), fb.population_pairs(env, w=W)
    with pytest.raises(ValueError, match="needs margin rewards"):
        fit_tabular(policy, "modpo", data, reference=env.ref_logp.float(), steps=1)
    with pytest.raises(ValueError, match="needs a reference"):
        fit_tabular(policy, "dpo", data, steps=1)
    with pytest.raises(ValueError, match="optimizer"):
        fit_tabular(policy, "dpo", data, reference=env.ref_logp.float(), steps=1, optimizer="sgd")
    with pytest.raises(ValueError, match="gamma=1 is invalid"):
        fit_tabular(policy, "dpo", data, reference=env.ref_logp.float(), hparams={"gamma": 1}, steps=1)


def test_reward_models_through_registry(env):
    ref = env.ref_logp.float()
    model = TabularReward(4, 5)
    fit_tabular(model, "bt_reward", fb.population_pairs(env, w=W), steps=400, lr=0.1)
    rl = torch.softmax(env.ref_logp + model.table.detach().double() / env.beta, -1)  # exact KL-RL
    assert tv_distance(rl, env.optimum(W)) < 1e-4

    policy = TabularPolicy(4, 5, ref)
    fit_tabular(OffsetImplicitReward(policy, ref, env.beta), "bce_reward", fb.population_thumbs(env, w=W),
                steps=600, lr=0.1)
    assert tv_distance(policy.probs().detach(), env.optimum(W)) < 1e-3


def test_state_context_scores_mismatched_rows_by_index_and_weights_totals(env):
    policy = TabularPolicy(4, 5, torch.randn(4, 5))
    ref = env.ref_logp.float()
    batch = {"prompt": torch.tensor([0, 1, 3]), "response": torch.tensor([2, 4, 1]),
             "label": torch.ones(3, dtype=torch.bool), "weight": torch.tensor([1.0, 2.0, 3.0])}
    ctx = TabularStateContext(StepContext(policy, batch, ref, 0), "unpaired", torch.zeros(3), None,
                              batch["label"], None)
    logps, reference = ctx.score_mismatched([1, 2, 0])
    mismatched = torch.tensor([4, 1, 2])
    assert torch.allclose(logps, policy.log_probs()[batch["prompt"], mismatched]) and not logps.requires_grad
    assert torch.allclose(reference, ref[batch["prompt"], mismatched])
    assert ctx.total(torch.tensor([1.0, 1.0, 1.0])).item() == 6.0
    with pytest.raises(ValueError, match="margin rewards"):
        ctx.margin_rewards()


def test_exact_kl_and_margin_table(env):
    ref = env.ref_logp.float()
    policy = TabularPolicy(4, 5, torch.randn(4, 5))
    batch = {"prompt": torch.tensor([0, 0, 1, 2]), "response": torch.tensor([1, 2, 3, 4]),
             "label": torch.tensor([True, True, False, False])}
    kl = exact_kl(StepContext(policy, batch, ref, 0))
    per_prompt = (ref.exp() * (ref - policy.log_probs())).sum(-1)
    assert torch.allclose(kl, per_prompt[batch["prompt"]].mean())
    assert kl.requires_grad

    pairs = {"prompt": torch.tensor([1, 2]), "chosen": torch.tensor([0, 3]), "rejected": torch.tensor([4, 1])}
    table = env.rewards[..., 1:].float()
    ctx = TabularStateContext(StepContext(policy, pairs, ref, 0), "pair", torch.zeros(4), None, None, table)
    rows = ctx.margin_rewards()
    assert rows.shape == (4, 1)
    assert torch.allclose(rows[:2, 0], env.rewards[[1, 2], [0, 3], 1].float())
    assert torch.allclose(rows[2:, 0], env.rewards[[1, 2], [4, 1], 1].float())


def test_stateful_losses_refuse_lbfgs(env):
    with pytest.raises(ValueError, match="LBFGS"):
        fit_tabular(TabularPolicy(4, 5), "bco", fb.population_thumbs(env, w=W), reference=env.ref_logp.float(),
                    steps=1, optimizer="lbfgs")
