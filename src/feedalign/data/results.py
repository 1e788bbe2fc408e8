"""What a load returns: the records, every rejected row, and a summary per source."""

from __future__ import annotations

from dataclasses import dataclass, field

from feedalign.data.conflicts import Conflict
from feedalign.data.errors import Rejection
from feedalign.data.records import FeedbackKind, PairRecord, Record, ScoredRecord


@dataclass
class SourceStats:
    """What one source gave: rows read = accepted + rejected (a problem with the whole file
    counts as one rejected row); ``ties`` counts rows whose feedback was a tie; ``unrated``
    ratings that were not given ("N/A"); ``other_objectives`` records left out by the
    source's ``objective`` filter; ``below_gap``/``alone`` scored comparisons skipped."""

    name: str
    format: str | None = None
    accepted: int = 0
    rejected: int = 0
    ties: int = 0
    unrated: int = 0
    below_gap: int = 0
    alone: int = 0
    other_objectives: int = 0
    ignored_columns: set[str] = field(default_factory=set)
    records: list[Record] = field(default_factory=list, repr=False)
    problems: list[Rejection] = field(default_factory=list, repr=False)

    @property
    def rows_read(self) -> int:
        return self.accepted + self.rejected

    @property
    def fingerprint(self) -> str:
        """The content fingerprint of this source's accepted records (resume checks)."""
        from feedalign.data.fingerprint import fingerprint_records

        return fingerprint_records(self.records)


@dataclass
class LoadResult:
    """Records and rejected rows of one load.

    Attributes:
        records: the accepted records, in input order (tie records only with ``ties="keep"``).
        rejected: every row (or file) that gave no records, with location and reason.
        sources: the source names, as used in locations.
        rows_accepted: rows that gave records (a ``labels`` row gives one per objective).
        conflicts: contradictory feedback found among ``records`` (kept, not removed).
        quarantine_files: files written in ``on_invalid="quarantine"`` mode.
        per_source: a :class:`SourceStats` per source.
        ties: tie records left out of ``records`` (``ties="drop"``).
    """

    records: list[Record] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    rows_accepted: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    quarantine_files: list[str] = field(default_factory=list)
    per_source: list[SourceStats] = field(default_factory=list)
    ties: list[PairRecord] = field(default_factory=list)

    def fingerprints(self) -> dict[str, str]:
        """``{source name: fingerprint of its accepted records}``."""
        return {stats.name: stats.fingerprint for stats in self.per_source}

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
