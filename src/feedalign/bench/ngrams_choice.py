"""The N-grams benchmark's "user's choice" feedback: a weight-conditioned DPO run.

A simulated user holds a weight vector ``w`` (uniform on the simplex, on the steering grid)
and, shown two prior sequences, picks one with the Bradley-Terry probability
``sigma(w . (u(a) - u(b)) / T)``; the weight is written into the prompt with the steering
tag (:class:`WeightTags`, one token per weight vector). One DPO run
on all users' choices has, for every tag, the population minimiser
``pi*_w ∝ pi_ref exp(w . u / (T beta))`` (DPO's target with the reward ``w . u / T``), the
same family as the per-objective MODPO sources, but here the label itself depends on ``w``,
so the conditioning has a direct signal. Each pair of sequences is judged by ``draws``
users with independent weights (the same pair, contrasting labels).

The reference must not depend on the tag (the family is defined against one
``pi_ref(y | x)``): it is fine-tuned on the prior sequences under random tags, which carry no
information there, so it learns to ignore them.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["WeightTags", "choice_spec", "choice_pairs", "tagged_prior"]


@dataclass(frozen=True)
class WeightTags:
    """One added token per grid weight vector, ``<w:3,7>`` for ``w = (0.3, 0.7)`` at grid 10,
    written after the prompt (right before the completion).

    Why not the steering spec's ``render="tokens"`` tag (one level token per objective): for
    two objectives ``(1, 0)`` and ``(0, 1)`` are the same two tokens in swapped order, which a
    tiny model tells apart only through positions; one token per vector is told apart by its
    embedding alone. Embeddings are linear in ``w`` (:meth:`prepare`), so nearby weights start
    nearby."""

    objectives: tuple[str, ...]
    grid: int = 10
    seed: int = 0
    alpha: float = 1.0  # users' weights ~ Dirichlet(alpha): 1 uniform, < 1 nearer the vertices

    @property
    def m(self) -> int:
        return len(self.objectives)

    def levels(self, w: Any) -> tuple[int, ...]:
        from feedalign.multiobjective.steering import SteeringSpec

        return tuple(int(v) for v in SteeringSpec(objectives=self.objectives, grid=self.grid).levels(w))

    def all_levels(self) -> list[tuple[int, ...]]:
        return [lv for lv in itertools.product(range(self.grid + 1), repeat=self.m) if sum(lv) == self.grid]

    def token(self, w: Any) -> str:
        return "<w:" + ",".join(map(str, self.levels(w))) + ">"

    def condition_prompt(self, prompt: str, w: Any) -> str:
        return f"{prompt} {self.token(w)}"

    def parse_prompt(self, prompt: str) -> tuple[np.ndarray | None, str]:
        match = re.fullmatch(r"(.*) <w:([0-9,]+)>", prompt, flags=re.S)
        if not match:
            return None, prompt
        return np.array([int(v) for v in match.group(2).split(",")]) / self.grid, match.group(1)

    def sample(self, n: int, seed: int) -> np.ndarray:
        """``n`` weights ``[n, m]`` from Dirichlet(alpha) (uniform for 1), snapped to the grid."""
        draws = np.random.default_rng(seed).dirichlet(np.full(self.m, self.alpha), size=n)
        return np.array([np.array(self.levels(w)) / self.grid for w in draws]).reshape(n, self.m)

    def prepare(self, tokenizer: Any, model: Any) -> None:
        """Add the tokens and grow ``model``'s embeddings: ``e(w) = mean + sum_j w_j a_j`` with
        ``a_j ~ N(0, std^2)`` per dimension (mean and std of the existing rows)."""
        import torch

        old = model.get_input_embeddings().weight.shape[0]
        levels = self.all_levels()
        tokenizer.add_tokens(["<w:" + ",".join(map(str, lv)) + ">" for lv in levels], special_tokens=True)
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        emb, out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
        with torch.no_grad():
            mean, std = emb[:old].mean(0), emb[:old].std(0)
            gen = torch.Generator().manual_seed(self.seed)
            axes = torch.stack([torch.randn(emb.shape[1], generator=gen) * std for _ in range(self.m)])
            for lv in levels:
                row = tokenizer.convert_tokens_to_ids("<w:" + ",".join(map(str, lv)) + ">")
                emb[row] = mean + torch.tensor(lv, dtype=emb.dtype) @ axes / self.grid
            if out is not emb:
                out[old:] = out[:old].mean(0, keepdim=True)


def choice_spec(names: list[str], grid: int, seed: int, alpha: float = 1.0) -> WeightTags:
    return WeightTags(tuple(names), grid, seed, alpha)


def tagged_prior(spec: Any, prompt: str, seqs: list[str], seed: int) -> list[Any]:
    """SFT records of the prior sequences, each under a random tag (see the module docstring)."""
    from feedalign.data.records import LabeledRecord

    ws = spec.sample(len(seqs), seed=seed)
    return [LabeledRecord(spec.condition_prompt(prompt, w), s, True) for s, w in zip(seqs, ws)]


def _pairs(task: Any, pool: list[str], n: int, conflict: bool, rng: np.random.Generator) -> list[tuple[str, str]]:
    """``n`` pairs of distinct pool sequences; with ``conflict`` only pairs whose objectives
    disagree (each sequence better on some objective): only they teach a trade-off."""
    scores = task.score_many(pool)
    out: list[tuple[str, str]] = []
    for _ in range(200 * n):
        i, j = rng.choice(len(pool), 2, replace=False)
        diff = scores[i] - scores[j]
        if pool[i] != pool[j] and (not conflict or (diff.max() > 0 > diff.min())):
            out.append((pool[i], pool[j]))
            if len(out) == n:
                return out
    raise ValueError(f"choice pairs: found {len(out)} of {n} {'conflicting ' if conflict else ''}pairs in the pool")


def choice_pairs(task: Any, spec: Any, prompt: str, pool: list[str], *, n_pairs: int, draws: int,
                 temperature: float, seed: int, conflict: bool = False) -> list[Any]:
    """``n_pairs`` pairs of pool sequences (:func:`_pairs`), each judged by ``draws`` users
    (weights from ``spec.sample``); records carry the user's tag in the prompt and
    ``objective="choice"``."""
    from feedalign.data.records import PairRecord

    rng = np.random.default_rng(seed)
    pairs = _pairs(task, pool, n_pairs, conflict, rng)
    ws = spec.sample(len(pairs) * draws, seed=seed + 1).reshape(len(pairs), draws, -1)
    out = []
    for (a, b), user_ws in zip(pairs, ws):
        gap = task.score(a) - task.score(b)
        for w in user_ws:
            p_a = 1.0 / (1.0 + np.exp(-float(w @ gap) / temperature))
            chosen, rejected = (a, b) if rng.random() < p_a else (b, a)
            out.append(PairRecord(spec.condition_prompt(prompt, w), chosen, rejected, objective="choice",
                                  id=f"choice-{len(out)}", source=f"annotator:choice[{len(out)}]"))
    return out
