"""The front stage: steer between the two objectives and measure the learned front.

Today's policy family is a rewarded soup (docs/ALGORITHMS.md 12.1): the policy aligned on
``helpful`` and the one aligned on ``concise`` were both fine-tuned from the same reference,
so for a weight ``w = (w_helpful, w_concise)`` the soup's parameters are
``w_helpful * theta_helpful + w_concise * theta_concise``. Every weight is sampled on the same
held-out prompts and scored; :func:`feedalign.multiobjective.front.run_front` computes
hypervolume, expected utility, sparsity and the monotonicity of the trade-off and writes
DIR/front/front.{json,png,md}.

Hook: a weight-conditioned steerable model can replace the soup by registering a builder in
``FRONT_POLICIES`` (name -> ``builder(ctx) -> (generate(w, prompts), description)``) and
naming it in ``FRONT_ORDER``; the first builder that returns a policy is used.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np

from feedalign.quickstart.settings import OBJECTIVES

FrontPolicy = tuple[Callable[[np.ndarray, list[str]], list[str]], dict[str, Any]]


def _single_objective_method(ctx: Any, objective: str) -> str | None:
    """The first selected method whose target is exactly ``objective``."""
    j = OBJECTIVES.index(objective)
    for spec in ctx.settings.method_specs():
        if spec.target[j] == 1.0:
            return spec.name
    return None


def soup_policy(ctx: Any) -> FrontPolicy | None:
    """Weight interpolation of the helpful- and the concise-targeted policies, or None when
    the selected methods do not include one of each."""
    import torch

    from feedalign.multiobjective.soups import interpolate_state_dicts
    from feedalign.policies.hf import generate

    names = [_single_objective_method(ctx, o) for o in OBJECTIVES]
    if None in names:
        return None
    states = [{k: v.detach().clone() for k, v in ctx.models[n].state_dict().items()} for n in names]
    model = copy.deepcopy(ctx.models["reference"]).eval()
    s = ctx.settings

    def generate_for(w: np.ndarray, prompts: list[str]) -> list[str]:
        with torch.no_grad():
            model.load_state_dict(interpolate_state_dicts(states, list(w)))
        return generate(model, ctx.tokenizer, prompts, max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                        seed=s.seed + 5, batch_size=s.generate_batch_size)

    info = {"policy": "rewarded soup", "components": dict(zip(OBJECTIVES, names)),
            "description": f"theta(w) = w_helpful * theta[{names[0]}] + w_concise * theta[{names[1]}]"}
    return generate_for, info


FRONT_POLICIES: dict[str, Callable[[Any], FrontPolicy | None]] = {"soup": soup_policy}
FRONT_ORDER: list[str] = ["soup"]


def run_front_stage(ctx: Any) -> dict[str, Any]:
    """Sweep ``settings.front_weights`` (values of w_helpful) and return report["front"]."""
    from feedalign.multiobjective.front import run_front, text_task_ideal_front

    for name in FRONT_ORDER:
        built = FRONT_POLICIES[name](ctx)
        if built is not None:
            break
    else:
        reason = "needs one selected method targeting 'helpful' and one targeting 'concise' (e.g. dpo and bco)"
        ctx.log(f"  skipped: {reason}")
        return {"status": "skipped", "reason": reason}
    generate_for, info = built
    s = ctx.settings
    w1 = np.asarray(s.front_weights, dtype=np.float64)
    weights = np.stack([w1, 1.0 - w1], axis=1)
    prompts = ctx.task.prompts(s.front_prompts, "test", seed=s.seed + 6)
    result = run_front(
        generate_for, ctx.task.score_many, weights=weights, prompts=prompts, objectives=list(OBJECTIVES),
        output_dir=ctx.path("front"), ref=[0.0, 0.0], lower=[0.0, 0.0], upper=[1.0, 1.0],
        exact=text_task_ideal_front(ctx.task), label=info["policy"], title=f"{info['policy']} front",
    )
    for w, point in zip(result.weights, result.points):
        ctx.log(f"  w = ({w[0]:.2f}, {w[1]:.2f}): helpful {point[0]:.3f}, concise {point[1]:.3f}")
    out = {"status": "done", **info, "n_prompts": len(prompts), **result.to_dict()}
    out.pop("samples", None)
    return out
