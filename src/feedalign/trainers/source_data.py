"""A source's examples on their way to the trainer: tokenised within its length limits
(rows that cannot fit are quarantined or fail the run) and, for losses with class weights,
balanced from the label counts."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from feedalign.config.checks import CheckedSource
from feedalign.config.schema import Config, TrainConfig
from feedalign.data.batching import Example
from feedalign.data.tokenize import TokenizeOptions, tokenize_source
from feedalign.data.errors import FeedbackDataError

logger = logging.getLogger("feedalign.train")


def balanced_hparams(item: CheckedSource, examples: Sequence[Example]) -> dict[str, Any]:
    """The source's hyperparameters with class weights from the label counts filled in
    (``losses.unpaired.class_weight_hparams``) where the config sets none; warns when the
    classes are more than 2:1 apart."""
    from feedalign.losses.unpaired import class_weight_hparams

    if item.spec.feedback != "unpaired":
        return dict(item.hparams)
    n_up = sum(1 for ex in examples if ex.label)
    n_down = len(examples) - n_up
    auto = {k: v for k, v in class_weight_hparams(item.spec.name, n_up, n_down).items()
            if k not in item.config.hparams}
    hparams = {**item.hparams, **auto}
    if auto:
        logger.info("source %s: %d desirable / %d undesirable; class weights %s", item.name, n_up, n_down,
                    ", ".join(f"{k}={v:.3g}" for k, v in sorted(auto.items())))
    if n_up and n_down and max(n_up, n_down) > 2 * min(n_up, n_down):
        used = {k: hparams[k] for k in sorted(hparams) if k.endswith("_weight")}
        warnings.warn(f"source '{item.name}': imbalanced classes ({n_up} desirable / {n_down} undesirable); "
                      f"training with {used or 'no class weights'}", stacklevel=2)
    return hparams


def tokenize_options_of(source: Any, train: TrainConfig) -> TokenizeOptions:
    """A source's token budget and chat rendering; unset lengths come from ``train``."""
    def pick(key: str) -> Any:
        value = getattr(source, key)
        return getattr(train, key) if value is None else value

    return TokenizeOptions(max_length=pick("max_length"), max_prompt_length=pick("max_prompt_length"),
                           min_prompt_length=pick("min_prompt_length"), chat_template=source.chat_template)


def tokenize_options(config: Config, index: int) -> TokenizeOptions:
    return tokenize_options_of(config.data[index], config.train)


def tokenize_source_or_quarantine(
    config: Config, name: str, examples: Sequence[Example], tokenizer: Any, options: TokenizeOptions
) -> tuple[list[Example], dict[str, int]]:
    """Tokenise a source. A row that cannot fit (or whose pair becomes identical) fails the
    run with train.on_invalid=error, and is quarantined with its reason otherwise. Returns
    the examples and the counts ``{"truncated", "rejected"}`` (logged and in metrics.jsonl)."""
    import json

    result = tokenize_source(examples, tokenizer, options)
    if result.rejected and config.train.on_invalid == "error":
        ex, reason = result.rejected[0]
        raise FeedbackDataError(ex.where or ex.id, f"{reason} (or set train.on_invalid=quarantine)")
    if result.rejected:
        path = Path(config.train.output_dir) / "quarantine" / f"{name}.tokenize.quarantine.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as fh:
            for ex, reason in result.rejected:
                fh.write(json.dumps({"source": ex.where, "id": ex.id, "field": "tokens", "reason": reason}) + "\n")
        logger.warning("source %s: %d rows cannot be tokenised within the limits, written to %s",
                       name, len(result.rejected), path)
    if not result.examples:
        raise FeedbackDataError(name, f"source '{name}': no row fits max_length={options.max_length}")
    if result.truncated:
        logger.info("source %s: %d of %d rows truncated (max_length=%d, max_prompt_length=%s)", name,
                    result.truncated, len(result.examples), options.max_length, options.max_prompt_length)
    return result.examples, {"truncated": result.truncated, "rejected": len(result.rejected)}
