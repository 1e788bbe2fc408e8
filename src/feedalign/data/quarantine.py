"""Quarantine files: every rejected row, with its location and reason, as one JSON line
``{"source", "field", "reason", "raw"}`` (see :mod:`feedalign.data.loaders` for where they go)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from feedalign.data.errors import Rejection
from feedalign.data.readers import jsonable


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
