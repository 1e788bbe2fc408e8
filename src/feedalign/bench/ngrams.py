"""`feedalign bench ngrams`: a one-run steerable LM on the N-grams task, against its exact front.

The task is :mod:`feedalign.envs.ngrams` (Jain et al. 2023). The benchmark, end to end on CPU:

  1. prior data: ``n_prior`` sequences, length uniform in the task's range, each letter drawn
     from the n-grams' letters with probability ``prior_focus`` (uniformly) and from the whole
     alphabet otherwise, so that the objectives vary across samples;
  2. reference: a tiny causal LM (built locally, character tokenizer) fine-tuned on the prior
     data with the ``sft`` loss through the trainer (under random weight tags for ``choice``);
  3. feedback simulated on the task's objectives, ``feedback``:
     ``choice`` (default): users with weights ~ Dirichlet(``user_alpha``) pick one of two prior
     sequences with probability ``sigma(w . (u_a - u_b) / pair_temperature)``, ``draws`` users
     per pair, the weight as one tag token after the prompt (:mod:`feedalign.bench.ngrams_choice`);
     ``modpo``: for every objective k, Bradley-Terry pairs on objective k, the other objectives
     entering as MODPO margins on the pairs' reward scale (``margin_function``,
     ``scale = 1 / pair_temperature``);
  4. ONE steerable run from the reference: DPO on the tagged choices, or one steered MODPO
     source per objective (``steer:``, ``draws`` weights per pair, ``min_weight``);
  5. sampling at every weight of ``simplex_grid(m, sweep_per_axis)`` (``samples_per_weight``
     each, at every temperature of ``temperatures``) under the generation constraints of
     :func:`generation_constraints` (every sample is a valid candidate, as in the GFlowNet's
     action space), scoring, and the metrics: hypervolume of ALL sampled objective vectors
     (w.r.t. the origin) divided by the exact front's hypervolume, the same for the reference's
     samples and for exact samples of the target (:func:`target_rows`), expected utility, the
     end-to-end trend of each objective in its weight, diversity (distinct share, mean
     pairwise edit distance), and the valid share both models reach without the constraints.

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

__all__ = ["NGramBenchConfig", "run_ngrams_bench", "margin_function", "prior_sequences", "prior_letter_probs",
           "generation_constraints", "target_rows"]

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
    n_pairs: int = 2000
    # Labels P = sigma(w.(u_a - u_b) / T) teach the reward w.u / T; the target is
    # pi*_w ∝ pi_ref exp(w.u / (T beta)): 1 / (18 T beta) = 7.9 nats per occurrence.
    pair_temperature: float = 0.01
    steer_steps: int = 800
    draws: int = 4  # choice: users per pair; modpo: weights per pair
    beta: float = 0.7
    lr: float = 3e-3
    steer_lr: float = 3e-3
    batch_size: int = 16
    hidden: int = 64
    layers: int = 2
    sweep_per_axis: int | None = None  # default: 11 for m = 2, 6 for m >= 3
    samples_per_weight: int = 32
    steer_grid: int = 10
    min_weight: float | None = None  # modpo: per source, on its own objective; default 1 / m
    placement: str = "suffix"  # modpo: where the steering spec's tag goes
    temperatures: tuple[float, ...] = (1.0, 0.5, 0.25)  # sampling temperatures of the sweep
    constrained: bool = True  # valid lengths and letters enforced at generation time
    feedback: str = "choice"  # "choice": users' weighted choices; "modpo": pairs per objective + margins
    conflict: bool = False  # choice: only pairs whose objectives disagree
    user_alpha: float = 0.3  # choice: users' weights ~ Dirichlet(user_alpha)
    adapter_rank: int = 0  # > 0: weight adapters read the tag (multiobjective/weight_adapters.py)

    def __post_init__(self) -> None:
        if not 0 <= self.prior_focus <= 1:
            raise ValueError(f"prior_focus must be in [0, 1], got {self.prior_focus}")
        if self.beta <= 0 or self.pair_temperature <= 0:
            raise ValueError("beta and pair_temperature must be > 0")
        object.__setattr__(self, "temperatures", tuple(float(t) for t in self.temperatures))
        if self.feedback not in ("modpo", "choice"):
            raise ValueError(f"feedback must be 'modpo' or 'choice', got {self.feedback!r}")
        if not self.temperatures or any(t <= 0 for t in self.temperatures):
            raise ValueError(f"temperatures must be > 0 (at least one), got {self.temperatures}")

    @classmethod
    def quick(cls, **changes: Any) -> NGramBenchConfig:
        base = cls(n_prior=300, sft_steps=20, n_pairs=100, steer_steps=10, hidden=32, layers=1,
                   samples_per_weight=4, sweep_per_axis=3, temperatures=(1.0, 0.5))
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


def prior_letter_probs(task: NGramTask, focus: float) -> np.ndarray:
    """The letter probabilities ``[len(alphabet)]`` of :func:`prior_sequences`."""
    used = [c in "".join(task.ngrams) for c in task.alphabet]
    return np.array([focus * u / sum(used) + (1 - focus) / len(task.alphabet) for u in used])


def target_rows(c: NGramBenchConfig, task: NGramTask, exact_hv: float) -> dict[str, Any]:
    """What the method aims at: exact samples of ``pi*_w ∝ p(y) exp(w . u(y) / (T beta))`` with
    the prior ``p`` in place of the fine-tuned reference (``u`` normalised counts, ``T`` the
    pairs' temperature), drawn at the sweep's weights and temperatures as the model is; its
    hv_ratio is the ceiling a perfectly trained steerable model would reach."""
    from feedalign.envs.ngrams import tilted_samples

    lam = 1.0 / (task.normalizer * c.pair_temperature * c.beta)  # nats per occurrence
    probs = prior_letter_probs(task, c.prior_focus)
    rows = {}
    for t in c.temperatures:
        seqs = [s for i, w in enumerate(c.weights)
                for s in tilted_samples(task, probs, lam, w, c.samples_per_weight, temperature=t, seed=c.seed + i)]
        rows[f"{t:g}"] = _samples_summary(task, seqs, exact_hv, c.weights, c.seed)
    return {"nats_per_occurrence": lam, **rows}


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


def generation_constraints(task: NGramTask, tokenizer: Any, constrained: bool = True) -> dict[str, Any]:
    """Keyword arguments of ``policies.hf.generate`` that make every sample a valid candidate,
    as the GFlowNet's action space does: the stop tokens are masked before ``min_length``
    letters (transformers' ``min_new_tokens``), the stop is forced at ``max_length``
    (``max_new_tokens``), and every token that is not a letter of the alphabet or a stop token
    is suppressed (``suppress_tokens``). Unconstrained: ``max_length + 1`` new tokens, so a
    sample that runs on is cut and scores as invalid."""
    if not constrained:
        return {"max_new_tokens": task.max_length + 1}
    from feedalign.data.collate import turn_end_ids

    allowed = {tokenizer.convert_tokens_to_ids(c) for c in task.alphabet} | set(turn_end_ids(tokenizer))
    suppress = [i for i in range(len(tokenizer)) if i not in allowed]
    return {"max_new_tokens": task.max_length, "min_new_tokens": task.min_length, "suppress_tokens": suppress}


def _front_metrics(task: NGramTask, vectors: np.ndarray, exact_hv: float, weights: np.ndarray) -> dict[str, Any]:
    from feedalign.evaluation.pareto import expected_utility, hypervolume, nondominated

    hv = hypervolume(vectors, np.zeros(task.m))
    return {"hypervolume": hv, "hv_ratio": hv / exact_hv, "eu_front": expected_utility(vectors, weights),
            "n_nondominated": int(nondominated(vectors).shape[0])}


def _train_reference(c: NGramBenchConfig, task: NGramTask, out: Path) -> tuple[Any, float, Any]:
    """Steps 1-2: a tiny LM saved to ``out/init``, fine-tuned on prior sequences (saved back
    to ``out/init`` so the steerable run starts from it). With ``feedback="choice"`` the tag
    tokens are added first and the prior is shown under random tags
    (:mod:`feedalign.bench.ngrams_choice`); returns that run's WeightTags (else None)."""
    from feedalign.bench.ngrams_choice import choice_spec, tagged_prior
    from feedalign.data.records import LabeledRecord
    from feedalign.policies.tiny import build_char_tokenizer, build_tiny_causal_lm, save_tiny
    from feedalign.trainers.loop import train

    tokenizer = build_char_tokenizer(task.alphabet + PROMPT + " ")  # the space separates weight tokens
    model = build_tiny_causal_lm(len(tokenizer), hidden=c.hidden, layers=c.layers, heads=4, kv_heads=2,
                                 intermediate=2 * c.hidden, seed=c.seed, max_position_embeddings=64)
    prior = prior_sequences(task, c.n_prior, c.prior_focus, c.seed)
    spec = None
    if c.feedback == "choice":
        spec = choice_spec(task.objectives, c.steer_grid, c.seed, c.user_alpha)
        spec.prepare(tokenizer, model)
        sft = tagged_prior(spec, PROMPT, prior, c.seed + 3)
    else:
        sft = [LabeledRecord(PROMPT, s, True) for s in prior]
    save_tiny(model, tokenizer, out / "init")
    t0 = time.perf_counter()
    ref = train(_train_config(c, out, "sft", {"loss": "sft"}, c.sft_steps, c.lr), records={"sft": sft})
    seconds = time.perf_counter() - t0
    save_tiny(ref.model, ref.tokenizer, out / "init")
    return ref, seconds, spec


def _choice_adapters(c: NGramBenchConfig, spec: Any, out: Path) -> dict[str, Any]:
    """With ``adapter_rank``: the reference model with weight adapters that read the choice
    run's tags (one token per weight vector), for ``train(model=..., tokenizer=...)``."""
    if not c.adapter_rank:
        return {}
    from feedalign.multiobjective.weight_adapters import attach_tags
    from feedalign.policies.hf import load_causal_lm, load_tokenizer

    model, tokenizer = load_causal_lm(out / "init"), load_tokenizer(out / "init")
    tags = {tokenizer.convert_tokens_to_ids("<w:" + ",".join(map(str, lv)) + ">"): [v / spec.grid for v in lv]
            for lv in spec.all_levels()}
    attach_tags(model, tags, spec.m, c.adapter_rank, per_objective=False, seed=c.seed)
    return {"model": model, "tokenizer": tokenizer}


def _train_steerable(c: NGramBenchConfig, task: NGramTask, out: Path, spec: Any = None) -> tuple[Any, float]:
    """Steps 3-4. One steered MODPO source per objective k (its own BT pairs, the others' exact
    scores as margins): every source's population optimum is pi*_w at every w, and each
    objective's direction gets direct pair signal where its weight is large."""
    from feedalign.envs.annotators import bt_pairs
    from feedalign.trainers.loop import train

    names = task.objectives
    if c.feedback == "choice":
        from feedalign.bench.ngrams_choice import choice_pairs

        pool = prior_sequences(task, 2 * c.n_pairs, c.prior_focus, c.seed + 1)
        records = {"choice": choice_pairs(task, spec, PROMPT, pool, n_pairs=c.n_pairs, draws=c.draws,
                                          temperature=c.pair_temperature, seed=c.seed + 20, conflict=c.conflict)}
        cfg = _train_config(c, out, "steer", {}, c.steer_steps, c.steer_lr)
        cfg["data"] = [{"name": "choice", "loss": "dpo", "hparams": {"beta": c.beta}}]
        t0 = time.perf_counter()
        steered = train(cfg, records=records, **_choice_adapters(c, spec, out))
        return steered, time.perf_counter() - t0

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
                        "steer": {"objectives": names, "grid": c.steer_grid, "render": "tokens", "draws": c.draws,
                                  "placement": c.placement, "min_weight": c.min_weight or 1.0 / task.m,
                                  "adapter_rank": c.adapter_rank}})
    cfg = _train_config(c, out, "steer", {}, c.steer_steps, c.steer_lr)
    cfg["data"] = sources
    t0 = time.perf_counter()
    steered = train(cfg, records=records)
    return steered, time.perf_counter() - t0


def _sweep(c: NGramBenchConfig, task: NGramTask, steered: Any, spec: Any, temperature: float,
           constrained: bool) -> dict[str, Any]:
    """Step 5's sampling at one temperature: per-weight means and standard errors ``[K, m]``,
    all sampled objective vectors ``[K * n, m]`` and the sequences."""
    from tqdm.auto import tqdm

    from feedalign.multiobjective.steering import generate_steered

    prompts = [PROMPT] * c.samples_per_weight
    options = generation_constraints(task, steered.tokenizer, constrained)
    points, stderr, vectors, seqs_all = [], [], [], []
    for i, w in enumerate(tqdm(c.weights, desc=f"ngrams sweep T={temperature:g}", unit="weight", leave=False)):
        seqs = generate_steered(steered.model, steered.tokenizer, spec, prompts, w, temperature=temperature,
                                seed=c.seed + 10 + i, batch_size=64, **options)
        vals = task.score_many(seqs)
        points.append(vals.mean(0))
        stderr.append(vals.std(0, ddof=1) / np.sqrt(len(seqs)) if len(seqs) > 1 else np.zeros(task.m))
        vectors.append(vals)
        seqs_all += seqs
    return {"points": np.array(points), "stderr": np.array(stderr), "vectors": np.concatenate(vectors),
            "seqs": seqs_all}


def _samples_summary(task: NGramTask, seqs: list[str], exact_hv: float, weights: np.ndarray,
                     seed: int) -> dict[str, Any]:
    return {**_front_metrics(task, task.score_many(seqs), exact_hv, weights),
            "valid_share": float(np.mean([task.invalid_reason(s) is None for s in seqs])),
            "diversity": diversity(seqs, seed=seed)}


def _evaluate(c: NGramBenchConfig, task: NGramTask, ref: Any, steered: Any, spec: Any,
              exact_hv: float) -> dict[str, Any]:
    """Step 5 at every sampling temperature, for the steerable model and the reference (the
    same number of samples, the same generation constraints), plus the valid share both
    reach at temperature 1 without the constraints."""
    from feedalign.evaluation.pareto import trend_test
    from feedalign.policies.hf import generate

    weights, n = c.weights, len(c.weights) * c.samples_per_weight
    # the reference was fine-tuned on what it is asked here: the bare prompt, or (choice) tagged ones
    ref_prompts = ([spec.condition_prompt(PROMPT, w) for w in weights for _ in range(c.samples_per_weight)]
                   if c.feedback == "choice" else [PROMPT] * n)
    rows: dict[str, Any] = {"steerable": {}, "reference": {}}
    for t in c.temperatures:
        sweep = _sweep(c, task, steered, spec, t, c.constrained)
        rows["steerable"][f"{t:g}"] = {
            **_samples_summary(task, sweep["seqs"], exact_hv, weights, c.seed),
            "trend": trend_test(weights, sweep["points"], sweep["stderr"], names=task.objectives),
            "per_weight": [{"weights": w.tolist(), "means": p.tolist(), "stderr": s.tolist()}
                           for w, p, s in zip(weights, sweep["points"], sweep["stderr"])],
            "examples": sweep["seqs"][:: max(1, n // 8)][:8]}
        ref_seqs = generate(ref.model, ref.tokenizer, ref_prompts, temperature=t, seed=c.seed + 5, batch_size=64,
                            **generation_constraints(task, ref.tokenizer, c.constrained))
        rows["reference"][f"{t:g}"] = _samples_summary(task, ref_seqs, exact_hv, weights, c.seed)
    free = _sweep(c, task, steered, spec, 1.0, False)["seqs"]
    ref_free = generate(ref.model, ref.tokenizer, ref_prompts, temperature=1.0, seed=c.seed + 5, batch_size=64,
                        **generation_constraints(task, ref.tokenizer, False))
    rows["unconstrained_valid_share"] = {
        "steerable": float(np.mean([task.invalid_reason(s) is None for s in free])),
        "reference": float(np.mean([task.invalid_reason(s) is None for s in ref_free]))}
    return rows


def run_ngrams_bench(config: NGramBenchConfig, output_dir: str | Path, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run steps 1-5 of the module docstring under ``output_dir``; returns the JSON report."""
    import torch

    from feedalign.multiobjective.steering import load_spec

    c, task = config, config.task
    out = Path(output_dir)
    torch.manual_seed(c.seed)
    start = time.perf_counter()
    exact_hv = task.exact_hypervolume()
    ref, sft_seconds, spec = _train_reference(c, task, out)
    steered, steer_seconds = _train_steerable(c, task, out, spec)
    if spec is None:
        # final/ holds the first source's spec, whose weight floor is on its own objective; the
        # sweep asks for every weight of the simplex as it is (the sources together cover it).
        spec = replace(load_spec(out / "steer" / "final"), trained=None)
    t0 = time.perf_counter()
    rows = _evaluate(c, task, ref, steered, spec, exact_hv)
    rows["target"] = target_rows(c, task, exact_hv)
    report = {
        "task": {"ngrams": list(task.ngrams), "lengths": [task.min_length, task.max_length],
                 "normalizer": task.normalizer, "alphabet": task.alphabet,
                 "exact_front_points": int(len(task.exact_front())), "exact_hypervolume": exact_hv,
                 "hv_reference_point": [0.0] * task.m},
        "config": asdict(c),
        **rows,
        "seconds": {"sft": sft_seconds, "steer": steer_seconds, "evaluate": time.perf_counter() - t0,
                    "total": time.perf_counter() - start},
    }
    free = report["unconstrained_valid_share"]
    for t, s in report["steerable"].items():
        log(f"ngrams m={task.m} T={t}: steerable hv_ratio {s['hv_ratio']:.3f} "
            f"(reference {report['reference'][t]['hv_ratio']:.3f}), valid {s['valid_share']:.2f}, "
            f"distinct {s['diversity']['distinct']:.2f}, edit distance {s['diversity']['mean_edit_distance']:.1f}, "
            f"trend {[r['status'] for r in s['trend']]}; target pi*_w {report['target'][t]['hv_ratio']:.3f}")
    log(f"ngrams m={task.m}: valid share without the constraints {free['steerable']:.2f} "
        f"(reference {free['reference']:.2f}); {report['seconds']['total']:.0f}s")
    return report
