"""Judges that score completions: ``judge.score(prompts, completions) -> {objective: [n]}``.

* ``text_task``    the synthetic task's ground-truth scorers (``helpful``, ``concise``);
* ``callable``     any Python function ``module:function`` taking ``(prompts, completions)``
                   and returning ``{objective: sequence of n floats}`` (or a list of n dicts);
* ``reward_model`` a feedalign reward model directory (one head per objective; normalised
                   scores).

People are the fourth judge (``kind: human``); they do not score but answer directly, see
:mod:`feedalign.loop.human`. Scores feed the simulated annotators of
:mod:`feedalign.envs.annotators` (pairs, thumbs, best/worst of K) in :mod:`feedalign.loop.feedback`.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from feedalign.config.errors import ConfigError
from feedalign.loop.config import JudgeConfig

Scores = dict[str, np.ndarray]


class Judge:
    """A named scoring function over aligned prompt/completion lists."""

    def __init__(self, name: str, objectives: Sequence[str], fn: Callable[[list[str], list[str]], Any]) -> None:
        self.name = name
        self.objectives = tuple(objectives)
        self._fn = fn

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> Scores:
        prompts, completions = list(prompts), list(completions)
        if not prompts:
            return {o: np.zeros(0) for o in self.objectives}
        raw = self._fn(prompts, completions)
        return check_scores(raw, self.objectives, len(prompts), self.name)


def check_scores(raw: Any, objectives: Sequence[str], n: int, name: str) -> Scores:
    """``raw`` as one finite float array of length ``n`` per objective; errors name the judge."""
    if isinstance(raw, Sequence) and not isinstance(raw, (str, bytes)) and raw and isinstance(raw[0], Mapping):
        try:
            raw = {o: [row[o] for row in raw] for o in objectives}
        except KeyError as exc:
            raise ValueError(f"judge {name}: a score row has no objective {exc}") from None
    if not isinstance(raw, Mapping):
        raise ValueError(f"judge {name}: expected {{objective: scores}} or a list of dicts, got {type(raw).__name__}")
    out = {}
    for objective in objectives:
        if objective not in raw:
            raise ValueError(f"judge {name}: no scores for objective {objective!r} (got {sorted(raw)})")
        values = np.asarray(raw[objective], dtype=np.float64).reshape(-1)
        if len(values) != n:
            raise ValueError(f"judge {name}: {len(values)} scores for {objective!r}, expected {n}")
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"judge {name}: non-finite score for {objective!r}")
        out[objective] = values
    return out


def import_callable(target: str) -> Callable[..., Any]:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import module {module_name!r}: {exc}", key="judge.target") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"{module_name!r} has no callable {attr!r}", key="judge.target")
    return fn


def make_judge(config: JudgeConfig, task: Any = None) -> Judge:
    """The scoring judge of ``config`` (not for ``kind: human``)."""
    if config.kind == "text_task":
        if task is None:
            raise ConfigError("the text-task judge needs the text task's prompts", key="judge.kind")
        unknown = [o for o in config.objectives if o not in task.OBJECTIVES]
        if unknown:
            raise ConfigError(f"unknown objectives {unknown}; the text task has {list(task.OBJECTIVES)}",
                              key="judge.objectives")
        return Judge("text_task", config.objectives, task.score_many)
    if config.kind == "callable":
        return Judge(config.target, config.objectives, import_callable(config.target))
    if config.kind == "reward_model":
        return _reward_model_judge(config)
    raise ConfigError(f"kind {config.kind!r} does not score; it collects answers", key="judge.kind")


def _reward_model_judge(config: JudgeConfig) -> Judge:
    from feedalign.policies.reward_model import load_reward_model

    model, tokenizer = load_reward_model(config.path)
    unknown = [o for o in config.objectives if o not in model.objectives]
    if unknown:
        raise ConfigError(f"reward model {config.path} has heads {list(model.objectives)}, not {unknown}",
                          key="judge.objectives")

    def score(prompts: list[str], completions: list[str]) -> Scores:
        values = model.score(tokenizer, prompts, completions).cpu().double().numpy()
        return {o: values[:, model.index(o)] for o in config.objectives}

    return Judge(f"reward_model:{config.path}", config.objectives, score)
