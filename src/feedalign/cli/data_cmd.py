"""``feedalign data inspect FILE...``: counts per feedback kind and objective, and every problem."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="inspect and validate feedback data files")
    data_sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(func=lambda args: _print_help(data))

    inspect = data_sub.add_parser(
        "inspect",
        help="count feedback per kind and objective and list problems",
        description=(
            "Read feedback files (.jsonl, .json, .csv, .parquet, datasets save_to_disk dirs), print "
            "counts per feedback kind and objective, conflicts, and the problems found. "
            "Exit code 1 when any row or file has a problem."
        ),
    )
    inspect.add_argument("files", nargs="+", metavar="FILE", help="feedback files or dataset directories")
    inspect.add_argument(
        "--objectives", default=None, help="comma-separated allowed objective names, e.g. helpful,harmless"
    )
    inspect.add_argument(
        "--on-invalid",
        choices=("error", "quarantine"),
        default="error",
        help="error: report problems only; quarantine: also write rejected rows to <file>.quarantine.jsonl",
    )
    inspect.add_argument(
        "--quarantine-dir", default=None, help="directory for quarantine files (default: next to each file)"
    )
    inspect.add_argument(
        "--max-problems", type=int, default=20, help="how many problems to print (default 20)"
    )
    inspect.add_argument(
        "--kind", default=None, choices=("pair", "labeled", "positive", "negative", "scored")
    )
    inspect.add_argument("--split", default=None, help="split to read from a DatasetDict directory")
    inspect.add_argument(
        "--max-line-bytes", type=int, default=None, help="reject lines longer than this (default 16 MiB)"
    )
    inspect.set_defaults(func=_inspect)

    from feedalign.cli.preview_cmd import add_preview

    add_preview(data_sub)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _inspect(args: argparse.Namespace) -> int:
    from pathlib import Path

    from feedalign.data.inspect import format_report, inspect_sources
    from feedalign.data.readers import DEFAULT_MAX_LINE_BYTES

    if args.max_problems < 0:
        print("error: --max-problems must be >= 0")
        return 2
    if args.quarantine_dir is not None:
        Path(args.quarantine_dir).mkdir(parents=True, exist_ok=True)
    try:
        report = inspect_sources(
            args.files,
            objectives=args.objectives,
            kind=args.kind,
            split=args.split,
            quarantine=args.on_invalid == "quarantine",
            quarantine_path=args.quarantine_dir,
            max_line_bytes=args.max_line_bytes or DEFAULT_MAX_LINE_BYTES,
        )
    except ValueError as exc:  # bad option values (objective names, limits)
        print(f"error: {exc}")
        return 2
    print(format_report(report, max_problems=args.max_problems))
    return 0 if report.ok else 1
