"""`feedalign train` and `feedalign generate`.

    feedalign train CONFIG [key.sub=value ...] [--resume | --resume-or-start] [--allow-changed-data]
                    [--dry-run] [--on-invalid error|quarantine]
    feedalign generate CHECKPOINT_OR_DIR (--prompt TEXT ... | --prompts-file FILE)
                       [--max-new-tokens N] [--temperature T] [--seed S]

Exit codes: 0 success, 2 bad config or data, output_dir in use, nothing to resume, or a
checkpoint that could not be written (one line on stderr), 3 non-finite loss (the batch is
saved to output_dir/nonfinite_batch.json), 130 / 143 stopped by SIGINT / SIGTERM after saving
a checkpoint (the line names it and the command that resumes).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
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
    resume = train.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true",
                        help="continue from the newest complete checkpoint (an error if there is none)")
    resume.add_argument("--resume-or-start", action="store_true",
                        help="like --resume, but train from scratch when there is no usable checkpoint")
    train.add_argument("--allow-changed-data", action="store_true",
                       help="with --resume: continue even if a source's data differs from the checkpoint's")
    train.add_argument("--dry-run", action="store_true",
                       help="check config, data (counts per source) and model, then stop without training")
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
    from tqdm.contrib.logging import logging_redirect_tqdm

    from feedalign.config import ConfigError
    from feedalign.data.errors import FeedbackDataError

    _setup_console(args.quiet)
    overrides = list(args.overrides) + list(args.more_overrides)
    if args.on_invalid is not None:
        overrides.append(f"train.on_invalid={args.on_invalid}")
    if args.allow_changed_data and not (args.resume or args.resume_or_start):
        print("error: --allow-changed-data only applies with --resume or --resume-or-start", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.threads is not None:
        overrides.append(f"train.threads={args.threads}")
    try:
        from feedalign.trainers.checkpoint import CheckpointWriteError
        from feedalign.trainers.loop import NonFiniteLossError, train
        from feedalign.trainers.signals import TerminateAsException, Terminated, TrainingInterrupted

        if args.dry_run:
            return _dry_run(args, overrides)
        with logging_redirect_tqdm(), TerminateAsException():  # log lines above the progress bar
            result = train(Path(args.config), overrides=overrides, resume=args.resume,
                           resume_or_start=args.resume_or_start, allow_changed_data=args.allow_changed_data)
    except (ConfigError, FeedbackDataError, CheckpointWriteError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NonFiniteLossError as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_NONFINITE
    except Terminated as exc:
        print(f"terminated by {exc} outside the training steps (loading or the final save): nothing new was "
              "saved; earlier checkpoints are kept", file=sys.stderr)
        return exc.exit_code
    except TrainingInterrupted as exc:
        again = shlex.join(["feedalign", "train", args.config, *overrides, "--resume"])
        print(f"{exc}; resume with: {again}", file=sys.stderr)
        return exc.exit_code
    from feedalign.trainers.summary import format_summary

    print(format_summary(result, result.source_names))
    for warning in result.health_warnings:
        print(f"health warning: {warning}")
    return 0


def _dry_run(args: argparse.Namespace, overrides: list[str]) -> int:
    from feedalign.trainers.dryrun import dry_run, format_report

    report = dry_run(Path(args.config), overrides=overrides, resume=args.resume or args.resume_or_start)
    print(format_report(report))
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

        tokenizer = load_tokenizer(path)
        base = load_causal_lm(base_of(path))
        if len(tokenizer) > base.get_input_embeddings().weight.shape[0]:
            # The run added tokens (e.g. steering level tokens): grow the base to the run's
            # vocabulary first; the adapter directory holds the grown embedding rows.
            base.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        return PeftModel.from_pretrained(base, str(path)), tokenizer
    from feedalign.multiobjective.weight_adapters import load_saved

    model, tokenizer = load_causal_lm(path), load_tokenizer(path)
    return load_saved(model, tokenizer, path), tokenizer


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
    model, tokenizer = load_policy(config), load_tokenizer(config.model.tokenizer or config.model.path)
    _prepare_steered(config, model, tokenizer)
    ckpt.load_trainable_state(model, ckpt.load_checkpoint(path).weights)
    return model, tokenizer


def _prepare_steered(config: Any, model: Any, tokenizer: Any) -> None:
    """A steered run's level tokens and weight adapters, as the run set them up (the same
    specs, seeds included, as ``check_config`` resolves them)."""
    from feedalign.config.checks import check_loss, check_steer
    from feedalign.trainers.setup import prepare_steer_model, prepare_steer_tokenizer

    specs = []
    for index, source in enumerate(config.data):
        if source.steer is not None:
            loss, hparams = check_loss(source, f"data.{index}")
            specs.append(check_steer(source, loss, hparams, config.train.seed, f"data.{index}"))
            prepare_steer_tokenizer(specs[-1], tokenizer, f"data.{index}.steer")
    prepare_steer_model(specs, model, tokenizer, config)


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
    samples = _generate_with_progress(sample, model, tokenizer, prompts, args, chat=chat)
    for prompt, s in zip(prompts, samples):
        if args.json:
            row = {"prompt": prompt, "rendered_prompt": s.prompt, "completion": s.text, "truncated": s.truncated}
            print(json.dumps(row, ensure_ascii=False))
        else:
            cut = " (cut at --max-new-tokens)" if s.truncated else ""
            print(f"### prompt\n{prompt}\n### completion{cut}\n{s.text}\n")
    return 0


GENERATE_BATCH = 8  # generate()'s batch; each batch is seeded with seed + its first index


def _generate_with_progress(sample: Any, model: Any, tokenizer: Any, prompts: list[str],
                            args: argparse.Namespace, *, chat: bool) -> list[Any]:
    """sample() one batch at a time under a progress bar. Each batch keeps the seed
    sample() itself gives it (seed + index of its first prompt): the same completions."""
    from tqdm.auto import tqdm

    out: list[Any] = []
    starts = range(0, len(prompts), GENERATE_BATCH)
    for start in tqdm(starts, desc="generate", unit="batch", disable=len(starts) <= 1):
        out += sample(model, tokenizer, prompts[start:start + GENERATE_BATCH], max_new_tokens=args.max_new_tokens,
                      temperature=args.temperature, top_p=args.top_p, seed=args.seed + start,
                      batch_size=GENERATE_BATCH, chat=chat)
    return out
