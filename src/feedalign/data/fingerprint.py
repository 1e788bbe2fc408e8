"""A cheap content fingerprint of accepted records, to tell whether a resumed run reads the
same data as the run that wrote the checkpoint.

The fingerprint covers, in order, every record's kind, id, objective, texts, label / scores,
weight and tie flag; it ignores ``source`` (where the row was read), so moving or renaming a
file does not change it, while editing, adding, removing or reordering a row does.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from feedalign.data.records import LabeledRecord, PairRecord, Record, ScoredRecord


def _parts(record: Record) -> list:
    if isinstance(record, PairRecord):
        return ["pair", record.id, record.objective, record.prompt, record.chosen, record.rejected, record.weight, record.tie]
    if isinstance(record, LabeledRecord):
        return ["labeled", record.id, record.objective, record.prompt, record.completion, record.label, record.weight]
    if isinstance(record, ScoredRecord):
        return ["scored", record.id, None, record.prompt, record.completion, sorted(record.scores.items()), record.weight]
    raise TypeError(f"not a feedback record: {type(record).__name__}")


def fingerprint(records: Iterable[Record]) -> str:
    """``sha256:<hex>`` over the records' content, in order (see the module docstring)."""
    digest = hashlib.sha256()
    count = 0
    for record in records:
        blob = json.dumps(_parts(record), ensure_ascii=False, separators=(",", ":"))
        digest.update(blob.encode("utf-8", errors="surrogatepass"))
        digest.update(b"\n")
        count += 1
    digest.update(f"n={count}".encode())
    return f"sha256:{digest.hexdigest()}"
