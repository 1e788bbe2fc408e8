"""Data-source configuration (one entry of ``data:``) and MODPO margin sources; part of
:mod:`feedalign.config.schema`, which re-exports every name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from feedalign.config.errors import check_choice as _choice, require as _require

PAIRINGS = ("discordant",)
RECORD_KINDS = ("pair", "labeled", "positive", "negative")


@dataclass(frozen=True)
class MarginsConfig:
    """Margin rewards of the other objectives for MODPO (state ``margins``).

    ``kind`` selects a margin source; ``callable`` imports ``target`` ("module:function"),
    a function ``(prompts, completions) -> Tensor [B, m-1]``. ``options`` go to the source.

    Attributes:
        kind: the margin source; callable imports ``target``.
        target: "package.module:function" returning margins [B, m-1] for (prompts, completions).
        options: keyword arguments passed to the margin source.
    """

    kind: str = "callable"
    target: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind == "callable":
            ok = isinstance(self.target, str) and self.target.count(":") == 1
            detail = f"must look like 'package.module:function', got {self.target!r}"
            _require(ok, "target", detail)


def check_lengths(cfg: Any) -> None:
    """``max_length`` >= 2, ``max_prompt_length`` >= 1 and below it, ``min_prompt_length`` >= 0."""
    if cfg.max_length is not None:
        _require(cfg.max_length >= 2, "max_length", f"must be >= 2, got {cfg.max_length}")
    if cfg.max_prompt_length is not None:
        _require(cfg.max_prompt_length >= 1, "max_prompt_length", f"must be >= 1, got {cfg.max_prompt_length}")
        if cfg.max_length is not None:
            ok = cfg.max_prompt_length < cfg.max_length
            _require(ok, "max_prompt_length", f"must be < max_length ({cfg.max_length}), got {cfg.max_prompt_length}")
    if cfg.min_prompt_length is not None:
        _require(cfg.min_prompt_length >= 0, "min_prompt_length", f"must be >= 0, got {cfg.min_prompt_length}")


@dataclass(frozen=True)
class DataSourceConfig:
    """One data source: records trained with one loss and one weight.

    ``path`` is a file / dataset dir (or a list of them) for
    :func:`feedalign.data.loaders.load_records`; it may be None when the records are passed
    to ``train(..., records={name: ...})``. ``objective`` keeps only records of that
    objective (records without one are kept and assigned to it). ``pairing: discordant``
    turns labeled records into pairs (one up-vote and one down-vote for the same prompt) for
    pair losses. ``kind`` forces the row layout for the loader (e.g. ``positive`` for a file
    of demonstrations without labels).

    ``kl_samples`` (a file / dataset dir, or a list of them; prompt/completion rows, labels
    ignored) holds samples from the REFERENCE policy for losses with an optional ``kl``
    input (PMPO's KL(pi_ref || pi_theta)): each micro-step draws ``kl_batch_size`` of them
    (default: ``train.micro_batch_size``) and passes kl = mean(logp_ref - logp_theta) over
    them. Without it such a loss estimates the KL on the batch's own samples, which is only
    right when those were drawn from the reference (ALGORITHMS.md §9).

    ``steer`` (a mapping: ``objectives`` in weight order, optional ``grid``, ``seed``
    (default ``train.seed``), ``render`` text|tokens, ``min_weight``, ``placement``, ``draws``,
    ``mode`` modpo|scalarize, ``concentration``, ``adapter_rank``) trains one steerable
    model: every example gets its own weight vector w (seeded by its id), its prompt is
    prefixed with w and its loss uses that w (``weight = w_k``, ``margin_weights = w_{-k}``;
    ALGORITHMS.md §10). Only for losses taking per-example ``weight`` and ``margin_weights``;
    with ``mode: scalarize`` any loss, one source per objective (docs/multiobjective.md).

    ``format`` (a preset: trl, thumbs, hh-rlhf, ultrafeedback, pku-saferlhf, helpsteer2, arena,
    argilla, openwebui; default: recognised from the columns), ``columns`` / ``label_values``
    (a mapping for other exports), ``split``, ``scores`` (what scored rows become; default
    pairs) and ``ties`` (drop | keep) go to the loader; see docs/data.md.

    Attributes:
        loss: the registered loss this source trains with (dpo, kto, bco, pmpo, modpo, ...).
        path: data file or dataset directory, or a list of them; null for in-memory records.
        name: the source's name in metrics and checkpoints; null: the loss name.
        weight: weight of this source's mean loss in the total loss (>= 0).
        objective: keep only records of this objective (records without one join it).
        hparams: the loss's hyperparameters (e.g. beta); see docs/ALGORITHMS.md for each loss.
        pairing: discordant turns thumbs into pairs for pair losses; null: none.
        kind: force the row layout: pair, labeled, positive or negative; null: detect per row.
        max_length: maximum tokens of prompt + completion; null: train.max_length.
        max_prompt_length: cap on prompt tokens (cut from the left); null: train.max_prompt_length.
        min_prompt_length: fewest prompt tokens a row may keep; null: train.min_prompt_length.
        chat_template: render plain-string prompts as one user turn of the tokenizer's chat template; null: only message lists are.
        margins: margin rewards of the other objectives (MODPO); null: none.
        kl_samples: file(s) of reference-policy samples for a loss's optional kl input.
        kl_batch_size: kl_samples drawn per micro-step; null: train.micro_batch_size.
        steer: train one steerable model: objectives, grid, seed, render, min_weight, placement, draws, mode,
            concentration, adapter_rank.
        format: the row layout preset (trl, thumbs, hh-rlhf, ultrafeedback, pku-saferlhf, ...); null: detect.
        columns: map the preset's field names to this file's columns, e.g. {prompt: question}.
        label_values: which raw values mean up and down, e.g. {up: [thumbs_up, 1], down: [-1]}.
        split: the split of a dataset directory or hub dataset to read (e.g. train).
        scores: what scored rows become (pairs or labels, with options); null: pairs.
        ties: drop (default) or keep equally judged pairs (for a tie-aware loss such as dpo_rk).
    """

    loss: str
    path: str | tuple[str, ...] | None = None
    name: str | None = None
    weight: float = 1.0
    objective: str | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    pairing: str | None = None
    kind: str | None = None
    max_length: int | None = None
    max_prompt_length: int | None = None
    min_prompt_length: int | None = None
    chat_template: bool | None = None
    margins: MarginsConfig | None = None
    kl_samples: str | tuple[str, ...] | None = None
    kl_batch_size: int | None = None
    steer: dict[str, Any] | None = None
    format: str | None = None
    columns: dict[str, str] | None = None
    label_values: dict[str, Any] | None = None
    split: str | None = None
    scores: Any = None
    ties: str = "drop"

    def __post_init__(self) -> None:
        _require(bool(self.loss), "loss", "must name a registered loss")
        from feedalign.data.options import source_option_errors

        for key, detail in source_option_errors(self):
            _require(False, key, detail)
        if self.steer is not None:
            detail = "needs `objectives` (the weight order, e.g. [helpful, concise])"
            _require(bool(self.steer.get("objectives")), "steer", detail)
        if self.kl_samples is not None:
            ok = bool(self.kl_samples) and all(bool(p) for p in self.kl_sample_paths)
            _require(ok, "kl_samples", f"must be a path or a list of paths, got {self.kl_samples!r}")
        if self.kl_batch_size is not None:
            size = self.kl_batch_size
            _require(size >= 1, "kl_batch_size", f"must be >= 1, got {size}")
            _require(self.kl_samples is not None, "kl_batch_size", "is set but kl_samples is not")
        _require(self.weight >= 0, "weight", f"must be >= 0, got {self.weight}")
        check_lengths(self)
        ok = self.chat_template is None or isinstance(self.chat_template, bool)
        _require(ok, "chat_template", f"must be true, false or null, got {self.chat_template!r}")
        if self.pairing is not None:
            _choice(self.pairing, PAIRINGS, "pairing")
        if self.kind is not None:
            _choice(self.kind, RECORD_KINDS, "kind")
        if self.name is not None:
            ok = bool(self.name) and "/" not in self.name and not self.name.startswith(".")
            _require(ok, "name", f"must be a plain name without '/', got {self.name!r}")

    @property
    def paths(self) -> tuple[str, ...]:
        if self.path is None:
            return ()
        return (self.path,) if isinstance(self.path, str) else tuple(self.path)

    @property
    def kl_sample_paths(self) -> tuple[str, ...]:
        if self.kl_samples is None:
            return ()
        return (self.kl_samples,) if isinstance(self.kl_samples, str) else tuple(self.kl_samples)
