"""The tie-aware row of the exact benchmark: DPO-RK on pairs with Rao-Kupper ties
(docs/ALGORITHMS.md §17).

Pairs are drawn as for DPO (x uniform, y1 != y2 ~ pi_ref, so the unordered pair is
pi_ref x pi_ref given y1 != y2); the two completions are put in a random order and the
outcome is drawn from the Rao-Kupper model at margin d = w.(r(y1) - r(y2)) with tie threshold
nu: y1 preferred w.p. sigma(d - nu), y2 w.p. sigma(-d - nu), a tie otherwise. DPO-RK with the
same nu is then well specified with beta*h = d at its population minimiser, so the target is
pi*_w, as for DPO [derived, §17]. Plain DPO on the same data with the ties dropped is reported
beside it: it also recovers pi*_w in the population limit only when nu = 0 (its BT margin is
fitted to sigma(d - nu)/(sigma(d - nu) + sigma(-d - nu)), not sigma(d)).
"""

from __future__ import annotations

from typing import Any

import torch

from feedalign.envs import exact_feedback as fb
from feedalign.envs.exact import DTYPE
from feedalign.losses.pairwise_ties import rao_kupper_probabilities

__all__ = ["sample_rk_pairs", "rows_ties", "TIE_LOG_THETA"]

TIE_LOG_THETA = 0.5  # nu: with the default rewards about a fifth of the pairs are ties


def sample_rk_pairs(env: Any, n: int, w: torch.Tensor, nu: float, generator: torch.Generator | int) -> fb.Feedback:
    """``n`` pairs with Rao-Kupper outcomes: columns prompt, chosen, rejected (the preferred
    one first; either order for a tie) and ``tie`` (bool)."""
    if not isinstance(generator, torch.Generator):
        generator = torch.Generator().manual_seed(int(generator))
    pairs = fb.sample_pairs(env, n, w=w, generator=generator)
    swap = torch.rand(n, generator=generator, dtype=DTYPE) < 0.5
    first = torch.where(swap, pairs["rejected"], pairs["chosen"])
    second = torch.where(swap, pairs["chosen"], pairs["rejected"])
    x = pairs["prompt"]
    d = (env.rewards[x, first] - env.rewards[x, second]) @ torch.as_tensor(w, dtype=DTYPE)
    win, tie, _ = rao_kupper_probabilities(d, nu)
    u = torch.rand(n, generator=generator, dtype=DTYPE)
    first_wins, is_tie = u < win, (u >= win) & (u < win + tie)
    chosen = torch.where(first_wins | is_tie, first, second)
    rejected = torch.where(first_wins | is_tie, second, first)
    return {"prompt": x, "chosen": chosen, "rejected": rejected, "tie": is_tie}


def rows_ties(ctx: Any) -> list[dict[str, Any]]:
    """DPO-RK (ties kept) and DPO (ties dropped) on the same Rao-Kupper pairs, TV to pi*_w."""
    from feedalign.bench.exact import make_row, n_rows

    c, nu = ctx.config, TIE_LOG_THETA
    data = sample_rk_pairs(ctx.env, c.n_pairs, ctx.w, nu, ctx.seed(7))
    n_ties = int(data["tie"].sum())
    compressed = fb.compress(data)
    policy = ctx.new_policy()
    ctx.fit(policy, "dpo_rk", compressed, hparams={"beta": c.beta, "tie_log_theta": nu},
            inputs={"ties": lambda step: step.batch["tie"].bool()})
    rows = [make_row(ctx, method="dpo_rk", feedback=f"Rao-Kupper pairs (nu={nu}), {n_ties} ties kept",
                     target="pi*_w", probs=policy.probs().detach(), target_probs=ctx.target,
                     n_feedback=n_rows(compressed), bound=c.tv_bound)]
    decided = {k: v[~data["tie"]] for k, v in data.items() if k != "tie"}
    decided = fb.compress(decided)
    policy = ctx.new_policy()
    ctx.fit(policy, "dpo", decided, hparams={"beta": c.beta})
    rows.append(make_row(ctx, method="dpo", feedback=f"the same pairs, {n_ties} ties dropped", target="pi*_w",
                         probs=policy.probs().detach(), target_probs=ctx.target, n_feedback=n_rows(decided),
                         notes="misspecified: BT fitted to Rao-Kupper outcomes (§17)"))
    return rows
