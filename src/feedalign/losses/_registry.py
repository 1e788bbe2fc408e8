"""The one loss registry: what each loss consumes, declared where the loss is defined.

A loss is a pure function: tensors and hyperparameters in, ``(per_example_loss, metrics)`` out.
The caller reduces ``per_example_loss`` with a mean over examples, so a loss defines its
batch objective as the mean of what it returns. Callers do not call ``spec.fn`` themselves:
:func:`feedalign.losses.call_loss` builds its inputs from the rows of a batch.

A registration (``register_loss``) declares:

``feedback``   the batch layout and the positional inputs (``FEEDBACK_INPUTS``):

  ``"pair"``             policy_chosen_logps, policy_rejected_logps, reference_chosen_logps,
                         reference_rejected_logps
  ``"unpaired"``         policy_logps, reference_logps, labels (bool [B], True = desirable)
  ``"sequence"``         policy_logps                                  (SFT on positives)
  ``"reward_pair"``      chosen_rewards, rejected_rewards
  ``"reward_unpaired"``  rewards, labels

  All log-prob tensors are per-sequence sums over completion tokens, shape [B], fp32; with
  ``needs_reference=False`` the reference arguments may be ``None``.
``optional``   keyword inputs a caller supplies when it can (default ``None`` in the
               signature): ``lengths`` / ``chosen_lengths`` / ``rejected_lengths``
               (completion token counts [B]) and ``kl`` (a KL(pi_ref || pi_theta) estimate).
``state``      state name -> :class:`~feedalign.losses._state.StateProvider` subclass; the
               provider supplies the keyword inputs listed in its ``outputs``.
``validators`` hyperparameter name -> validator (:mod:`feedalign.losses._hparams`); every
               hyperparameter needs one. Hyperparameters are the keyword-only arguments with
               a non-None default, plus the providers' own.
``check``      an optional cross-parameter check: returns warnings, raises HParamError.
``accuracy``   ``fn(inputs) -> (correct [B] bool, margins [B] or None)``: the loss's reward
               accuracy on a batch, computed from the same inputs as the loss (None: the loss
               has no notion of a correct verdict, e.g. SFT).
``in_batch_kl_effect``  for a loss with a ``kl`` input: ``fn(labels) -> str | None``, what
               the in-batch KL estimate does to it on data whose labels are ``labels`` (a set
               of bools), for the trainer's warning when no reference samples are given.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from feedalign.losses._hparams import HParamError, Validator
from feedalign.losses._state import StateProvider

FEEDBACK_INPUTS: dict[str, tuple[str, ...]] = {
    "pair": ("policy_chosen_logps", "policy_rejected_logps", "reference_chosen_logps", "reference_rejected_logps"),
    "unpaired": ("policy_logps", "reference_logps", "labels"),
    "sequence": ("policy_logps",),
    "reward_pair": ("chosen_rewards", "rejected_rewards"),
    "reward_unpaired": ("rewards", "labels"),
}
FEEDBACK_KINDS = tuple(FEEDBACK_INPUTS)
OPTIONAL_INPUTS = ("lengths", "chosen_lengths", "rejected_lengths", "kl", "ties")

Verdict = Callable[[Mapping[str, Any]], tuple[Any, Any]]


@dataclass(frozen=True)
class LossSpec:
    name: str
    fn: Callable[..., Any]
    feedback: str
    needs_reference: bool
    optional: tuple[str, ...] = ()
    state: Mapping[str, type[StateProvider]] = field(default_factory=dict)
    hparams: Mapping[str, Any] = field(default_factory=dict)  # defaults
    validators: Mapping[str, Validator] = field(default_factory=dict)
    check: Callable[[dict[str, Any]], list[str]] | None = None
    accuracy: Verdict | None = None
    in_batch_kl_effect: Callable[[frozenset[bool]], str | None] | None = None

    @property
    def inputs(self) -> tuple[str, ...]:
        """The positional inputs of the loss (from its feedback kind)."""
        return FEEDBACK_INPUTS[self.feedback]

    @property
    def fn_hparams(self) -> tuple[str, ...]:
        """The hyperparameters the loss function itself takes (the others are its state's)."""
        params = inspect.signature(self.fn).parameters
        return tuple(name for name in self.hparams if name in params)

    @property
    def min_batch_size(self) -> int:
        """The smallest batch the loss's state can work with."""
        return max((p.min_batch_size for p in self.state.values()), default=1)

    @property
    def needs_margin_source(self) -> bool:
        return any(p.needs_margin_source for p in self.state.values())

    def takes(self, name: str) -> bool:
        """Whether the loss takes the optional input ``name``."""
        return name in self.optional

    def resolve_hparams(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults updated by ``overrides``, each value validated. Unknown names and invalid
        values raise :class:`HParamError` (a ValueError) naming the hyperparameter; the
        loss's own ``check`` (e.g. PMPO's collapse condition) runs on the result."""
        overrides = dict(overrides or {})
        for name in overrides:
            if name not in self.hparams:
                raise HParamError(name, overrides[name], f"a hyperparameter of loss '{self.name}': {sorted(self.hparams)}")
        resolved = {**self.hparams, **overrides}
        resolved = {name: self.validators[name](name, value) for name, value in resolved.items()}
        if self.check is not None:
            for message in self.check(resolved):
                warnings.warn(f"loss '{self.name}': {message}", stacklevel=2)
        return resolved

    def make_state(self, hparams: Mapping[str, Any]) -> dict[str, StateProvider]:
        """One fresh provider per state name."""
        return {name: provider(hparams) for name, provider in self.state.items()}

    @property
    def summary(self) -> str:
        doc = inspect.getdoc(self.fn) or ""
        return doc.splitlines()[0] if doc else ""


_REGISTRY: dict[str, LossSpec] = {}


def _signature_hparams(fn: Callable[..., Any], excluded: set[str]) -> dict[str, Any]:
    params = inspect.signature(fn).parameters.values()
    return {
        p.name: p.default
        for p in params
        if p.kind is inspect.Parameter.KEYWORD_ONLY
        and p.default is not inspect.Parameter.empty
        and p.name not in excluded
        and p.default is not None
    }


def _check_signature(name: str, fn: Callable[..., Any], feedback: str, optional: tuple[str, ...],
                     state: Mapping[str, type[StateProvider]]) -> None:
    params = inspect.signature(fn).parameters
    positional = [p.name for p in params.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    if tuple(positional) != FEEDBACK_INPUTS[feedback]:
        raise ValueError(f"loss '{name}': positional inputs {positional}; '{feedback}' feedback needs "
                         f"{list(FEEDBACK_INPUTS[feedback])}")
    for opt in optional:
        if opt not in OPTIONAL_INPUTS:
            raise ValueError(f"loss '{name}': unknown optional input {opt!r}; known: {list(OPTIONAL_INPUTS)}")
        if opt not in params or params[opt].default is not None:
            raise ValueError(f"loss '{name}': optional input {opt!r} must be a parameter defaulting to None")
    for state_name, provider in state.items():
        missing = [out for out in provider.outputs if out not in params]
        if missing:
            raise ValueError(f"loss '{name}': state '{state_name}' supplies {missing}, which it does not take")
        unknown = [use for use in provider.uses if use not in params]
        if unknown:
            raise ValueError(f"loss '{name}': state '{state_name}' reads hyperparameters {unknown} it lacks")


def register_loss(
    name: str,
    *,
    feedback: str,
    needs_reference: bool,
    optional: tuple[str, ...] = (),
    state: Mapping[str, type[StateProvider]] | None = None,
    validators: Mapping[str, Validator] | None = None,
    check: Callable[[dict[str, Any]], list[str]] | None = None,
    accuracy: Verdict | None = None,
    in_batch_kl_effect: Callable[[frozenset[bool]], str | None] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register ``fn`` under ``name``; the declaration is checked against its signature."""
    if feedback not in FEEDBACK_KINDS:
        raise ValueError(f"feedback must be one of {FEEDBACK_KINDS}, got {feedback!r}")
    state = dict(state or {})
    validators = dict(validators or {})

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ValueError(f"loss '{name}' is already registered")
        _check_signature(name, fn, feedback, optional, state)
        outputs = {out for provider in state.values() for out in provider.outputs}
        hparams = _signature_hparams(fn, outputs | set(optional))
        all_validators = dict(validators)
        for provider in state.values():
            for hp_name, (default, validator) in provider.hparams.items():
                hparams[hp_name] = default
                all_validators[hp_name] = validator
        missing = sorted(set(hparams) - set(all_validators))
        stray = sorted(set(all_validators) - set(hparams))
        if missing or stray:
            raise ValueError(f"loss '{name}': hyperparameters without a validator {missing}, "
                             f"validators of no hyperparameter {stray}")
        _REGISTRY[name] = LossSpec(
            name=name, fn=fn, feedback=feedback, needs_reference=needs_reference, optional=tuple(optional),
            state=MappingProxyType(state), hparams=MappingProxyType(hparams),
            validators=MappingProxyType(all_validators), check=check, accuracy=accuracy,
            in_batch_kl_effect=in_batch_kl_effect,
        )
        return fn

    return decorator


# The loss ``feedalign rm train`` uses for each kind of reward-model feedback.
DEFAULT_REWARD_LOSSES = {"reward_pair": "bt_reward", "reward_unpaired": "bce_reward"}


def default_reward_loss(feedback: str) -> LossSpec:
    """The registered loss that trains reward models on ``feedback`` (``reward_pair`` or
    ``reward_unpaired``)."""
    if feedback not in DEFAULT_REWARD_LOSSES:
        raise ValueError(f"no reward-model loss for feedback {feedback!r}; valid: {sorted(DEFAULT_REWARD_LOSSES)}")
    return get_loss(DEFAULT_REWARD_LOSSES[feedback])


def unregister_loss(name: str) -> None:
    """Remove a loss registered under ``name`` (for losses defined in tests)."""
    _REGISTRY.pop(name, None)


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
