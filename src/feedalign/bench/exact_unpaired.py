"""Exact benchmark rows on unpaired feedback (thumbs): KTO, BCO, BCE, SFT, PMPO."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from feedalign.bench.exact import BenchContext, _probs, make_row, n_rows
from feedalign.envs import exact_feedback as fb
from feedalign.envs.exact import tv_distance
from feedalign.losses import get_loss
from feedalign.losses.unpaired import bco_fixed_point
from feedalign.policies.tabular import OffsetImplicitReward
from feedalign.policies.tabular_fit import exact_kl


def _kto_threshold_check(ctx: BenchContext, probs: Tensor, lam_d: float, lam_u: float) -> dict[str, Any]:
    """Threshold rule (§7): derived for free log-ratios, responses with lambda_D*p >
    lambda_U*(1-p) gain log-ratio over all the others. Under the softmax policy that is an
    observation, not a guarantee: reports the fraction of prompts where every such response
    ends with a larger log-ratio than every other one, and the probability mass on that set."""
    p = ctx.env.accept_probability(ctx.w)
    favoured = lam_d * p > lam_u * (1 - p)
    log_ratio = probs.clamp_min(1e-300).log() - ctx.env.ref_logp
    ok, counted = 0, 0
    for x in range(ctx.env.n_prompts):
        up, down = log_ratio[x][favoured[x]], log_ratio[x][~favoured[x]]
        if len(up) and len(down):
            counted += 1
            ok += bool(up.min() > down.max())
    return {
        "threshold_rule_fraction": ok / max(counted, 1),
        "favoured_mass": float((probs * favoured).sum(-1).mean()),
        "favoured_mass_ref": float((ctx.env.ref_probs * favoured).sum(-1).mean()),
    }


def rows_unpaired(ctx: BenchContext) -> list[dict[str, Any]]:
    c, beta, bound = ctx.config, ctx.config.beta, ctx.config.tv_bound
    rows = []
    kto_data = {k: v[: c.n_kto] for k, v in ctx.thumbs_raw.items()}
    policy = ctx.new_policy()
    ctx.fit(policy, "kto", kto_data, hparams={"beta": beta}, batch_size=c.kto_batch)
    rows.append(make_row(ctx, method="kto", feedback="logistic thumbs", target="pi*_w", probs=_probs(policy),
                         target_probs=ctx.target, n_feedback=c.n_kto,
                         notes="no closed-form target; the threshold rule is derived for free log-ratios, "
                               "under the softmax policy it is observed, not guaranteed (§7)",
                         **_kto_threshold_check(ctx, _probs(policy), 1.0, 1.0)))

    rows.extend(rows_bco(ctx))

    policy = ctx.new_policy()
    model = OffsetImplicitReward(policy, ctx.reference, beta)
    ctx.fit(model, "bce_reward", ctx.thumbs)
    rows.append(make_row(ctx, method="bce on implicit reward + learned offset(x)", feedback="logistic thumbs",
                         target="pi*_w", probs=_probs(policy), target_probs=ctx.target,
                         n_feedback=n_rows(ctx.thumbs), bound=bound))

    positives = fb.positive_only(ctx.thumbs)
    policy = ctx.new_policy()
    ctx.fit(policy, "sft", positives)
    rows.append(make_row(ctx, method="sft", feedback="positive-only (thumbs up)", target="q+",
                         probs=_probs(policy), target_probs=ctx.env.positive_posterior(ctx.w),
                         n_feedback=n_rows(positives), bound=bound,
                         tv_to_pi_star=tv_distance(_probs(policy), ctx.target)))
    return rows + rows_pmpo(ctx)


def rows_bco(ctx: BenchContext) -> list[dict[str, Any]]:
    """BCO with the shift rule the trainer ships (``delta_rule`` default, midpoint of the class
    means) against its closed-form fixed point (:func:`bco_fixed_point`); the cumulative rule
    (TRL's) has no fixed point of its own and is reported against the same point, unbounded."""
    c, beta = ctx.config, ctx.config.beta
    spec = get_loss("bco")
    rule = spec.hparams["delta_rule"]
    fixed, fixed_delta = bco_fixed_point(ctx.env.ref_probs, ctx.env.accept_probability(ctx.w), beta=beta)
    rows = []
    for delta_rule in (rule, "cumulative"):
        policy = ctx.new_policy()
        fit = ctx.fit(policy, "bco", ctx.thumbs, hparams={"beta": beta, "delta_rule": delta_rule})
        shipped = delta_rule == rule
        rows.append(make_row(
            ctx, method=f"bco ({delta_rule} delta{', shipped default' if shipped else ''})",
            feedback="logistic thumbs", target=f"bco fixed point ({rule} rule)", probs=_probs(policy),
            target_probs=fixed, n_feedback=n_rows(ctx.thumbs), bound=c.tv_bound if shipped else None,
            delta_rule=delta_rule, delta=fit.metrics.get("delta"), fixed_point_delta=fixed_delta,
            tv_to_pi_star=tv_distance(_probs(policy), ctx.target),
            fixed_point_tv_to_pi_star=tv_distance(fixed, ctx.target),
            notes="one global delta: the fixed point is not pi*_w (§8)" if shipped else
            "cumulative mean over the whole run: no fixed point of its own, depends on the path (§8)",
        ))
    return rows


def _pmpo_row(ctx: BenchContext, data_kind: str, alpha: float, pmpo_beta: float, method: str) -> dict[str, Any]:
    c = ctx.config
    data = {"both": ctx.thumbs, "positive": fb.positive_only(ctx.thumbs), "negative": fb.negative_only(ctx.thumbs)}[
        data_kind
    ]
    target, collapsed = ctx.env.pmpo_optimum(ctx.w, alpha=alpha, beta=pmpo_beta, data=data_kind)
    policy = ctx.new_policy()
    with warnings.catch_warnings():  # the collapse warning is the point of one row
        warnings.simplefilter("ignore")
        fit = ctx.fit(policy, "pmpo", data, hparams={"alpha": alpha, "beta": pmpo_beta},
                      inputs={"kl": exact_kl})
    probs = _probs(policy)
    min_prob = float(probs.min())
    half = fit.losses[len(fit.losses) // 2]
    diverging = fit.final_loss < half - 1.0
    detected = min_prob < 1e-6 or diverging
    predicted = bool(collapsed.any())
    threshold = ctx.env.pmpo_beta_threshold(ctx.w, alpha=alpha, data=data_kind)
    notes = f"collapse predicted (beta < {threshold:.3g})" if predicted else f"beta >= threshold {threshold:.3g}"
    if detected:
        notes += f"; collapse detected: min prob {min_prob:.2e}, loss {half:.3g} -> {fit.final_loss:.3g}"
    row = make_row(ctx, method=method, feedback=f"{data_kind} set of logistic thumbs",
                   target="none: objective unbounded" if predicted else "pmpo optimum c/sum(c)",
                   probs=probs, target_probs=None if predicted else target, n_feedback=n_rows(data),
                   bound=None if predicted else c.tv_bound, alpha=alpha, pmpo_beta=pmpo_beta,
                   beta_threshold=threshold, min_prob=min_prob, collapse_predicted=predicted,
                   collapse_detected=detected, notes=notes)
    if predicted:
        row["passed"] = detected  # the collapse must be reported, not silent
    return row


def rows_pmpo(ctx: BenchContext) -> list[dict[str, Any]]:
    neg_threshold = ctx.env.pmpo_beta_threshold(ctx.w, alpha=0.0, data="negative")
    return [
        _pmpo_row(ctx, "positive", 1.0, 0.5, "pmpo (positive-only)"),
        _pmpo_row(ctx, "negative", 0.0, 1.5 * neg_threshold, "pmpo (negative-only)"),
        _pmpo_row(ctx, "both", 0.5, 1.0, "pmpo (both)"),
        _pmpo_row(ctx, "negative", 0.0, 0.5 * neg_threshold, "pmpo (negative-only, collapse case)"),
    ]
