"""The stages of ``feedalign iterate`` (see :mod:`feedalign.loop.rounds` for the plan) and
:func:`run_iterate`, the library entry point."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from feedalign.loop.config import IterateConfig
from feedalign.loop.rounds import (
    Loop,
    check_state,
    evaluate,
    finished_stage,
    judge_samples,
    load_policy,
    round_policy,
    sample,
    train_policy,
    training_file,
    write_json,
)


def round_prompts(loop: Loop, round_: int) -> list[str]:
    """The round's own training prompts (disjoint seeds per round; the offline baseline uses
    the union of them)."""
    p = loop.config.prompts
    if loop.task is not None:
        return loop.task.prompts(p.per_round, "train", seed=loop.config.seed + 1000 + round_)
    from feedalign.serve.items import read_prompts

    prompts = read_prompts(p.train)
    start = ((round_ - 1) * p.per_round) % len(prompts)
    return [prompts[(start + i) % len(prompts)] for i in range(p.per_round)]


def setup(loop: Loop) -> None:
    import torch

    from feedalign.loop.judges import make_judge

    torch.set_num_threads(1)
    c = loop.config
    if c.prompts.source == "text_task":
        from feedalign.envs.text_task import TextTask

        loop.task = TextTask(seed=c.seed)
        loop.eval_prompts = loop.task.prompts(c.prompts.eval_prompts, "test", seed=c.seed + 3)
    else:
        from feedalign.serve.items import read_prompts

        loop.eval_prompts = read_prompts(c.prompts.eval)[: c.prompts.eval_prompts]
    if c.judge.kind != "human":
        loop.judge = make_judge(c.judge, loop.task)


def stage_initial(loop: Loop) -> dict[str, Any]:
    from feedalign.policies.hf import load_tokenizer

    c, directory = loop.config, loop.out / "initial"
    done = finished_stage(directory)
    if done is None:
        directory.mkdir(parents=True, exist_ok=True)
        model_dir = c.initial.path or _build_sft(loop, directory)
        loop.tokenizer = load_tokenizer(model_dir)
        metrics = evaluate(loop, load_policy(model_dir))
        done = {"model_dir": str(model_dir), "metrics": metrics}
        write_json(directory / "stage.json", done)
    if loop.tokenizer is None:
        loop.tokenizer = load_tokenizer(done["model_dir"])
    loop.initial_dir = done["model_dir"]
    return done


def _build_sft(loop: Loop, directory: Path) -> str:
    """The quickstart's base + SFT stages: a tiny Llama-style model fine-tuned on the text
    task's demonstrations, through the one trainer."""
    from feedalign.quickstart.pipeline import Context, stage_base, stage_sft
    from feedalign.quickstart.settings import QuickstartSettings

    i = loop.config.initial
    settings = QuickstartSettings(seed=loop.config.seed, sft_examples=i.sft_examples, sft_steps=i.sft_steps,
                                  sft_lr=i.sft_lr, model_size=i.model_size, max_length=loop.config.train.max_length,
                                  front=False, plots=False)
    ctx = Context(settings=settings, out=directory, log=loop.log)
    stage_base(ctx)
    stage_sft(ctx)
    return str(ctx.report["reference"]["dir"])


def stage_round(loop: Loop, round_: int, policy_dir: str) -> dict[str, Any]:
    c, directory = loop.config, loop.out / f"round_{round_}"
    done = finished_stage(directory)
    if done is not None:
        return done
    start = time.perf_counter()
    prompts = round_prompts(loop, round_)
    model = round_policy(loop, policy_dir)
    k = c.sampling.samples_per_prompt
    samples, raw = sample(loop, model, prompts, k, seed=c.seed + 100 * round_)
    if c.judge.kind == "human":
        from feedalign.loop.human import collect_round

        files = collect_round(loop, samples, raw, directory / "feedback", round_)
    else:
        files = judge_samples(loop, samples, raw, directory / "feedback", round_, seed=c.seed + round_)
    path, n = training_file(loop, files)
    if n == 0:
        raise RuntimeError(f"round {round_}: the judge gave no {c.train.feedback} feedback on "
                           f"'{c.train.objective}' ({path})")
    result = train_policy(loop, f"round_{round_}", policy_dir, path, steps=c.train.steps, seed=c.seed + round_,
                          model=model)
    metrics = evaluate(loop, result.model)
    reference = loop.initial_dir if c.train.reference == "initial" else policy_dir
    done = {"round": round_, "n_feedback": n, "metrics": metrics, "model_dir": str(result.final_dir),
            "started_from": policy_dir, "reference": reference, "prompts": len(prompts), "samples": len(samples),
            "feedback_files": files, "train_steps": result.steps, "seconds": time.perf_counter() - start}
    write_json(directory / "stage.json", done)
    return done


def stage_offline(loop: Loop, n_feedback: int) -> dict[str, Any]:
    """The same prompts sampled from the initial policy, cut to ``n_feedback`` items of the
    training kind, trained once from the initial policy for all rounds' steps."""
    c, directory = loop.config, loop.out / "offline"
    done = finished_stage(directory)
    if done is not None:
        return done
    start = time.perf_counter()
    prompts = [p for r in range(1, c.rounds + 1) for p in round_prompts(loop, r)]
    model = round_policy(loop, loop.initial_dir)
    samples, raw = sample(loop, model, prompts, c.sampling.samples_per_prompt, seed=c.seed + 99)
    if c.judge.kind == "human":
        raise RuntimeError("the offline baseline needs a scoring judge; set offline_baseline: false for people")
    files = judge_samples(loop, samples, raw, directory / "feedback", 0, seed=c.seed + 99)
    path, available = training_file(loop, files)
    rows = Path(path).read_text(encoding="utf-8").splitlines()
    keep = np.sort(np.random.default_rng(c.seed).permutation(len(rows))[: min(n_feedback, len(rows))])
    matched = directory / "feedback" / "training_matched.jsonl"
    matched.write_text("".join(rows[i] + "\n" for i in keep), encoding="utf-8")
    steps = c.train.steps * c.rounds
    result = train_policy(loop, "offline", loop.initial_dir, str(matched), steps=steps, seed=c.seed, model=model)
    done = {"n_feedback": int(len(keep)), "n_available": available, "metrics": evaluate(loop, result.model),
            "model_dir": str(result.final_dir), "train_steps": result.steps, "feedback_files": files,
            "training_file": str(matched), "seconds": time.perf_counter() - start}
    write_json(directory / "stage.json", done)
    return done


def run_iterate(config: IterateConfig, out: str | Path, *, restart: bool = False,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) every stage; returns the report written to OUT/iterate_report.json."""
    from feedalign.loop.report import build_report, write_outputs

    loop = Loop(config=config, out=Path(out), log=log)
    check_state(config, loop.out, restart)
    start = time.perf_counter()
    setup(loop)
    log("== initial policy")
    initial = stage_initial(loop)
    _log_metrics(log, "initial", initial["metrics"])
    rounds, policy_dir = [], loop.initial_dir
    for r in range(1, config.rounds + 1):
        log(f"== round {r}/{config.rounds}: sample, judge ({config.judge.kind}), train ({config.train.loss})")
        done = stage_round(loop, r, policy_dir)
        _log_metrics(log, f"round {r} ({done['n_feedback']} feedback)", done["metrics"])
        rounds.append(done)
        policy_dir = done["model_dir"]
    offline = None
    if config.offline_baseline:
        log("== offline baseline: the same amount of feedback on samples of the initial policy")
        offline = stage_offline(loop, sum(r["n_feedback"] for r in rounds))
        _log_metrics(log, f"offline ({offline['n_feedback']} feedback)", offline["metrics"])
    report = build_report(loop, initial, rounds, offline, seconds=time.perf_counter() - start)
    write_outputs(loop, report)
    log(f"wrote {loop.out / 'iterate_report.json'}")
    return report


def _log_metrics(log: Callable[[str], None], name: str, metrics: dict[str, dict[str, float]]) -> None:
    log(f"  {name}: " + ", ".join(f"{o} {m['mean']:.3f} ± {m['se']:.3f}" for o, m in metrics.items()))
