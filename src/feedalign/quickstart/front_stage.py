"""The front stage: steer between the two objectives and measure the learned front, per method.

Three policy families over the same weights, prompts, sampling seed and scorer
(:func:`feedalign.multiobjective.front.run_front`; the first method's report is
DIR/front/front.{json,png,md}, the others' DIR/front/<method>/front.*):

  * ``soups``: a rewarded soup (docs/ALGORITHMS.md 12.1) of the policy aligned on ``helpful``
    and the one aligned on ``concise`` (both fine-tuned from the reference):
    ``theta(w) = w_helpful * theta_helpful + w_concise * theta_concise``; its compute is the
    two component runs;
  * ``steerable``: ONE weight-conditioned MODPO run (``steer:``, weight tokens in the prompt,
    ``draws`` weights per pair from Dirichlet(``concentration``)) on the helpful pairs, with the
    task's exact ``concise`` score as margin on the pairs' reward scale (1 / pair temperature),
    processing as many sequences as the soups' two runs together;
  * ``modpo_sweep``: one MODPO run per weight (the paper's protocol), same pairs, margins from
    a Bradley-Terry reward model (:mod:`.front_rm`, calibrated on held-out pairs).

``report["front"]`` keeps the soup's front (as before) and adds ``methods``: one entry per
method with ``name``, ``hv``, ``eu``, ``eu_cond``, ``significant_violations`` (neighbours and
the end-to-end trend), ``train_seconds`` and ``points`` (weight, means, standard errors); a
combined plot DIR/front/methods.png shows them side by side.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from feedalign.quickstart.settings import OBJECTIVES

FrontPolicy = tuple[Callable[[np.ndarray, list[str]], list[str]], dict[str, Any]]
MIN_WEIGHT = 0.05  # MODPO divides by w_helpful: the sweep's w_helpful = 0 is served as 0.05
# The steerable run's steps as a multiple of the soups' total: the soups are 150 DPO steps (32
# pairs, 64 sequences each) and 150 BCO steps (32 single completions); a MODPO step is 32 pairs,
# so 0.75 x 300 = 225 steps process as many sequences as the soups' two runs together.
STEERABLE_STEP_FACTOR = 0.75
STEERABLE_DRAWS = 4
# Weight draws ~ Dirichlet(0.3): most near the vertices, where the targets differ most, so the
# weight tokens learn within the soups' compute (docs/multiobjective.md: uniform draws, 0.2,
# 0.5 and draws 1 / 2 / 8 measured).
STEERABLE_CONCENTRATION = 0.3
# The weight conditions the model through weight adapters: one rank-8 delta per objective on
# every linear layer, mixed by w (multiobjective/weight_adapters.py; base frozen), at twice the
# soups' lr (a low-rank delta from zero needs a larger step than full fine-tuning;
# docs/multiobjective.md measures lr x 1 / 2 / 4 over three seeds).
STEERABLE_ADAPTER_RANK = 8
STEERABLE_LR_FACTOR = 2.0
# Margins: the steerable run uses the exact concise score (an oracle reward model that costs
# no training); the MODPO sweep the BT reward model, as the MODPO paper runs it.
STEERABLE_MARGINS, SWEEP_MARGINS = "exact", "reward_model"


def _single_objective_method(ctx: Any, objective: str) -> str | None:
    """The first selected method whose target is exactly ``objective``."""
    j = OBJECTIVES.index(objective)
    for spec in ctx.settings.method_specs():
        if spec.target[j] == 1.0:
            return spec.name
    return None


def _generate_kwargs(ctx: Any) -> dict[str, Any]:
    s = ctx.settings
    return {"max_new_tokens": s.max_new_tokens, "temperature": s.temperature, "seed": s.seed + 5,
            "batch_size": s.generate_batch_size}


def soup_sampler(ctx: Any, names: list[str]) -> Callable[[np.ndarray, list[str]], list[str]]:
    """Sample ``theta(w) = sum_j w_j * theta[names[j]]`` (the runs' state dicts interpolated
    into a copy of the reference) at a weight vector."""
    import torch

    from feedalign.multiobjective.soups import interpolate_state_dicts
    from feedalign.policies.hf import generate

    states = [{k: v.detach().clone() for k, v in ctx.models[n].state_dict().items()} for n in names]
    model = copy.deepcopy(ctx.models["reference"]).eval()

    def generate_for(w: np.ndarray, prompts: list[str]) -> list[str]:
        with torch.no_grad():
            model.load_state_dict(interpolate_state_dicts(states, list(w)))
        return generate(model, ctx.tokenizer, prompts, **_generate_kwargs(ctx))

    return generate_for


def soup_policy(ctx: Any) -> FrontPolicy | None:
    """Weight interpolation of the helpful- and the concise-targeted policies, or None when
    the selected methods do not include one of each."""
    names = [_single_objective_method(ctx, o) for o in OBJECTIVES]
    if None in names:
        return None
    generate_for = soup_sampler(ctx, names)
    seconds = sum(ctx.runs[n]["seconds"] for n in names)
    steps = sum(ctx.runs[n]["steps"] for n in names)
    info = {"policy": "rewarded soup", "components": dict(zip(OBJECTIVES, names)), "train_seconds": seconds,
            "train_steps": steps,
            "description": f"theta(w) = w_helpful * theta[{names[0]}] + w_concise * theta[{names[1]}]"}
    return generate_for, info


def _margins(ctx: Any, kind: str) -> dict[str, Any]:
    """MODPO's concise margins: ``reward_model``, the BT reward model's head
    (:mod:`.front_rm`, the paper's protocol), or ``exact``, the task's score times 1 / T."""
    if kind == "reward_model":
        from feedalign.quickstart.front_rm import margin_block

        return margin_block(ctx)
    return {"kind": "callable", "target": "feedalign.envs.text_task:objective_margins",
            "options": {"objectives": ["concise"], "scale": 1.0 / ctx.settings.pair_temperature}}


def _modpo_source(ctx: Any, margins: str, **extra: Any) -> dict[str, Any]:
    return {"loss": "modpo", "path": str(ctx.feedback_paths["pairs_helpful"]), "objective": "helpful",
            "hparams": {"beta": 0.1, "scale_by_weight": True, **extra.pop("hparams", {})},
            "margins": _margins(ctx, margins), **extra}


def _budget(ctx: Any) -> tuple[int, float]:
    """Steps and lr of the soups' component runs (the compute the other methods get)."""
    names = [_single_objective_method(ctx, o) for o in OBJECTIVES]
    specs = {spec.name: spec for spec in ctx.settings.method_specs()}
    if None in names:
        spec = specs.get("dpo") or next(iter(specs.values()))
        return int(spec.steps) * 2, spec.lr
    return sum(int(ctx.runs[n]["steps"]) for n in names), specs[names[0]].lr


def steer_block(objectives: Sequence[str]) -> dict[str, Any]:
    """The steerable runs' ``steer:`` block (two- and three-objective fronts)."""
    return {"objectives": list(objectives), "grid": 20, "render": "tokens", "draws": STEERABLE_DRAWS,
            "concentration": STEERABLE_CONCENTRATION, "adapter_rank": STEERABLE_ADAPTER_RANK}


def steered_sampler(ctx: Any, name: str, source: dict[str, Any], *, lr: float,
                    steps: int) -> Callable[[np.ndarray, list[str]], list[str]]:
    """Train the steered ``source`` from the reference (run ``name``, on a copy of the
    tokenizer: the run adds weight tokens) and sample the result at a weight vector."""
    from feedalign.multiobjective.steering import generate_steered, load_spec
    from feedalign.quickstart.pipeline import train_run

    shared = ctx.tokenizer
    ctx.tokenizer = copy.deepcopy(shared)
    try:
        result = train_run(ctx, name, Path(ctx.report["reference"]["dir"]), source, lr=lr, steps=steps)
    finally:
        ctx.tokenizer = shared
    model, spec, tokenizer = result.model.eval(), load_spec(result.final_dir), result.tokenizer

    def generate_for(w: np.ndarray, prompts: list[str]) -> list[str]:
        return generate_steered(model, tokenizer, spec, prompts, w, **_generate_kwargs(ctx))

    return generate_for


def steerable_policy(ctx: Any) -> FrontPolicy | None:
    """ONE steered MODPO run for the soups' total sequences; generation conditions on ``w``."""
    if "pairs_helpful" not in ctx.feedback_paths:
        return None
    steps, lr = _budget(ctx)
    steps = max(1, round(steps * STEERABLE_STEP_FACTOR))
    generate_for = steered_sampler(ctx, "steerable", _modpo_source(ctx, STEERABLE_MARGINS, steer=steer_block(OBJECTIVES)),
                                   lr=lr * STEERABLE_LR_FACTOR, steps=steps)
    info = {"policy": "steerable MODPO (one run)", "train_seconds": ctx.runs["steerable"]["seconds"],
            "train_steps": steps, "margins": STEERABLE_MARGINS,
            "description": f"one MODPO run, weight adapters (rank {STEERABLE_ADAPTER_RANK} per objective) read "
                           f"the weight tokens, {STEERABLE_DRAWS} weights per pair drawn from "
                           f"Dirichlet({STEERABLE_CONCENTRATION:g}), {STEERABLE_MARGINS} concise margins"}
    return generate_for, info


def modpo_sweep_policy(ctx: Any) -> FrontPolicy | None:
    """One MODPO run per sweep weight (``w_helpful >= MIN_WEIGHT``), each for half the soups'
    steps (one component run's)."""
    from feedalign.policies.hf import generate
    from feedalign.quickstart.pipeline import train_run

    if "pairs_helpful" not in ctx.feedback_paths:
        return None
    steps, lr = _budget(ctx)
    models, seconds = {}, 0.0
    for w1 in ctx.settings.front_weights:
        wk = max(MIN_WEIGHT, float(w1))
        name = f"modpo_w{wk:.2f}"
        result = train_run(ctx, name, Path(ctx.report["reference"]["dir"]),
                           _modpo_source(ctx, SWEEP_MARGINS, hparams={"weight": wk, "margin_weights": [1.0 - wk]}),
                           lr=lr, steps=max(1, steps // 2))
        models[round(float(w1), 6)] = result.model.eval()
        seconds += ctx.runs[name]["seconds"]

    def generate_for(w: np.ndarray, prompts: list[str]) -> list[str]:
        return generate(models[round(float(w[0]), 6)], ctx.tokenizer, prompts, **_generate_kwargs(ctx))

    rm_seconds = ctx.runs["margin_rm"]["train_seconds"] if SWEEP_MARGINS == "reward_model" else 0.0
    info = {"policy": "MODPO sweep (one run per weight)", "train_seconds": seconds + rm_seconds,
            "train_steps": max(1, steps // 2) * len(models), "margins": SWEEP_MARGINS,
            "description": f"{len(models)} MODPO runs, w_helpful >= {MIN_WEIGHT}, {SWEEP_MARGINS} concise margins"
                           + (f" (train seconds include the reward model's {rm_seconds:.1f}s)" if rm_seconds else "")}
    return generate_for, info


FRONT_POLICIES: dict[str, Callable[[Any], FrontPolicy | None]] = {
    "soups": soup_policy, "steerable": steerable_policy, "modpo_sweep": modpo_sweep_policy}
FRONT_ORDER: list[str] = ["soups", "steerable", "modpo_sweep"]


def _method_entry(name: str, info: dict[str, Any], result: Any) -> dict[str, Any]:
    m = result.metrics
    points = [{"weights": w.tolist(), "means": dict(zip(result.objectives, p.tolist())),
               "stderr": dict(zip(result.objectives, se.tolist()))}
              for w, p, se in zip(result.weights, result.points, result.stderr)]
    return {"name": name, "policy": info["policy"], "hv": m["hypervolume"], "eu": m["eu_front"], "eu_cond": m["eu_cond"],
            "significant_violations": m["significant_violations"], "train_seconds": info["train_seconds"],
            "train_steps": info.get("train_steps"), "trend": result.trend, "points": points}


def run_front_stage(ctx: Any) -> dict[str, Any]:
    """Sweep ``settings.front_weights`` (values of w_helpful) for every method and return
    report["front"] (the soup's front plus ``methods``)."""
    from feedalign.evaluation.plots import plot_front
    from feedalign.multiobjective.front import run_front, text_task_ideal_front

    s = ctx.settings
    w1 = np.asarray(s.front_weights, dtype=np.float64)
    weights = np.stack([w1, 1.0 - w1], axis=1)
    prompts = ctx.task.prompts(s.front_prompts, "test", seed=s.seed + 6)
    exact = text_task_ideal_front(ctx.task)
    methods, first = [], None
    for name in FRONT_ORDER:
        built = FRONT_POLICIES[name](ctx)
        if built is None:
            ctx.log(f"  {name}: skipped (needs helpful pairs, or one helpful and one concise method)")
            continue
        generate_for, info = built
        result = run_front(generate_for, ctx.task.score_many, weights=weights, prompts=prompts,
                           objectives=list(OBJECTIVES), output_dir=ctx.path("front", *([name] if methods else [])), ref=[0.0, 0.0],
                           lower=[0.0, 0.0], upper=[1.0, 1.0], exact=exact, label=info["policy"],
                           title=f"{info['policy']} front")
        entry = _method_entry(name, info, result)
        methods.append(entry)
        ctx.log(f"  {name}: hv {entry['hv']:.4f}, eu {entry['eu']:.4f}, significant violations "
                f"{entry['significant_violations']}, {entry['train_seconds']:.1f}s training")
        if first is None:
            first = (info, result)
    if first is None:
        reason = "needs helpful pairs or one selected method targeting 'helpful' and one targeting 'concise'"
        return {"status": "skipped", "reason": reason}
    info, result = first
    png = plot_front(ctx.path("front", "methods.png"),
                     {e["policy"]: ([[p["means"][o] for o in OBJECTIVES] for p in e["points"]], w1) for e in methods},
                     exact=exact, objectives=OBJECTIVES, title="front per method (ideal front dashed)")
    out = {"status": "done", **info, "n_prompts": len(prompts), **result.to_dict(), "methods": methods,
           "methods_plot": str(png)}
    out.pop("samples", None)
    if "margin_rm" in ctx.runs:  # the MODPO runs' margin reward model and its calibration
        out["reward_model"] = {k: v for k, v in ctx.runs["margin_rm"].items() if k != "margins"}
    return out


def methods_markdown(front: dict[str, Any]) -> str:
    """The methods side by side (markdown), for the quickstart report; empty without methods."""
    from feedalign.evaluation.report import markdown_table

    methods = front.get("methods") or []
    if not methods:
        return ""
    rows = []
    for e in methods:
        ends = [e["points"][0]["means"], e["points"][-1]["means"]]
        w_ends = f"{e['points'][0]['weights'][0]:g} / {e['points'][-1]['weights'][0]:g}"
        rows.append({"method": e["name"], "hv": f"{e['hv']:.4f}", "EU_front": f"{e['eu']:.4f}",
                     "EU_cond": f"{e['eu_cond']:.4f}", "significant violations": e["significant_violations"],
                     "trend (z)": ", ".join(f"{t['objective']} {t['z']:.1f}" for t in e["trend"]),
                     **{f"{o} at w_helpful {w_ends}": f"{ends[0][o]:.3f} / {ends[1][o]:.3f}" for o in OBJECTIVES},
                     "train seconds": f"{e['train_seconds']:.1f}", "train steps": e.get("train_steps")})
    text = ("\n\nMethods over the same weights and prompts (plot: front/methods.png; training time measured "
            "in this run):\n\n" + markdown_table(rows))
    rm = front.get("reward_model")
    if rm:
        fits = [f"{h}: b = {c['slope']:.2f} +- {c['se']:.2f} on {c['n']} held-out pairs, pair accuracy "
                f"{c['pair_accuracy']:.2f}" for h, c in rm["calibration"].items() if "slope" in c]
        text += ("\n\nMargin reward model (Bradley-Terry heads, unnormalised; P(first chosen) = sigma(b * d) "
                 "fitted on held-out pairs, b = 1 on the MODPO scale): " + "; ".join(fits)
                 + f". The MODPO sweep's margins are multiplied by b ({rm.get('margin_scale', {})}).")
    return text
