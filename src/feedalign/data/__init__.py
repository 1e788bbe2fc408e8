"""Feedback data: record types, loaders with validation, discordant pairing, inspection.

Light to import (standard library only at import time; ``datasets``/``pyarrow`` are imported
inside the loaders that need them).
"""

from feedalign.data.discordant import discordant_pairs
from feedalign.data.errors import FeedbackDataError, Rejection
from feedalign.data.fingerprint import fingerprint_records
from feedalign.data.loaders import LoadResult, SourceStats, load_many, load_records, record_to_row, save_jsonl
from feedalign.data.messages import render_messages
from feedalign.data.records import (
    FeedbackKind,
    LabeledRecord,
    PairRecord,
    Record,
    ScoredRecord,
    set_kind,
    stable_id,
)
from feedalign.data.validation import Conflict, find_conflicts, parse_label

__all__ = [
    "Conflict",
    "FeedbackDataError",
    "FeedbackKind",
    "LabeledRecord",
    "LoadResult",
    "SourceStats",
    "PairRecord",
    "Record",
    "Rejection",
    "ScoredRecord",
    "discordant_pairs",
    "find_conflicts",
    "fingerprint_records",
    "load_many",
    "load_records",
    "parse_label",
    "record_to_row",
    "render_messages",
    "save_jsonl",
    "set_kind",
    "stable_id",
]
