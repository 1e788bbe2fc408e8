"""The data options a config source may set (``format``, ``columns``, ``label_values``,
``split``, ``scores``, ``ties``), checked once when the config is built and handed to the
loader unchanged, so ``feedalign train``, ``feedalign rm train`` and ``data inspect`` read a
file the same way."""

from __future__ import annotations

from typing import Any

from feedalign.data.formats import get_preset
from feedalign.data.mapping import LabelValues, check_columns
from feedalign.data.scores import ScorePolicy

OPTION_KEYS = ("format", "columns", "label_values", "split", "scores", "ties")
TIES = ("drop", "keep")


def source_option_errors(source: Any) -> list[tuple[str, str]]:
    """``[(key, message)]`` for every invalid data option of a config source."""
    errors = []
    checks = (
        ("format", lambda v: v is None or get_preset(v)),
        ("columns", check_columns),
        ("label_values", LabelValues.from_config),
        ("scores", ScorePolicy.from_config),
    )
    for key, check in checks:
        try:
            check(getattr(source, key, None))
        except (ValueError, TypeError) as exc:
            errors.append((key, str(exc)))
    ties = getattr(source, "ties", "drop")
    if ties not in TIES:
        errors.append(("ties", f"must be one of {list(TIES)}, got {ties!r}"))
    return errors


def load_options(source: Any, *, default_scores: str | None = "pairs") -> dict[str, Any]:
    """Loader keyword arguments for a config source. Training needs pairs or thumbs, so
    scored rows become pairs unless the source's ``scores:`` says otherwise."""
    options = {key: getattr(source, key, None) for key in OPTION_KEYS}
    options["ties"] = options["ties"] or "drop"
    if options["scores"] is None:
        options["scores"] = default_scores
    objective = getattr(source, "objective", None)
    if objective is not None:
        options["objective"] = objective
    return options
