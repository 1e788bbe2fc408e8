"""Load feedback records from JSONL, JSON, CSV, Parquet and Hugging Face ``datasets``.

Sources: a path ending in ``.jsonl``/``.ndjson``, ``.json`` (a list of objects, or one object
per line), ``.csv`` (header row), ``.parquet``/``.pq``, a directory written by
``datasets.Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, an in-memory
``datasets.Dataset`` / ``DatasetDict`` (choose a split with ``split=``), or a list of dicts.

Row layouts (the usual column names, unchanged; other columns are ignored):

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
    L is a bool, 0/1, or (any case) "true"/"false", "1"/"0", "up"/"down", "yes"/"no",
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
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feedalign.data.db_source import is_database_url
from feedalign.data.errors import FeedbackDataError, Rejection, RowError
from feedalign.data.readers import (
    DEFAULT_MAX_LINE_BYTES,
    Item,
    jsonable,
    read_csv,
    read_json,
    read_jsonl,
    read_parquet,
    read_rows,
)
from feedalign.data.records import FeedbackKind, PairRecord, Record, ScoredRecord
from feedalign.data.validation import Conflict, IdRegistry, find_conflicts, normalize_kind, row_to_records

ON_INVALID = ("error", "quarantine", "collect")
_READERS = {
    ".jsonl": read_jsonl,
    ".ndjson": read_jsonl,
    ".json": read_json,
    ".csv": read_csv,
    ".parquet": read_parquet,
    ".pq": read_parquet,
}
_FORMATS = ".jsonl, .ndjson, .json, .csv, .parquet, .pq or a datasets save_to_disk directory"


@dataclass
class LoadResult:
    """Records and rejected rows of one load.

    Attributes:
        records: the accepted records, in input order.
        rejected: every row (or file) that gave no records, with location and reason.
        sources: the source names, as used in locations.
        rows_accepted: rows that gave records (a ``labels`` row gives one per objective).
        conflicts: contradictory feedback found among ``records`` (kept, not removed).
        quarantine_files: files written in ``on_invalid="quarantine"`` mode.
    """

    records: list[Record] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    rows_accepted: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    quarantine_files: list[str] = field(default_factory=list)

    @property
    def rows_total(self) -> int:
        """Rows examined: accepted + rejected (a file-level problem counts as one)."""
        return self.rows_accepted + len(self.rejected)

    def counts(self) -> dict[str, dict[str | None, int]]:
        """Records per kind (``pair``, ``positive``, ``negative``, ``scored``) and objective.

        Labeled records count as ``positive`` (up) or ``negative`` (down); scored records
        count once under each objective they carry a score for.
        """
        out: dict[str, dict[str | None, int]] = {
            k.value: {} for k in FeedbackKind if k != FeedbackKind.LABELED
        }
        for rec in self.records:
            names = list(rec.scores) if isinstance(rec, ScoredRecord) else [rec.objective]
            per_objective = out[rec.kind.value]
            for name in names:
                per_objective[name] = per_objective.get(name, 0) + 1
        return {kind: table for kind, table in out.items() if table}


def load_records(
    source: Any,
    *,
    on_invalid: str = "error",
    quarantine_path: str | os.PathLike | None = None,
    objectives: Iterable[str] | str | None = None,
    kind: str | FeedbackKind | None = None,
    split: str | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> LoadResult:
    """Load and validate one source of feedback.

    Args:
        source: a file path, a ``save_to_disk`` directory, a ``datasets.Dataset`` /
            ``DatasetDict`` or a list of dicts (see the module docstring for layouts).
        on_invalid: ``"error"`` (raise at the first problem), ``"quarantine"`` (skip bad rows,
            write them to the quarantine file) or ``"collect"`` (skip and only return them).
        quarantine_path: where quarantine mode writes (see the module docstring).
        objectives: the allowed objective names (a list, or a comma-separated string); None
            accepts any name. Records without an objective are always accepted.
        kind: force a layout (``pair``, ``labeled``, ``positive``, ``negative``, ``scored``);
            None detects it per row.
        split: the split to read from a ``DatasetDict`` with several splits.
        max_line_bytes: rows (lines) larger than this are rejected.

    Raises:
        FeedbackDataError: in ``"error"`` mode on the first bad row; in every mode for a
            missing or unsupported source.
    """
    return load_many(
        [source],
        on_invalid=on_invalid,
        quarantine_path=quarantine_path,
        objectives=objectives,
        kind=kind,
        split=split,
        max_line_bytes=max_line_bytes,
    )


def load_many(
    sources: Sequence[Any],
    *,
    on_invalid: str = "error",
    quarantine_path: str | os.PathLike | None = None,
    objectives: Iterable[str] | str | None = None,
    kind: str | FeedbackKind | None = None,
    split: str | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> LoadResult:
    """Load several sources into one result; ids must be unique across all of them.

    Arguments as in :func:`load_records`.
    """
    if on_invalid not in ON_INVALID:
        raise ValueError(f"on_invalid must be one of {', '.join(ON_INVALID)}, got {on_invalid!r}")
    if max_line_bytes < 1:
        raise ValueError(f"max_line_bytes must be positive, got {max_line_bytes}")
    allowed = normalize_objectives(objectives)
    kind_name = normalize_kind(kind)
    if isinstance(sources, (str, os.PathLike)) or not isinstance(sources, Sequence):
        sources = [sources]
    ids = IdRegistry()
    result = LoadResult()
    per_source: list[tuple[Any, str, list[Rejection]]] = []
    for src in sources:
        name, items = open_source(src, split=split, max_line_bytes=max_line_bytes)
        result.sources.append(name)
        first = len(result.rejected)
        _consume(items, name, result, ids, kind_name, allowed, on_invalid)
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


def _consume(items: Iterator[Item], name: str, result: LoadResult, ids, kind, objectives, on_invalid) -> None:
    empty = True
    for loc, row, problem in items:
        empty = False
        if problem is None:
            try:
                records = row_to_records(row, kind=kind, objectives=objectives)
                records = ids.assign(records, loc, explicit=row.get("id") is not None)
            except RowError as exc:
                problem = Rejection(loc, exc.field, exc.reason, jsonable(row))
        if problem is not None:
            if on_invalid == "error":
                raise problem.to_error()
            result.rejected.append(problem)
            continue
        result.records.extend(records)
        result.rows_accepted += 1
    if empty:
        problem = Rejection(name, None, "empty: no rows found (expected at least one row)")
        if on_invalid == "error":
            raise problem.to_error()
        result.rejected.append(problem)


def open_source(source: Any, *, split: str | None = None, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES):
    """``(name, iterator of (location, row, problem))`` for any accepted source."""
    if isinstance(source, str) and is_database_url(source):  # sqlite:///feedback.db?objective=...
        from feedalign.data.db_source import open_database

        return open_database(source)
    if isinstance(source, (str, os.PathLike)):
        path, name = Path(source), os.fspath(source)
        if not path.exists():
            raise FeedbackDataError(name, "no such file or directory")
        if path.is_dir():
            return _open_dataset(_load_from_disk(path, name), name, split)
        reader = _READERS.get(path.suffix.lower())
        if reader is None:
            raise FeedbackDataError(name, f"unsupported file type {path.suffix!r}; expected {_FORMATS}")
        return name, reader(path, name, max_line_bytes)
    if type(source).__module__.split(".")[0] == "datasets":
        return _open_dataset(source, "dataset", split)
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        return "rows", read_rows(source, "rows")
    raise TypeError(
        f"cannot load feedback from {type(source).__name__}; expected a path, a dataset or a list of dicts"
    )


def _load_from_disk(path: Path, name: str) -> Any:
    import datasets

    try:
        return datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise FeedbackDataError(
            name, f"a directory that is not a datasets save_to_disk dataset ({exc})"
        ) from None


def _open_dataset(dataset: Any, name: str, split: str | None):
    if isinstance(dataset, Mapping):  # a DatasetDict
        splits = list(dataset)
        if split is None and len(splits) == 1:
            split = splits[0]
        if split not in dataset:
            raise FeedbackDataError(name, f"choose a split with split=; available: {', '.join(splits)}")
        name = f"{name}:{split}"
        dataset = dataset[split]
    return name, read_rows(dataset, name)


def quarantine_target(source: Any, name: str, quarantine_path: str | os.PathLike | None) -> Path:
    """Where quarantine mode writes the rejected rows of ``source`` (see the module docstring)."""
    if quarantine_path is None:
        if not isinstance(source, (str, os.PathLike)):
            raise ValueError(f"{name}: pass quarantine_path for an in-memory source")
        return Path(f"{os.fspath(source).rstrip('/')}.quarantine.jsonl")
    target = Path(quarantine_path)
    if target.is_dir():
        base = Path(name.split(":")[0].rstrip("/")).name
        return target / f"{base}.quarantine.jsonl"
    return target


def write_quarantine(per_source, quarantine_path) -> list[str]:
    """Write each source's rejections to its quarantine file; returns the files written."""
    grouped: dict[Path, list[Rejection]] = {}
    for source, name, rejected in per_source:
        grouped.setdefault(quarantine_target(source, name, quarantine_path), []).extend(rejected)
    for target, rejected in grouped.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "w", encoding="utf-8", errors="backslashreplace") as handle:
            for rej in rejected:
                handle.write(json.dumps(jsonable(rej.to_json()), ensure_ascii=False) + "\n")
    return [str(t) for t in grouped]


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
