"""The front's margin reward model: MODPO's margins as its paper makes them.

A multi-objective reward model (heads ``helpful`` and ``concise``) trained with Bradley-Terry
(the ``bt_reward`` loss) on each objective's pairs (``pairs_<objective>``, labelled
``P(a > b) = sigma((u(a) - u(b)) / T)``, ``T`` = the pair temperature), from the SFT
reference's backbone, WITHOUT normalisation: a BT head fitted on such pairs learns ``u / T``
plus a per-prompt constant, which is the scale the MODPO loss needs next to the trained
objective's implicit reward (its labels use the same ``T``; docs/ALGORITHMS.md 10). The scale is checked, not assumed: on fresh held-out pairs (the
reference's evaluation samples on TEST prompts, labelled by the same annotator with another
seed) :func:`~feedalign.multiobjective.calibration.bt_slope` fits ``P(first chosen) =
sigma(b * d)``; ``b = 1`` within its standard error means the margins are on scale (``1 / b``
would be the factor they are off by; the MODPO runs multiply the margins by ``b``,
:func:`margin_block`). Per head, the fit and the table of predicted vs
empirical win rates go to ``report["front"]["reward_model"]["calibration"]``.
"""

from __future__ import annotations

import time
from typing import Any

HEADS = ("helpful", "concise")
RM_STEPS = 300
RM_LR = 3e-3


def train_margin_model(ctx: Any) -> dict[str, Any] | None:
    """Train the reward model once per quickstart (cached in ``ctx.runs``); returns ``{"dir",
    "heads", "calibration" (per head), "metrics", "train_seconds", ...}``, or None unless every
    head has its ``pairs_<head>`` feedback."""
    if "margin_rm" in ctx.runs:
        return ctx.runs["margin_rm"]
    if any(f"pairs_{h}" not in ctx.feedback_paths for h in HEADS):
        return None
    from feedalign.trainers.reward_model import RewardModelConfig, RMModelConfig, RMSourceConfig, RMTrainConfig
    from feedalign.trainers.reward_model import train_reward_model

    s = ctx.settings
    out = ctx.path("runs", "margin_rm")
    config = RewardModelConfig(
        model=RMModelConfig(path=str(ctx.report["reference"]["dir"]), seed=s.seed),
        data=tuple(RMSourceConfig(path=str(ctx.feedback_paths[f"pairs_{h}"]), objective=h, name=f"pairs_{h}")
                   for h in HEADS),
        train=RMTrainConfig(output_dir=str(out), lr=RM_LR, steps=max(2, round(RM_STEPS * s.step_scale)),
                            batch_size=s.batch_size, eval_fraction=0.2, seed=s.seed, max_length=s.max_length,
                            normalization="none", log_every=10**9),
        objectives=HEADS,
    )
    start = time.perf_counter()
    result = train_reward_model(config)
    seconds = time.perf_counter() - start
    info = {"dir": str(result.output_dir), "heads": list(HEADS), "steps": config.train.steps,
            "train_seconds": seconds, "normalization": "none",
            "scale": f"BT on pairs at temperature {s.pair_temperature}: each head learns its objective / T",
            "metrics": {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))},
            "calibration": {}}
    samples = heldout_samples(ctx)  # one set of fresh samples, labelled per head
    info["calibration"] = {h: calibration(ctx, result.model, result.tokenizer, h, samples) for h in HEADS}
    ctx.runs["margin_rm"] = info
    ctx.log("  margin reward model: " + ", ".join(
        f"{h} slope {c['slope']:.2f} +- {c['se']:.2f}" for h, c in info["calibration"].items() if "slope" in c)
        + f" ({seconds:.1f}s)")
    return info


def heldout_samples(ctx: Any, n_prompts: int = 128, per_prompt: int = 4) -> list[tuple[str, str]]:
    """Fresh (prompt, completion) samples of the reference on TEST prompts."""
    from feedalign.policies.hf import generate

    s = ctx.settings
    prompts = [p for p in ctx.task.prompts(n_prompts, "test", seed=s.seed + 8) for _ in range(per_prompt)]
    completions = generate(ctx.models["reference"], ctx.tokenizer, prompts, max_new_tokens=s.max_new_tokens,
                           temperature=s.temperature, seed=s.seed + 9, batch_size=s.generate_batch_size)
    return list(zip(prompts, completions))


def heldout_pairs(ctx: Any, objective: str, samples: list[tuple[str, str]]) -> list[Any]:
    """BT pairs on ``objective`` among held-out ``samples``, labelled as the training pairs
    were but with their own seed."""
    from feedalign.envs import annotators as ann

    s = ctx.settings
    return ann.bt_pairs(samples, ctx.task.score, objective=objective, temperature=s.pair_temperature,
                        pairing="all", seed=s.seed + 77)


def calibration(ctx: Any, model: Any, tokenizer: Any, objective: str, samples: list[tuple[str, str]]) -> dict[str, Any]:
    """``bt_slope`` (b, s.e., z against 1) and the calibration table on held-out pairs."""
    import numpy as np

    from feedalign.multiobjective.calibration import bt_slope, calibration_table, pair_differences

    pairs = heldout_pairs(ctx, objective, samples)
    if len(pairs) < 10:
        return {"status": "skipped", "reason": f"{len(pairs)} held-out pairs"}
    prompts = [p.prompt for p in pairs]

    def score(completions: list[str]) -> Any:
        scores = model.score(tokenizer, prompts, completions, normalize=False, batch_size=64,
                             max_length=ctx.settings.max_length)
        return scores[:, model.index(objective)].detach().cpu().numpy()

    chosen, rejected = score([p.chosen for p in pairs]), score([p.rejected for p in pairs])
    d, first = pair_differences(chosen, rejected, seed=ctx.settings.seed)
    fit = bt_slope(d, first)
    truth = np.array([ctx.task.score(p.prompt, p.chosen)[objective] - ctx.task.score(p.prompt, p.rejected)[objective]
                      for p in pairs]) / ctx.settings.pair_temperature
    return {"pairs": len(pairs), "prompts": "reference samples on test prompts", **fit,
            "pair_accuracy": float(np.mean(chosen > rejected)),
            "corr_with_true_difference": float(np.corrcoef(chosen - rejected, truth)[0, 1]),
            "table": calibration_table(d, first, bins=8)}


def margin_block(ctx: Any, head: str = "concise", *, calibrate: bool = True) -> dict[str, Any]:
    """The ``margins:`` block of a MODPO source: the reward model's ``head``, unnormalised and,
    with ``calibrate``, multiplied by its held-out BT slope ``b`` (temperature scaling: the
    margins are then on the pairs' reward scale whatever the head's over- or under-confidence)."""
    info = train_margin_model(ctx)
    if info is None:
        raise ValueError("the front's MODPO runs need pairs_helpful and pairs_concise feedback for their reward model")
    fit = info["calibration"].get(head, {})
    scale = float(fit["slope"]) if calibrate and "slope" in fit else 1.0
    info.setdefault("margin_scale", {})[head] = scale
    return {"kind": "reward_model", "target": info["dir"],
            "options": {"heads": [head], "normalize": False, "scale": scale, "max_length": ctx.settings.max_length}}


__all__ = ["train_margin_model", "margin_block", "calibration", "heldout_pairs", "heldout_samples", "HEADS"]
