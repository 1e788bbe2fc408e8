"""Train a multi-objective reward model from any mix of per-objective pairs and thumbs.

Every record is routed to the head of its objective: pairs are trained with the registry's
``bt_reward`` loss, thumbs (labeled records) with ``bce_reward`` (docs/ALGORITHMS.md 2.1-2.3).
Each step draws ``batch_size`` records from every (source, kind) group, scores all their
sequences in ONE forward of the shared backbone, and minimises
``sum_g weight_g * mean_g(per-example loss)``.

A seeded held-out split BY PROMPT (no prompt is in both parts) gives the accuracy per
objective: pairs are right when ``r(chosen) > r(rejected)``, thumbs when
``sign(r) == label``. After training every head is normalised (mean/std of its raw scores over
the training completions, or over reference samples such as pi_ref generations).

Config (YAML, see ``examples/rm_text_task.yaml``)::

    model:  {builder: text_task}  or  {path: runs/sft}   (+ seed, dtype, builder_options)
    objectives: [helpful, concise]        # optional; default: as found in the data
    data:
      - {path: pairs.jsonl, objective: helpful}          # objective: tag for untagged rows,
      - {path: thumbs.jsonl, objective: concise}         #   and a filter for tagged ones
    train: {output_dir: runs/rm, lr: 1e-3, max_steps: 300, micro_batch_size: 16, eval_fraction: 0.2,
            normalization: train | reference | none, reference_samples: samples.jsonl}
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from feedalign.config.errors import ConfigError
from feedalign.data.records import LabeledRecord, PairRecord
from feedalign.data.batching import EpochSampler
from feedalign.trainers.reward_model_config import (  # noqa: F401 - public names of this module
    DEVICES,
    NORMALIZATIONS,
    RewardModelConfig,
    RMModelConfig,
    RMSourceConfig,
    RMTrainConfig,
    load_dataclass_yaml,
    load_rm_config,
)

__all__ = [
    "RMModelConfig", "RMSourceConfig", "RMTrainConfig", "RewardModelConfig", "RewardModelResult",
    "accuracy_summary", "load_dataclass_yaml", "load_rm_config", "train_reward_model",
]


# --------------------------------------------------------------------------- data


@dataclass
class _Group:
    """Records of one kind ("pair" | "label") from one source, with their head indices."""

    name: str
    kind: str
    records: list[Any]
    heads: np.ndarray
    weight: float
    hparams: dict[str, Any]


@dataclass
class RewardModelResult:
    model: Any
    tokenizer: Any
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    output_dir: Path


def _route(records: Sequence[Any], tag: str | None, where: str) -> tuple[list[Any], int]:
    """Records of objective ``tag`` (untagged ones take the tag); counts dropped ones."""
    out, dropped = [], 0
    for r in records:
        if not isinstance(r, (PairRecord, LabeledRecord)):
            from feedalign.data.errors import FeedbackDataError

            raise FeedbackDataError(
                r.source or where,
                f"reward-model training takes pairs and thumbs, got a {type(r).__name__} "
                "(set the source's scores: to pairs or labels)",
            )
        if tag is not None and r.objective not in (None, tag):
            dropped += 1
            continue
        out.append(r if r.objective is not None or tag is None else _retag(r, tag))
    return out, dropped


def _retag(record: Any, objective: str) -> Any:
    from dataclasses import replace

    return replace(record, objective=objective)


def _load_sources(config: RewardModelConfig, records: Mapping[str, Sequence[Any]] | None) -> tuple[dict[str, list[Any]], dict[str, int]]:
    from feedalign.data.loaders import load_many
    from feedalign.data.options import load_options

    loaded, dropped = {}, {}
    for i, (name, source) in enumerate(zip(config.source_names, config.data)):
        if records is not None and name in records:
            raw = list(records[name])
        elif source.path is not None:
            paths = [source.path] if isinstance(source.path, str) else list(source.path)
            raw = load_many(paths, **load_options(source)).records
        else:
            raise ConfigError(f"source '{name}' has no path and no in-memory records", key=f"data.{i}.path")
        loaded[name], dropped[name] = _route(raw, source.objective, name)
        if not loaded[name]:
            raise ConfigError(f"source '{name}' has no pairs or thumbs for objective {source.objective!r}", key=f"data.{i}")
    return loaded, dropped


def _objectives(config: RewardModelConfig, loaded: Mapping[str, list[Any]]) -> tuple[str, ...]:
    found = list(dict.fromkeys(r.objective for rs in loaded.values() for r in rs if r.objective is not None))
    objectives = tuple(config.objectives) if config.objectives else tuple(found)
    if not objectives:
        objectives = ("reward",)
    unknown = sorted(set(found) - set(objectives))
    if unknown:
        raise ConfigError(f"records carry objectives {unknown} that are not in {list(objectives)}", key="objectives")
    if len(objectives) > 1 and any(r.objective is None for rs in loaded.values() for r in rs):
        raise ConfigError(
            f"some records name no objective and there are several heads {list(objectives)}; tag the "
            "source with `objective:`", key="data")
    return objectives


def split_by_prompt(records: Sequence[Any], fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Seeded split holding out ``round(fraction * n_prompts)`` whole prompts."""
    prompts = sorted({r.prompt for r in records})
    if fraction <= 0 or len(prompts) < 2:
        return list(records), []
    n_eval = min(len(prompts) - 1, max(1, round(fraction * len(prompts))))
    perm = np.random.default_rng([seed, 0xE7A1]).permutation(len(prompts))
    held = {prompts[i] for i in perm[:n_eval]}
    return [r for r in records if r.prompt not in held], [r for r in records if r.prompt in held]


def _groups(loaded: Mapping[str, list[Any]], config: RewardModelConfig, objectives: tuple[str, ...]) -> list[_Group]:
    groups = []
    for name, source in zip(config.source_names, config.data):
        for kind, cls in (("pair", PairRecord), ("label", LabeledRecord)):
            recs = [r for r in loaded[name] if isinstance(r, cls)]
            if recs:
                heads = np.array([objectives.index(r.objective or objectives[0]) for r in recs])
                groups.append(_Group(f"{name}/{kind}", kind, recs, heads, source.weight, dict(source.hparams)))
    return groups


def _split_groups(groups: list[_Group], fraction: float, seed: int) -> tuple[list[_Group], list[_Group]]:
    everything = [r for g in groups for r in g.records]
    _, held = split_by_prompt(everything, fraction, seed)
    held_prompts = {r.prompt for r in held}
    train, evals = [], []
    for g in groups:
        mask = np.array([r.prompt in held_prompts for r in g.records], dtype=bool)
        for keep, out in ((~mask, train), (mask, evals)):
            if keep.any():
                idx = np.flatnonzero(keep)
                out.append(_Group(g.name, g.kind, [g.records[i] for i in idx], g.heads[idx], g.weight, g.hparams))
    return train, evals


# --------------------------------------------------------------------------- model


def build_reward_model(model_config: RMModelConfig, objectives: Sequence[str]) -> tuple[Any, Any]:
    """``(MultiObjectiveRewardModel, tokenizer)`` from a path or a builder."""
    from feedalign.policies.reward_model import MultiObjectiveRewardModel

    if model_config.path is not None:
        from feedalign.policies.hf import load_tokenizer

        tokenizer = load_tokenizer(model_config.tokenizer or model_config.path)
        model = MultiObjectiveRewardModel.from_pretrained_backbone(model_config.path, objectives, seed=model_config.seed)
        return model, tokenizer
    options = dict(model_config.builder_options)
    if model_config.builder == "text_task":
        from feedalign.envs.text_task import build_tiny_llama, build_tokenizer

        tokenizer = build_tokenizer()
        causal_lm = build_tiny_llama(tokenizer, seed=model_config.seed, **options)
    else:
        from feedalign.multiobjective.margins import import_target

        causal_lm, tokenizer = import_target(str(model_config.builder))(**options)
    return MultiObjectiveRewardModel.from_causal_lm(causal_lm, objectives, seed=model_config.seed), tokenizer


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class _TokenCache:
    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer, self.max_length, self.cache = tokenizer, max_length, {}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

    def batch(self, texts: Sequence[tuple[str, str]], device: torch.device) -> dict[str, torch.Tensor]:
        from feedalign.data.collate import pad_batch, tokenize_example

        rows = []
        for text in texts:
            if text not in self.cache:
                self.cache[text] = tokenize_example(self.tokenizer, text[0], text[1], self.max_length)
            rows.append(self.cache[text])
        batch = pad_batch(rows, self.pad_id)
        return {k: batch[k].to(device) for k in ("input_ids", "attention_mask")}


def _texts(group: _Group, idx: Sequence[int]) -> list[tuple[str, str]]:
    recs = [group.records[i] for i in idx]
    if group.kind == "pair":
        return [(r.prompt, r.chosen) for r in recs] + [(r.prompt, r.rejected) for r in recs]
    return [(r.prompt, r.completion) for r in recs]


def _weighted_mean(losses: torch.Tensor, group: _Group, idx: Sequence[int]) -> torch.Tensor:
    """mean_i(w_i / mean(w) * loss_i) with the records' row weights (docs/data.md, weights)."""
    weights = [group.records[i].weight for i in idx]
    if all(w == 1.0 for w in weights):
        return losses.mean()
    mean = sum(r.weight for r in group.records) / len(group.records)
    w = torch.tensor(weights, dtype=losses.dtype, device=losses.device) / mean
    return (losses * w).mean()


def _group_losses(scores: torch.Tensor, group: _Group, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-example losses, per-example correctness) of ``group[idx]`` given their rows'
    scores ``[rows, m]``: each row's score on its head, through the kind's reward loss."""
    from feedalign.losses import call_loss, default_reward_loss

    heads = torch.as_tensor(group.heads[list(idx)], device=scores.device)
    rows_heads = torch.cat([heads, heads]) if group.kind == "pair" else heads
    rewards = scores.gather(1, rows_heads[:, None]).squeeze(1)
    spec = default_reward_loss(_FEEDBACK[group.kind])
    labels = None
    if group.kind == "label":
        labels = torch.tensor([bool(group.records[i].label) for i in idx], device=scores.device)
    out = call_loss(spec, policy=rewards, labels=labels, hparams=spec.resolve_hparams(group.hparams))
    return out.losses, out.correct


_FEEDBACK = {"pair": "reward_pair", "label": "reward_unpaired"}


# --------------------------------------------------------------------------- loop


def train_reward_model(
    config: RewardModelConfig, *, records: Mapping[str, Sequence[Any]] | None = None, verbose: bool = False,
    resume: bool = False, resume_or_start: bool = False, allow_changed_data: bool = False, stop: Any = None,
) -> RewardModelResult:
    """Train, evaluate, normalise and save a multi-objective reward model.

    Args:
        config: the run (see the module docstring).
        records: in-memory records per source name (overrides that source's ``path``).
        verbose: print a line every ``train.log_every`` steps.
        resume, resume_or_start, allow_changed_data: continue from the newest checkpoint
            (``train.save_every``), as :mod:`feedalign.trainers.rm_resume` describes.
        stop: a ``trainers.signals.StopRequest``; after a signal the step in flight ends,
            a checkpoint is written and ``TrainingInterrupted`` is raised.
    """
    from feedalign.trainers.rm_resume import RMCheckpoints

    cfg = config.train
    loaded, dropped = _load_sources(config, records)
    objectives = _objectives(config, loaded)
    train_groups, eval_groups = _split_groups(_groups(loaded, config, objectives), cfg.eval_fraction, cfg.seed)
    if not train_groups:
        raise ConfigError("no training records left after the held-out split", key="train.eval_fraction")
    device = _device(cfg.device)
    torch.manual_seed(cfg.seed)
    model, tokenizer = build_reward_model(config.model, objectives)
    model.to(device).train()
    tokens = _TokenCache(tokenizer, cfg.max_length)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    samplers = [EpochSampler(len(g.records), seed=cfg.seed * 1009 + i) for i, g in enumerate(train_groups)]
    checkpoints = RMCheckpoints(config, train_groups, eval_groups, resume=resume, resume_or_start=resume_or_start,
                                allow_changed_data=allow_changed_data, stop=stop)
    done, history = checkpoints.restore(model, optimizer, samplers)
    start = time.perf_counter()
    for step in range(done + 1, cfg.steps + 1):
        picks = [s.next_indices(min(cfg.batch_size, len(g.records))) for s, g in zip(samplers, train_groups)]
        texts = [t for g, idx in zip(train_groups, picks) for t in _texts(g, idx)]
        scores = model(**tokens.batch(texts, device))
        total, row, entry = scores.new_zeros(()), 0, {"step": step}
        for g, idx in zip(train_groups, picks):
            n_rows = len(idx) * (2 if g.kind == "pair" else 1)
            losses, _ = _group_losses(scores[row : row + n_rows], g, idx)
            row += n_rows
            total = total + g.weight * _weighted_mean(losses, g, idx)
            entry[f"loss/{g.name}"] = float(losses.detach().mean())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        entry["loss"] = float(total.detach())
        history.append(entry)
        if verbose and (step % cfg.log_every == 0 or step == cfg.steps):
            print(f"rm step {step}/{cfg.steps} loss {entry['loss']:.4f}", flush=True)
        checkpoints.step_done(step, model, optimizer, samplers, history)
    metrics = evaluate_reward_model(model, tokens, eval_groups, objectives, device, cfg.eval_batch_size)
    metrics.update(train_seconds=time.perf_counter() - start, steps=cfg.steps, dropped_records=dropped,
                   n_train={g.name: len(g.records) for g in train_groups},
                   n_eval={g.name: len(g.records) for g in eval_groups}, objectives=list(objectives))
    metrics["normalization"] = _normalize(model, tokenizer, cfg, train_groups)
    out = Path(cfg.output_dir)
    model.save(out, tokenizer)
    from feedalign.evaluation.report import write_json

    write_json(out / "metrics.json", {"metrics": metrics, "history": history})
    return RewardModelResult(model, tokenizer, metrics, history, out)


@torch.no_grad()
def evaluate_reward_model(
    model: Any, tokens: _TokenCache, groups: Sequence[_Group], objectives: Sequence[str], device: torch.device, batch_size: int
) -> dict[str, Any]:
    """Held-out accuracy and loss per objective and kind (NaN-free: objectives without
    held-out records are left out)."""
    model.eval()
    tallies: dict[str, list[float]] = {}
    for g in groups:
        for start in range(0, len(g.records), batch_size):
            idx = list(range(start, min(start + batch_size, len(g.records))))
            scores = model(**tokens.batch(_texts(g, idx), device))
            losses, correct = _group_losses(scores, g, idx)
            for j, i in enumerate(idx):
                obj = objectives[int(g.heads[i])]
                for key in (f"{obj}/{g.kind}", obj):
                    tallies.setdefault(key, [0.0, 0.0, 0])
                    tallies[key][0] += float(correct[j])
                    tallies[key][1] += float(losses[j])
                    tallies[key][2] += 1
    model.train()
    out: dict[str, Any] = {"accuracy": {}, "loss": {}, "count": {}}
    for key, (hits, loss, n) in sorted(tallies.items()):
        out["accuracy"][key], out["loss"][key], out["count"][key] = hits / n, loss / n, n
    return out


def _normalize(model: Any, tokenizer: Any, cfg: RMTrainConfig, groups: Sequence[_Group]) -> dict[str, Any]:
    if cfg.normalization == "none":
        model.set_normalization([0.0] * len(model.objectives), [1.0] * len(model.objectives), "none")
        return {"source": "none"}
    if cfg.normalization == "reference":
        from feedalign.data.loaders import load_records

        recs = load_records(cfg.reference_samples, kind="positive").records
        texts = [(r.prompt, r.completion) for r in recs]
        source = f"reference:{cfg.reference_samples}"
    else:
        texts = list(dict.fromkeys(t for g in groups for t in _texts(g, range(len(g.records)))))
        source = "train"
    if len(texts) > cfg.normalization_samples:
        keep = np.random.default_rng([cfg.seed, 0x4E]).choice(len(texts), cfg.normalization_samples, replace=False)
        texts = [texts[i] for i in sorted(keep)]
    prompts, completions = [t[0] for t in texts], [t[1] for t in texts]
    model.fit_normalization(tokenizer, prompts, completions, source=source,
                            batch_size=cfg.eval_batch_size, max_length=cfg.max_length)
    return {"source": source, "n": len(texts), "mean": model.norm_mean.tolist(), "std": model.norm_std.tolist()}


def accuracy_summary(metrics: Mapping[str, Any]) -> str:
    """One line per objective: held-out accuracy (and count)."""
    lines = []
    for key, acc in metrics.get("accuracy", {}).items():
        n = metrics["count"][key]
        half_width = 1.96 * math.sqrt(max(acc * (1 - acc), 1e-12) / n)
        lines.append(f"{key:<24} accuracy {acc:.3f} ± {half_width:.3f} (n={n})")
    return "\n".join(lines)
