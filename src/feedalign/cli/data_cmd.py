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
            "Read feedback files (.jsonl, .json, .csv, .parquet, also .gz/.zst, shard directories, globs, "
            "datasets save_to_disk dirs, hub dataset ids), print the format preset used, counts per feedback "
            "kind and objective, ties, ignored columns, conflicts, and the problems found. "
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
    inspect.add_argument("--split", default=None, help="split to read (default: train when there are several)")
    inspect.add_argument("--format", default=None, help="format preset (default: recognised from the columns)")
    inspect.add_argument(
        "--columns", default=None, help="column mapping, e.g. prompt=question,completion=answer,label=feedback"
    )
    inspect.add_argument(
        "--label-values", default=None, help="label values, e.g. 'up=thumbs_up,1;down=thumbs_down,-1'"
    )
    inspect.add_argument("--scores", default=None, choices=("pairs", "labels", "scores"), help="what scores become")
    inspect.add_argument("--score-pairs", default=None, choices=("all", "best_vs_worst"), help="pairs from scores")
    inspect.add_argument("--min-gap", type=float, default=None, help="smallest score gap that makes a pair")
    inspect.add_argument("--threshold", type=float, default=None, help="score threshold for labels (--scores labels)")
    inspect.add_argument("--ties", default="drop", choices=("drop", "keep"), help="keep tie records (default: drop)")
    inspect.add_argument("--objective", default=None, help="keep only this objective (as a source's objective:)")
    inspect.add_argument("--json", action="store_true", help="print one JSON object with a summary per file")
    inspect.add_argument(
        "--max-line-bytes", type=int, default=None, help="reject lines longer than this (default 16 MiB)"
    )
    inspect.set_defaults(func=_inspect)

    from feedalign.cli.export_data import register_export

    register_export(data_sub)
    from feedalign.cli.preview_cmd import add_preview

    add_preview(data_sub)


def _print_help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _scalar(text: str):
    text = text.strip()
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_columns(text: str | None) -> dict[str, str] | None:
    """``prompt=question,completion=answer`` -> ``{"prompt": "question", ...}``."""
    if text is None:
        return None
    out = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"--columns: expected canonical=column items separated by commas, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def parse_label_values(text: str | None) -> dict[str, list] | None:
    """``up=thumbs_up,1;down=thumbs_down,-1`` -> ``{"up": ["thumbs_up", 1], "down": [...]}``."""
    if text is None:
        return None
    out = {}
    for part in text.split(";"):
        key, sep, values = part.partition("=")
        if not sep or key.strip() not in ("up", "down"):
            raise ValueError(f"--label-values: expected 'up=a,b;down=c,d', got {part!r}")
        out[key.strip()] = [_scalar(v) for v in values.split(",") if v.strip()]
    return out


def _score_policy(args: argparse.Namespace) -> dict | None:
    given = {"to": args.scores, "pairs": args.score_pairs, "min_gap": args.min_gap, "threshold": args.threshold}
    given = {k: v for k, v in given.items() if v is not None}
    return given or None


def _inspect(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from feedalign.data.inspect import format_report, inspect_sources, report_json
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
            format=args.format,
            columns=parse_columns(args.columns),
            label_values=parse_label_values(args.label_values),
            scores=_score_policy(args),
            ties=args.ties,
            objective=args.objective,
        )
    except (ValueError, TypeError) as exc:  # bad option values (objective names, limits, presets)
        print(f"error: {exc}")
        return 2
    if args.json:
        print(json.dumps(report_json(report, max_problems=args.max_problems)))
    else:
        print(format_report(report, max_problems=args.max_problems))
    return 0 if report.ok else 1
