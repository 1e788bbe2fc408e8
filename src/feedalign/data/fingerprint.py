"""Content fingerprints of feedback data: did the data change between two runs?

The fingerprint of a sequence of records is the sha256 over the canonical JSON (sorted keys,
no whitespace, UTF-8) of each record, in the given order, each followed by a newline. So an
edited row, a removed or added row and a reordering all change it; the file a record came
from (its path, its line number) does not, so moving a file keeps it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

# Where a record came from, not what it says: left out of the fingerprint.
LOCATION_FIELDS = frozenset({"source", "where"})


def _as_mapping(record: Any) -> Mapping[str, Any]:
    if isinstance(record, Mapping):
        return record
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    raise TypeError(f"cannot fingerprint a {type(record).__name__}; expected a record dataclass or a mapping")


def canonical_json(record: Any, *, exclude: Iterable[str] = LOCATION_FIELDS) -> str:
    """The canonical JSON text of one record (fields in ``exclude`` left out)."""
    skip = set(exclude)
    content = {k: v for k, v in _as_mapping(record).items() if k not in skip}
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def fingerprint_records(records: Iterable[Any], *, exclude: Iterable[str] = LOCATION_FIELDS) -> str:
    """``sha256:<hex>`` over every record's canonical JSON, in order."""
    skip = frozenset(exclude)
    digest = hashlib.sha256()
    count = 0
    for record in records:
        digest.update(canonical_json(record, exclude=skip).encode("utf-8", "surrogatepass"))
        digest.update(b"\n")
        count += 1
    digest.update(f"count={count}".encode())
    return f"sha256:{digest.hexdigest()}"
