"""The one loss registry.

A loss is a pure function: tensors and hyperparameters in, ``(per_example_loss, metrics)`` out.
The caller (trainer, exact benchmark) reduces ``per_example_loss`` with a mean over examples,
so a loss defines its batch objective as the mean of what it returns.

Calling conventions, chosen by ``LossSpec.feedback``:

``"pair"``       fn(policy_chosen_logps, policy_rejected_logps,
                    reference_chosen_logps, reference_rejected_logps, *, <state>, <hparams>)
``"unpaired"``   fn(policy_logps, reference_logps, labels, *, <state>, <hparams>)
                 labels: bool tensor [B], True = desirable / thumbs up.
``"sequence"``   fn(policy_logps, *, <state>, <hparams>)             (SFT on positives)
``"reward_pair"``     fn(chosen_rewards, rejected_rewards, *, <hparams>)
``"reward_unpaired"`` fn(rewards, labels, *, <hparams>)

All log-prob tensors are per-sequence sums over completion tokens, shape [B], fp32.
For losses with ``needs_reference=False`` the reference arguments may be ``None``.

``state`` names the extra keyword inputs the caller must compute and pass in (the trainer
maps each state name to a provider, never to a loss name):
  * ``kl_ref``   scalar: mean of (policy - reference) log-ratio on mismatched (x, y') pairs
                 (KTO reference point; the loss detaches and clamps it at 0).
  * ``delta``    scalar: running mean of implicit rewards beta*(policy - reference) (BCO).
  * ``margins``  ``chosen_margins`` and ``rejected_margins``, [B, m-1] margin rewards of the
                 other objectives (MODPO).
Optional inputs (documented per loss, default ``None``) are not listed in ``state``; the
trainer passes them when the loss's signature names them: ``lengths`` / ``chosen_lengths`` /
``rejected_lengths`` (completion token counts [B]), ``udm_weights`` [B] (BCO), ``kl`` (PMPO).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

FEEDBACK_KINDS = ("pair", "unpaired", "sequence", "reward_pair", "reward_unpaired")


@dataclass(frozen=True)
class LossSpec:
    name: str
    fn: Callable[..., Any]
    feedback: str
    needs_reference: bool
    state: tuple[str, ...] = ()
    hparams: dict[str, Any] = field(default_factory=dict)
    check: Callable[[dict[str, Any]], list[str]] | None = None

    def resolve_hparams(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Defaults updated by ``overrides``; unknown names fail with the valid list, and the
        loss's own check (e.g. PMPO's collapse condition) runs on the result."""
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(self.hparams))
        if unknown:
            raise ValueError(
                f"loss '{self.name}' has no hyperparameter {unknown}; valid: {sorted(self.hparams)}"
            )
        resolved = {**self.hparams, **overrides}
        if self.check is not None:
            for message in self.check(resolved):
                warnings.warn(f"loss '{self.name}': {message}", stacklevel=2)
        return resolved

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.fn) or ""
        return doc.splitlines()[0] if doc else ""


_REGISTRY: dict[str, LossSpec] = {}


def _keyword_defaults(fn: Callable[..., Any], state: tuple[str, ...]) -> dict[str, Any]:
    params = inspect.signature(fn).parameters.values()
    return {
        p.name: p.default
        for p in params
        if p.kind is inspect.Parameter.KEYWORD_ONLY
        and p.default is not inspect.Parameter.empty
        and p.name not in state
        and p.default is not None
    }


def register_loss(
    name: str,
    *,
    feedback: str,
    needs_reference: bool,
    state: tuple[str, ...] = (),
    check: Callable[[dict[str, Any]], list[str]] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn`` under ``name``. Hyperparameters are its keyword-only arguments with a
    non-None default."""
    if feedback not in FEEDBACK_KINDS:
        raise ValueError(f"feedback must be one of {FEEDBACK_KINDS}, got {feedback!r}")

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ValueError(f"loss '{name}' is already registered")
        _REGISTRY[name] = LossSpec(
            name=name,
            fn=fn,
            feedback=feedback,
            needs_reference=needs_reference,
            state=state,
            hparams=_keyword_defaults(fn, state),
            check=check,
        )
        return fn

    return decorator


def get_loss(name: str) -> LossSpec:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown loss '{name}'; valid: {sorted(_REGISTRY)}") from None


def list_losses() -> list[str]:
    _ensure_loaded()
    return sorted(_REGISTRY)


def _ensure_loaded() -> None:
    # Importing the modules runs their @register_loss decorators.
    from feedalign.losses import multiobjective, pairwise, pairwise_ties, reward, unpaired  # noqa: F401
