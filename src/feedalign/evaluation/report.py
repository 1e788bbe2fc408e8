"""Write evaluation results: JSON (atomically) and Markdown reports with tables and images.

Standard library only. Values from numpy or torch (scalars, arrays, tensors), paths,
dataclasses, tuples and sets are converted to plain JSON types. JSON has no NaN or infinity;
non-finite floats are written as ``null``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["to_jsonable", "write_json", "write_text_atomic", "markdown_table", "write_markdown_report"]


def to_jsonable(obj: Any) -> Any:
    """A copy of ``obj`` made of dict/list/str/int/float/bool/None only."""
    if obj is None or isinstance(obj, (bool, str, int)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return [to_jsonable(v) for v in sorted(obj, key=repr)]
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy scalars/arrays, torch tensors
        return to_jsonable(obj.tolist())
    if hasattr(obj, "item"):
        return to_jsonable(obj.item())
    raise TypeError(f"to_jsonable: cannot write {obj!r} (type {type(obj).__name__}) as JSON")


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file in the same folder and ``os.replace``,
    so readers never see a half-written file. Creates parent folders. The file gets the
    mode a plain ``open`` would give it (0644 under the usual umask 022)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a report is an ordinary file (0644)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> Path:
    """Write ``obj`` (see :func:`to_jsonable`) as JSON, atomically. Returns the path."""
    text = json.dumps(to_jsonable(obj), indent=indent, sort_keys=False, allow_nan=False)
    return write_text_atomic(path, text + "\n")


def _cell(value: Any, float_format: str) -> str:
    if value is None:
        return ""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float):
        text = float_format.format(value)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    float_format: str = "{:.4g}",
) -> str:
    """A GitHub-flavoured Markdown table, one row per dict.

    Args:
        rows: dicts mapping column name to value; missing values and ``None`` give empty cells.
        columns: column order; default: keys in order of first appearance.
        float_format: ``str.format`` pattern for floats.
    """
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    if not columns:
        raise ValueError("markdown_table: no columns (empty rows and no columns given)")
    lines = [
        "| " + " | ".join(_cell(c, float_format) for c in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c), float_format) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def write_markdown_report(
    path: str | os.PathLike,
    title: str,
    sections: Sequence[tuple[str, str | Sequence[Mapping[str, Any]]]],
    images: Sequence[str | os.PathLike] = (),
) -> Path:
    """Write a Markdown report atomically and return its path.

    Args:
        path: the ``.md`` file to write.
        title: top-level heading.
        sections: ``(heading, body)`` pairs; ``body`` is Markdown text or a list of row
            dicts rendered with :func:`markdown_table`.
        images: image files linked at the end, relative to the report's folder.
    """
    path = Path(path)
    parts = [f"# {title}\n"]
    for heading, body in sections:
        text = body if isinstance(body, str) else markdown_table(list(body))
        parts.append(f"## {heading}\n\n{text.rstrip()}\n")
    if images:
        parts.append("## Figures\n")
        for image in images:
            rel = os.path.relpath(Path(image).resolve(), path.parent.resolve())
            parts.append(f"![{Path(image).stem}]({Path(rel).as_posix()})\n")
    return write_text_atomic(path, "\n".join(parts))
