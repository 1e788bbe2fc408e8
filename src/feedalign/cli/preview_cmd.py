"""``feedalign data preview FILE... --model DIR``: exactly what the model will see, per row.

    feedalign data preview data.jsonl --model MODEL [--rows N] [--json]
        [--chat-template auto|true|false] [--max-length N] [--max-prompt-length N]
        [--min-prompt-length N] [--kind pair|labeled|positive|negative] [--threads N]

With ``--json`` one JSON object per row (``data.preview``): id, kind, prompt_text,
prompt_tokens, truncated, completions [{name, text, tokens}]. Without it, a readable view
with the prompt/completion boundary marked by a bar. Exit code 2 on a bad file or model.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_preview(data_sub) -> None:
    preview = data_sub.add_parser(
        "preview",
        help="show each row exactly as the model will see it (rendered text and tokens)",
        description="Render rows with the model's tokenizer (its chat template for message rows) and the "
        "trainer's truncation; print the text and token ids of every prompt and completion.",
    )
    preview.add_argument("files", nargs="+", metavar="FILE")
    preview.add_argument("--model", required=True, help="model directory, .gguf file or hub id (its tokenizer)")
    preview.add_argument("--rows", type=int, default=5, help="rows to show (default 5; 0 = all)")
    preview.add_argument("--json", action="store_true", help="one JSON object per row")
    preview.add_argument("--chat-template", choices=("auto", "true", "false"), default="auto",
                         help="auto: message rows use the template; true: plain prompts too; false: never")
    preview.add_argument("--max-length", type=int, default=512)
    preview.add_argument("--max-prompt-length", type=int, default=None)
    preview.add_argument("--min-prompt-length", type=int, default=8)
    preview.add_argument("--kind", default=None, choices=("pair", "labeled", "positive", "negative"))
    preview.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    preview.set_defaults(func=run_preview)


def run_preview(args: argparse.Namespace) -> int:
    from feedalign.data.tokenize import TokenizeOptions
    from feedalign.data.errors import FeedbackDataError
    from feedalign.data.loaders import load_many
    from feedalign.data.preview import format_row, preview_rows
    from feedalign.policies.hf import load_tokenizer, set_threads

    set_threads(args.threads)
    chat = {"auto": None, "true": True, "false": False}[args.chat_template]
    try:
        if args.rows < 0 or args.max_length < 2:
            raise ValueError("--rows must be >= 0 and --max-length >= 2")
        options = TokenizeOptions(max_length=args.max_length, max_prompt_length=args.max_prompt_length,
                                  min_prompt_length=args.min_prompt_length, chat_template=chat)
        records = load_many(list(args.files), kind=args.kind).records
        tokenizer = load_tokenizer(args.model)
        for row in preview_rows(records, tokenizer, options, limit=args.rows or None):
            print(json.dumps(row, ensure_ascii=False) if args.json else format_row(row))
    except (OSError, ValueError, FeedbackDataError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return 0
