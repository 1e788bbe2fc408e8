"""`feedalign config show [CONFIG] [key.sub=value ...]`: the resolved config, every key with
its default and meaning (from the schema's docstrings)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    config = subparsers.add_parser("config", help="show config keys, defaults and meanings")
    sub = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    show = sub.add_parser(
        "show",
        help="print the resolved config with every key's default and meaning",
        description="Print CONFIG after defaults and overrides are applied, every key commented with its "
        "meaning and default. Without CONFIG: every key with its default.",
    )
    show.add_argument("config", nargs="?", help="YAML config file (default: show the defaults)")
    show.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    show.set_defaults(func=_show)
    config.set_defaults(func=lambda args: (config.print_help(), 2)[1])


def _show(args: argparse.Namespace) -> int:
    from feedalign.config.describe import describe_config
    from feedalign.config.errors import ConfigError
    from feedalign.config.loader import load_config

    if args.config is None and args.overrides:
        print("error: overrides need a CONFIG file", file=sys.stderr)
        return 2
    try:
        config = load_config(args.config, args.overrides) if args.config is not None else None
    except ConfigError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    sys.stdout.write(describe_config(config))
    return 0
