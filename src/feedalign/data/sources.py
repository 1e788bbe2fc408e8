"""Where rows come from: files (plain or compressed), directories of shards, globs, datasets
``save_to_disk`` directories and hub dataset ids.

:func:`open_source` returns ``(name, items)``: ``items`` yields ``(location, row, problem)``
for every row of every file of the source (see :mod:`feedalign.data.readers`); each file is
read under :func:`~feedalign.data.readers.guarded`, so an unreadable file is a located problem
and the next file is still read. Problems that leave no rows to read at all (no such path, an
unsupported file type, a split that does not exist) raise :class:`FeedbackDataError`.

Splits: a directory of shards named like the hub's layout (``data/train-00000-of-00001.parquet``,
``train.jsonl.gz``, ``test/part-0.jsonl``) or a ``DatasetDict`` holds one split per name; the
``train`` split is read when ``split`` is not given, and a source without a ``train`` split
must name one.
"""

from __future__ import annotations

import glob as globlib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from feedalign.data.db_source import is_database_url
from feedalign.data.errors import FeedbackDataError
from feedalign.data.readers import (
    COMPRESSED,
    DEFAULT_MAX_LINE_BYTES,
    Item,
    guarded,
    read_csv,
    read_json,
    read_jsonl,
    read_parquet,
    read_rows,
)

READERS = {
    ".jsonl": read_jsonl,
    ".ndjson": read_jsonl,
    ".json": read_json,
    ".csv": read_csv,
    ".parquet": read_parquet,
    ".pq": read_parquet,
}
FORMATS = (
    ".jsonl, .ndjson, .json, .csv, .parquet, .pq (text formats also as .gz/.bz2/.xz/.zst), a directory "
    "of such files, a glob, a datasets save_to_disk directory or a hub dataset id"
)
SPLIT_NAMES = ("train", "test", "validation", "valid", "dev", "eval", "evaluation")
DEFAULT_SPLIT = "train"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SPLIT_OF = re.compile(r"^([A-Za-z]+)(?:[-_.]|$)")


def reader_for(path: Path):
    """The reader for a file name (``x.jsonl.gz`` -> JSON Lines), or None."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED:
        suffixes = suffixes[:-1]
        if suffixes and suffixes[-1] in (".parquet", ".pq"):
            return None  # Parquet compresses its own pages
    return READERS.get(suffixes[-1]) if suffixes else None


def open_source(
    source: Any, *, split: str | None = None, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
) -> tuple[str, Iterator[Item]]:
    """``(name, iterator of (location, row, problem))`` for any accepted source."""
    if isinstance(source, str) and is_database_url(source):  # sqlite:///feedback.db?objective=...
        from feedalign.data.db_source import open_database

        return open_database(source)
    if isinstance(source, (str, os.PathLike)):
        return _open_path(os.fspath(source), split, max_line_bytes)
    if type(source).__module__.split(".")[0] == "datasets":
        return _open_dataset(source, "dataset", split)
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        return "rows", read_rows(source, "rows")
    raise TypeError(
        f"cannot load feedback from {type(source).__name__}; expected a path, a dataset or a list of dicts"
    )


def _open_path(name: str, split: str | None, max_line_bytes: int) -> tuple[str, Iterator[Item]]:
    path = Path(name)
    if any(ch in name for ch in "*?[") and not path.exists():
        files = sorted(Path(p) for p in globlib.glob(name, recursive=True) if Path(p).is_file())
        if not files:
            raise FeedbackDataError(name, "no files match this pattern")
        return name, _read_files(_pick_split(files, path.parent, split, name), max_line_bytes)
    if not path.exists():
        if _HUB_ID.match(name) and reader_for(path) is None and not name.startswith("."):  # data/x.jsonl is a path
            return _open_dataset(_load_hub(name, split), name, split)
        raise FeedbackDataError(name, "no such file or directory")
    if path.is_dir():
        if _is_saved_dataset(path):
            return _open_dataset(_load_from_disk(path, name), name, split)
        files = sorted(p for p in path.rglob("*") if p.is_file() and reader_for(p) and not _hidden(p, path))
        if not files:
            raise FeedbackDataError(
                name, f"a directory with no data files (expected {FORMATS}) and not a datasets save_to_disk dataset"
            )
        return name, _read_files(_pick_split(files, path, split, name), max_line_bytes)
    reader = reader_for(path)
    if reader is None:
        raise FeedbackDataError(name, f"unsupported file type {''.join(path.suffixes)!r}; expected {FORMATS}")
    return name, guarded(reader(path, name, max_line_bytes), name)


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts) or path.name.endswith(
        ".quarantine.jsonl"
    )


def _read_files(files: Sequence[Path], max_line_bytes: int) -> Iterator[Item]:
    for file in files:
        name = str(file)
        yield from guarded(reader_for(file)(file, name, max_line_bytes), name)


def split_of(file: Path, root: Path) -> str | None:
    """The split a shard belongs to: a known split name as a folder or as the file name's
    first word (``train-00000-of-00002.parquet``, ``test.jsonl.gz``), else None."""
    try:
        parts = file.relative_to(root).parts
    except ValueError:
        parts = (file.name,)
    for part in parts:
        match = _SPLIT_OF.match(part)
        if match and match.group(1).lower() in SPLIT_NAMES:
            return match.group(1).lower()
    return None


def _pick_split(files: Sequence[Path], root: Path, split: str | None, name: str) -> list[Path]:
    by_split: dict[str | None, list[Path]] = {}
    for file in files:
        by_split.setdefault(split_of(file, root), []).append(file)
    named = sorted(s for s in by_split if s is not None)
    if split is None:
        if len(named) <= 1:
            return list(files)
        if DEFAULT_SPLIT in by_split:
            return by_split[DEFAULT_SPLIT]
        raise FeedbackDataError(name, f"several splits and no 'train' split; choose one with split: {', '.join(named)}")
    if split not in by_split:
        raise FeedbackDataError(name, f"no split {split!r}; available: {', '.join(named) or 'none (files have no split names)'}")
    return by_split[split]


def _is_saved_dataset(path: Path) -> bool:
    return any((path / marker).exists() for marker in ("dataset_dict.json", "state.json", "dataset_info.json"))


def _load_from_disk(path: Path, name: str) -> Any:
    import datasets

    try:
        return datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise FeedbackDataError(name, f"a directory that is not a datasets save_to_disk dataset ({exc})") from None


def _load_hub(name: str, split: str | None) -> Any:
    """A hub dataset id through ``datasets.load_dataset`` (offline: from the local cache)."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        raise FeedbackDataError(name, "hub dataset ids need the 'datasets' package") from None
    try:
        return datasets.load_dataset(name, split=split)
    except Exception as exc:  # noqa: BLE001 - connection, cache and config errors all end here
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FeedbackDataError(
            name,
            "not a local path, and loading it as a hub dataset id failed (offline, it must be in the "
            f"local datasets cache): {detail}",
        ) from None


def _open_dataset(dataset: Any, name: str, split: str | None) -> tuple[str, Iterator[Item]]:
    if isinstance(dataset, Mapping):  # a DatasetDict
        splits = list(dataset)
        if split is None:
            if len(splits) == 1:
                split = splits[0]
            elif DEFAULT_SPLIT in dataset:
                split = DEFAULT_SPLIT
            else:
                raise FeedbackDataError(name, f"choose a split with split=; available: {', '.join(splits)}")
        if split not in dataset:
            raise FeedbackDataError(name, f"no split {split!r}; choose one with split=: {', '.join(splits)}")
        name = f"{name}:{split}"
        dataset = dataset[split]
    return name, guarded(read_rows(dataset, name), name)
