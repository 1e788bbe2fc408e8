"""``feedalign train CONFIG --dry-run``: everything a run checks before its first step, then stop.

Validates the config (as ``train`` does), loads and converts every data source (counts per
source, examples that reach ``max_length`` and were truncated to it), loads the tokenizer
and the model, and works out the step count. Nothing is written to ``output_dir`` apart from
what ``check_config`` creates (the directory itself) and quarantine files in quarantine mode.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feedalign.config.schema import Config


@dataclass
class SourceReport:
    name: str
    loss: str
    feedback: str
    train_examples: int
    eval_examples: int
    at_max_length: int  # examples (either side of a pair) cut to max_length
    max_length: int


@dataclass
class DryRunReport:
    sources: list[SourceReport] = field(default_factory=list)
    total_steps: int = 0
    steps_per_epoch: int = 0
    parameters: int = 0
    trainable_parameters: int = 0
    model: str = ""
    seconds: float = 0.0


def _at_max_length(examples: Sequence[Any], max_length: int) -> int:
    def full(tokens: Mapping[str, list[int]] | None) -> bool:
        return tokens is not None and len(tokens["input_ids"]) >= max_length

    return sum(1 for e in examples if full(e.tokens) or full(e.rejected_tokens))


def dry_run(config: Config | Mapping[str, Any] | str | Path, *, overrides: Sequence[str] | None = None,
            resume: bool = False) -> DryRunReport:
    """Check config, data and model of a run without training (errors as ``train`` raises them)."""
    from feedalign.config.checks import check_config
    from feedalign.policies.hf import load_tokenizer
    from feedalign.trainers.loop import _as_config
    from feedalign.trainers.model_checks import check_lora_targets
    from feedalign.trainers.setup import build_sources, load_policy, prepare_steer_model, total_steps
    from feedalign.trainers.state import check_state

    started = time.perf_counter()
    config = _as_config(config, overrides)
    checked = check_config(config, resume=resume)
    for index, item in enumerate(checked):
        check_state(item.spec, item.config, config.train, f"data.{index}")
    tokenizer = load_tokenizer(config.model.tokenizer or config.model.path)
    sources = build_sources(config, checked, tokenizer, None, rank=0, world=1)
    model = load_policy(config)
    check_lora_targets(config, model)
    prepare_steer_model([s.steer for s in sources if s.steer is not None], model, tokenizer, config)
    total, per_epoch = total_steps(config.train, sources, 1)
    report = DryRunReport(total_steps=total, steps_per_epoch=per_epoch, model=str(config.model.path))
    report.parameters = sum(p.numel() for p in model.parameters())
    report.trainable_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
    for source in sources:
        examples = source.train_examples + source.eval_examples
        report.sources.append(SourceReport(
            source.name, source.spec.name, source.feedback, len(source.train_examples), len(source.eval_examples),
            _at_max_length(examples, source.max_length), source.max_length,
        ))
    report.seconds = time.perf_counter() - started
    return report


def format_report(report: DryRunReport) -> str:
    from feedalign.trainers.summary import table

    header = ["source", "loss", "feedback", "train", "eval", "at max_length"]
    rows = [[s.name, s.loss, s.feedback, str(s.train_examples), str(s.eval_examples),
             f"{s.at_max_length} (max_length {s.max_length})"] for s in report.sources]
    return "\n".join([
        table(header, rows),
        f"model {report.model}: {report.parameters:,} parameters, {report.trainable_parameters:,} trainable",
        f"would train {report.total_steps} steps ({report.steps_per_epoch} per epoch of the largest source)",
        f"dry run: config, data and model are valid ({report.seconds:.1f} s); nothing was trained",
    ])
