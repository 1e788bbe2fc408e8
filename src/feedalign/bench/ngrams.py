"""`feedalign bench ngrams`: a one-run steerable LM on the N-grams task, against its exact front.

The task is :mod:`feedalign.envs.ngrams` (Jain et al. 2023). The benchmark, end to end on CPU:

  1. prior data: ``n_prior`` sequences, length uniform in the task's range, each letter drawn
     from the n-grams' letters with probability ``prior_focus`` (uniformly) and from the whole
     alphabet otherwise, so that the objectives vary across samples;
  2. reference: a tiny causal LM (built locally, character tokenizer) fine-tuned on the prior
     data with the ``sft`` loss through the trainer;
  3. feedback simulated on the task's objectives: for every objective k, Bradley-Terry pairs
     of prior sequences on objective k (temperature ``pair_temperature``), the other
     objectives entering as MODPO margins computed from the exact scores on the pairs' reward
     scale (``margin_function``, ``scale = 1 / pair_temperature``);
  4. ONE steerable MODPO run (``steer:``, weight tokens, ``draws`` weights per pair; one
     source per objective) from the reference;
  5. sampling at every weight of ``simplex_grid(m, sweep_per_axis)`` (``samples_per_weight``
     each, temperature 1), scoring, and the metrics: hypervolume of ALL sampled objective vectors
     (w.r.t. the origin) divided by the exact front's hypervolume, the same for the reference's
     samples, expected utility, the end-to-end trend of each objective in its weight, and
     diversity (distinct share, mean pairwise edit distance).

Sequences outside the valid lengths score 0 in every objective (they count, as failures).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from feedalign.envs.ngrams import NGramTask, diversity, ngram_task

__all__ = ["NGramBenchConfig", "run_ngrams_bench", "margin_function", "prior_sequences"]

PROMPT = ">"


@dataclass(frozen=True)
class NGramBenchConfig:
    """Sizes and settings (``quick()`` is the test variant)."""

    n_objectives: int = 2
    kind: str = "bigram"
    seed: int = 0
    n_prior: int = 4000
    prior_focus: float = 0.8
    sft_steps: int = 300
    n_pairs: int = 4000
    pair_temperature: float = 0.05
    steer_steps: int = 400
    draws: int = 2
    # pi*_w ∝ pi_ref exp(w.u / (T beta)): 1 / (T beta) = 40, i.e. 2.2 nats per occurrence (1/18).
    beta: float = 0.5
    lr: float = 3e-3
    steer_lr: float = 1e-3
    batch_size: int = 16
    hidden: int = 64
    layers: int = 2
    sweep_per_axis: int | None = None  # default: 11 for m = 2, 6 for m >= 3
    samples_per_weight: int = 32

    def __post_init__(self) -> None:
        if not 0 <= self.prior_focus <= 1:
            raise ValueError(f"prior_focus must be in [0, 1], got {self.prior_focus}")
        if self.beta <= 0 or self.pair_temperature <= 0:
            raise ValueError("beta and pair_temperature must be > 0")

    @classmethod
    def quick(cls, **changes: Any) -> NGramBenchConfig:
        base = cls(n_prior=300, sft_steps=20, n_pairs=200, steer_steps=10, hidden=32, layers=1,
                   samples_per_weight=4, sweep_per_axis=3)
        return replace(base, **changes)

    @property
    def task(self) -> NGramTask:
        return ngram_task(self.n_objectives, self.kind)

    @property
    def weights(self) -> np.ndarray:
        from feedalign.multiobjective.weights import simplex_grid

        n = self.sweep_per_axis or (11 if self.n_objectives == 2 else 6)
        return simplex_grid(self.n_objectives, n)


def prior_sequences(task: NGramTask, n: int, focus: float, seed: int) -> list[str]:
    """``n`` prior sequences (module docstring, step 1)."""
    rng = np.random.default_rng(seed)
    letters = [c for c in task.alphabet if any(c in g for g in task.ngrams)]
    out = []
    for _ in range(n):
        length = int(rng.integers(task.min_length, task.max_length + 1))
        focused = rng.random(length) < focus
        picks = np.where(focused, rng.choice(letters, length), rng.choice(list(task.alphabet), length))
        out.append("".join(picks))
    return out


def margin_function(n_objectives: int, kind: str = "bigram", k: int = 0,
                    scale: float = 1.0) -> Callable[[list[str], list[str]], Any]:
    """MODPO margins: the exact scores of every objective but ``k`` times ``scale``,
    ``[N, m - 1]`` (a factory for a ``margins: {kind: callable, options: ...}`` block).

    Scale: pairs labelled ``P = sigma((u_a - u_b) / T)`` teach the reward ``u / T``, so the
    other objectives' margins must be ``u / T`` too (``scale = 1 / T``); with scale 1 they
    would weigh ``T`` times too little and the model would not trade off."""
    import torch

    task = ngram_task(n_objectives, kind)
    others = [j for j in range(task.m) if j != k]

    def margins(prompts: list[str], completions: list[str]) -> Any:
        return torch.as_tensor(task.score_many(list(completions))[:, others] * scale, dtype=torch.float32)

    return margins


def _train_config(c: NGramBenchConfig, out: Path, name: str, source: dict[str, Any], steps: int, lr: float) -> dict[str, Any]:
    return {"model": {"path": str(out / "init")}, "data": [{"name": name, **source}],
            "train": {"output_dir": str(out / name), "lr": lr, "micro_batch_size": c.batch_size,
                      "max_steps": steps, "log_every": max(1, steps // 5), "seed": c.seed, "eval_fraction": 0.0}}


def _sample(model: Any, tokenizer: Any, task: NGramTask, prompts: list[str], seed: int) -> list[str]:
    from feedalign.policies.hf import generate

    return generate(model, tokenizer, prompts, max_new_tokens=task.max_length + 1, temperature=1.0, seed=seed,
                    batch_size=64)


def _front_metrics(task: NGramTask, vectors: np.ndarray, exact_hv: float, weights: np.ndarray) -> dict[str, Any]:
    from feedalign.evaluation.pareto import expected_utility, hypervolume, nondominated

    hv = hypervolume(vectors, np.zeros(task.m))
    return {"hypervolume": hv, "hv_ratio": hv / exact_hv, "eu_front": expected_utility(vectors, weights),
            "n_nondominated": int(nondominated(vectors).shape[0])}


def _train_reference(c: NGramBenchConfig, task: NGramTask, out: Path) -> tuple[Any, float]:
    """Steps 1-2: a tiny LM saved to ``out/init``, fine-tuned on prior sequences (saved back
    to ``out/init`` so the steerable run starts from it)."""
    from feedalign.data.records import LabeledRecord
    from feedalign.policies.tiny import build_char_tokenizer, build_tiny_causal_lm, save_tiny
    from feedalign.trainers.loop import train

    tokenizer = build_char_tokenizer(task.alphabet + PROMPT + " ")  # the space separates weight tokens
    model = build_tiny_causal_lm(len(tokenizer), hidden=c.hidden, layers=c.layers, heads=4, kv_heads=2,
                                 intermediate=2 * c.hidden, seed=c.seed, max_position_embeddings=64)
    save_tiny(model, tokenizer, out / "init")
    sft = [LabeledRecord(PROMPT, s, True) for s in prior_sequences(task, c.n_prior, c.prior_focus, c.seed)]
    t0 = time.perf_counter()
    ref = train(_train_config(c, out, "sft", {"loss": "sft"}, c.sft_steps, c.lr), records={"sft": sft})
    seconds = time.perf_counter() - t0
    save_tiny(ref.model, ref.tokenizer, out / "init")
    return ref, seconds


def _train_steerable(c: NGramBenchConfig, task: NGramTask, out: Path) -> tuple[Any, float]:
    """Steps 3-4. One steered MODPO source per objective k (its own BT pairs, the others' exact
    scores as margins): every source's population optimum is pi*_w at every w, and each
    objective's direction gets direct pair signal where its weight is large."""
    from feedalign.envs.annotators import bt_pairs
    from feedalign.trainers.loop import train

    names = task.objectives

    def scorer(prompt: str, completion: str) -> dict[str, float]:
        return dict(zip(names, task.score_many([completion])[0].tolist()))

    sources, records = [], {}
    for k, name in enumerate(names):
        pool = prior_sequences(task, 2 * c.n_pairs // task.m, c.prior_focus, c.seed + 1 + k)
        records[f"pairs_{name}"] = bt_pairs([(PROMPT, s) for s in pool], scorer, objective=name,
                                            temperature=c.pair_temperature, seed=c.seed + 20 + k)
        sources.append({"name": f"pairs_{name}", "loss": "modpo", "objective": name,
                        "hparams": {"beta": c.beta, "scale_by_weight": True},
                        "margins": {"kind": "callable", "target": "feedalign.bench.ngrams:margin_function",
                                    "options": {"n_objectives": c.n_objectives, "kind": c.kind, "k": k,
                                                "scale": 1.0 / c.pair_temperature}},
                        "steer": {"objectives": names, "grid": 10, "render": "tokens", "draws": c.draws}})
    cfg = _train_config(c, out, "steer", {}, c.steer_steps, c.steer_lr)
    cfg["data"] = sources
    t0 = time.perf_counter()
    steered = train(cfg, records=records)
    return steered, time.perf_counter() - t0


def _sweep(c: NGramBenchConfig, task: NGramTask, steered: Any, spec: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Step 5's sampling: per-weight means and standard errors ``[K, m]``, all sampled
    objective vectors ``[K * n, m]`` and the sequences."""
    from feedalign.multiobjective.steering import generate_steered

    prompts = [PROMPT] * c.samples_per_weight
    points, stderr, vectors, seqs_all = [], [], [], []
    from tqdm.auto import tqdm

    for i, w in enumerate(tqdm(c.weights, desc="ngrams sweep", unit="weight", leave=False)):
        seqs = generate_steered(steered.model, steered.tokenizer, spec, prompts, w,
                                max_new_tokens=task.max_length + 1, temperature=1.0, seed=c.seed + 10 + i,
                                batch_size=64)
        vals = task.score_many(seqs)
        points.append(vals.mean(0))
        stderr.append(vals.std(0, ddof=1) / np.sqrt(len(seqs)) if len(seqs) > 1 else np.zeros(task.m))
        vectors.append(vals)
        seqs_all += seqs
    return np.array(points), np.array(stderr), np.concatenate(vectors), seqs_all


def _samples_summary(task: NGramTask, vectors: np.ndarray, seqs: list[str], exact_hv: float, weights: np.ndarray,
                     seed: int) -> dict[str, Any]:
    return {**_front_metrics(task, vectors, exact_hv, weights),
            "valid_share": float(np.mean([task.invalid_reason(s) is None for s in seqs])),
            "diversity": diversity(seqs, seed=seed)}


def run_ngrams_bench(config: NGramBenchConfig, output_dir: str | Path, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run steps 1-5 of the module docstring under ``output_dir``; returns the JSON report."""
    import torch

    from feedalign.evaluation.pareto import trend_test
    from feedalign.multiobjective.steering import load_spec

    c, task = config, config.task
    out = Path(output_dir)
    torch.manual_seed(c.seed)
    start = time.perf_counter()
    exact_hv = task.exact_hypervolume()
    ref, sft_seconds = _train_reference(c, task, out)
    steered, steer_seconds = _train_steerable(c, task, out)
    weights = c.weights
    points, stderr, vectors, seqs = _sweep(c, task, steered, load_spec(out / "steer" / "final"))
    ref_seqs = _sample(ref.model, ref.tokenizer, task, [PROMPT] * len(seqs), c.seed + 5)
    report = {
        "task": {"ngrams": list(task.ngrams), "lengths": [task.min_length, task.max_length],
                 "normalizer": task.normalizer, "alphabet": task.alphabet,
                 "exact_front_points": int(len(task.exact_front())), "exact_hypervolume": exact_hv,
                 "hv_reference_point": [0.0] * task.m},
        "config": asdict(c),
        "steerable": {**_samples_summary(task, vectors, seqs, exact_hv, weights, c.seed),
                      "trend": trend_test(weights, points, stderr, names=task.objectives),
                      "per_weight": [{"weights": w.tolist(), "means": p.tolist(), "stderr": s.tolist()}
                                     for w, p, s in zip(weights, points, stderr)]},
        "reference": _samples_summary(task, task.score_many(ref_seqs), ref_seqs, exact_hv, weights, c.seed),
        "seconds": {"sft": sft_seconds, "steer": steer_seconds, "total": time.perf_counter() - start},
        "examples": seqs[:: max(1, len(seqs) // 8)][:8],
    }
    s = report["steerable"]
    log(f"ngrams m={task.m}: steerable hv_ratio {s['hv_ratio']:.3f} (reference {report['reference']['hv_ratio']:.3f}), "
        f"valid {s['valid_share']:.2f}, distinct {s['diversity']['distinct']:.2f}, "
        f"edit distance {s['diversity']['mean_edit_distance']:.1f}, {report['seconds']['total']:.0f}s")
    return report
