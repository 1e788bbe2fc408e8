"""Summaries of feedback files: what kinds of feedback they hold, per objective, and every
problem found (``feedalign data inspect``).

Inspection never stops at the first problem: rows are read in ``collect`` mode (or
``quarantine`` mode, which also writes the quarantine files), and a missing or unsupported
source is reported as a problem instead of aborting the others. :func:`report_json` gives
the per-file summary of ``feedalign data inspect --json``.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from feedalign.data.discordant import discordant_pairs
from feedalign.data.errors import FeedbackDataError, Rejection
from feedalign.data.loaders import LoadResult, SourceStats, load_many, open_source
from feedalign.data.readers import DEFAULT_MAX_LINE_BYTES
from feedalign.data.records import LabeledRecord, PairRecord, Record, ScoredRecord

_NONE = "(none)"


@dataclass
class InspectReport:
    """What ``inspect_sources`` found.

    Attributes:
        result: the load in collect/quarantine mode (records, rejected rows, conflicts).
        source_errors: sources that could not be opened at all (missing, unsupported).
        discordant: per objective, the number of pairs :func:`discordant_pairs` would form.
        exact_duplicates: records whose content repeats an earlier record (kept).
    """

    result: LoadResult
    source_errors: list[Rejection] = field(default_factory=list)
    discordant: dict[str | None, int] = field(default_factory=dict)
    exact_duplicates: int = 0

    @property
    def problems(self) -> list[Rejection]:
        return self.source_errors + self.result.rejected

    @property
    def ok(self) -> bool:
        return not self.problems


def inspect_sources(
    sources: Sequence[Any],
    *,
    objectives: Iterable[str] | str | None = None,
    kind: str | None = None,
    split: str | None = None,
    quarantine: bool = False,
    quarantine_path: str | os.PathLike | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    **options: Any,
) -> InspectReport:
    """Load ``sources`` collecting every problem; ``quarantine=True`` also writes quarantine
    files. ``options`` (format, columns, label_values, scores, ties, objective) go to
    :func:`~feedalign.data.loaders.load_many`."""
    openable, source_errors = [], []
    for src in sources:
        try:
            open_source(src, split=split, max_line_bytes=max_line_bytes)
        except FeedbackDataError as exc:
            source_errors.append(Rejection(exc.source, exc.field, exc.reason))
            continue
        openable.append(src)
    result = load_many(
        openable,
        on_invalid="quarantine" if quarantine else "collect",
        quarantine_path=quarantine_path,
        objectives=objectives,
        kind=kind,
        split=split,
        max_line_bytes=max_line_bytes,
        **options,
    )
    labeled = [r for r in result.records if isinstance(r, LabeledRecord)]
    discordant = Counter(p.objective for p in discordant_pairs(labeled, seed=0))
    return InspectReport(result, source_errors, dict(discordant), _count_duplicates(result.records))


def _content_key(rec: Record) -> tuple:
    if isinstance(rec, PairRecord):
        return ("pair", rec.prompt, rec.chosen, rec.rejected, rec.objective)
    if isinstance(rec, ScoredRecord):
        return ("scored", rec.prompt, rec.completion, tuple(sorted(rec.scores.items())))
    return ("labeled", rec.prompt, rec.completion, rec.label, rec.objective)


def _count_duplicates(records: Sequence[Record]) -> int:
    return len(records) - len({_content_key(r) for r in records})


def objective_table(result: LoadResult) -> dict[str | None, dict[str, int]]:
    """Per objective: counts of pairs, up labels, down labels and scores."""
    table: dict[str | None, dict[str, int]] = {}
    for rec in result.records:
        if isinstance(rec, ScoredRecord):
            keys = [(name, "scored") for name in rec.scores]
        elif isinstance(rec, PairRecord):
            keys = [(rec.objective, "pairs")]
        else:
            keys = [(rec.objective, "up" if rec.label else "down")]
        for objective, column in keys:
            row = table.setdefault(objective, {"pairs": 0, "up": 0, "down": 0, "scored": 0})
            row[column] += 1
    return table


def describe_set(row: dict[str, int]) -> str:
    """The feedback kinds present for one objective, e.g. ``pairs + positive-only``."""
    parts = []
    if row["pairs"]:
        parts.append("pairs")
    if row["up"] and row["down"]:
        parts.append("labeled (up+down)")
    elif row["up"]:
        parts.append("positive-only")
    elif row["down"]:
        parts.append("negative-only")
    if row["scored"]:
        parts.append("scored")
    return " + ".join(parts)


def format_report(report: InspectReport, *, max_problems: int = 20) -> str:
    """A plain-text report: row totals, a table per objective, conflicts and problems."""
    res = report.result
    lines = [f"sources: {', '.join(res.sources + [e.source for e in report.source_errors])}"]
    for stats in res.per_source:
        lines.append(f"  {stats.name}: {_source_line(stats)}")
    lines.append(f"rows: {res.rows_total} read, {res.rows_accepted} accepted, {len(res.rejected)} rejected")
    lines.append(f"records: {len(res.records)}")
    table = objective_table(res)
    if table:
        width = max([16] + [len(str(o)) for o in table])
        header = f"  {'objective':<{width}} {'pairs':>7} {'up':>7} {'down':>7} {'scored':>7} {'discordant':>10}  feedback"
        lines += ["by objective:", header]
        for objective in sorted(table, key=lambda o: (o is not None, o or "")):
            row = table[objective]
            name = _NONE if objective is None else objective
            pairs = report.discordant.get(objective, 0)
            lines.append(
                f"  {name:<{width}} {row['pairs']:>7} {row['up']:>7} {row['down']:>7} {row['scored']:>7} "
                f"{pairs:>10}  {describe_set(row)}"
            )
    if report.exact_duplicates:
        lines.append(f"exact duplicate records (kept): {report.exact_duplicates}")
    if res.conflicts:
        lines.append(f"conflicts (kept, not counted as problems): {len(res.conflicts)}")
        lines += [f"  {c.message()}" for c in res.conflicts[:max_problems]]
    if res.quarantine_files:
        lines.append(f"quarantine files: {', '.join(res.quarantine_files)}")
    problems = report.problems
    if problems:
        shown = problems[:max_problems]
        more = f" (showing the first {len(shown)})" if len(shown) < len(problems) else ""
        lines.append(f"problems: {len(problems)}{more}")
        lines += [f"  {p.message()}" for p in shown]
    else:
        lines.append("problems: none")
    return "\n".join(lines)


def _source_line(stats: SourceStats) -> str:
    parts = [f"format {stats.format or '-'}", f"{stats.rows_read} rows"]
    if stats.ties:
        parts.append(f"{stats.ties} rows with ties (left out of pair losses unless ties: keep)")
    if stats.unrated:
        parts.append(f"{stats.unrated} unrated (N/A) skipped")
    if stats.below_gap:
        parts.append(f"{stats.below_gap} pairs under min_gap skipped")
    if stats.alone:
        parts.append(f"{stats.alone} scored completions with nothing to compare")
    if stats.other_objectives:
        parts.append(f"{stats.other_objectives} records of other objectives left out")
    parts.append(f"ignored columns: {', '.join(sorted(stats.ignored_columns)) or 'none'}")
    return "; ".join(parts)


def count_list(records: Sequence[Record]) -> list[dict[str, Any]]:
    """``[{kind, objective, n}]`` (+ ``up``/``down`` for labeled records), in a stable order."""
    table: dict[tuple[str, str | None], dict[str, Any]] = {}
    for rec in records:
        if isinstance(rec, ScoredRecord):
            keys = [("scored", name) for name in rec.scores]
        elif isinstance(rec, PairRecord):
            keys = [("tie" if rec.tie else "pair", rec.objective)]
        else:
            keys = [("labeled", rec.objective)]
        for key in keys:
            entry = table.setdefault(key, {"kind": key[0], "objective": key[1], "n": 0})
            entry["n"] += 1
            if isinstance(rec, LabeledRecord):
                side = "up" if rec.label else "down"
                entry.setdefault("up", 0)
                entry.setdefault("down", 0)
                entry[side] += 1
    return [table[k] for k in sorted(table, key=lambda k: (k[0], k[1] is not None, k[1] or ""))]


_LINE = re.compile(r":(\d+)(?: \(item \d+\))?$")
_ROW = re.compile(r"\[(\d+)\]$")


def problem_json(problem: Rejection) -> dict[str, Any]:
    """``{line | row, field, message}`` (+ ``source``, the file or shard it is in)."""
    out: dict[str, Any] = {}
    line, row = _LINE.search(problem.source), _ROW.search(problem.source)
    if line:
        out["line"] = int(line.group(1))
        out["source"] = problem.source[: line.start()]
    elif row:
        out["row"] = int(row.group(1))
        out["source"] = problem.source[: row.start()]
    else:
        out["line"] = None
        out["source"] = problem.source
    out.update(field=problem.field, message=problem.reason)
    return out


def report_json(report: InspectReport, *, max_problems: int = 20) -> dict[str, Any]:
    """One object per file (see ``feedalign data inspect --json``); accepted + rejected ==
    rows_read for each."""
    files = []
    for stats in report.result.per_source:
        files.append(
            {
                "path": stats.name,
                "format": stats.format,
                "rows_read": stats.rows_read,
                "accepted": stats.accepted,
                "rejected": stats.rejected,
                "ties": stats.ties,
                "unrated": stats.unrated,
                "ignored_columns": sorted(stats.ignored_columns),
                "counts": count_list(stats.records),
                "problems": [problem_json(p) for p in stats.problems[:max_problems]],
            }
        )
    for error in report.source_errors:
        files.append(
            {
                "path": error.source, "format": None, "rows_read": 0, "accepted": 0, "rejected": 0, "ties": 0,
                "unrated": 0, "ignored_columns": [], "counts": [], "problems": [problem_json(error)],
            }
        )
    conflicts = [c.message() for c in report.result.conflicts[:max_problems]]
    return {"files": files, "conflicts": len(report.result.conflicts), "conflict_examples": conflicts, "ok": report.ok}
