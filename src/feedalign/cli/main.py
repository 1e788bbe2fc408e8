"""`feedalign` command line: each subcommand lives in its own module under feedalign.cli and
exposes ``register(subparsers)``; heavy imports happen inside the command handlers."""

from __future__ import annotations

import argparse
import importlib
import re
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
    "feedalign.cli.config_cmd",  # config show
    "feedalign.cli.serve_cmd",  # serve
    "feedalign.cli.iterate_cmd",  # iterate
    "feedalign.cli.export_cmd",  # export
)


def build_parser() -> argparse.ArgumentParser:
    from feedalign import __version__

    parser = argparse.ArgumentParser(
        prog="feedalign",
        description="Learn from pairs, thumbs, positive-only, negative-only and multi-objective feedback.",
    )
    parser.add_argument("--version", action="version", version=f"feedalign {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks (accepted anywhere on the line)")
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
    """Run a command. Every failure is one line on stderr and exit 2 (``--debug``, anywhere
    on the command line, shows the traceback instead)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    _take_late_overrides(parser, args, extra)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted (nothing saved)", file=sys.stderr)
        return 130
    except Exception as exc:  # the last resort: anything a command did not turn into a message
        if debug:
            raise
        print(f"error: {describe_error(exc)} (run with --debug for the traceback)", file=sys.stderr)
        return 2


_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")


def _take_late_overrides(parser: argparse.ArgumentParser, args: argparse.Namespace, extra: list[str]) -> None:
    """``key.sub=value`` after an option (``train CFG --resume train.lr=1e-4``) is an override
    like one before it; anything else argparse did not recognise is the usual usage error."""
    late = [item for item in extra if _OVERRIDE.match(item)]
    unknown = [item for item in extra if not _OVERRIDE.match(item)]
    if late and isinstance(getattr(args, "overrides", None), list):
        args.overrides.extend(late)
    else:
        unknown = extra
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")


def describe_error(exc: BaseException) -> str:
    """One line: the exception's message, prefixed by its type unless the message says it."""
    text = " ".join(str(exc).split()) or repr(exc)
    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}" + (f": '{exc.filename}'" if exc.filename else "")
    kind = type(exc).__name__
    return text if kind in ("ConfigError", "FeedbackDataError") else f"{kind}: {text}"


if __name__ == "__main__":
    sys.exit(main())
