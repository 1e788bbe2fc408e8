"""Load feedback records from JSONL, JSON, CSV, Parquet and Hugging Face ``datasets``.

Sources: a path ending in ``.jsonl``/``.ndjson``, ``.json`` (a list of objects, or one object
per line), ``.csv`` (header row), ``.parquet``/``.pq`` (text formats also compressed: ``.gz``,
``.bz2``, ``.xz``, ``.zst``), a directory of such files (hub shard layout, splits by name), a
glob, a directory written by ``datasets.Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``,
a hub dataset id (through ``datasets.load_dataset``, offline from the local cache), an
in-memory ``datasets.Dataset`` / ``DatasetDict`` (the ``train`` split unless ``split=``), or a
list of dicts (see :mod:`feedalign.data.sources`).

Published dataset layouts (hh-rlhf, UltraFeedback, PKU-SafeRLHF, HelpSteer2, arena, Argilla,
Open WebUI, thumbs logs) are read by format presets (:mod:`feedalign.data.formats`), chosen
with ``format=`` or recognised from the columns; ``columns=`` and ``label_values=``
(:mod:`feedalign.data.mapping`) read any other export. Scored completions become pairs or
thumbs (:mod:`feedalign.data.scores`); ties are counted and left out unless ``ties="keep"``.
Columns a layout does not read are listed per source (``SourceStats.ignored_columns``).

Row layouts of the default ``trl`` preset (the usual column names, unchanged):

pairs -> ``PairRecord``
    ``{"prompt": str, "chosen": str, "rejected": str}``
    ``{"prompt": [msgs], "chosen": [msgs], "rejected": [msgs]}`` (conversational: the prompt
    messages, then the assistant turn(s) of each completion)
    ``{"chosen": [msgs], "rejected": [msgs]}`` (implicit prompt: two full conversations; their
    shared leading messages are the prompt)
labeled (thumbs) -> ``LabeledRecord``
    ``{"prompt": str, "completion": str, "label": L}``; ``prompt``/``completion`` may also be
    message lists; ``{"messages": [msgs], "label": L}`` (the last message, which must be the
    assistant's, is the completion; earlier messages the prompt).
    L is a bool, 1/0/-1 (0 and -1 are down), or (any case) "true"/"false", "1"/"0"/"-1", "up"/"down", "yes"/"no",
    "thumbs_up"/"thumbs_down", "good"/"bad". Anything else is an error.
    Positive-only / negative-only sets may omit ``label`` when loaded with
    ``kind="positive"`` / ``kind="negative"``.
multi-objective labels -> one ``LabeledRecord`` per objective
    ``{"prompt": ..., "completion": ..., "labels": {"helpful": true, "harmless": false}}``
    (a null label means "not rated" and gives no record).
scored -> ``ScoredRecord``
    ``{"prompt": ..., "completion": ..., "scores": {"helpful": 0.7, "harmless": -1.0}}`` or a
    scalar ``"score"`` (stored under the row's ``objective``, else under the key ``"score"``).
common optional columns
    ``weight`` (a positive number, every layout): multiplies the loss of the row's records.
    ``objective`` (pairs and labeled rows): the objective the feedback is about; missing or
    null means the single, unnamed objective. ``id`` (string or integer): kept as the record
    id (``<id>/<objective>`` for ``labels`` rows); without it the id is a content hash, and
    exact duplicate rows are kept with ``-2``, ``-3`` ... suffixes.

Messages are ``{"role": str, "content": str}`` and are rendered to text by
:func:`feedalign.data.messages.render_messages`.

Validation: every row is checked (types, empty texts, labels, finite scores, objective names
when ``objectives`` is given, unique explicit ids, chosen != rejected, UTF-8, a per-line size
limit of ``max_line_bytes``, 16 MiB by default). ``on_invalid`` decides what a problem does:

* ``"error"`` (default): raise :class:`FeedbackDataError` at the first problem, e.g.
  ``data/pairs.jsonl:12: field 'chosen': expected a non-empty string, got int``.
* ``"quarantine"``: keep going; every rejected row is written with its reason as one JSON line
  ``{"source", "field", "reason", "raw"}`` to the quarantine file, and returned in
  ``LoadResult.rejected``. The quarantine file is ``<source>.quarantine.jsonl`` next to the
  source when ``quarantine_path`` is None; ``<dir>/<source name>.quarantine.jsonl`` when
  ``quarantine_path`` is an existing directory; otherwise ``quarantine_path`` itself (all
  sources in one file). It is always (re)written, empty when nothing was rejected.
* ``"collect"``: like quarantine, without writing a file (used by ``feedalign data inspect``).

Conflicting feedback (one item labeled up and down, or a pair in both orders) is not a
malformed row: it is kept in every mode and listed in ``LoadResult.conflicts``.
A missing file or an unsupported file type always raises.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from feedalign.data.errors import Rejection, RowError
from feedalign.data.formats import Context, Preset, detect, get_preset
from feedalign.data.quarantine import quarantine_target, write_quarantine  # noqa: F401 (re-exported)
from feedalign.data.mapping import LabelValues, apply_columns, check_columns, mapped_sources
from feedalign.data.readers import DEFAULT_MAX_LINE_BYTES, Item, jsonable
from feedalign.data.results import LoadResult, SourceStats
from feedalign.data.records import FeedbackKind, PairRecord, Record, ScoredRecord
from feedalign.data.scores import ScorePolicy, scores_to_feedback
from feedalign.data.sources import open_source
from feedalign.data.validation import IdRegistry, find_conflicts, normalize_kind

ON_INVALID = ("error", "quarantine", "collect")
TIES = ("drop", "keep")

__all__ = ["LoadResult", "SourceStats", "load_many", "load_records", "open_source", "record_to_row", "save_jsonl"]


@dataclass(frozen=True)
class _Options:
    kind: str | None
    objectives: frozenset[str] | None
    format: Preset | None
    columns: dict[str, str] | None
    label_values: LabelValues | None
    scores: ScorePolicy | None
    ties: str
    objective: str | None
    on_invalid: str


def load_records(source: Any, **options: Any) -> LoadResult:
    """Load and validate one source of feedback.

    Args:
        source: a file path, a directory, a glob, a hub dataset id, a ``datasets.Dataset`` /
            ``DatasetDict`` or a list of dicts (see the module docstring for layouts).
        **options: as for :func:`load_many`.

    Raises:
        FeedbackDataError: in ``"error"`` mode on the first bad row; in every mode for a
            missing or unsupported source.
    """
    return load_many([source], **options)


def load_many(
    sources: Sequence[Any],
    *,
    on_invalid: str = "error",
    quarantine_path: str | os.PathLike | None = None,
    objectives: Iterable[str] | str | None = None,
    kind: str | FeedbackKind | None = None,
    split: str | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    format: str | None = None,
    columns: Mapping[str, str] | None = None,
    label_values: Mapping[str, Any] | None = None,
    scores: Any = None,
    ties: str = "drop",
    objective: str | None = None,
) -> LoadResult:
    """Load several sources into one result; ids must be unique across all of them.

    Args:
        on_invalid: ``"error"`` (raise at the first problem), ``"quarantine"`` (skip bad rows,
            write them to the quarantine file) or ``"collect"`` (skip and only return them).
        quarantine_path: where quarantine mode writes (see the module docstring).
        objectives: the allowed objective names (a list, or a comma-separated string); None
            accepts any name. Records without an objective are always accepted.
        kind: force a layout of the ``trl`` preset (``pair``, ``labeled``, ``positive``,
            ``negative``, ``scored``); None detects it per row.
        split: the split to read from a source with several splits (default ``train``).
        max_line_bytes: rows (lines) larger than this are rejected.
        format: a preset name (:func:`feedalign.data.formats.list_presets`); None recognises
            the layout from the first row's columns.
        columns / label_values: a declarative mapping (:mod:`feedalign.data.mapping`).
        scores: a :class:`ScorePolicy` (or its config mapping, or ``pairs``/``labels``/
            ``scores``); None: pairs for presets of scored completions, scores kept otherwise.
        ties: ``drop`` (counted, left out) or ``keep`` (tie records for tie-aware losses).
        objective: keep only records of this objective (records without one get it); an
            objective that differs only in case is a row problem, not a silent drop.
    """
    if on_invalid not in ON_INVALID:
        raise ValueError(f"on_invalid must be one of {', '.join(ON_INVALID)}, got {on_invalid!r}")
    if max_line_bytes < 1:
        raise ValueError(f"max_line_bytes must be positive, got {max_line_bytes}")
    if ties not in TIES:
        raise ValueError(f"ties must be one of {', '.join(TIES)}, got {ties!r}")
    opts = _Options(
        normalize_kind(kind),
        normalize_objectives(objectives),
        get_preset(format) if format is not None else None,
        check_columns(columns),
        LabelValues.from_config(label_values),
        ScorePolicy.from_config(scores),
        ties,
        objective,
        on_invalid,
    )
    if isinstance(sources, (str, os.PathLike)) or not isinstance(sources, Sequence):
        sources = [sources]
    ids = IdRegistry()
    result = LoadResult()
    per_source: list[tuple[Any, str, list[Rejection]]] = []
    for src in sources:
        name, items = open_source(src, split=split, max_line_bytes=max_line_bytes)
        result.sources.append(name)
        first = len(result.rejected)
        stats = _consume(items, name, result, ids, opts)
        _finish_source(stats, result, opts)
        per_source.append((src, name, result.rejected[first:]))
    result.conflicts = find_conflicts(result.records)
    if on_invalid == "quarantine":
        result.quarantine_files = write_quarantine(per_source, quarantine_path)
    return result


def normalize_objectives(objectives: Iterable[str] | str | None) -> frozenset[str] | None:
    if objectives is None:
        return None
    names = objectives.split(",") if isinstance(objectives, str) else list(objectives)
    names = [n.strip() if isinstance(n, str) else n for n in names]
    bad = [n for n in names if not isinstance(n, str) or not n]
    if bad or not names:
        raise ValueError(f"objectives must be non-empty names, got {list(objectives)!r}")
    return frozenset(names)


def parse_weight(value: Any) -> float:
    """A row weight: a finite number > 0 (a numeric string too: CSV cells are text)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    try:
        weight = float(value.strip()) if isinstance(value, str) else float(value) if ok else math.nan
    except (OverflowError, ValueError):
        weight = math.nan
    if not (math.isfinite(weight) and weight > 0):
        raise RowError("weight", f"expected a finite number > 0, got {value!r}")
    return weight


def _row_records(row: Any, preset: Preset, ctx: Context, opts: _Options) -> list[Record]:
    records = preset.convert(row, ctx)
    if row.get("weight") is not None:
        weight = parse_weight(row["weight"])
        records = [replace(r, weight=weight) for r in records]
    if opts.objective is not None:
        for rec in records:
            name = rec.objective
            if isinstance(name, str) and name != opts.objective and name.lower() == opts.objective.lower():
                raise RowError(
                    "objective", f"objective {name!r} differs only in case from the source's objective {opts.objective!r}"
                )
    return records


def _pick_preset(row: Any, opts: _Options) -> Preset:
    if opts.format is not None:
        return opts.format
    preset = detect(row)
    if opts.kind is not None and preset.name == "thumbs":
        return get_preset("trl")  # a forced kind is a trl layout; trl names the feedback column it would ignore
    return preset


def _consume(items: Iterator[Item], name: str, result: LoadResult, ids: IdRegistry, opts: _Options) -> SourceStats:
    stats = SourceStats(name)
    ctx = Context(objectives=opts.objectives, kind=opts.kind, label_values=opts.label_values)
    preset: Preset | None = opts.format
    consumed = mapped_sources(opts.columns)
    seen_keys: set[tuple] = set()
    for loc, row, problem in items:
        if problem is None:
            try:
                if not isinstance(row, Mapping):
                    raise RowError(None, f"expected an object (one row of named columns), got {type(row).__name__}")
                mapped = apply_columns(row, opts.columns)
                if preset is None:
                    preset = _pick_preset(mapped, opts)
                records = _row_records(mapped, preset, ctx, opts)
                records = ids.assign(records, loc, explicit=preset.explicit_ids and mapped.get("id") is not None)
            except RowError as exc:
                problem = Rejection(loc, exc.field, exc.reason, jsonable(row))
            except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
                # a value of a shape no check anticipated: still a located problem, never a crash
                problem = Rejection(loc, None, f"could not read this row ({type(exc).__name__}: {exc})", jsonable(row))
        if problem is not None:
            if opts.on_invalid == "error":
                raise problem.to_error()
            result.rejected.append(problem)
            stats.problems.append(problem)
            stats.rejected += 1
            continue
        keys = tuple(row)
        if keys not in seen_keys:
            seen_keys.add(keys)
            stats.ignored_columns |= set(keys) - preset.columns_read(mapped) - consumed
        stats.records.extend(records)
        stats.accepted += 1
        result.rows_accepted += 1
    if not stats.rows_read:
        problem = Rejection(name, None, "empty: no rows found (expected at least one row)")
        if opts.on_invalid == "error":
            raise problem.to_error()
        result.rejected.append(problem)
        stats.problems.append(problem)
        stats.rejected += 1
    stats.format = preset.name if preset is not None else None
    stats.unrated = ctx.unrated
    return stats


def _finish_source(stats: SourceStats, result: LoadResult, opts: _Options) -> None:
    """Scores -> feedback, ties, the objective filter; then the records join the result."""
    records = stats.records
    policy = opts.scores
    if policy is None and opts.format is None and stats.format is not None:
        policy = ScorePolicy() if get_preset(stats.format).groups_scores else None
    elif policy is None and opts.format is not None and opts.format.groups_scores:
        policy = ScorePolicy()
    tie_rows: set[str] = set()
    if policy is not None:
        records, score_ties, score_stats = scores_to_feedback(records, policy)
        stats.below_gap, stats.alone = score_stats.below_gap, score_stats.alone
        tie_rows |= score_stats.tie_rows
        records = records + score_ties
    ties = [r for r in records if isinstance(r, PairRecord) and r.tie]
    tie_rows |= {r.source for r in ties}
    stats.ties = len(tie_rows)
    if opts.ties == "drop" and ties:
        records = [r for r in records if not (isinstance(r, PairRecord) and r.tie)]
        result.ties.extend(ties)
    if opts.objective is not None:
        kept = [_retag(r, opts.objective) for r in records if _of(r, opts.objective)]
        stats.other_objectives = len(records) - len(kept)
        records = kept
    stats.records = records
    result.records.extend(records)
    result.per_source.append(stats)


def _of(record: Record, objective: str) -> bool:
    if isinstance(record, ScoredRecord):
        return objective in record.scores
    return record.objective in (None, objective)


def _retag(record: Record, objective: str) -> Record:
    if isinstance(record, ScoredRecord) or record.objective is not None:
        return record
    return replace(record, objective=objective)


def record_to_row(record: Record) -> dict[str, Any]:
    """The canonical row for a record (explicit ``id``, texts already rendered); loading the row
    gives back an equal record (``source`` aside)."""
    row: dict[str, Any] = {"id": record.id, "prompt": record.prompt}
    if isinstance(record, ScoredRecord):
        row.update(completion=record.completion, scores=dict(record.scores))
        return row
    if isinstance(record, PairRecord):
        row.update(chosen=record.chosen, rejected=record.rejected)
    else:
        row.update(completion=record.completion, label=record.label)
    row["objective"] = record.objective  # always present: columnar formats need one schema
    return row


def save_jsonl(records: Iterable[Record], path: str | os.PathLike) -> None:
    """Write records as JSON Lines in the canonical layout (see :func:`record_to_row`)."""
    with open(path, "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record_to_row(record), ensure_ascii=False) + "\n")
