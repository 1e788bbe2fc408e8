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
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import Tensor

from feedalign.envs import exact_feedback as fb
from feedalign.envs.exact import DTYPE, ExactEnv, kl_divergence, tv_distance
from feedalign.policies.tabular import TabularPolicy, TabularReward
from feedalign.policies.tabular_fit import fit_tabular


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
    from feedalign.bench.exact_ties import rows_ties

    return rows + rows_ties(ctx)


# ---------------------------------------------------------------------------- runner
def row_groups() -> dict[str, Callable[[BenchContext], list[dict[str, Any]]]]:
    """Group name -> row builder (the unpaired and front groups live in their own modules)."""
    from feedalign.bench.exact_front import rows_front
    from feedalign.bench.exact_unpaired import rows_unpaired

    return {"pairwise": rows_pairwise, "unpaired": rows_unpaired, "front": rows_front}


def run_exact_bench(config: ExactBenchConfig | None = None, *, groups: tuple[str, ...] | None = None,
                    log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark; returns the JSON rows (one dict per method/target)."""
    config = config or ExactBenchConfig()
    all_groups = row_groups()
    unknown = sorted(set(groups or ()) - set(all_groups))
    if unknown:
        raise ValueError(f"unknown bench group(s) {unknown}; valid: {sorted(all_groups)}")
    # The tensors here are tiny ([P, K] tables, row gathers): intra-op threads only add
    # synchronisation cost, which on a busy machine made runs ~10x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from tqdm.auto import tqdm

        ctx = BenchContext(config)
        rows: list[dict[str, Any]] = []
        names = list(groups or tuple(all_groups))
        with tqdm(names, desc="bench exact", unit="group", disable=log is None) as bar:
            for name in bar:
                bar.set_postfix_str(name)
                start = time.perf_counter()
                group_rows = all_groups[name](ctx)
                if log:
                    bar.write(f"[{name}] {len(group_rows)} rows in {time.perf_counter() - start:.1f}s")
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
