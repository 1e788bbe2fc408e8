"""``feedalign iterate CONFIG [key.sub=value ...] [--out DIR] [--restart]``: rounds of
sampling the current policy, feedback from a judge, and training (feedalign.loop).

Exit codes: 0 done, 2 bad config or data (one line on stderr)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any


def register(subparsers: Any) -> None:
    it = subparsers.add_parser(
        "iterate", help="on-policy rounds: sample, judge, train again (with a report)",
        description="Run the rounds of CONFIG (see examples/iterate/config.yaml); a rerun resumes "
        "after the last finished stage. Writes OUT/iterate_report.json and OUT/iterate_plot.png.")
    it.add_argument("config", help="YAML config")
    it.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    it.add_argument("--out", default=None, help="output directory (default: the config's out, else iterate_out)")
    it.add_argument("--restart", action="store_true", help="redo every stage instead of resuming")
    it.add_argument("--quiet", action="store_true", help="only warnings and errors from the trainer")
    it.set_defaults(func=run_iterate_cmd)


def run_iterate_cmd(args: argparse.Namespace) -> int:
    from feedalign.config.errors import ConfigError
    from feedalign.data.errors import FeedbackDataError
    from feedalign.loop.config import load_iterate_config

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load_iterate_config(args.config, args.overrides)
        from feedalign.loop.iterate import run_iterate

        report = run_iterate(config, args.out or config.out or "iterate_out", restart=args.restart)
    except (ConfigError, FeedbackDataError, ValueError, RuntimeError, OSError) as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    winner = report.get("winner")
    if winner:
        print("on-policy vs offline: " + ", ".join(f"{o}: {w}" for o, w in winner.items()))
    return 0
