"""Sweep preference weights, sample, score every objective, and report the learned front.

For each weight vector ``w`` of a sweep, a policy for ``w`` (a steerable model conditioned on
``w``, or a rewarded soup built for ``w``) samples completions of a fixed prompt set with fixed
sampling settings (the same seed for every ``w``, so differences between weights are not
sampling noise). Every objective is scored (ground-truth scorers of a built-in task, a reward
model, or a user function) and averaged into ``J(w)``. From the points ``J(w)``:
hypervolume, EU_front, EU_cond and sparsity (docs/ALGORITHMS.md 13, via
:mod:`feedalign.evaluation.pareto`), on objectives normalised with FIXED bounds, plus the
monotonicity of the trade-off in ``w``, in two ways: between neighbouring weights (2
objectives: raising ``w_1`` should not lower objective 1 nor raise objective 2; each violation
is reported with whether it exceeds 1.96 combined standard errors), and end to end (any m:
the weighted least-squares slope of objective ``j`` in ``w_j`` over the whole sweep must be
significantly positive, :func:`feedalign.evaluation.pareto.trend_test`; a flat or reversed
sweep fails here even when every neighbouring step hides in the noise).
``metrics["significant_violations"]`` counts both kinds.

Writes ``front.json`` (everything), ``front.png`` (learned points labelled by ``w_1``, and the
exact / ideal front when known) and ``front.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from feedalign.multiobjective.weights import simplex_grid, validate_weights

__all__ = [
    "FrontResult",
    "run_front",
    "parse_weight_list",
    "make_scorer",
    "text_task_ideal_front",
    "steerable_generator",
    "soup_generator",
]

Generator = Callable[[np.ndarray, list[str]], list[str]]
Scorer = Callable[[list[str], list[str]], Mapping[str, Any]]
LogRatio = Callable[[np.ndarray, list[str], list[str]], Any]


@dataclass
class FrontResult:
    """What :func:`run_front` measured (raw objective units unless named ``normalized``)."""

    objectives: list[str]
    weights: np.ndarray  # [K, m] requested weights
    points: np.ndarray  # [K, m] mean score per weight
    stderr: np.ndarray  # [K, m]
    metrics: dict[str, Any]
    violations: list[dict[str, Any]]
    samples: list[dict[str, Any]] = field(default_factory=list)
    kl: np.ndarray | None = None  # [K] estimated KL(pi_w || pi_ref), when measured
    paths: dict[str, str] = field(default_factory=dict)
    trend: list[dict[str, Any]] = field(default_factory=list)  # pareto.trend_test per objective

    def to_dict(self) -> dict[str, Any]:
        per_weight = []
        for i, w in enumerate(self.weights):
            row = {"weights": w.tolist(), **{o: float(self.points[i, j]) for j, o in enumerate(self.objectives)},
                   "stderr": {o: float(self.stderr[i, j]) for j, o in enumerate(self.objectives)}}
            if self.kl is not None:
                row["kl"] = float(self.kl[i])
            per_weight.append(row)
        return {"objectives": self.objectives, "per_weight": per_weight, "metrics": self.metrics,
                "monotonicity_violations": self.violations, "trend": self.trend, "samples": self.samples,
                "paths": self.paths}


# --------------------------------------------------------------------------- inputs


def parse_weight_list(text: str, m: int = 2) -> np.ndarray:
    """``"0,0.25,1"`` (values of w_1 for two objectives) or ``"0.2,0.3,0.5;1,0,0"`` (full rows
    separated by ';') -> ``[K, m]`` validated weights."""
    text = text.strip()
    if ";" in text or m > 2:
        rows = [[float(v) for v in part.split(",")] for part in text.split(";") if part.strip()]
        return validate_weights(np.asarray(rows, dtype=np.float64), m, name=f"weights {text!r}")
    try:
        w1 = np.array([float(v) for v in text.split(",") if v.strip()])
    except ValueError:
        raise ValueError(f"weights {text!r}: expected comma-separated numbers like '0,0.25,0.5,0.75,1'") from None
    if np.any((w1 < 0) | (w1 > 1)):
        raise ValueError(f"weights {text!r}: each w_1 must be in [0, 1]")
    return np.stack([w1, 1.0 - w1], axis=1)


def text_task_ideal_front(task: Any = None) -> np.ndarray:
    """The best attainable (helpful, concise) points of the synthetic text task: mention ``c``
    items of the topic and nothing else, ``c = 0..4`` (``[5, 2]``, helpful ascending). Expected
    scores of any policy lie under the segment joining them (an upper bound, not a KL-regularised
    optimum)."""
    from feedalign.envs.text_task import N_REQUESTED, TextTask

    task = task or TextTask()
    return np.array([[c / N_REQUESTED, max(0.0, 1.0 - c / task.max_words)] for c in range(N_REQUESTED + 1)])


def make_scorer(spec: str, *, options: Mapping[str, Any] | None = None, device: Any = None) -> tuple[Scorer, list[str], dict[str, Any]]:
    """``(scorer, objective names, defaults)`` from ``builtin:text_task``, a reward-model dir,
    or ``module:function`` (returning ``{objective: [B] scores}``; objectives given in
    ``options["objectives"]``). ``defaults`` may hold ``lower``, ``upper``, ``ref`` and ``exact``."""
    opts = dict(options or {})
    if spec == "builtin:text_task":
        from feedalign.envs.text_task import TextTask

        task = TextTask(**opts)
        m = len(task.OBJECTIVES)
        exact = text_task_ideal_front(task) if m == 2 else None  # the ideal front is drawn for 2 objectives
        defaults = {"lower": [0.0] * m, "upper": [1.0] * m, "ref": [0.0] * m, "exact": exact}
        return task.score_many, list(task.OBJECTIVES), defaults
    if Path(spec).is_dir():
        from feedalign.policies.reward_model import load_reward_model

        model, tokenizer = load_reward_model(spec, device=device)
        normalize = bool(opts.pop("normalize", True))

        def score(prompts: list[str], completions: list[str]) -> dict[str, np.ndarray]:
            values = model.score(tokenizer, prompts, completions, normalize=normalize, **opts).cpu().numpy()
            return {o: values[:, j].astype(np.float64) for j, o in enumerate(model.objectives)}

        return score, list(model.objectives), {}
    from feedalign.multiobjective.margins import import_target

    objectives = opts.pop("objectives", None)
    if not objectives:
        raise ValueError(f"scorer {spec!r}: a function scorer needs scorer_options.objectives")
    fn = import_target(spec)
    return (lambda p, c: fn(p, c, **opts)), list(objectives), {}


def steerable_generator(model: Any, tokenizer: Any, spec: Any, **generate_kwargs: Any) -> Generator:
    """Sample from a steerable model conditioned on each ``w`` (prefix from ``spec``)."""
    from feedalign.multiobjective.steering import generate_steered

    return lambda w, prompts: generate_steered(model, tokenizer, spec, prompts, w, **generate_kwargs)


def soup_generator(soup: Any, tokenizer: Any, **generate_kwargs: Any) -> Generator:
    """Sample from the rewarded soup built for each ``w`` (``SoupPolicy.model_for``)."""
    from feedalign.policies.hf import generate

    return lambda w, prompts: generate(soup.model_for(w), tokenizer, prompts, **generate_kwargs)


# --------------------------------------------------------------------------- sweep


def _score_matrix(scorer: Scorer, objectives: Sequence[str], prompts: list[str], completions: list[str]) -> np.ndarray:
    scores = scorer(prompts, completions)
    missing = [o for o in objectives if o not in scores]
    if missing:
        raise ValueError(f"scorer returned {sorted(scores)}; missing objectives {missing}")
    cols = [np.asarray(scores[o], dtype=np.float64).reshape(-1) for o in objectives]
    if any(c.shape[0] != len(prompts) for c in cols):
        raise ValueError(f"scorer returned scores of lengths {[c.shape[0] for c in cols]} for {len(prompts)} samples")
    return np.stack(cols, axis=1)


def _metrics(points: np.ndarray, weights: np.ndarray, ref: Any, lower: Any, upper: Any, eu_grid: int, exact: Any) -> dict[str, Any]:
    from feedalign.evaluation import pareto

    m = points.shape[1]
    norm = (lambda x: pareto.normalize(x, lower, upper)) if lower is not None else (lambda x: np.asarray(x, dtype=np.float64))
    pts = norm(points)
    ref_n = norm(np.asarray(ref, dtype=np.float64))
    eu_weights = simplex_grid(m, eu_grid)
    out = {
        "hypervolume": pareto.hypervolume(pts, ref_n),
        "eu_front": pareto.expected_utility(pts, eu_weights),
        "eu_cond": pareto.conditional_expected_utility(pts, weights),
        "sparsity": pareto.sparsity(pts),
        "n_points": int(pts.shape[0]),
        "n_nondominated": int(pareto.nondominated_mask(pts).sum()),
        "normalization": {"lower": None if lower is None else list(np.broadcast_to(lower, (m,))),
                          "upper": None if upper is None else list(np.broadcast_to(upper, (m,))),
                          "ref": np.asarray(ref, dtype=np.float64).tolist()},
        "eu_weights": f"simplex_grid({m}, {eu_grid})",
    }
    if exact is not None:
        ex = norm(np.asarray(exact, dtype=np.float64))
        out["exact_hypervolume"] = pareto.hypervolume(ex, ref_n)
        out["exact_eu_front"] = pareto.expected_utility(ex, eu_weights)
        if out["exact_hypervolume"] > 0:
            out["hypervolume_ratio"] = out["hypervolume"] / out["exact_hypervolume"]
    return out


def _violations(weights: np.ndarray, points: np.ndarray, stderr: np.ndarray, objectives: Sequence[str]) -> list[dict[str, Any]]:
    from feedalign.evaluation.pareto import monotonic_violations

    if points.shape[1] != 2 or len(np.unique(weights[:, 0])) != len(weights):
        return []
    found = monotonic_violations(weights[:, 0], points, names=(objectives[0], objectives[1]))
    order = {float(w): i for i, w in enumerate(weights[:, 0])}
    for v in found:
        j = v["index"]
        noise = 1.96 * math.hypot(stderr[order[v["w_prev"]], j], stderr[order[v["w_next"]], j])
        v["noise"] = noise
        v["significant"] = abs(v["value_next"] - v["value_prev"]) > noise
    return found


def _trend(weights: np.ndarray, points: np.ndarray, stderr: np.ndarray, objectives: Sequence[str]) -> list[dict[str, Any]]:
    from feedalign.evaluation.pareto import trend_test

    if len(weights) < 2:
        return []
    return trend_test(weights, points, stderr, names=objectives)


def run_front(
    generate: Generator,
    score: Scorer,
    *,
    weights: Any,
    prompts: Sequence[str],
    objectives: Sequence[str],
    output_dir: str | Path | None = None,
    samples_per_prompt: int = 1,
    ref: Any = None,
    lower: Any = None,
    upper: Any = None,
    exact: Any = None,
    log_ratio: LogRatio | None = None,
    eu_grid: int = 11,
    label: str = "learned",
    title: str | None = None,
    keep_samples: int = 3,
) -> FrontResult:
    """Sweep ``weights``, sample, score, compute the front metrics and write the report.

    Args:
        generate: ``(w [m], prompts) -> completions`` for the policy of ``w``.
        score: ``(prompts, completions) -> {objective: [B]}``.
        weights: ``[K, m]`` weight vectors (requested; EU_cond uses these).
        prompts: the fixed evaluation prompts (each repeated ``samples_per_prompt`` times).
        objectives: names, in weight order.
        output_dir: where front.json / front.png / front.md go (None: write nothing).
        ref: hypervolume reference point in RAW units (default: the worst value per objective
            over the points minus 1e-9, which makes HV comparable only within this run).
        lower, upper: fixed normalisation bounds (raw units) for all metrics.
        exact: ``[M, m]`` exact or ideal front (raw units), drawn and compared when given.
        log_ratio: ``(w, prompts, completions) -> [B]`` of ``log pi_w(y|x) - log pi_ref(y|x)``
            on the samples; their mean estimates KL(pi_w || pi_ref), reported per weight.
        keep_samples: example completions stored per weight in front.json.
    """
    objectives = list(objectives)
    ws = validate_weights(np.atleast_2d(np.asarray(weights, dtype=np.float64)), len(objectives), name="weights")
    ws = np.round(ws, 12)  # 0.30000000000000004 -> 0.3 in reports
    batch = [p for p in prompts for _ in range(samples_per_prompt)]
    if not batch:
        raise ValueError("run_front: needs at least one prompt")
    points, stderr, kls, samples = [], [], [], []
    for w in ws:
        completions = list(generate(w, list(batch)))
        values = _score_matrix(score, objectives, batch, completions)
        points.append(values.mean(0))
        stderr.append(values.std(0, ddof=1) / math.sqrt(len(batch)) if len(batch) > 1 else np.zeros(len(objectives)))
        if log_ratio is not None:
            kls.append(float(np.mean(np.asarray(log_ratio(w, batch, completions), dtype=np.float64))))
        samples.append({"weights": w.tolist(), "examples": [{"prompt": p, "completion": c} for p, c in zip(batch, completions)][:keep_samples]})
    pts, se = np.array(points), np.array(stderr)
    if ref is None:
        ref = pts.min(0) - 1e-9
    metrics = _metrics(pts, ws, ref, lower, upper, eu_grid, exact)
    violations = _violations(ws, pts, se, objectives)
    trend = _trend(ws, pts, se, objectives)
    metrics["significant_violations"] = sum(bool(v["significant"]) for v in violations + trend)
    result = FrontResult(objectives, ws, pts, se, metrics, violations, samples, np.array(kls) if kls else None,
                         trend=trend)
    if output_dir is not None:
        write_front(result, output_dir, exact=exact, label=label, title=title)
    return result


# --------------------------------------------------------------------------- outputs


def write_front(result: FrontResult, output_dir: str | Path, *, exact: Any = None, label: str = "learned", title: str | None = None) -> dict[str, str]:
    """front.json, front.png (first two objectives) and front.md under ``output_dir``; with 3+
    objectives also front_pairs.png (every pair) and front_parallel.png (parallel coordinates)."""
    from feedalign.evaluation.plots import plot_front
    from feedalign.evaluation.report import write_json, write_markdown_report

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = plot_front(out / "front.png", {label: (result.points[:, :2], result.weights[:, 0])},
                     exact=None if exact is None else np.asarray(exact)[:, :2],
                     objectives=(result.objectives[0], result.objectives[1]), title=title or "front over w")
    result.paths = {"json": str(out / "front.json"), "png": str(png), "md": str(out / "front.md")}
    images = [png]
    if result.points.shape[1] >= 3:  # every pair of objectives, and all of them at once
        from feedalign.evaluation.plots_many import plot_front_pairs, plot_front_parallel

        pairs = plot_front_pairs(out / "front_pairs.png", {label: result.points}, result.objectives,
                                 exact=exact, title=title or "front over w (pairwise projections)")
        parallel = plot_front_parallel(out / "front_parallel.png", result.points, result.weights,
                                       result.objectives, title=title or "front over w (parallel coordinates)")
        result.paths.update(pairs_png=str(pairs), parallel_png=str(parallel))
        images += [pairs, parallel]
    write_json(out / "front.json", result.to_dict())
    rows = []
    for i, w in enumerate(result.weights):
        row = {"w": " ".join(f"{v:.2f}" for v in w)}
        for j, o in enumerate(result.objectives):
            row[o] = f"{result.points[i, j]:.4f} ± {result.stderr[i, j]:.4f}"
        if result.kl is not None:
            row["KL(pi_w||pi_ref)"] = float(result.kl[i])
        rows.append(row)
    keys = ("hypervolume", "exact_hypervolume", "hypervolume_ratio", "eu_front", "exact_eu_front", "eu_cond", "sparsity",
            "n_nondominated", "significant_violations")
    summary = [{"metric": k, "value": result.metrics[k]} for k in keys if k in result.metrics]
    if result.violations:
        viol = [{k: v[k] for k in ("objective", "expected", "w_prev", "w_next", "value_prev", "value_next", "significant")}
                for v in result.violations]
    else:
        viol = "None: the trade-off is monotone in w." if result.points.shape[1] == 2 else "Not checked (more than 2 objectives)."
    trend = [{k: (f"{v[k]:.4f}" if isinstance(v[k], float) else v[k]) for k in ("objective", "slope", "se", "z", "status")}
             for v in result.trend] or "Not checked (fewer than 2 weights)."
    sections = [("Points per weight", rows), ("Metrics (normalised objectives)", summary),
                ("Monotonicity between neighbouring weights", viol),
                ("End-to-end trend of each objective in its weight (slope ± s.e.)", trend)]
    write_markdown_report(out / "front.md", title or "Learned front", sections, images=images)
    return result.paths
