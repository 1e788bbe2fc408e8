"""Raw row readers, one per input format.

Each reader yields ``(location, row, problem)``: ``row`` is a dict of column -> value and
``problem`` is None, or ``row`` is None and ``problem`` is a :class:`Rejection` for a row that
could not even be read (invalid JSON, duplicate keys, deep nesting, lone surrogates, non-UTF-8
bytes, a line over the size limit). Problems with the whole file (empty, unreadable, a JSON
array saved as JSON Lines, a damaged compressed stream) are yielded with the bare file name
as location. Blank lines in JSONL and CSV are skipped and are not rows.

Readers never raise on data: :func:`guarded` turns any error while reading (permissions, a
truncated gzip stream, a damaged Parquet page) into a located problem, so one bad file never
stops the reading of others. ``.gz``, ``.bz2``, ``.xz`` (and ``.zst`` when the ``zstandard``
package is installed) are decompressed on the fly.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from feedalign.data.errors import Rejection
from feedalign.data.jsonsafe import decode_row, raw_decode

Item = tuple[str, "dict[str, Any] | None", "Rejection | None"]

DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024
RAW_PREVIEW_BYTES = 1024  # how much of an unreadable line is kept in the quarantine file
JSON_CELL_FIELDS = ("messages", "labels", "scores")  # CSV cells holding JSON


def open_binary(path: Path):
    """A binary file object, decompressing ``.gz``/``.bz2``/``.xz``/``.zst`` by suffix."""
    suffix = path.suffix.lower()
    if suffix == ".gz":
        import gzip

        return gzip.open(path, "rb")
    if suffix == ".bz2":
        import bz2

        return bz2.open(path, "rb")
    if suffix == ".xz":
        import lzma

        return lzma.open(path, "rb")
    if suffix == ".zst":
        try:
            import zstandard
        except ImportError:
            raise OSError("reading .zst files needs the 'zstandard' package (pip install zstandard)") from None
        return zstandard.open(path, "rb")
    return open(path, "rb")


COMPRESSED = (".gz", ".bz2", ".xz", ".zst")


def read_bytes(path: Path) -> bytes:
    with open_binary(path) as handle:
        return handle.read()


def guarded(items: Iterator[Item], name: str) -> Iterator[Item]:
    """Yield ``items``; an error while reading ends the file with one located problem."""
    try:
        yield from items
    except Exception as exc:  # noqa: BLE001 - any failure of the file is reported, none escapes
        reason = f"could not read the file (rows after this point are lost): {type(exc).__name__}: {exc}"
        yield name, None, Rejection(name, None, reason)


def read_jsonl(path: Path, name: str, max_line_bytes: int) -> Iterator[Item]:
    """JSON Lines: one object per line; location ``name:line`` (1-based)."""
    with open_binary(path) as handle:
        lineno, started = 0, False
        while True:
            chunk = handle.readline(max_line_bytes + 1)
            if not chunk:
                break
            lineno += 1
            loc = f"{name}:{lineno}"
            if len(chunk) > max_line_bytes and not chunk.endswith(b"\n"):
                size = len(chunk) + _skip_rest_of_line(handle)
                reason = f"line is {size} bytes, over the limit of {max_line_bytes} (raise max_line_bytes)"
                yield loc, None, Rejection(loc, None, reason, _preview(chunk))
                continue
            if lineno == 1 and chunk.startswith(b"\xef\xbb\xbf"):
                chunk = chunk[3:]
            if not chunk.strip():
                continue
            if not started and chunk.lstrip().startswith(b"["):
                reason = (
                    "expected JSON Lines (one object per line), found a JSON array; "
                    "save it as .json or write one object per line; no rows read"
                )
                yield name, None, Rejection(loc, None, reason, _preview(chunk))
                return
            started = True
            yield _parse_json_line(chunk.rstrip(b"\r\n"), loc)


def _skip_rest_of_line(handle) -> int:
    skipped = 0
    while True:
        part = handle.readline(1 << 20)
        skipped += len(part)
        if not part or part.endswith(b"\n"):
            return skipped


def _parse_json_line(data: bytes, loc: str) -> Item:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = f"not valid UTF-8: byte 0x{data[exc.start]:02x} at column {exc.start + 1}"
        return loc, None, Rejection(loc, None, reason, _preview(data))
    row, reason = decode_row(text)
    if reason is None:
        return loc, row, None
    if "\r" in text.strip() and reason.startswith("invalid JSON"):
        reason = "lines end with CR only (old Mac line endings); expected LF or CRLF line ends"
    return loc, None, Rejection(loc, None, reason, text[:RAW_PREVIEW_BYTES])


def read_json(path: Path, name: str, max_line_bytes: int) -> Iterator[Item]:
    """A JSON list of objects; location ``name:line (item k)``. A ``.json`` file that does not
    start with ``[`` is read as JSON Lines (one object per line)."""
    data = read_bytes(path)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        reason = f"not valid UTF-8: byte 0x{data[exc.start]:02x} on line {line}; no rows read"
        yield name, None, Rejection(f"{name}:{line}", None, reason, None)
        return
    stripped = text.lstrip()
    if not stripped.startswith("["):
        yield from read_jsonl(path, name, max_line_bytes)
        return
    yield from _iter_json_list(text, name, max_line_bytes)


def _iter_json_list(text: str, name: str, max_line_bytes: int) -> Iterator[Item]:
    pos, count, line, line_pos = _skip_ws(text, text.index("[") + 1), 0, 1, 0
    while pos < len(text) and text[pos] != "]":
        line += text.count("\n", line_pos, pos)
        line_pos = pos
        loc = f"{name}:{line} (item {count})"
        try:
            row, end, problem = raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            reason = f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}; later items not read"
            yield loc, None, Rejection(loc, None, reason, text[pos : pos + RAW_PREVIEW_BYTES])
            return
        if problem is not None and end == pos:  # the item could not be decoded at all
            yield loc, None, Rejection(loc, None, f"{problem}; later items not read", text[pos : pos + RAW_PREVIEW_BYTES])
            return
        if problem is not None:
            yield loc, None, Rejection(loc, None, problem, text[pos : pos + RAW_PREVIEW_BYTES])
        elif end - pos > max_line_bytes // 4 and len(text[pos:end].encode("utf-8")) > max_line_bytes:
            reason = f"item is over the limit of {max_line_bytes} bytes (raise max_line_bytes)"
            yield loc, None, Rejection(loc, None, reason, text[pos : pos + RAW_PREVIEW_BYTES])
        else:
            yield loc, row, None
        count += 1
        pos = _skip_ws(text, end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
        elif pos >= len(text) or text[pos] != "]":
            loc = f"{name}:{line + text.count(chr(10), line_pos, pos)}"
            yield (
                loc,
                None,
                Rejection(
                    loc, None, "invalid JSON: expected ',' or ']' after a list item; later items not read"
                ),
            )
            return


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def read_csv(path: Path, name: str, max_line_bytes: int) -> Iterator[Item]:
    """CSV with a header row; location ``name:line`` (1-based physical line where the record
    starts). Empty cells are missing values; ``messages``/``labels``/``scores`` cells hold JSON;
    a ``score`` cell is parsed as a number."""
    text = read_bytes(path).decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    old_limit = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # we apply max_line_bytes ourselves
    try:
        yield from _iter_csv(csv.reader(io.StringIO(text, newline="")), name, max_line_bytes)
    finally:
        csv.field_size_limit(old_limit)


def _iter_csv(reader, name: str, max_line_bytes: int) -> Iterator[Item]:
    header: list[str] | None = None
    last_line = 0
    while True:
        start = last_line + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            loc = f"{name}:{reader.line_num}"
            yield loc, None, Rejection(loc, None, f"malformed CSV: {exc}; later rows not read")
            return
        last_line = reader.line_num
        loc = f"{name}:{start}"
        if not cells or (len(cells) == 1 and not cells[0].strip()):
            # a blank line; a row of empty cells ",," is a row (and is rejected later)
            continue
        if any(_has_surrogates(c) for c in cells):
            yield loc, None, Rejection(loc, None, "not valid UTF-8", [_clean(c) for c in cells])
            continue
        if header is None:
            header = [c.strip() for c in cells]
            if any(not c for c in header) or len(set(header)) != len(header):
                yield (
                    loc,
                    None,
                    Rejection(loc, None, f"header must name every column once, got {header}; no rows read"),
                )
                return
            continue
        yield _csv_row(cells, header, loc, max_line_bytes)


def _csv_row(cells: list[str], header: list[str], loc: str, max_line_bytes: int) -> Item:
    if len(cells) != len(header):
        reason = f"row has {len(cells)} cells, the header has {len(header)} columns"
        return loc, None, Rejection(loc, None, reason, cells)
    size = sum(len(c.encode("utf-8")) for c in cells)
    if size > max_line_bytes:
        reason = f"row is {size} bytes, over the limit of {max_line_bytes} (raise max_line_bytes)"
        return loc, None, Rejection(loc, None, reason, [c[:RAW_PREVIEW_BYTES] for c in cells])
    row: dict[str, Any] = {}
    for column, cell in zip(header, cells, strict=True):
        row[column] = None if cell == "" else cell
    for column in JSON_CELL_FIELDS:
        if row.get(column) is not None:
            value, problem = decode_row(row[column])
            if problem is not None:
                reason = f"expected JSON in this CSV cell, got {problem}"
                return loc, None, Rejection(loc, column, reason, dict(zip(header, cells, strict=True)))
            row[column] = value
    if row.get("score") is not None:
        try:
            row["score"] = float(row["score"])
        except ValueError:
            pass  # left as a string; validation reports it with the expected form
    return loc, row, None


def _has_surrogates(cell: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in cell)


def _clean(cell: str) -> str:
    return cell.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="backslashreplace")


def _preview(data: bytes) -> str:
    return data[:RAW_PREVIEW_BYTES].decode("utf-8", errors="backslashreplace")


def read_parquet(path: Path, name: str, max_line_bytes: int) -> Iterator[Item]:
    """Parquet; location ``name[row]`` (0-based row index). A damaged row group is one problem
    (its rows are not read) and the next row groups are still read."""
    import pyarrow.parquet as pq

    try:
        handle = pq.ParquetFile(path)
        groups = handle.metadata.num_row_groups
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a corrupt file
        yield name, None, Rejection(name, None, f"not a readable Parquet file: {exc}")
        return
    index = 0
    for group in range(groups):
        size = handle.metadata.row_group(group).num_rows
        try:
            rows = handle.read_row_group(group).to_pylist()
        except Exception as exc:  # noqa: BLE001
            loc = f"{name}[{index}]"
            reason = f"row group {group} (rows {index}-{index + size - 1}) is damaged and was not read: {exc}"
            yield loc, None, Rejection(loc, None, reason)
            index += size
            continue
        for row in rows:
            yield f"{name}[{index}]", row, None
            index += 1


def read_rows(rows: Any, name: str) -> Iterator[Item]:
    """A ``datasets.Dataset`` or a sequence of mappings; location ``name[row]`` (0-based)."""
    for index, row in enumerate(rows):
        yield f"{name}[{index}]", row, None


def jsonable(value: Any, _depth: int = 0) -> Any:
    """A JSON-safe copy of a raw row for the quarantine file (non-finite floats as strings;
    nesting past 100 levels replaced by a marker)."""
    if _depth > 100:
        return "<nested deeper than 100 levels>"
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, _depth + 1) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)
