"""The three-objective front stage (``--objectives 3``): helpful, concise and polite.

The text task with ``polite=True`` adds ``polite`` = 0.5 * (opens with an opener phrase) +
0.5 * (closes with a closer phrase); politeness costs words, so it conflicts with ``concise``
and not with ``helpful``. Two policy families over ``simplex_grid(3, front3_per_axis)``
weights, the same prompts, sampling seed and scorer as the two-objective front:

  * ``soups``: a rewarded soup of THREE policies fine-tuned from the reference, the
    helpful-targeted and the concise-targeted methods of the align stage and one BCO run on
    ``thumbs_polite`` (``delta_rule: cumulative``, as the concise BCO run):
    ``theta(w) = sum_j w_j * theta_j``; its compute is the three component runs;
  * ``steerable``: ONE weight-conditioned MODPO run on the helpful pairs with the task's exact
    ``concise`` and ``polite`` scores times 1 / T as margins, for the soups' total steps.

A MODPO sweep (one run per weight: 15 runs on the default grid) is not run for m = 3: it would
cost about five times the two methods above together.

Hypervolume ratios are taken against the DENSE ideal front (:func:`ideal_front_dense`, the
attainable front of expected scores), not its 15 vertices. Outputs: DIR/front3/<method>/front.*
(json, md, front.png of helpful x concise, front_pairs.png, front_parallel.png) and
DIR/front3/pairs.png (every method and the ideal vertices); ``report["front3"]`` holds
``methods`` in the layout of ``report["front"]["methods"]`` plus ``hv_ratio``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from feedalign.quickstart.front_stage import (
    STEERABLE_ADAPTER_RANK,
    STEERABLE_CONCENTRATION,
    STEERABLE_DRAWS,
    STEERABLE_LR_FACTOR,
    FrontPolicy,
    _method_entry,
    _single_objective_method,
    soup_sampler,
)
from feedalign.quickstart.settings import OBJECTIVES

OBJECTIVES3 = (*OBJECTIVES, "polite")
# The polite soup component: the concise BCO run's recipe on the polite thumbs.
POLITE_RUN = {"name": "bco_polite", "loss": "bco", "feedback": "thumbs_polite", "steps": 150, "lr": 5e-4,
              "hparams": {"beta": 0.1, "delta_rule": "cumulative"}}
DENSE_PER_ITEM = 40  # dense front: 40 grid steps per item and per politeness half (161 x 81 points)


# --------------------------------------------------------------------------- the ideal front


def _polite_words(task: Any) -> tuple[int, int]:
    """Fewest words for politeness 0.5 and 1: the shortest opener or closer, and both."""
    from feedalign.envs.text_task import CLOSERS, OPENERS, count_words

    opener = min(count_words(p) for p in OPENERS if count_words(p))
    closer = min(count_words(p) for p in CLOSERS if count_words(p))
    return min(opener, closer), opener + closer


def ideal_front_vertices(task: Any = None) -> np.ndarray:
    """The best attainable single-completion score vectors (helpful, concise, polite) [derived].

    A completion with ``c`` distinct topic items and politeness ``k / 2`` has at least
    ``c + n_k`` words (items, openers and closers share no word; ``n_0 = 0``, ``n_1`` = the
    shortest opener or closer, ``n_2`` = shortest opener + shortest closer: 1 and 2 words,
    "well ," and "too"), so ``concise <= max(0, 1 - (c + n_k) / max_words)``, with equality for
    e.g. ``well apple pear too .``. Every other completion is weakly dominated by one of these
    ``(N_REQUESTED + 1) * 3 = 15`` points; rows run c = 0..4 with k = 0, back with k = 1,
    forward with k = 2, so that consecutive rows are edges of the front (the helpful x concise
    projection draws as one line)."""
    from feedalign.envs.text_task import N_REQUESTED, TextTask

    task = task or TextTask(polite=True)
    words = (0, *_polite_words(task))
    rows = []
    for k in range(3):
        cs = range(N_REQUESTED + 1) if k % 2 == 0 else range(N_REQUESTED, -1, -1)
        rows += [[c / N_REQUESTED, max(0.0, 1.0 - (c + words[k]) / task.max_words), k / 2] for c in cs]
    return np.array(rows, dtype=np.float64)


def ideal_front_dense(task: Any = None, per_item: int = DENSE_PER_ITEM) -> np.ndarray:
    """The front of EXPECTED scores, on a grid: ``[(4 n + 1) * (2 n + 1), 3]`` [derived].

    A policy's expected score vector is a mixture of completions' vectors. Mixing the four
    vertices around ``(h, p)`` (product weights) gives ``helpful = h``, ``polite = p`` and,
    concise being a sum of a term in ``h`` and a term in ``p`` while no vertex is clipped at 0,
    ``concise = 1 - (N h + n(p)) / max_words`` with ``n`` piecewise linear through ``n_0, n_1,
    n_2``; nothing attainable lies above it. For the task (n = 0, 1, 2 words) this is the plane
    ``concise = 1 - h / 3 - p / 6`` and the hypervolume from (0, 0, 0) is exactly
    ``1 - 1/6 - 1/12 = 0.75``; the grid's staircase approaches it from below."""
    from feedalign.envs.text_task import N_REQUESTED, TextTask

    task = task or TextTask(polite=True)
    words = np.array([0, *_polite_words(task)], dtype=np.float64)
    if N_REQUESTED + words[2] > task.max_words:
        raise ValueError(f"ideal_front_dense: max_words={task.max_words} clips concise at 0; needs "
                         f">= {N_REQUESTED + int(words[2])}")
    h = np.linspace(0.0, 1.0, N_REQUESTED * per_item + 1)
    p = np.linspace(0.0, 1.0, 2 * per_item + 1)
    hh, pp = np.meshgrid(h, p, indexing="ij")
    concise = 1.0 - (N_REQUESTED * hh + np.interp(pp, [0.0, 0.5, 1.0], words)) / task.max_words
    return np.stack([hh.ravel(), concise.ravel(), pp.ravel()], axis=1)


# --------------------------------------------------------------------------- policies


def _polite_component(ctx: Any) -> str:
    """Train (once) the polite soup component from the reference; returns its run name."""
    from feedalign.quickstart.pipeline import train_run

    name = POLITE_RUN["name"]
    if name not in ctx.models:
        steps = max(2, round(POLITE_RUN["steps"] * ctx.settings.step_scale))
        source = {"loss": POLITE_RUN["loss"], "path": str(ctx.feedback_paths[POLITE_RUN["feedback"]]),
                  "hparams": dict(POLITE_RUN["hparams"])}
        result = train_run(ctx, name, Path(ctx.report["reference"]["dir"]), source, lr=POLITE_RUN["lr"], steps=steps)
        ctx.models[name] = result.model.eval()
    return name


def soup3_policy(ctx: Any) -> FrontPolicy | None:
    """Weight interpolation of the helpful-, concise- and polite-targeted policies, or None
    when the selected methods lack a helpful- or a concise-targeted one."""
    names = [_single_objective_method(ctx, o) for o in OBJECTIVES]
    if None in names:
        return None
    names.append(_polite_component(ctx))
    generate_for = soup_sampler(ctx, names)

    terms = " + ".join(f"w_{o} * theta[{n}]" for o, n in zip(OBJECTIVES3, names))
    info = {"policy": "rewarded soup (3 components)", "components": dict(zip(OBJECTIVES3, names)),
            "train_seconds": sum(ctx.runs[n]["seconds"] for n in names),
            "train_steps": sum(int(ctx.runs[n]["steps"]) for n in names), "description": f"theta(w) = {terms}"}
    return generate_for, info


def _budget3(ctx: Any) -> tuple[int, float]:
    """The soups' total steps (three component runs) and the helpful component's lr."""
    specs = {spec.name: spec for spec in ctx.settings.method_specs()}
    names = [_single_objective_method(ctx, o) for o in OBJECTIVES]
    polite = max(2, round(POLITE_RUN["steps"] * ctx.settings.step_scale))
    if None in names:
        spec = specs.get("dpo") or next(iter(specs.values()))
        return int(spec.steps) * 2 + polite, spec.lr
    return sum(int(ctx.runs[n]["steps"]) for n in names) + polite, specs[names[0]].lr


def steerable3_policy(ctx: Any) -> FrontPolicy | None:
    """ONE steered MODPO run over the three objectives for the soups' total steps."""
    from feedalign.quickstart.front_stage import _modpo_source, steer_block, steered_sampler

    if "pairs_helpful" not in ctx.feedback_paths:
        return None
    steps, lr = _budget3(ctx)
    source = _modpo_source(ctx, "exact", steer=steer_block(OBJECTIVES3))
    source["margins"] = {"kind": "callable", "target": "feedalign.envs.text_task:objective_margins",
                         "options": {"objectives": list(OBJECTIVES3[1:]), "polite": True,
                                     "scale": 1.0 / ctx.settings.pair_temperature}}
    generate_for = steered_sampler(ctx, "steerable3", source, lr=lr * STEERABLE_LR_FACTOR, steps=steps)

    info = {"policy": "steerable MODPO (one run, 3 objectives)", "train_seconds": ctx.runs["steerable3"]["seconds"],
            "train_steps": steps, "margins": "exact",
            "description": f"one MODPO run on helpful pairs, weight adapters (rank {STEERABLE_ADAPTER_RANK}) read "
                           f"the weight tokens, {STEERABLE_DRAWS} weights "
                           f"per pair drawn from Dirichlet({STEERABLE_CONCENTRATION:g}), exact concise and polite "
                           f"margins x {1.0 / ctx.settings.pair_temperature:g}"}
    return generate_for, info


FRONT3_POLICIES = {"soups": soup3_policy, "steerable": steerable3_policy}


# --------------------------------------------------------------------------- the stage


def run_front_many_stage(ctx: Any) -> dict[str, Any]:
    """Every method over ``simplex_grid(3, front3_per_axis)``; returns report["front3"]."""
    from feedalign.envs.text_task import TextTask
    from feedalign.evaluation.plots_many import plot_front_pairs
    from feedalign.evaluation.pareto import hypervolume
    from feedalign.multiobjective.front import run_front, write_front
    from feedalign.multiobjective.weights import simplex_grid

    s = ctx.settings
    task = TextTask(seed=s.seed, polite=True)
    weights = simplex_grid(3, s.front3_per_axis)
    prompts = ctx.task.prompts(s.front_prompts, "test", seed=s.seed + 6)  # the two-objective front's prompts
    dense, vertices = ideal_front_dense(task), ideal_front_vertices(task)
    methods, skipped = [], {"modpo_sweep": f"not run for m = 3 ({len(weights)} MODPO runs)"}
    for name, build in FRONT3_POLICIES.items():
        built = build(ctx)
        if built is None:
            skipped[name] = "needs helpful pairs, or one helpful- and one concise-targeted method"
            ctx.log(f"  {name}: skipped ({skipped[name]})")
            continue
        generate_for, info = built
        result = run_front(generate_for, task.score_many, weights=weights, prompts=prompts, objectives=list(OBJECTIVES3),
                           ref=[0.0] * 3, lower=[0.0] * 3, upper=[1.0] * 3, exact=dense)
        write_front(result, ctx.path("front3", name), exact=vertices, label=info["policy"],
                    title=f"{info['policy']} front")
        entry = {**_method_entry(name, info, result), "hv_ratio": result.metrics.get("hypervolume_ratio"),
                 "description": info["description"], "paths": result.paths}
        methods.append(entry)
        ctx.log(f"  {name}: hv {entry['hv']:.4f} (ratio to the dense ideal front {entry['hv_ratio']:.3f}), "
                f"eu {entry['eu']:.4f}, significant violations {entry['significant_violations']}, "
                f"{entry['train_seconds']:.1f}s training")
    if not methods:
        return {"status": "skipped", "reason": "; ".join(f"{k}: {v}" for k, v in skipped.items())}
    pairs = plot_front_pairs(ctx.path("front3", "pairs.png"),
                             {e["policy"]: [[p["means"][o] for o in OBJECTIVES3] for p in e["points"]] for e in methods},
                             list(OBJECTIVES3), exact=vertices, title="3-objective front per method (grey: ideal vertices)")
    exact = {"kind": "dense ideal front of expected scores (front_many.ideal_front_dense)", "points": len(dense),
             "hypervolume": hypervolume(dense, [0.0] * 3), "closed_form_hypervolume": 0.75,
             "vertices": vertices.tolist()}
    return {"status": "done", "objectives": list(OBJECTIVES3), "weights": f"simplex_grid(3, {s.front3_per_axis})",
            "n_weights": len(weights), "n_prompts": len(prompts), "exact": exact, "methods": methods,
            "skipped": skipped, "pairs_plot": str(pairs)}


def front3_markdown(report: dict[str, Any]) -> list[tuple[str, Any]]:
    """The report.md section of the three-objective front (none when it did not run)."""
    from feedalign.evaluation.report import markdown_table

    front = report.get("front3")
    if not front:
        return []
    if front.get("status") != "done":
        return [("Front, 3 objectives", f"Skipped: {front.get('reason', 'unknown')}.")]
    rows = [{"method": e["name"], "hv": f"{e['hv']:.4f}", "hv / dense ideal": f"{e['hv_ratio']:.3f}",
             "EU_front": f"{e['eu']:.4f}", "significant violations": e["significant_violations"],
             "trend (z)": ", ".join(f"{t['objective']} {t['z']:.1f}" for t in e["trend"]),
             "train seconds": f"{e['train_seconds']:.1f}", "train steps": e["train_steps"]} for e in front["methods"]]
    text = (f"{front['n_weights']} weights ({front['weights']}) x {front['n_prompts']} held-out prompts, objectives "
            f"{', '.join(front['objectives'])}; dense ideal front hypervolume {front['exact']['hypervolume']:.4f} "
            f"(closed form {front['exact']['closed_form_hypervolume']}). Skipped: "
            + "; ".join(f"{k} ({v})" for k, v in front["skipped"].items())
            + ". Plots: front3/pairs.png, front3/<method>/front_parallel.png.\n\n" + markdown_table(rows))
    return [("Front, 3 objectives (helpful, concise, polite)", text)]
