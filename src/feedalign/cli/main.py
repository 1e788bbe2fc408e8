"""`feedalign` command line: each subcommand lives in its own module under feedalign.cli and
exposes ``register(subparsers)``; heavy imports happen inside the command handlers."""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that add subcommands, in help order. A module that is missing is skipped so a
# partial install still gives a working CLI for what is there.
COMMAND_MODULES = (
    "feedalign.cli.train_cmd",  # train, generate
    "feedalign.cli.data_cmd",  # data inspect
    "feedalign.cli.quickstart_cmd",  # quickstart
    "feedalign.cli.bench_cmd",  # bench exact
    "feedalign.cli.rm_cmd",  # rm train, rm score
    "feedalign.cli.front_cmd",  # front
    "feedalign.cli.export_cmd",  # export
)


def build_parser() -> argparse.ArgumentParser:
    from feedalign import __version__

    parser = argparse.ArgumentParser(
        prog="feedalign",
        description="Learn from pairs, thumbs, positive-only, negative-only and multi-objective feedback.",
    )
    parser.add_argument("--version", action="version", version=f"feedalign {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
