"""``feedalign iterate``: sample the current policy, get feedback, train the next round.

    initial    the initial policy (a model directory, or the quickstart's tiny model SFT-ed
               on the text task) -> OUT/initial/
    round r    K samples per prompt of the current policy (the round's own training
               prompts) -> judge -> OUT/round_<r>/feedback/*.jsonl (pairs, thumbs,
               positives, negatives per objective, with provenance) -> one run of the one
               trainer from the current policy (reference: the previous round's policy, i.e.
               the run's starting point) -> OUT/round_<r>/train/final -> held-out evaluation
    offline    the same prompts sampled from the INITIAL policy, judged alike, cut to the same
               number of feedback items as all rounds together, trained once from the initial
               policy for as many steps as all rounds together -> OUT/offline/
    report     OUT/iterate_report.json and OUT/iterate_plot.png (loop/report.py)

Each finished stage writes ``stage.json`` atomically; a rerun skips finished stages and
redoes an unfinished one from its start. A rerun with a different config is refused
(``OUT/iterate_state.json`` holds the config's fingerprint).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from feedalign.config.errors import ConfigError
from feedalign.loop.config import IterateConfig

STATE_FILE = "iterate_state.json"
STAGE_FILE = "stage.json"


@dataclass
class Loop:
    config: IterateConfig
    out: Path
    log: Callable[[str], None] = print
    task: Any = None
    tokenizer: Any = None
    judge: Any = None
    eval_prompts: list[str] = field(default_factory=list)
    initial_dir: str = ""
    timings: dict[str, float] = field(default_factory=dict)


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def finished_stage(directory: Path) -> dict[str, Any] | None:
    path = directory / STAGE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def check_state(config: IterateConfig, out: Path, restart: bool) -> None:
    path = out / STATE_FILE
    fingerprint = config.fingerprint()
    if path.is_file() and not restart:
        stored = json.loads(path.read_text(encoding="utf-8")).get("fingerprint")
        if stored != fingerprint:
            raise ConfigError(f"{out} holds a run of another config (fingerprint {stored}, this one {fingerprint}); "
                              "use another output directory or --restart")
    out.mkdir(parents=True, exist_ok=True)
    if restart:
        for stage in sorted(out.glob("*/" + STAGE_FILE)):
            stage.unlink()
    write_json(path, {"fingerprint": fingerprint})


# --------------------------------------------------------------------------- pieces


def train_policy(loop: Loop, name: str, init_dir: str, data_path: str, *, steps: int, seed: int,
                 model: Any = None) -> Any:
    """One run of the one trainer (``feedalign.trainers.train``) -> the TrainResult. With
    ``reference: initial`` ``model`` is the LoRA policy and the reference its disabled adapter."""
    from feedalign.trainers import train

    t = loop.config.train
    initial = t.reference == "initial"
    config = {
        "model": {"path": loop.initial_dir if initial else init_dir},
        "reference": {"strategy": "adapter" if initial else "copy"},
        "data": [{"name": name, "loss": t.loss, "path": data_path, "max_length": t.max_length,
                  "hparams": dict(t.hparams)}],
        "train": {"output_dir": str(loop.out / name / "train"), "seed": seed, "lr": t.lr, "max_steps": steps,
                  "micro_batch_size": t.batch_size, "scheduler": "constant",
                  "warmup_steps": min(10, steps // 10), "log_every": 1, "cpu": True,
                  "overwrite_output_dir": True},
    }
    if initial:  # the policy given is already wrapped; model.lora states what it is
        config["model"]["lora"] = dict(t.lora)
    return train(config, tokenizer=loop.tokenizer, model=model if initial else None)


def load_policy(path: str) -> Any:
    from feedalign.policies.hf import load_causal_lm

    return load_causal_lm(path, dtype="float32").eval()


def round_policy(loop: Loop, policy_dir: str) -> Any:
    """The policy a round starts from: the model in ``policy_dir``; with ``reference:
    initial`` the initial model plus the LoRA adapter saved in ``policy_dir`` (a fresh adapter
    when ``policy_dir`` is the initial model)."""
    t = loop.config.train
    if t.reference != "initial":
        return load_policy(policy_dir)
    from feedalign.policies.hf import load_causal_lm

    if policy_dir == loop.initial_dir:
        return load_causal_lm(loop.initial_dir, dtype="float32", lora=dict(t.lora))
    from peft import PeftModel

    return PeftModel.from_pretrained(load_policy(loop.initial_dir), policy_dir, is_trainable=True)


def sample(loop: Loop, model: Any, prompts: list[str], k: int, seed: int) -> tuple[list[tuple[str, str]], dict]:
    """``k`` samples per prompt as (rendered prompt, completion) and rendered -> raw prompts."""
    from feedalign.loop.sampling import render_prompt, sample_completions

    s = loop.config.sampling
    rendered = [render_prompt(loop.tokenizer, p, s.chat_template) for p in prompts]
    groups = sample_completions(model, loop.tokenizer, rendered, k, max_new_tokens=s.max_new_tokens,
                                temperature=s.temperature, seed=seed, batch_size=s.batch_size)
    samples = [(p, c) for p, group in zip(rendered, groups) for c in group]
    return samples, dict(zip(rendered, prompts))


def evaluate(loop: Loop, model: Any) -> dict[str, dict[str, float]]:
    """Mean and standard error of each target metric on the held-out prompts (one sample
    per prompt, the same prompts and sampling seed for every policy)."""
    samples, raw = sample(loop, model, loop.eval_prompts, 1, seed=loop.config.seed + 7)
    prompts = [raw[p] for p, _ in samples]
    completions = [c for _, c in samples]
    if loop.task is not None:
        scores = loop.task.score_many(prompts, completions)
        objectives = loop.config.eval_objectives
    else:
        scores = loop.judge.score([p for p, _ in samples], completions)
        objectives = loop.judge.objectives
    out = {}
    for o in objectives:
        values = np.asarray(scores[o], dtype=np.float64)
        out[o] = {"mean": float(values.mean()), "se": float(values.std(ddof=1) / np.sqrt(len(values)))}
    words = np.array([len(c.split()) for c in completions], dtype=np.float64)
    out["mean_words"] = {"mean": float(words.mean()), "se": float(words.std(ddof=1) / np.sqrt(len(words)))}
    return out


def judge_samples(loop: Loop, samples: list[tuple[str, str]], raw: dict, directory: Path, round_: int,
                  seed: int) -> dict[str, dict[str, Any]]:
    """Score ``samples``, simulate the feedback files and write them under ``directory``."""
    from feedalign.loop.feedback import judged_sets, write_sets

    judged = [(p, c) for p, c in samples if c.strip()]
    scores = loop.judge.score([p for p, _ in judged], [c for _, c in judged])
    table = {pc: {o: float(scores[o][i]) for o in loop.judge.objectives} for i, pc in enumerate(judged)}
    sets = judged_sets(judged, scores, loop.judge.objectives, temperature=loop.config.judge.temperature,
                       seed=seed, tag=directory.parent.name)
    if len(judged) < len(samples):
        loop.log(f"  {len(samples) - len(judged)} of {len(samples)} samples were empty and not judged")
    return write_sets(sets, directory, round_=round_, judge=loop.judge.name, raw_prompts=raw, scores=table)


def training_file(loop: Loop, files: dict[str, dict[str, Any]]) -> tuple[str, int]:
    t = loop.config.train
    key = f"{t.feedback}_{t.objective}"
    if key not in files:
        available = sorted(k for k in files if not k.startswith(("ties_", "neutral_")))
        raise ConfigError(f"the {loop.config.judge.kind} judge gives no {key} feedback; available: {available}",
                          key="train.feedback")
    entry = files[key]
    return entry["path"], entry["records"]
