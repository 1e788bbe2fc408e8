"""The ``feedalign iterate`` config: frozen dataclasses built from YAML by the project's
config loader (unknown keys, wrong types and bad values fail with the dotted key).

See examples/iterate/config.yaml for every section with its meaning.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feedalign.config.errors import ConfigError

JUDGE_KINDS = ("text_task", "callable", "reward_model", "human")
FEEDBACK_KINDS = ("pairs", "thumbs", "positives", "negatives")
REFERENCES = ("previous", "initial")
PROMPT_SOURCES = ("text_task", "files")


def _require(ok: bool, key: str, detail: str) -> None:
    if not ok:
        raise ConfigError(detail, key=key)


@dataclass(frozen=True)
class InitialConfig:
    """The initial policy: a model directory (``path``), or, with ``path`` unset, the
    quickstart's tiny model SFT-ed on the text task's demonstrations (``sft_*``)."""

    path: str | None = None
    sft_examples: int = 4000
    sft_steps: int = 600
    sft_lr: float = 3e-3
    model_size: str = "tiny"

    def __post_init__(self) -> None:
        _require(self.sft_examples >= 1, "sft_examples", f"must be >= 1, got {self.sft_examples}")
        _require(self.sft_steps >= 1, "sft_steps", f"must be >= 1, got {self.sft_steps}")


@dataclass(frozen=True)
class PromptsConfig:
    """Where prompts come from: the text task (train split for feedback, test split for the
    held-out evaluation), or two files (``train``, ``eval``: .jsonl of {"prompt"} or text)."""

    source: str = "text_task"
    train: str | None = None
    eval: str | None = None
    per_round: int = 256
    eval_prompts: int = 256

    def __post_init__(self) -> None:
        _require(self.source in PROMPT_SOURCES, "source", f"must be one of {PROMPT_SOURCES}, got {self.source!r}")
        if self.source == "files":
            _require(bool(self.train) and bool(self.eval), "train", "source 'files' needs train and eval files")
        _require(self.per_round >= 1, "per_round", f"must be >= 1, got {self.per_round}")
        _require(self.eval_prompts >= 2, "eval_prompts", f"must be >= 2 (a standard error), got {self.eval_prompts}")


@dataclass(frozen=True)
class JudgeConfig:
    """Who gives feedback. ``text_task``: the task's ground-truth scorers; ``callable``:
    ``target: "module:function"``, called as ``fn(prompts, completions)`` and returning
    ``{objective: [score, ...]}``; ``reward_model``: ``path`` of a feedalign reward model
    (one head per objective); ``human``: people rate in ``feedalign serve`` on ``db``.
    ``temperature`` is the noise of the simulated annotators built on a scoring judge (0 =
    always prefer the higher score)."""

    kind: str = "text_task"
    objectives: tuple[str, ...] = ("helpful",)
    target: str | None = None
    path: str | None = None
    db: str | None = None
    temperature: float = 0.0
    wait_seconds: float = 3600.0
    poll_seconds: float = 2.0
    min_answers: float = 1.0  # share of a round's items that must be rated before training

    def __post_init__(self) -> None:
        _require(self.kind in JUDGE_KINDS, "kind", f"must be one of {JUDGE_KINDS}, got {self.kind!r}")
        _require(len(self.objectives) >= 1, "objectives", "needs at least one objective")
        if self.kind == "callable":
            _require(isinstance(self.target, str) and self.target.count(":") == 1, "target",
                     f"must look like 'package.module:function', got {self.target!r}")
        if self.kind == "reward_model":
            _require(bool(self.path), "path", "kind 'reward_model' needs the reward model directory")
        if self.kind == "human":
            _require(bool(self.db), "db", "kind 'human' needs the feedback database (file or URL)")
        _require(self.temperature >= 0, "temperature", f"must be >= 0, got {self.temperature}")
        _require(0 < self.min_answers <= 1, "min_answers", f"must be in (0, 1], got {self.min_answers}")


@dataclass(frozen=True)
class RoundTrainConfig:
    """How each round trains: one data source of ``feedback`` on ``objective`` with ``loss``.

    ``reference``: ``previous`` = each round's reference is the policy it starts from (the
    previous round's; full fine-tuning); ``initial`` = the initial policy stays the reference
    in every round: the policy is then the initial model plus a LoRA adapter (``lora``: r,
    alpha, dropout) carried from round to round, and the reference is that model with the
    adapter disabled, i.e. exactly the initial weights."""

    loss: str = "dpo"
    feedback: str = "pairs"
    objective: str = "helpful"
    hparams: dict[str, Any] = field(default_factory=dict)
    lr: float = 5e-4
    steps: int = 50
    batch_size: int = 32
    max_length: int = 64
    reference: str = "previous"
    lora: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.reference == "initial":
            _require(bool(self.lora), "lora", "reference 'initial' trains a LoRA adapter on the initial model; "
                     "give lora: {r: 8, alpha: 16}")
        else:
            _require(self.lora is None, "lora", "is used with reference 'initial' only")
        _require(self.feedback in FEEDBACK_KINDS, "feedback", f"must be one of {FEEDBACK_KINDS}, got {self.feedback!r}")
        _require(self.reference in REFERENCES, "reference", f"must be one of {REFERENCES}, got {self.reference!r}")
        _require(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        _require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")


@dataclass(frozen=True)
class SamplingConfig:
    samples_per_prompt: int = 4
    max_new_tokens: int = 24
    temperature: float = 1.0
    batch_size: int = 256
    chat_template: str = "auto"

    def __post_init__(self) -> None:
        _require(self.samples_per_prompt >= 2, "samples_per_prompt", f"must be >= 2, got {self.samples_per_prompt}")
        _require(self.chat_template in ("auto", "none"), "chat_template", f"must be auto or none, got {self.chat_template!r}")


@dataclass(frozen=True)
class IterateConfig:
    rounds: int = 3
    seed: int = 0
    out: str | None = None
    initial: InitialConfig = field(default_factory=InitialConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    train: RoundTrainConfig = field(default_factory=RoundTrainConfig)
    eval_objectives: tuple[str, ...] = ("helpful", "concise")
    offline_baseline: bool = True
    plots: bool = True

    def __post_init__(self) -> None:
        _require(self.rounds >= 1, "rounds", f"must be >= 1, got {self.rounds}")
        _require(self.train.objective in self.judge.objectives, "train.objective",
                 f"{self.train.objective!r} is not among judge.objectives {list(self.judge.objectives)}")
        if self.judge.kind == "human":
            _require(not self.offline_baseline, "offline_baseline",
                     "must be false with judge.kind 'human' (people would have to rate the baseline's samples too)")
            _require(self.train.feedback in ("pairs", "thumbs"), "train.feedback",
                     f"people give pairs and thumbs; got {self.train.feedback!r}")
        if self.initial.path is None:
            _require(self.prompts.source == "text_task", "initial.path",
                     "is required unless prompts come from the text task (which builds its own model)")

    def fingerprint(self) -> str:
        """What a resumed run must match (``out`` aside)."""
        from feedalign.config.loader import config_to_dict

        data = config_to_dict(self)
        data.pop("out", None)
        data.pop("plots", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def load_iterate_config(path: str | Path, overrides: list[str] | None = None) -> IterateConfig:
    import yaml

    from feedalign.config.loader import apply_override, build

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    for item in overrides or []:
        apply_override(raw, item)
    return build(IterateConfig, raw, "")
