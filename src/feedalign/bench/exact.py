"""Exact benchmark: every loss, trained on sampled feedback, against its closed-form target.

Each row trains a tabular policy (:mod:`feedalign.policies.tabular`) through the registered
loss function (:func:`feedalign.policies.tabular_fit.fit_tabular`, the same calling
conventions as the LM trainer) on feedback drawn from the simulated annotators of
:mod:`feedalign.envs.exact_feedback`, and reports the distance of the learned policy to the
population target of docs/ALGORITHMS.md §14:

  tv_to_target      total variation, mean over prompts
  kl_to_target      KL(learned || target), mean over prompts (beta*KL(pi||pi*_w) is the
                    shortfall in the regularized objective, by the Gibbs identity)
  tv_ref_to_target  the same TV for pi_ref: how far the target is from the starting point

Rows that carry an acceptance ``bound`` have ``passed`` set. Front sweeps
(:mod:`feedalign.bench.exact_front`) add ``hv_ratio`` rows.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import Tensor

from feedalign.envs import exact_feedback as fb
from feedalign.envs.exact import DTYPE, ExactEnv, kl_divergence, tv_distance
from feedalign.losses import get_loss
from feedalign.losses.unpaired import bco_fixed_point
from feedalign.policies.tabular import OffsetImplicitReward, TabularPolicy, TabularReward
from feedalign.policies.tabular_fit import exact_kl, fit_tabular


@dataclass(frozen=True)
class ExactBenchConfig:
    """Sizes and settings of the exact benchmark (``quick()`` is the CI variant)."""

    n_prompts: int = 8
    n_responses: int = 6
    n_objectives: int = 2
    beta: float = 1.0
    seed: int = 0
    weight: tuple[float, ...] = (0.7, 0.3)  # w of the single-policy rows
    n_pairs: int = 400_000
    n_thumbs: int = 400_000
    n_kto: int = 50_000
    kto_batch: int = 2048
    n_front_pairs: int = 200_000  # per weight vector / per objective in the front sweeps
    n_steerable: int = 400_000
    steerable_steps: int = 4  # LBFGS outer iterations (<= 20 evaluations each; ~40 suffice)
    n_front_weights: int = 11
    soup_mlp_hidden: int = 16
    flip_rate: float = 0.2
    ipo_tau: float = 0.5
    steps: int = 500
    lr: float = 0.1
    tv_bound: float = 0.02
    hv_bound_modpo: float = 0.98
    hv_bound_steerable: float = 0.97

    def __post_init__(self) -> None:
        if len(self.weight) != self.n_objectives or abs(sum(self.weight) - 1) > 1e-9:
            raise ValueError(f"weight={self.weight}: need {self.n_objectives} entries summing to 1")
        if not 0 <= self.flip_rate < 0.5:
            raise ValueError(f"flip_rate must be in [0, 0.5), got {self.flip_rate}")

    @classmethod
    def quick(cls, seed: int = 0) -> ExactBenchConfig:
        return cls(
            n_prompts=4,
            n_responses=4,
            seed=seed,
            n_pairs=200_000,
            n_thumbs=200_000,
            n_kto=20_000,
            n_front_pairs=100_000,
            n_steerable=250_000,
            steps=400,
        )


class BenchContext:
    """The environment, the shared datasets (sampled once, lazily) and fitting helpers."""

    def __init__(self, config: ExactBenchConfig) -> None:
        self.config = config
        c = config
        self.env = ExactEnv(c.n_prompts, c.n_responses, c.n_objectives, beta=c.beta, seed=c.seed)
        self.w = torch.tensor(c.weight, dtype=DTYPE)
        self.reference = self.env.ref_logp.float()
        self.target = self.env.optimum(self.w)

    def seed(self, offset: int) -> int:
        return self.config.seed * 1000 + offset

    # ---------------------------------------------------------------- datasets (sampled once)
    @cached_property
    def pairs(self) -> fb.Feedback:
        return fb.compress(fb.sample_pairs(self.env, self.config.n_pairs, w=self.w, generator=self.seed(1)))

    @cached_property
    def noisy_pairs(self) -> fb.Feedback:
        raw = fb.sample_pairs(
            self.env, self.config.n_pairs, w=self.w, flip_rate=self.config.flip_rate, generator=self.seed(2)
        )
        return fb.compress(raw)

    @cached_property
    def thumbs_raw(self) -> fb.Feedback:
        return fb.sample_thumbs(self.env, self.config.n_thumbs, w=self.w, generator=self.seed(3))

    @cached_property
    def thumbs(self) -> fb.Feedback:
        return fb.compress(self.thumbs_raw)

    def objective_pairs(self, k: int, n: int | None = None) -> fb.Feedback:
        n = self.config.n_front_pairs if n is None else n
        return fb.compress(fb.sample_pairs(self.env, n, objective=k, generator=self.seed(10 + k)))

    # ---------------------------------------------------------------- fitting
    def new_policy(self) -> TabularPolicy:
        return TabularPolicy(self.env.n_prompts, self.env.n_responses, self.reference)

    def fit(self, model: torch.nn.Module, loss: str, data: fb.Feedback, **kwargs: Any):
        kwargs.setdefault("steps", self.config.steps)
        kwargs.setdefault("lr", self.config.lr)
        kwargs.setdefault("seed", self.config.seed)
        return fit_tabular(model, loss, data, reference=self.reference, **kwargs)


def n_rows(data: fb.Feedback) -> int:
    """Number of feedback examples (sum of multiplicities for a compressed set)."""
    if "weight" in data:
        return int(round(float(data["weight"].sum())))
    return len(data["prompt"])


def make_row(
    ctx: BenchContext,
    *,
    method: str,
    feedback: str,
    target: str,
    probs: Tensor,
    target_probs: Tensor | None,
    n_feedback: int,
    bound: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    probs = torch.as_tensor(probs, dtype=DTYPE)
    row: dict[str, Any] = {"method": method, "feedback": feedback, "target": target}
    if target_probs is None:  # no target exists (e.g. an unbounded objective)
        row.update(tv_to_target=None, kl_to_target=None, tv_ref_to_target=None)
    else:
        kl = kl_divergence(probs, target_probs)
        row.update(
            tv_to_target=tv_distance(probs, target_probs),
            kl_to_target=kl if kl != float("inf") else None,
            tv_ref_to_target=tv_distance(ctx.env.ref_probs, target_probs),
        )
    row["n_feedback"] = int(n_feedback)
    if bound is not None:
        row["bound"] = bound
        row["passed"] = row["tv_to_target"] is not None and row["tv_to_target"] <= bound
    row.update(extra)
    return row


def _probs(policy: TabularPolicy) -> Tensor:
    return policy.probs().detach().to(DTYPE)


# ---------------------------------------------------------------------------- pairwise rows
def rows_pairwise(ctx: BenchContext) -> list[dict[str, Any]]:
    c, beta, bound = ctx.config, ctx.config.beta, ctx.config.tv_bound
    rows = []
    policy = ctx.new_policy()
    ctx.fit(policy, "dpo", ctx.pairs, hparams={"beta": beta})
    rows.append(make_row(ctx, method="dpo", feedback="pairs BT(w.r)", target="pi*_w", probs=_probs(policy),
                         target_probs=ctx.target, n_feedback=n_rows(ctx.pairs), bound=bound))

    policy = ctx.new_policy()
    ctx.fit(policy, "rdpo", ctx.noisy_pairs, hparams={"beta": beta, "epsilon": c.flip_rate})
    rows.append(make_row(ctx, method="rdpo", feedback=f"pairs BT(w.r), flips eps={c.flip_rate}", target="pi*_w",
                         probs=_probs(policy), target_probs=ctx.target, n_feedback=n_rows(ctx.noisy_pairs),
                         bound=bound, notes="known flip rate"))

    policy = ctx.new_policy()
    cdpo_hp = {"beta": beta, "epsilon": c.flip_rate}
    ctx.fit(policy, "cdpo", ctx.noisy_pairs, hparams=cdpo_hp)
    shrunk = ctx.new_policy()  # population minimizer of cDPO on the noisy pair distribution
    ctx.fit(shrunk, "cdpo", fb.population_pairs(ctx.env, w=ctx.w, flip_rate=c.flip_rate), hparams=cdpo_hp,
            steps=3 * c.steps)
    for target, target_probs in (("pi*_w", ctx.target), ("cdpo population optimum (shrunk)", _probs(shrunk))):
        rows.append(make_row(ctx, method="cdpo", feedback=f"pairs BT(w.r), flips eps={c.flip_rate}",
                             target=target, probs=_probs(policy), target_probs=target_probs,
                             n_feedback=n_rows(ctx.noisy_pairs), notes="does not recover pi*_w (§6.1)"))

    policy = ctx.new_policy()
    ctx.fit(policy, "ipo", ctx.pairs, hparams={"beta": c.ipo_tau})
    rows.append(make_row(ctx, method="ipo", feedback="pairs BT(w.r)", target=f"ipo optimum (tau={c.ipo_tau})",
                         probs=_probs(policy), target_probs=ctx.env.ipo_optimum(ctx.w, c.ipo_tau),
                         n_feedback=n_rows(ctx.pairs), bound=bound,
                         tv_to_pi_star=tv_distance(_probs(policy), ctx.target)))

    k = int(torch.argmax(ctx.w))
    others = [i for i in range(ctx.env.n_objectives) if i != k]
    data = ctx.objective_pairs(k, c.n_pairs)
    policy = ctx.new_policy()
    ctx.fit(policy, "modpo", data, margin_rewards=ctx.env.rewards[..., others],
            hparams={"beta": beta, "weight": float(ctx.w[k]), "margin_weights": tuple(ctx.w[others].tolist())})
    rows.append(make_row(ctx, method="modpo", feedback=f"pairs BT(r_{k}) + exact margins r_-{k}", target="pi*_w",
                         probs=_probs(policy), target_probs=ctx.target, n_feedback=n_rows(data), bound=bound))

    data = fb.compress(fb.discordant_pairs(ctx.thumbs_raw, generator=ctx.seed(4)))
    policy = ctx.new_policy()
    ctx.fit(policy, "dpo", data, hparams={"beta": beta})
    rows.append(make_row(ctx, method="dpo", feedback="discordant pairs from logistic thumbs", target="pi*_w",
                         probs=_probs(policy), target_probs=ctx.target, n_feedback=n_rows(data), bound=bound,
                         n_thumbs=c.n_thumbs))

    model = TabularReward(ctx.env.n_prompts, ctx.env.n_responses)
    ctx.fit(model, "bt_reward", ctx.pairs)
    rl = torch.softmax(ctx.env.ref_logp + model.table.detach().to(DTYPE) / beta, -1)
    rows.append(make_row(ctx, method="bt_reward + exact KL-RL", feedback="pairs BT(w.r)", target="pi*_w",
                         probs=rl, target_probs=ctx.target, n_feedback=n_rows(ctx.pairs), bound=bound))
    return rows


# ---------------------------------------------------------------------------- unpaired rows
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


# ---------------------------------------------------------------------------- runner
ROW_GROUPS: dict[str, Callable[[BenchContext], list[dict[str, Any]]]] = {
    "pairwise": rows_pairwise,
    "unpaired": rows_unpaired,
}


def run_exact_bench(config: ExactBenchConfig | None = None, *, groups: tuple[str, ...] | None = None,
                    log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark; returns the JSON rows (one dict per method/target)."""
    from feedalign.bench.exact_front import rows_front

    config = config or ExactBenchConfig()
    all_groups = {**ROW_GROUPS, "front": rows_front}
    unknown = sorted(set(groups or ()) - set(all_groups))
    if unknown:
        raise ValueError(f"unknown bench group(s) {unknown}; valid: {sorted(all_groups)}")
    # The tensors here are tiny ([P, K] tables, row gathers): intra-op threads only add
    # synchronisation cost, which on a busy machine made runs ~10x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ctx = BenchContext(config)
        rows: list[dict[str, Any]] = []
        for name in groups or tuple(all_groups):
            start = time.perf_counter()
            group_rows = all_groups[name](ctx)
            if log:
                log(f"[{name}] {len(group_rows)} rows in {time.perf_counter() - start:.1f}s")
            rows.extend(group_rows)
    finally:
        torch.set_num_threads(threads)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text table of the rows (for front rows, tv is the mean TV to pi*_w over the weights)."""
    header = f"{'method':<44} {'feedback':<40} {'target':<34} {'n':>9} {'tv':>8} {'kl':>9} {'hv_ratio':>8} {'ok':>4}"
    lines = [header, "-" * len(header)]
    for r in rows:
        kl = r.get("kl_to_target")
        hv = r.get("hv_ratio")
        ok = {True: "yes", False: "NO"}.get(r.get("passed"), "")
        lines.append(
            f"{r['method'][:44]:<44} {r['feedback'][:40]:<40} {r['target'][:34]:<34} {r['n_feedback']:>9} "
            f"{_fmt(r.get('tv_to_target')):>8} {_fmt(kl):>9} {_fmt(hv):>8} {ok:>4}"
        )
        if r.get("notes"):
            lines.append(f"    note: {r['notes']}")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


__all__ = ["ExactBenchConfig", "BenchContext", "run_exact_bench", "format_table", "make_row"]
