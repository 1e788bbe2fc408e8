"""``feedalign export RUN_DIR/final --merge --out DIR``: a LoRA run as one full model.

Loads the adapter's base model (the absolute path recorded in ``final/``), merges the
adapter into its weights and writes a normal Hugging Face directory (weights, tokenizer,
model card, feedalign_config.yaml) that loads without peft. Exit code 2 on bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    export = subparsers.add_parser(
        "export",
        help="merge a LoRA adapter into its base model and save a full model",
        description="Write base + adapter of a final/ (or any adapter) directory as one model directory.",
    )
    export.add_argument("adapter", metavar="RUN_DIR/final", help="a run directory, its final/, or an adapter dir")
    export.add_argument("--merge", action="store_true", required=True, help="merge the adapter into the base weights")
    export.add_argument("--out", required=True, help="new directory for the merged model")
    export.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    export.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    export.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from feedalign.policies.export import merge_adapter
    from feedalign.policies.hf import set_threads

    set_threads(args.threads)
    source = Path(args.adapter)
    if (source / "final").is_dir():
        source = source / "final"
    try:
        out = merge_adapter(source, args.out, dtype=args.dtype)
    except (OSError, ValueError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(f"merged model written to {out}")
    return 0
