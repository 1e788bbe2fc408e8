"""What the quickstart runs: sizes, the feedback it simulates, and one entry per method.

Every method starts from the SFT reference, trains on ONE kind of simulated feedback with
its registered loss, and states the objective it targets as a weight vector over the task's
objectives (``helpful``, ``concise``). The target score of a completion is ``w . scores``;
a method passes when its mean target score on held-out prompts beats the reference's by at
least ``margin`` AND by at least ``z`` standard errors of the paired difference.

Two presets (:meth:`QuickstartSettings.preset`): ``full`` (the documented run, a few minutes
on 2 CPU cores) and ``quick`` (a smoke run for tests, well under a minute; its margins are
reported but not expected to pass).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

OBJECTIVES = ("helpful", "concise")

# Feedback sets written under DIR/feedback/ (name -> what it holds). All are simulated from
# the ground-truth scorers on samples of the SFT reference policy (see feedback.py).
FEEDBACK_SETS: dict[str, str] = {
    "sft_demonstrations": "positive-only demonstrations of the task (prompt/completion/label)",
    "pairs_helpful": "Bradley-Terry preference pairs on 'helpful' (prompt/chosen/rejected)",
    "pairs_concise": "Bradley-Terry preference pairs on 'concise' (the front's margin reward model)",
    "thumbs_helpful": "logistic thumbs up/down on 'helpful' (prompt/completion/label)",
    "thumbs_concise": "logistic thumbs up/down on 'concise' (prompt/completion/label)",
    "accepted_overall": "positive-only: best of k samples on 0.5*helpful + 0.5*concise",
    "rejected_overall": "negative-only: worst of k samples on 0.5*helpful + 0.5*concise",
}
# Written only with ``objectives=3`` (the third objective ``polite``; front_many.py), so a
# two-objective run's files and report are unchanged.
POLITE_FEEDBACK_SETS: dict[str, str] = {
    "thumbs_polite": "logistic thumbs up/down on 'polite' (prompt/completion/label; --objectives 3)",
}


@dataclass(frozen=True)
class MethodSpec:
    """One alignment run from the SFT reference.

    Attributes:
        name: the method's name in reports and on the command line.
        loss: the registered loss it trains with.
        feedback: the feedback sets (keys of ``FEEDBACK_SETS``) forming its one data source.
        target: weights over ``OBJECTIVES`` defining the objective it is meant to improve.
        hparams: loss hyperparameters.
        lr, steps: optimizer settings (AdamW, constant schedule after a short warmup).
        summary: one line for the report.
    """

    name: str
    loss: str
    feedback: tuple[str, ...]
    target: tuple[float, ...]
    hparams: dict[str, Any] = field(default_factory=dict)
    lr: float = 1e-3
    steps: int = 200
    summary: str = ""

    def __post_init__(self) -> None:
        unknown = [f for f in self.feedback if f not in FEEDBACK_SETS]
        if unknown:
            raise ValueError(f"method '{self.name}': unknown feedback sets {unknown}; valid: {sorted(FEEDBACK_SETS)}")
        if len(self.target) != len(OBJECTIVES) or min(self.target) < 0 or abs(sum(self.target) - 1) > 1e-9:
            raise ValueError(f"method '{self.name}': target {self.target} must be {len(OBJECTIVES)} weights summing to 1")

    @property
    def target_name(self) -> str:
        """``helpful``, ``concise`` or ``0.5*helpful + 0.5*concise``."""
        parts = [(w, o) for w, o in zip(self.target, OBJECTIVES) if w > 0]
        if len(parts) == 1:
            return parts[0][1]
        return " + ".join(f"{w:g}*{o}" for w, o in parts)


METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec(
            "dpo", "dpo", ("pairs_helpful",), (1.0, 0.0), {"beta": 0.1}, lr=5e-4, steps=150,
            summary="DPO on preference pairs judged on helpfulness",
        ),
        MethodSpec(
            "kto", "kto", ("thumbs_helpful",), (1.0, 0.0), {"beta": 0.1}, lr=5e-4, steps=150,
            summary="KTO on thumbs up/down judged on helpfulness",
        ),
        MethodSpec(
            # The cumulative shift (TRL's): with the default midpoint rule this run, tuned
            # before it, moves concision by -0.04 +- 0.02 instead (ALGORITHMS.md 8).
            "bco", "bco", ("thumbs_concise",), (0.0, 1.0), {"beta": 0.1, "delta_rule": "cumulative"},
            lr=5e-4, steps=150,
            summary="BCO on thumbs up/down judged on concision",
        ),
        # beta = 1 - alpha: the smallest KL weight of the stable region (ALGORITHMS.md 9).
        MethodSpec(
            "pmpo", "pmpo", ("accepted_overall", "rejected_overall"), (0.5, 0.5), {"alpha": 0.5, "beta": 0.5},
            lr=1e-3, steps=300,
            summary="PMPO on accepted (best of k) and rejected (worst of k) samples, overall score",
        ),
        MethodSpec(
            "pmpo_pos", "pmpo", ("accepted_overall",), (0.5, 0.5), {"alpha": 1.0, "beta": 0.1},
            lr=1e-3, steps=300, summary="PMPO on the positive-only set (alpha = 1)",
        ),
    )
}
DEFAULT_METHODS = ("dpo", "kto", "bco", "pmpo")


PRESETS: dict[str, dict[str, Any]] = {
    "full": {},
    "quick": {
        "quick": True, "sft_examples": 256, "sft_steps": 40, "pool_prompts": 48, "pool_samples": 4,
        "step_scale": 0.1, "eval_prompts": 48, "front_prompts": 32, "generate_batch_size": 64, "batch_size": 16,
        "front3_per_axis": 3,
    },
}


@dataclass(frozen=True)
class QuickstartSettings:
    """Sizes and knobs of one quickstart run (see :meth:`preset`)."""

    seed: int = 0
    methods: tuple[str, ...] = DEFAULT_METHODS
    plots: bool = True
    quick: bool = False
    # model and SFT
    model_size: str = "tiny"
    max_length: int = 64
    sft_examples: int = 4000
    sft_steps: int = 600
    sft_lr: float = 3e-3
    batch_size: int = 32
    step_scale: float = 1.0  # multiplies every method's steps (the quick preset shrinks it)
    # feedback simulation on samples of the reference policy
    pool_prompts: int = 1024
    pool_samples: int = 8
    pair_temperature: float = 0.1
    thumb_temperature: float = 0.1
    # sampling (feedback pool and evaluation)
    max_new_tokens: int = 24
    temperature: float = 1.0
    generate_batch_size: int = 256
    # evaluation on held-out prompts
    eval_prompts: int = 512
    margin: float = 0.05
    z: float = 2.0
    # multi-objective front (rewarded soup of the helpful- and concise-targeted policies)
    front: bool = True
    front_weights: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    front_prompts: int = 256
    # objectives of the front: 2 (helpful, concise) or 3 (adds ``polite``: a second front
    # stage over simplex_grid(3, front3_per_axis), see front_many.py)
    objectives: int = 2
    front3_per_axis: int = 5
    threads: int = 1

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; valid: {sorted(METHODS)}")
        if not self.methods:
            raise ValueError("at least one method is needed")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods listed twice: {list(self.methods)}")
        for key in ("sft_examples", "sft_steps", "batch_size", "pool_prompts", "eval_prompts", "threads"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.objectives not in (2, 3):
            raise ValueError(f"objectives must be 2 or 3, got {self.objectives}")
        if self.front3_per_axis < 2:
            raise ValueError(f"front3_per_axis must be >= 2, got {self.front3_per_axis}")
        if self.pool_samples < 2:
            raise ValueError(f"pool_samples must be >= 2 (pairs and best/worst need two), got {self.pool_samples}")

    @classmethod
    def preset(cls, name: str = "full", **overrides: Any) -> QuickstartSettings:
        """``full``: the documented run, every margin expected to pass. ``quick``: a smoke run
        (tests) with the same stages and outputs at tiny sizes; margins not expected to pass."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; valid: {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def method_specs(self) -> list[MethodSpec]:
        """The selected methods with steps scaled by ``step_scale`` (at least 2 steps)."""
        return [replace(METHODS[m], steps=max(2, round(METHODS[m].steps * self.step_scale))) for m in self.methods]
