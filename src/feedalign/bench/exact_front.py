"""Front sweeps of the exact benchmark: how much of the exact Pareto front each method recovers.

A front point is J(pi) = E_x E_{y~pi}[r(x, y)] (the expected reward vector). The exact front
is {J(pi*_w)} over the weight grid (``simplex_grid(m, n_front_weights)``; 11 weights for
m = 2), and each method's score is

    hv_ratio = HV(learned points) / HV(exact points)

with ONE reference point for all methods: per objective, the minimum over the exact front
and J(pi_ref), minus 10% of the front's range. (Learned points may lie slightly outside the
exact polygon between grid weights, so hv_ratio can exceed 1 by a sampling-noise amount.)

Methods:
  * modpo sweep        one run per w, pairs of objective k = argmax(w) + exact margins
  * dpo sweep          one run per w, pairs labelled BT(w.r)
  * steerable one-run  ONE SteerableTabularPolicy trained once, w ~ Dirichlet(1) per example,
                       DPO on pairs labelled BT(w.r) for that example's w; evaluated at each w
  * rewarded soups     per-objective DPO policies (w = e_i) interpolated in parameter space,
                       for the tabular policy (log-probs linear in the parameters) and for an
                       MLP policy (non-linear; the soup is then not the geometric mixture)
  * geometric mixture  exact normalized prod_i (pi*_{e_i})^{w_i} (equals pi*_w; a check)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from feedalign.bench.exact import BenchContext, n_rows
from feedalign.envs import exact_feedback as fb
from feedalign.envs.exact import DTYPE, tv_distance
from feedalign.evaluation.pareto import hypervolume
from feedalign.multiobjective.soups import interpolate_state_dicts
from feedalign.multiobjective.weights import sample_simplex, simplex_grid
from feedalign.policies.tabular import MLPTabularPolicy, SteerableTabularPolicy, TabularPolicy


def reference_point(ctx: BenchContext, exact_points: np.ndarray) -> np.ndarray:
    """Fixed HV reference: min over the exact front and J(pi_ref), minus 10% of the range."""
    ref_value = ctx.env.value(ctx.env.ref_probs).numpy()
    pts = np.vstack([exact_points, ref_value[None]])
    low, high = pts.min(0), pts.max(0)
    return low - 0.1 * (high - low)


def front_row(
    ctx: BenchContext,
    *,
    method: str,
    feedback: str,
    weights: np.ndarray,
    policies: list[Tensor],
    exact_points: np.ndarray,
    ref: np.ndarray,
    n_feedback: int,
    bound: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One JSON row for a front: hv_ratio plus the mean/max TV to pi*_w over the weights."""
    points = np.stack([ctx.env.value(p).numpy() for p in policies])
    tvs = [tv_distance(p, ctx.env.optimum(w)) for p, w in zip(policies, weights)]
    hv_exact = hypervolume(exact_points, ref)
    row = {
        "method": method,
        "feedback": feedback,
        "target": f"exact front ({len(weights)} weights)",
        "hv_ratio": hypervolume(points, ref) / hv_exact,
        "tv_to_target": float(np.mean(tvs)),
        "max_tv_to_target": float(np.max(tvs)),
        "kl_to_target": None,
        "n_feedback": int(n_feedback),
        "points": points.round(6).tolist(),
        "hv_reference_point": ref.round(6).tolist(),
    }
    if bound is not None:
        row["bound"] = bound
        row["passed"] = row["hv_ratio"] >= bound
    row.update(extra)
    return row


def _probs(policy: TabularPolicy) -> Tensor:
    return policy.probs().detach().to(DTYPE)


def sweep_modpo(ctx: BenchContext, weights: np.ndarray, data: list[fb.Feedback]) -> list[Tensor]:
    out = []
    for w in weights:
        k = int(np.argmax(w))  # the objective whose pairs are trained (needs w_k > 0)
        others = [i for i in range(len(w)) if i != k]
        policy = ctx.new_policy()
        ctx.fit(policy, "modpo", data[k], margin_rewards=ctx.env.rewards[..., others],
                hparams={"beta": ctx.config.beta, "weight": float(w[k]), "margin_weights": tuple(w[others])})
        out.append(_probs(policy))
    return out


def sweep_dpo(ctx: BenchContext, weights: np.ndarray) -> tuple[list[Tensor], int]:
    out, n = [], 0
    for i, w in enumerate(weights):
        data = fb.compress(fb.sample_pairs(ctx.env, ctx.config.n_front_pairs, w=w, generator=ctx.seed(100 + i)))
        policy = ctx.new_policy()
        ctx.fit(policy, "dpo", data, hparams={"beta": ctx.config.beta})
        out.append(_probs(policy))
        n += n_rows(data)
    return out, n


def fit_steerable(ctx: BenchContext) -> SteerableTabularPolicy:
    """ONE run: each example carries its own w ~ Dirichlet(1) and a BT(w.r) label."""
    c, env = ctx.config, ctx.env
    w = torch.as_tensor(sample_simplex(env.n_objectives, c.n_steerable, ctx.seed(200)))
    data = fb.sample_pairs(env, c.n_steerable, w=w, generator=ctx.seed(201))
    policy = SteerableTabularPolicy(env.n_prompts, env.n_responses, env.n_objectives, init_logits=ctx.reference)
    # Full-batch LBFGS: the per-example-w problem cannot be compressed, and this convex
    # logistic regression converges in a few dozen LBFGS iterations.
    ctx.fit(policy, "dpo", data, hparams={"beta": c.beta}, optimizer="lbfgs", lr=1.0, steps=c.steerable_steps)
    return policy


def soup_mlp(ctx: BenchContext, weights: np.ndarray, data: list[fb.Feedback]) -> list[Tensor]:
    """Rewarded soups outside the linear regime: a shared MLP initialisation fitted to pi_ref
    (SFT on the exact pi_ref distribution), one DPO fine-tune per objective, parameters
    interpolated with w."""
    c, env = ctx.config, ctx.env
    x, y = torch.meshgrid(torch.arange(env.n_prompts), torch.arange(env.n_responses), indexing="ij")
    pi_ref_rows = {"prompt": x.reshape(-1), "response": y.reshape(-1),
                   "weight": env.ref_probs.reshape(-1) / env.n_prompts}
    init = MLPTabularPolicy(env.n_prompts, env.n_responses, c.soup_mlp_hidden, seed=c.seed)
    ctx.fit(init, "sft", pi_ref_rows, steps=3 * c.steps, lr=0.03)
    singles = []
    for k in range(env.n_objectives):
        policy = MLPTabularPolicy(env.n_prompts, env.n_responses, c.soup_mlp_hidden)
        policy.load_state_dict(init.state_dict())
        ctx.fit(policy, "dpo", data[k], hparams={"beta": c.beta}, steps=3 * c.steps, lr=0.03)
        singles.append(policy.state_dict())
    out = []
    for w in weights:
        soup = MLPTabularPolicy(env.n_prompts, env.n_responses, c.soup_mlp_hidden)
        soup.load_state_dict(interpolate_state_dicts(singles, w))
        out.append(soup.probs().detach().to(DTYPE))
    return out


def rows_front(ctx: BenchContext) -> list[dict[str, Any]]:
    c, env = ctx.config, ctx.env
    if env.n_objectives >= 3:  # scored against a dense exact front
        from feedalign.bench.exact_front_many import rows_front_many

        return rows_front_many(ctx)
    weights = simplex_grid(env.n_objectives, c.n_front_weights)
    exact_points = env.front(weights).numpy()
    ref = reference_point(ctx, exact_points)
    common = {"weights": weights, "exact_points": exact_points, "ref": ref}
    objective_data = [ctx.objective_pairs(k) for k in range(env.n_objectives)]
    n_objective = sum(n_rows(d) for d in objective_data)
    rows = []

    policies = sweep_modpo(ctx, weights, objective_data)
    rows.append(front_row(ctx, method="modpo sweep", feedback="per-objective BT pairs + exact margins",
                          policies=policies, n_feedback=n_objective, bound=c.hv_bound_modpo,
                          runs=len(weights), **common))

    policies, n = sweep_dpo(ctx, weights)
    rows.append(front_row(ctx, method="dpo sweep", feedback="pairs BT(w.r), fresh per w", policies=policies,
                          n_feedback=n, runs=len(weights), **common))

    steerable = fit_steerable(ctx)
    policies = [steerable.at(w).probs().detach().to(DTYPE) for w in weights]
    rows.append(front_row(ctx, method="steerable one-run dpo", feedback="pairs BT(w.r), w ~ Dirichlet(1) per example",
                          policies=policies, n_feedback=c.n_steerable, bound=c.hv_bound_steerable, runs=1, **common))

    singles = []
    for k in range(env.n_objectives):
        policy = ctx.new_policy()
        ctx.fit(policy, "dpo", objective_data[k], hparams={"beta": c.beta})
        singles.append(policy.state_dict())
    policies = []
    for w in weights:
        soup = ctx.new_policy()
        soup.load_state_dict(interpolate_state_dicts(singles, w))
        policies.append(_probs(soup))
    rows.append(front_row(ctx, method="rewarded soups (dpo per objective)", feedback="per-objective BT pairs",
                          policies=policies, n_feedback=n_objective, runs=env.n_objectives,
                          notes="tabular logits are linear in the parameters: the soup is the geometric "
                                "mixture of the learned per-objective policies (§12.3), the favourable case",
                          **common))

    policies = soup_mlp(ctx, weights, objective_data)
    rows.append(front_row(ctx, method=f"rewarded soups (mlp policy, hidden {c.soup_mlp_hidden})",
                          feedback="per-objective BT pairs", policies=policies, n_feedback=n_objective,
                          runs=env.n_objectives,
                          notes="log-probs non-linear in the parameters: the soup is not the geometric mixture",
                          **common))

    optima = [env.optimum(torch.eye(env.n_objectives, dtype=DTYPE)[k]) for k in range(env.n_objectives)]
    policies = []
    for w in weights:
        logits = sum(float(wk) * opt.log() for wk, opt in zip(w, optima))
        policies.append(torch.softmax(logits, -1))
    rows.append(front_row(ctx, method="geometric mixture of exact optima", feedback="none (closed form)",
                          policies=policies, n_feedback=0, notes="identity check: equals pi*_w (§1)", **common))
    return rows
