"""`feedalign train` and `feedalign generate`.

    feedalign train CONFIG [key.sub=value ...] [--resume] [--on-invalid error|quarantine]
    feedalign generate CHECKPOINT_OR_DIR (--prompt TEXT ... | --prompts-file FILE)
                       [--max-new-tokens N] [--temperature T] [--seed S]

Exit codes: 0 success, 2 bad config or data (one line on stderr, nothing trained),
3 non-finite loss (the batch is saved to output_dir/nonfinite_batch.json).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2
EXIT_NONFINITE = 3


def register(subparsers: Any) -> None:
    train = subparsers.add_parser(
        "train",
        help="train a policy from a YAML config",
        description="Train a policy on every data source of CONFIG with its loss. Overrides "
        "look like train.lr=1e-4 or data.0.weight=2 (values are YAML scalars).",
    )
    train.add_argument("config", help="YAML config file")
    train.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides")
    train.add_argument("--set", dest="more_overrides", action="append", default=[], metavar="key.sub=value",
                       help="a config override (repeatable; may follow other options)")
    train.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    train.add_argument("--on-invalid", choices=("error", "quarantine"), default=None,
                       help="what an invalid data row does (default: the config's train.on_invalid)")
    train.add_argument("--quiet", action="store_true", help="only warnings and errors on the console")
    add_threads_option(train)
    train.set_defaults(func=run_train)

    gen = subparsers.add_parser(
        "generate",
        help="sample completions from a trained model",
        description="Sample completions from output_dir/final, a final/ directory, a step-* "
        "checkpoint or any model directory.",
    )
    gen.add_argument("model", metavar="CHECKPOINT_OR_DIR")
    source = gen.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    source.add_argument(
        "--prompts-file", help='a text file with one prompt per line, or a .jsonl file of {"prompt": ...}'
    )
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--json", action="store_true", help="print one JSON object per prompt")
    gen.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                     help="render prompts with the model's chat template (default: on when the tokenizer has one)")
    add_threads_option(gen)
    gen.set_defaults(func=run_generate)


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="CPU threads for torch (default: train.threads, else half the usable cores, 1 to 8)")


def _setup_console(quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def run_train(args: argparse.Namespace) -> int:
    from feedalign.config import ConfigError
    from feedalign.data.errors import FeedbackDataError

    _setup_console(args.quiet)
    overrides = list(args.overrides) + list(args.more_overrides)
    if args.on_invalid is not None:
        overrides.append(f"train.on_invalid={args.on_invalid}")
    if args.threads is not None:
        overrides.append(f"train.threads={args.threads}")
    try:
        from feedalign.trainers.loop import NonFiniteLossError, train

        result = train(Path(args.config), overrides=overrides, resume=args.resume)
    except (ConfigError, FeedbackDataError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NonFiniteLossError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_NONFINITE
    print(f"trained {result.steps} steps; final model in {result.final_dir}")
    for warning in result.health_warnings:
        print(f"health warning: {warning}")
    return 0


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _read_prompts(args: argparse.Namespace) -> list[Any]:
    """Prompt strings, or message lists (a .jsonl ``prompt`` that is a list, or ``messages``)."""
    if args.prompt:
        return list(args.prompt)
    path = Path(args.prompts_file)
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix in (".jsonl", ".ndjson"):
        rows = [json.loads(line) for line in lines]
        return [row["messages"] if "messages" in row else row["prompt"] for row in rows]
    return lines


def load_for_generation(path: str | Path) -> tuple[Any, Any]:
    """(model, tokenizer) from an output dir (uses its ``final``), a ``final``/model
    directory (a LoRA adapter directory loads its base model too) or a ``step-*``
    checkpoint (base model from the checkpoint's config + the saved weights)."""
    from feedalign.policies.hf import load_causal_lm, load_tokenizer

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"'{path}' does not exist")
    if (path / "final").is_dir():
        path = path / "final"
    if (path / "manifest.json").is_file() and (path / "weights.safetensors").is_file():
        return _load_checkpoint_model(path)
    if (path / "adapter_config.json").is_file():
        from peft import PeftModel

        from feedalign.policies.export import base_of

        model = PeftModel.from_pretrained(load_causal_lm(base_of(path)), str(path))
    else:
        model = load_causal_lm(path)
    return model, load_tokenizer(path)


def _load_checkpoint_model(path: Path) -> tuple[Any, Any]:
    import yaml

    from feedalign.config.loader import config_from_dict
    from feedalign.policies.hf import load_tokenizer
    from feedalign.trainers import checkpoint as ckpt
    from feedalign.trainers.setup import load_policy

    problem = ckpt.verify_checkpoint(path)
    if problem is not None:
        raise ValueError(f"checkpoint '{path}' is not usable: {problem}")
    config = config_from_dict(yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")))
    model = load_policy(config)
    ckpt.load_trainable_state(model, ckpt.load_checkpoint(path).weights)
    return model, load_tokenizer(config.model.tokenizer or config.model.path)


def run_generate(args: argparse.Namespace) -> int:
    from feedalign.data.chat import has_chat_template
    from feedalign.policies.generation import sample
    from feedalign.policies.hf import set_threads

    set_threads(args.threads)
    try:
        prompts = _read_prompts(args)
        model, tokenizer = load_for_generation(args.model)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from feedalign.data.chat import render_prompt

    chat = has_chat_template(tokenizer) if args.chat is None else args.chat
    # Message lists are rendered with the template whatever --chat says: they are chats.
    prompts = [render_prompt(tokenizer, p) if isinstance(p, list) else p for p in prompts]
    samples = sample(
        model, tokenizer, prompts, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
        top_p=args.top_p, seed=args.seed, chat=chat,
    )
    for prompt, s in zip(prompts, samples):
        if args.json:
            row = {"prompt": prompt, "rendered_prompt": s.prompt, "completion": s.text, "truncated": s.truncated}
            print(json.dumps(row, ensure_ascii=False))
        else:
            cut = " (cut at --max-new-tokens)" if s.truncated else ""
            print(f"### prompt\n{prompt}\n### completion{cut}\n{s.text}\n")
    return 0
