"""Format presets: the published layouts of feedback datasets and exports, read unchanged.

A preset turns one raw row into records (pairs, thumbs, scored completions, ties) and names
the columns it reads; every other column of the file is listed as ignored by ``data inspect``.
A source's ``format:`` names a preset; without it the layout is recognised from the first
row's columns (:func:`detect`), and the report says which preset was used.

==============  ============================================================================
preset          reads
==============  ============================================================================
trl             prompt/chosen/rejected, prompt/completion/label, messages, scores (strings or
                message lists; the default)
thumbs          prompt/completion (or response) + rating 1/-1, feedback thumbs_up/thumbs_down,
                thumbs, vote or label (-1 is down)
hh-rlhf         chosen/rejected "\\n\\nHuman: ... \\n\\nAssistant: ..." transcripts
ultrafeedback   instruction + completions[{response, annotations{aspect: {Rating}}}]
pku-saferlhf    prompt, response_0/1, better_response_id, safer_response_id, is_response_k_safe
helpsteer2      prompt, response, helpfulness ... verbosity (0-4)
ranked          prompt + completions (K) + ranks (1 = best) or scores
arena           model_a/model_b + winner + conversation_a/b, or prompt/response_a/response_b +
                winner_model_a/winner_model_b/winner_tie (JSON-encoded lists)
argilla         Argilla 2.x export: fields + ``<question>.responses`` per annotator
openwebui       Open WebUI feedback export: snapshot.chat...messages, meta.message_id, data.rating
==============  ============================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from feedalign.data.records import Record


@dataclass
class Context:
    """Options and counters shared by the rows of one source.

    ``unrated`` counts ratings that were not given ("N/A", null) and were skipped.
    """

    objectives: frozenset[str] | None = None
    kind: str | None = None
    label_values: Any = None  # feedalign.data.mapping.LabelValues | None
    unrated: int = 0


@dataclass(frozen=True)
class Preset:
    """One published layout.

    Attributes:
        name: the ``format:`` value.
        reads: the top-level columns it uses (the rest is reported as ignored).
        detect: True when a row's columns (and, for hh-rlhf, values) are this layout.
        convert: one row -> records; raises RowError naming the field.
        objectives: the objective names it produces (documentation and reports).
        groups_scores: its scored completions of one prompt become pairs by default.
        explicit_ids: its records take the row's ``id`` column (unique ids are then checked);
            False for exports whose ``id`` names something else (an annotation, a feedback item).
    """

    name: str
    reads: frozenset[str]
    detect: Callable[[Mapping[str, Any]], bool]
    convert: Callable[[Mapping[str, Any], Context], list[Record]]
    objectives: tuple[str, ...] = ()
    groups_scores: bool = False
    summary: str = ""
    extra_reads: Callable[[Mapping[str, Any]], frozenset[str]] | None = field(default=None, repr=False)
    explicit_ids: bool = True

    def columns_read(self, row: Mapping[str, Any]) -> frozenset[str]:
        return self.reads | self.extra_reads(row) if self.extra_reads else self.reads


_PRESETS: dict[str, Preset] = {}
_ORDER: list[str] = []  # detection order: most specific first, trl last


def register(preset: Preset) -> Preset:
    if preset.name in _PRESETS:
        raise ValueError(f"format preset '{preset.name}' is already registered")
    _PRESETS[preset.name] = preset
    _ORDER.append(preset.name)
    return preset


def _ensure_loaded() -> None:
    from feedalign.data.formats import (  # noqa: F401
        arena,
        argilla,
        hh_rlhf,
        openwebui,
        pku_saferlhf,
        scored,
        trl,
    )


def get_preset(name: str) -> Preset:
    _ensure_loaded()
    try:
        return _PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r}; expected one of: {', '.join(list_presets())}") from None


def list_presets() -> list[str]:
    _ensure_loaded()
    return sorted(_PRESETS)


def detect(row: Mapping[str, Any]) -> Preset:
    """The first preset (most specific first) whose layout the row has; ``trl`` otherwise."""
    _ensure_loaded()
    if isinstance(row, Mapping):
        for name in sorted(_ORDER, key=lambda n: n == "trl"):
            preset = _PRESETS[name]
            if name != "trl" and preset.detect(row):
                return preset
    return _PRESETS["trl"]
