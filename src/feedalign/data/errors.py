"""Errors and rejection records for feedback data.

A problem with the input is always located: ``source`` is ``file:line`` (1-based line, JSONL,
JSON and CSV), ``file[row]`` (0-based row index, Parquet, Hugging Face datasets, in-memory rows)
or the bare file name for problems with the whole file. ``field`` names the offending column
when there is one, and ``reason`` says what was expected and what was found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class FeedbackDataError(ValueError):
    """A feedback file or row does not follow an accepted schema.

    The message reads ``<source>: field '<field>': <reason>``, e.g.
    ``data/pairs.jsonl:12: field 'chosen': expected a non-empty string, got int``.
    """

    def __init__(self, source: str, reason: str, field: str | None = None) -> None:
        self.source = source
        self.field = field
        self.reason = reason
        super().__init__(format_problem(source, reason, field))


def format_problem(source: str, reason: str, field: str | None = None) -> str:
    where = f"{source}: field '{field}'" if field else source
    return f"{where}: {reason}"


@dataclass(frozen=True)
class Rejection:
    """One input row (or whole file) that was not turned into records.

    Attributes:
        source: where it came from, ``file.jsonl:12`` or ``file.parquet[3]``.
        field: the offending column, or None for row/file-level problems.
        reason: what was wrong and what was expected.
        raw: the row as read (a dict when it parsed, else the raw text, possibly truncated).
    """

    source: str
    field: str | None
    reason: str
    raw: Any = None

    def message(self) -> str:
        return format_problem(self.source, self.reason, self.field)

    def to_error(self) -> FeedbackDataError:
        return FeedbackDataError(self.source, self.reason, self.field)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "field": self.field, "reason": self.reason, "raw": self.raw}


class RowError(Exception):
    """Raised while converting one row; the reader adds the location. Internal."""

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason
