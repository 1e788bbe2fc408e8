"""``feedalign data export DB --out FILE.jsonl``: the canonical JSONL of a feedback database.

Pairs and thumbs go to ``FILE.jsonl`` (one row per answer and objective, provenance columns
included; see :mod:`feedalign.data.db_source`), ties to ``FILE.ties.jsonl``. Filters as in a
training config: ``--objective``, ``--round``, ``--annotator``, ``--kind``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any


def register_export(data_sub: Any) -> None:
    export = data_sub.add_parser(
        "export", help="write a feedback database as canonical JSONL",
        description="Read every rating of DB (a SQLite file or a database URL) and write pairs and "
        "thumbs as canonical JSONL (ties to a separate .ties.jsonl file).")
    export.add_argument("db", metavar="DB", help="SQLite file path or URL (sqlite:///x.db, postgresql+psycopg://...)")
    export.add_argument("--out", required=True, help="output .jsonl file")
    export.add_argument("--objective", default=None, help="comma-separated objectives to keep")
    export.add_argument("--round", default=None, help="comma-separated rounds to keep")
    export.add_argument("--annotator", default=None, help="comma-separated annotators to keep")
    export.add_argument("--kind", choices=("pair", "labeled"), default=None)
    export.set_defaults(func=run_export)


def export_url(db: str, args: argparse.Namespace) -> str:
    from urllib.parse import urlencode

    from feedalign.serve.storage import database_url

    url = database_url(db)
    filters = {k: getattr(args, k) for k in ("objective", "round", "annotator", "kind") if getattr(args, k)}
    if not filters:
        return url
    return url + ("&" if "?" in url else "?") + urlencode(filters)


def write_export(rows, ties, out: Path) -> Path:
    """Write rows and ties atomically (temporary files moved into place); returns the ties path."""
    ties_path = out.with_name(out.name.removesuffix(".jsonl") + ".ties.jsonl")
    for path, payload in ((out, [row for _, row in rows]), (ties_path, ties)):
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            for row in payload:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    return ties_path


def run_export(args: argparse.Namespace) -> int:
    from feedalign.data.db_source import read_database
    from feedalign.data.loaders import load_records

    if not args.out.endswith(".jsonl"):
        print(f"error: --out {args.out}: expected a .jsonl file", file=sys.stderr)
        return 2
    if "://" not in args.db and not Path(args.db).is_file():
        print(f"error: {args.db}: no such database file", file=sys.stderr)
        return 2
    try:
        _, result = read_database(export_url(args.db, args))
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        ties_path = write_export(result.rows, result.ties, out)
        loaded = load_records(out) if result.rows else None  # the export must read back as it was written
    except (ValueError, OSError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - driver errors (bad URL, refused connection): one line
        print(f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", file=sys.stderr)
        return 2
    pairs = sum("chosen" in row for _, row in result.rows)
    print(f"{out}: {len(result.rows)} rows ({pairs} pairs, {len(result.rows) - pairs} thumbs); "
          f"{ties_path}: {len(result.ties)} ties")
    if loaded is not None and len(loaded.records) != len(result.rows):
        print(f"error: {out}: wrote {len(result.rows)} rows but read back {len(loaded.records)}", file=sys.stderr)
        return 2
    return 0
