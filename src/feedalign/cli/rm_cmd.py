"""`feedalign rm train CONFIG` and `feedalign rm score RM_DIR --input ... --output ...`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    rm = subparsers.add_parser("rm", help="train or apply a multi-objective reward model")
    sub = rm.add_subparsers(dest="rm_command", metavar="SUBCOMMAND")
    train = sub.add_parser(
        "train",
        help="train a reward model (one head per objective) from pairs and thumbs",
        description="Train a multi-objective reward model from a YAML config; see "
        "examples/rm_text_task.yaml. Overrides look like train.lr=1e-4.",
    )
    train.add_argument("config", help="YAML config file")
    train.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    train.add_argument("--quiet", action="store_true", help="no progress lines")
    resume = train.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true",
                        help="continue from the newest checkpoint in output_dir/checkpoints (train.save_every)")
    resume.add_argument("--resume-or-start", action="store_true",
                        help="like --resume, but train from scratch when there is no usable checkpoint")
    train.add_argument("--allow-changed-data", action="store_true",
                       help="with --resume: continue even if the data differs from the checkpoint's")
    train.set_defaults(func=_train)
    score = sub.add_parser(
        "score",
        help="add a `scores` dict to every row of a JSONL file of prompt/completion rows",
    )
    score.add_argument("rm_dir", help="directory written by `feedalign rm train`")
    score.add_argument("--input", required=True, help="JSONL rows with 'prompt' and 'completion'")
    score.add_argument("--output", required=True, help="JSONL output (input rows + 'scores')")
    score.add_argument("--raw", action="store_true", help="unnormalised head outputs")
    score.add_argument("--batch-size", type=int, default=32)
    score.add_argument("--max-length", type=int, default=512)
    score.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    score.set_defaults(func=_score)
    rm.set_defaults(func=lambda args: (rm.print_help(), 2)[1])


def _train(args: argparse.Namespace) -> int:
    import logging
    import shlex

    from feedalign.config.errors import ConfigError
    from feedalign.data.errors import FeedbackDataError
    from feedalign.trainers.checkpoint import CheckpointWriteError
    from feedalign.trainers.lock import OutputDirLock
    from feedalign.trainers.reward_model import accuracy_summary, load_rm_config, train_reward_model
    from feedalign.trainers.signals import StopRequest, TrainingInterrupted

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")

    try:
        config = load_rm_config(args.config, args.overrides)
        with OutputDirLock(config.train.output_dir), StopRequest() as stop:
            result = train_reward_model(config, verbose=not args.quiet, resume=args.resume,
                                        resume_or_start=args.resume_or_start,
                                        allow_changed_data=args.allow_changed_data, stop=stop)
    except (ConfigError, FeedbackDataError, CheckpointWriteError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrainingInterrupted as exc:
        again = shlex.join(["feedalign", "rm", "train", args.config, *args.overrides, "--resume"])
        print(f"{exc}; resume with: {again}", file=sys.stderr)
        return exc.exit_code
    print(accuracy_summary(result.metrics))
    print(f"saved reward model to {result.output_dir}")
    return 0


def _read_rows(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({exc.msg})") from None
            for key in ("prompt", "completion"):
                if not isinstance(row, dict) or not isinstance(row.get(key), str):
                    raise ValueError(f"{path}:{lineno}: field '{key}': expected a string")
            rows.append(row)
    return rows


def _check_output(path: Path) -> None:
    """Fail before any model is loaded when ``--output`` cannot be written."""
    parent = path.parent if str(path.parent) else Path(".")
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if path.is_dir():
        raise ValueError(f"--output '{path}' is a directory")
    if not probe.is_dir():
        raise ValueError(f"--output '{path}' cannot be written: '{probe}' is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"--output '{path}' cannot be written (permission denied in '{probe}')")


def _score(args: argparse.Namespace) -> int:
    import torch
    from tqdm.auto import tqdm

    from feedalign.policies.reward_model import load_reward_model

    out = Path(args.output)
    try:
        if not Path(args.rm_dir).is_dir():
            raise ValueError(f"reward model directory '{args.rm_dir}' does not exist")
        rows = _read_rows(Path(args.input))
        _check_output(out)
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, tokenizer = load_reward_model(args.rm_dir, device=device)
    except (OSError, ValueError, ImportError, KeyError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    chunk = max(1, args.batch_size) * 8  # scores are per row: chunking only feeds the progress bar
    parts = []
    for start in tqdm(range(0, len(rows), chunk), desc="rm score", unit="chunk", disable=len(rows) <= chunk):
        part = rows[start:start + chunk]
        parts.append(model.score(tokenizer, [r["prompt"] for r in part], [r["completion"] for r in part],
                                 normalize=not args.raw, batch_size=args.batch_size, max_length=args.max_length))
    scores = torch.cat(parts) if parts else torch.zeros(0, len(model.objectives))
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        for row, values in zip(rows, scores.cpu().tolist()):
            row = {**row, "scores": dict(zip(model.objectives, values))}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"scored {len(rows)} rows with heads {list(model.objectives)} -> {out}")
    return 0
