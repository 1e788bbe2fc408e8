"""The one registry of margin-source kinds (``margins.kind`` in a config) and the built-in
margins (``builtin:<name>``); the sources themselves are in :mod:`feedalign.multiobjective.margins`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from feedalign.multiobjective.margins import (
    CallableMargins,
    ImplicitRewardMargins,
    LengthMargins,
    MarginSource,
    RewardModelMargins,
    StackedMargins,
    import_target,
)

def _length_builtin(unit: str | None) -> Callable[[Mapping[str, Any]], MarginSource]:
    def make(options: Mapping[str, Any]) -> MarginSource:
        opts = dict(options)
        tokenizer = opts.pop("tokenizer", None)
        if isinstance(tokenizer, (str, os.PathLike)):
            from feedalign.policies.hf import load_tokenizer

            tokenizer = load_tokenizer(tokenizer)
        chosen = unit or opts.pop("unit", None) or ("tokens" if tokenizer is not None else "chars")
        return LengthMargins(chosen, tokenizer=tokenizer, **opts)

    return make


#: ``builtin:<name>`` margins; options go to the constructor (``tokenizer`` may be a path).
BUILTIN_MARGINS: dict[str, Callable[[Mapping[str, Any]], MarginSource]] = {
    "length": _length_builtin(None),
    "length_tokens": _length_builtin("tokens"),
    "length_chars": _length_builtin("chars"),
    "length_words": _length_builtin("words"),
}


def _builtin(target: str | None, options: Mapping[str, Any]) -> MarginSource:
    name = str(target or "").removeprefix("builtin:")
    if name not in BUILTIN_MARGINS:
        raise ValueError(f"unknown built-in margin {name!r}; valid: {sorted(BUILTIN_MARGINS)}")
    return BUILTIN_MARGINS[name](options)


def _callable(target: str | None, options: Mapping[str, Any]) -> MarginSource:
    if str(target).startswith("builtin:"):
        return _builtin(target, options)
    fn = import_target(str(target))
    # With options the target is a factory returning the margin function.
    return CallableMargins(fn(**options) if options else fn, name=str(target))


def _reward_model(target: str | None, options: Mapping[str, Any]) -> MarginSource:
    opts = dict(options)
    if target is None or "heads" not in opts:
        raise ValueError("margins kind 'reward_model' needs target: <RM dir> and options.heads: [objective, ...]")
    return RewardModelMargins.from_dir(target, opts.pop("heads"), **opts)


def _implicit(target: str | None, options: Mapping[str, Any]) -> MarginSource:
    opts = dict(options)
    if target is None or "beta" not in opts:
        raise ValueError("margins kind 'implicit' needs target: <adapter or model dir> and options.beta")
    return ImplicitRewardMargins.from_pretrained(target, **opts)


def _stack(target: str | None, options: Mapping[str, Any]) -> MarginSource:
    parts = options.get("sources")
    if not parts:
        raise ValueError("margins kind 'stack' needs options.sources: [{kind, target, options}, ...]")
    return StackedMargins([build_margin_source(p["kind"], p.get("target"), p.get("options") or {}) for p in parts])


_KINDS: dict[str, Callable[[str | None, Mapping[str, Any]], MarginSource]] = {
    "callable": _callable,
    "builtin": _builtin,
    "reward_model": _reward_model,
    "implicit": _implicit,
    "stack": _stack,
}


def build_margin_source(kind: str, target: str | None = None, options: Mapping[str, Any] | None = None) -> MarginSource:
    """A margin source from a config block.

    Kinds: ``callable`` (target ``module:function``, or ``builtin:<name>``; with options the
    target is a factory called with them), ``builtin`` (target a name of ``BUILTIN_MARGINS``),
    ``reward_model`` (target an RM dir; options ``heads``, ``normalize``, ``scale``, ...),
    ``implicit`` (target an adapter or model dir; options ``beta``, ``base``, ``reference``,
    ...), ``stack`` (options ``sources``: a list of such blocks).
    """
    if kind not in _KINDS:
        raise ValueError(f"unknown margin source kind {kind!r}; valid: {sorted(_KINDS)}")
    return _KINDS[kind](target, dict(options or {}))


def register_margin_source(kind: str, builder: Callable[[str | None, Mapping[str, Any]], MarginSource]) -> None:
    """Make ``margins.kind: <kind>`` available; ``builder(target, options)`` returns a callable
    ``(prompts, completions) -> Tensor [N, m-1]``. Duplicates are rejected."""
    if kind in _KINDS:
        raise ValueError(f"margin source kind '{kind}' is already registered")
    _KINDS[kind] = builder


def margin_kinds() -> tuple[str, ...]:
    """The registered ``margins.kind`` values."""
    return tuple(_KINDS)


def margin_source_from_config(config: Any) -> MarginSource:
    """The margin source of a ``margins:`` config block (``.kind``, ``.target``, ``.options``)."""
    return build_margin_source(config.kind, getattr(config, "target", None), getattr(config, "options", None) or {})


class _Factories(Mapping[str, Callable[[Any], MarginSource]]):
    """kind -> factory(margins config block): a read-only view of the one registry."""

    def __getitem__(self, kind: str) -> Callable[[Any], MarginSource]:
        if kind not in _KINDS:
            raise KeyError(kind)
        return lambda config: build_margin_source(kind, getattr(config, "target", None),
                                                  getattr(config, "options", None) or {})

    def __iter__(self) -> Iterator[str]:
        return iter(list(_KINDS))

    def __len__(self) -> int:
        return len(_KINDS)


MARGIN_SOURCE_FACTORIES: Mapping[str, Callable[[Any], MarginSource]] = _Factories()
