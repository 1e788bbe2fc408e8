"""Simulated annotators for the exact environment, at the index level.

Feedback is a dict of equal-length tensors (one row per example), the layout
:func:`feedalign.policies.tabular_fit.fit_tabular` consumes:

  pairs     ``prompt, chosen, rejected`` (long [N]); optional ``w`` [N, m] (per-example
            weight vector), ``weight`` [N] (row multiplicity / probability)
  unpaired  ``prompt, response`` (long), ``label`` (bool, True = thumbs up)
  scored    ``prompt, response``, ``scores`` [N, m]

Working with indices instead of text keeps million-row datasets cheap. Every sampler draws
prompts uniformly and responses from mu = pi_ref unless told otherwise.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from feedalign.envs.exact import DTYPE, ExactEnv

Feedback = dict[str, Tensor]


def _generator(generator: torch.Generator | int | None) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    return torch.Generator().manual_seed(0 if generator is None else int(generator))


def _draw(probs: Tensor, prompt: Tensor, gen: torch.Generator) -> Tensor:
    """One y ~ probs[x] per row, by inverse CDF (faster than multinomial on [N, K] rows)."""
    cdf = probs.cumsum(-1)
    u = torch.rand(len(prompt), generator=gen, dtype=cdf.dtype) * cdf[:, -1][prompt]
    return torch.searchsorted(cdf[prompt], u[:, None], right=True).squeeze(1).clamp_max(probs.shape[-1] - 1)


def _scores_for(env: ExactEnv, prompt: Tensor, response: Tensor, w: Any, objective: int | None) -> Tensor:
    if (w is None) == (objective is None):
        raise ValueError("give exactly one of w (label by BT(w.r)) or objective (label by BT(r_k))")
    if objective is not None:
        return env.rewards[prompt, response, objective]
    w = torch.as_tensor(w, dtype=DTYPE)
    r = env.rewards[prompt, response]  # [N, m]
    return r @ w if w.dim() == 1 else (r * w).sum(-1)


def sample_pairs(
    env: ExactEnv,
    n: int,
    *,
    w: Any = None,
    objective: int | None = None,
    flip_rate: float = 0.0,
    mu: Tensor | None = None,
    drop_ties: bool = True,
    generator: torch.Generator | int | None = None,
) -> Feedback:
    """Bradley-Terry pairs: x uniform, y1, y2 ~ mu(.|x) i.i.d., y1 preferred w.p.
    sigma(s(y1) - s(y2)) with s = w.r (``w`` [m], or [N, m] per example, stored as ``w``) or
    s = r_k (``objective`` k); then each label is flipped w.p. ``flip_rate``.

    ``drop_ties`` redraws the pair while y1 == y2 (such pairs carry no signal), so pairs are
    mu x mu conditioned on y1 != y2 with x still uniform; the DPO and IPO targets are
    unchanged (a tie's IPO term is zero at any policy).
    """
    gen = _generator(generator)
    mu = env.ref_probs if mu is None else torch.as_tensor(mu, dtype=DTYPE)
    prompt = torch.randint(env.n_prompts, (n,), generator=gen)
    y1, y2 = _draw(mu, prompt, gen), _draw(mu, prompt, gen)
    while drop_ties and (ties := y1 == y2).any():
        # Redraw BOTH responses: pairs stay i.i.d. mu x mu conditioned on y1 != y2.
        y1[ties], y2[ties] = _draw(mu, prompt[ties], gen), _draw(mu, prompt[ties], gen)
    margin = _scores_for(env, prompt, y1, w, objective) - _scores_for(env, prompt, y2, w, objective)
    first_wins = torch.rand(n, generator=gen, dtype=DTYPE) < torch.sigmoid(margin)
    if flip_rate:
        first_wins ^= torch.rand(n, generator=gen, dtype=DTYPE) < flip_rate
    out = {
        "prompt": prompt,
        "chosen": torch.where(first_wins, y1, y2),
        "rejected": torch.where(first_wins, y2, y1),
    }
    if w is not None and torch.as_tensor(w).dim() == 2:
        out["w"] = torch.as_tensor(w, dtype=torch.float32)
    return out


def sample_thumbs(
    env: ExactEnv,
    n: int,
    *,
    w: Any,
    flip_rate: float = 0.0,
    mu: Tensor | None = None,
    generator: torch.Generator | int | None = None,
) -> Feedback:
    """Logistic thumbs: x uniform, y ~ mu, label ~ Bernoulli(sigma(w.r - w.c(x))), then
    flipped w.p. ``flip_rate``."""
    gen = _generator(generator)
    mu = env.ref_probs if mu is None else torch.as_tensor(mu, dtype=DTYPE)
    prompt = torch.randint(env.n_prompts, (n,), generator=gen)
    response = _draw(mu, prompt, gen)
    p = env.accept_probability(w)[prompt, response]
    label = torch.rand(n, generator=gen, dtype=DTYPE) < p
    if flip_rate:
        label ^= torch.rand(n, generator=gen, dtype=DTYPE) < flip_rate
    return {"prompt": prompt, "response": response, "label": label}


def sample_scores(
    env: ExactEnv, n: int, *, noise: float = 0.0, generator: torch.Generator | int | None = None
) -> Feedback:
    """Scored samples: y ~ pi_ref, scores = r(x, y) + noise * N(0, 1), [N, m]."""
    gen = _generator(generator)
    prompt = torch.randint(env.n_prompts, (n,), generator=gen)
    response = _draw(env.ref_probs, prompt, gen)
    scores = env.rewards[prompt, response] + noise * torch.randn(n, env.n_objectives, generator=gen, dtype=DTYPE)
    return {"prompt": prompt, "response": response, "scores": scores}


def select(feedback: Feedback, index: Tensor) -> Feedback:
    """Rows ``index`` (a bool mask or long indices) of every column."""
    return {key: value[index] for key, value in feedback.items()}


def positive_only(thumbs: Feedback) -> Feedback:
    """The thumbs-up rows: a positive-only set."""
    return select(thumbs, thumbs["label"])


def negative_only(thumbs: Feedback) -> Feedback:
    """The thumbs-down rows: a negative-only set."""
    return select(thumbs, ~thumbs["label"])


def discordant_pairs(thumbs: Feedback, *, generator: torch.Generator | int | None = None) -> Feedback:
    """Pair thumbs-up with thumbs-down samples of the same prompt (index-level pairing).

    Within each prompt the up rows and the down rows are shuffled and matched one to one
    (min(n_up, n_down) pairs; every row used at most once). For independent samples
    y ~ mu with P(up) = sigma(r - c(x)), a matched (up, down) pair {a, b} is ordered "a over b"
    with odds sigma(r_a-c)sigma(c-r_b) / (sigma(r_b-c)sigma(c-r_a)) = exp(r_a - r_b): exactly
    Bradley-Terry on r, c(x) cancels (ALGORITHMS.md §14). The record-level pairing for text
    data lives with the data tools; this index version serves the exact benchmark.

    Pairs with the same response on both sides are kept: they give h = 0 and no gradient in
    DPO. Skipping them DURING matching (taking the next down row instead) is not harmless when
    responses repeat: it breaks the exchangeability above and biases the order frequencies
    away from BT. Dropping them AFTER a uniform random matching is exact.
    """
    gen = _generator(generator)
    prompts, chosen, rejected = [], [], []
    for x in torch.unique(thumbs["prompt"]).tolist():
        rows = thumbs["prompt"] == x
        up = thumbs["response"][rows & thumbs["label"]]
        down = thumbs["response"][rows & ~thumbs["label"]]
        k = min(len(up), len(down))
        if k == 0:
            continue
        up = up[torch.randperm(len(up), generator=gen)[:k]]
        down = down[torch.randperm(len(down), generator=gen)[:k]]
        prompts.append(torch.full((k,), x, dtype=torch.long))
        chosen.append(up)
        rejected.append(down)
    if not prompts:
        empty = torch.zeros(0, dtype=torch.long)
        return {"prompt": empty, "chosen": empty.clone(), "rejected": empty.clone()}
    order = torch.randperm(sum(len(p) for p in prompts), generator=gen)
    return {
        "prompt": torch.cat(prompts)[order],
        "chosen": torch.cat(chosen)[order],
        "rejected": torch.cat(rejected)[order],
    }


def compress(feedback: Feedback) -> Feedback:
    """Merge identical rows into one row with ``weight`` = multiplicity.

    A loss whose batch objective is the mean of per-example losses has the same value and
    gradient on the compressed set (weighted mean), at a fraction of the cost. Only for
    integer/bool columns (no per-example ``w`` or ``scores``) and only for losses without
    batch-order state (not for KTO's rotated reference point).
    """
    keys = [k for k in feedback if k != "weight"]
    if any(feedback[k].is_floating_point() for k in keys):
        raise ValueError(f"compress: only index/bool columns can be merged, got {keys}")
    columns = [feedback[k].long() for k in keys]
    if any(len(col) and col.min() < 0 for col in columns):
        raise ValueError("compress: index columns must be non-negative")
    sizes = [int(col.max()) + 1 if len(col) else 1 for col in columns]
    key = torch.zeros(len(columns[0]), dtype=torch.long)
    for col, size in zip(columns, sizes):  # mixed-radix code of the row: one integer per row
        key = key * size + col
    weight = feedback.get("weight", torch.ones(len(key), dtype=DTYPE)).to(DTYPE)
    n_codes = 1
    for size in sizes:
        n_codes *= size
    if n_codes <= 50_000_000:  # small tables: a histogram is much faster than sorting
        counts = torch.bincount(key, weights=weight, minlength=n_codes)
        present = torch.bincount(key, minlength=n_codes) > 0
        unique, merged_weight = present.nonzero().squeeze(1), counts[present]
    else:
        unique, inverse = torch.unique(key, return_inverse=True)
        merged_weight = torch.zeros(len(unique), dtype=DTYPE).index_add_(0, inverse, weight)
    out: Feedback = {}
    code = unique.clone()
    for k, size in reversed(list(zip(keys, sizes))):
        out[k] = (code % size).to(feedback[k].dtype)
        code = code // size
    out = {k: out[k] for k in keys}
    out["weight"] = merged_weight
    return out


def population_pairs(
    env: ExactEnv,
    *,
    w: Any = None,
    objective: int | None = None,
    flip_rate: float = 0.0,
    mu: Tensor | None = None,
) -> Feedback:
    """The infinite-data limit of :func:`sample_pairs` (with drop_ties): every ordered
    (x, chosen, rejected) cell with ``weight`` = its probability. Fitting on it gives the
    exact population minimizer of a loss (e.g. cDPO's shrunk target)."""
    mu = env.ref_probs if mu is None else torch.as_tensor(mu, dtype=DTYPE)
    n_p, k = env.n_prompts, env.n_responses
    x, a, b = torch.meshgrid(torch.arange(n_p), torch.arange(k), torch.arange(k), indexing="ij")
    x, a, b = x.reshape(-1), a.reshape(-1), b.reshape(-1)
    keep = a != b
    x, a, b = x[keep], a[keep], b[keep]
    # P(unordered pair {a, b} | x) = 2 mu(a) mu(b) / (1 - sum mu^2); row (chosen=a, rejected=b)
    pair_mass = 2 * mu[x, a] * mu[x, b] / (1 - (mu**2).sum(-1))[x] / n_p
    p_win = torch.sigmoid(_scores_for(env, x, a, w, objective) - _scores_for(env, x, b, w, objective))
    p_chosen = (1 - flip_rate) * p_win + flip_rate * (1 - p_win)
    return {"prompt": x, "chosen": a, "rejected": b, "weight": pair_mass * p_chosen}


def population_thumbs(env: ExactEnv, *, w: Any, mu: Tensor | None = None) -> Feedback:
    """The infinite-data limit of :func:`sample_thumbs`: every (x, y, label) with its probability."""
    mu = env.ref_probs if mu is None else torch.as_tensor(mu, dtype=DTYPE)
    n_p, k = env.n_prompts, env.n_responses
    x, y = torch.meshgrid(torch.arange(n_p), torch.arange(k), indexing="ij")
    x, y = x.reshape(-1), y.reshape(-1)
    p = env.accept_probability(w)[x, y]
    mass = mu[x, y] / n_p
    return {
        "prompt": torch.cat([x, x]),
        "response": torch.cat([y, y]),
        "label": torch.cat([torch.ones_like(x, dtype=torch.bool), torch.zeros_like(x, dtype=torch.bool)]),
        "weight": torch.cat([mass * p, mass * (1 - p)]),
    }
