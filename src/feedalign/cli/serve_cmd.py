"""``feedalign serve``: collect feedback from people in the browser.

    feedalign serve --db feedback.db --items items.jsonl [--objectives helpful,concise]
    feedalign serve --db feedback.db --model DIR --prompts prompts.jsonl [--round R]
    feedalign serve --db postgresql+psycopg://user@localhost:5432/feedback --items items.jsonl

Binds to 127.0.0.1 by default; any other address needs ``--token`` (or
``FEEDALIGN_SERVE_TOKEN``), which every API request must then carry. Exit code 2 with one
line on bad input.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

EXIT_BAD_INPUT = 2


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve", help="web app to collect thumbs and A/B comparisons per objective",
        description="Serve items (from a JSONL file, or sampled from a model) for people to rate; "
        "answers go to a SQLite file or a PostgreSQL URL.")
    serve.add_argument("--db", required=True, help="SQLite file path (default storage) or a SQLAlchemy URL")
    source = serve.add_mutually_exclusive_group()
    source.add_argument("--items", help='JSONL of {"prompt", "completion"} or {"prompt", "completions": [a, b]}')
    source.add_argument("--model", help="model directory to sample two completions per prompt from")
    serve.add_argument("--prompts", help="prompts for --model (.jsonl of {\"prompt\"} or one per line)")
    serve.add_argument("--objectives", default="overall", help="comma-separated objective names (default overall)")
    serve.add_argument("--round", type=int, default=None, help="round number stored with sampled items")
    serve.add_argument("--max-new-tokens", type=int, default=64)
    serve.add_argument("--temperature", type=float, default=1.0)
    serve.add_argument("--seed", type=int, default=0)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--token", default=None, help="access token (default: $FEEDALIGN_SERVE_TOKEN)")
    serve.add_argument("--threads", type=int, default=8, help="request threads (default 8)")
    serve.set_defaults(func=run_serve)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def run_serve(args: argparse.Namespace) -> int:
    try:
        import flask  # noqa: F401
        import waitress  # noqa: F401

        from feedalign.serve.app import create_app, is_loopback, make_server
        from feedalign.serve.storage import FeedbackStore
    except ImportError as exc:
        return _fail(f"feedalign serve needs {exc.name}: pip install 'feedalign[serve]'")

    token = args.token or os.environ.get("FEEDALIGN_SERVE_TOKEN") or None
    if not is_loopback(args.host) and not token:
        return _fail(f"--host {args.host} is not a loopback address: give --token (or FEEDALIGN_SERVE_TOKEN)")
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    if args.model and not args.prompts:
        return _fail("--model needs --prompts")
    try:
        items = _items(args)
        store = FeedbackStore(args.db)
        added = store.add_items(items) if items else 0
        app = create_app(store, objectives, token=token)
        server = make_server(app, args.host, args.port, token=token, threads=args.threads)
    except (ValueError, OSError) as exc:
        return _fail(str(exc).splitlines()[0])
    except Exception as exc:  # database drivers raise their own types (bad URL, refused connection)
        return _fail(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    counts = store.counts()
    print(f"{counts['items']} items ({added} new), {counts['submissions']} submissions in {store.shown_url}")
    print(f"serving on http://{args.host}:{server.effective_port}/ (Ctrl+C stops)", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        store.close()
    return 0


def _items(args: argparse.Namespace) -> list:
    if args.items:
        from feedalign.serve.validation import read_items

        return read_items(args.items)
    if args.model:
        from feedalign.serve.items import read_prompts, sample_items

        prompts = read_prompts(args.prompts)
        items = sample_items(args.model, prompts, max_new_tokens=args.max_new_tokens,
                             temperature=args.temperature, seed=args.seed, round=args.round)
        if len(items) < len(prompts):
            print(f"{len(prompts) - len(items)} prompts gave only empty samples and are not shown")
        return items
    return []
