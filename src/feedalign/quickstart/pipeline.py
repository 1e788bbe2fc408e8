"""The offline quickstart as a list of stages, each a function of one shared :class:`Context`.

    base      tokenizer + tiny Llama-style model, built locally and saved to DIR/base
    sft       supervised fine-tuning on task demonstrations -> the reference policy
    feedback  sample the reference on training prompts, simulate every kind of feedback,
              write DIR/feedback/*.jsonl and load it back
    align     one training run per method, each from the reference, through the one trainer
    evaluate  sample every policy on held-out prompts, score with the ground truth
    front     steer between the two objectives and measure the front (>= 5 weights)
    front3    (``objectives=3`` only) the same over helpful, concise and polite (front_many.py)
    report    DIR/report.json, DIR/report.md, DIR/plots/*.png

More stages plug in with :func:`default_stages` + ``run_quickstart(stages=...)``; a stage
reads what earlier stages left in the context and writes its part of ``ctx.report``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feedalign.quickstart.settings import (
    FEEDBACK_SETS,
    OBJECTIVES,
    POLITE_FEEDBACK_SETS,
    MethodSpec,
    QuickstartSettings,
)


@dataclass
class Context:
    """What the stages share. ``models`` holds in-memory policies by name (``reference`` and
    each method); ``samples`` their held-out evaluation samples."""

    settings: QuickstartSettings
    out: Path
    log: Callable[[str], None] = print
    task: Any = None
    tokenizer: Any = None
    models: dict[str, Any] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    feedback_paths: dict[str, Path] = field(default_factory=dict)
    feedback_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    eval_prompts: list[str] = field(default_factory=list)
    samples: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    run: Callable[[Context], None]


# --------------------------------------------------------------------------- training


def train_run(ctx: Context, name: str, model_path: Path, source: dict[str, Any] | list[dict[str, Any]], *,
              lr: float, steps: int) -> Any:
    """One run of the trainer (``DIR/runs/<name>``): metrics.jsonl and final/ land there. A
    list of sources (each with its own ``name``) trains them together, one micro-batch of each
    per step."""
    from feedalign.trainers import train

    s = ctx.settings
    sources = source if isinstance(source, list) else [{"name": name, **source}]
    config = {
        "model": {"path": str(model_path)},
        "data": [{"max_length": s.max_length, **src} for src in sources],
        "train": {
            "output_dir": str(ctx.path("runs", name)), "seed": s.seed, "lr": lr, "max_steps": steps,
            "micro_batch_size": s.batch_size, "scheduler": "constant", "warmup_steps": min(10, steps // 10),
            "log_every": 1, "cpu": True, "overwrite_output_dir": True,
        },
    }
    start = time.perf_counter()
    result = train(config, tokenizer=ctx.tokenizer)
    seconds = time.perf_counter() - start
    ctx.runs[name] = {"dir": result.output_dir, "final": result.final_dir, "steps": result.steps,
                      "seconds": seconds, "metrics": result.metrics}
    return result


# --------------------------------------------------------------------------- stages


def stage_base(ctx: Context) -> None:
    import torch

    from feedalign.envs.text_task import TextTask, build_tiny_llama, build_tokenizer

    s = ctx.settings
    torch.set_num_threads(s.threads)
    ctx.task = TextTask(seed=s.seed)
    ctx.tokenizer = build_tokenizer()
    model = build_tiny_llama(ctx.tokenizer, seed=s.seed, size=s.model_size, max_positions=s.max_length)
    base = ctx.path("base")
    model.save_pretrained(str(base))
    ctx.tokenizer.save_pretrained(str(base))
    n_params = sum(p.numel() for p in model.parameters())
    ctx.report["base"] = {"dir": str(base), "parameters": n_params, "vocab_size": len(ctx.tokenizer),
                          "size": s.model_size}
    ctx.log(f"  tiny Llama-style model: {n_params:,} parameters, vocabulary {len(ctx.tokenizer)} -> {base}")


def stage_sft(ctx: Context) -> None:
    from feedalign.data import save_jsonl

    s = ctx.settings
    records = ctx.task.sft_records(s.sft_examples, seed=s.seed)
    path = ctx.path("feedback", "sft_demonstrations.jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_jsonl(records, path)
    ctx.feedback_paths["sft_demonstrations"] = path
    ctx.feedback_counts["sft_demonstrations"] = {"up": len(records), "down": 0}
    source = {"loss": "sft", "path": str(path), "hparams": {"length_normalize": True}}
    result = train_run(ctx, "sft", ctx.path("base"), source, lr=s.sft_lr, steps=s.sft_steps)
    ctx.models["reference"] = result.model.eval()
    ctx.report["reference"] = {"dir": str(result.final_dir), "loss": "sft", "examples": len(records),
                               "steps": result.steps, "lr": s.sft_lr,
                               "training_seconds": ctx.runs["sft"]["seconds"]}


def stage_feedback(ctx: Context) -> None:
    from feedalign.quickstart.feedback import (
        sample_pool,
        simulate_feedback,
        write_and_reload,
    )

    s = ctx.settings
    prompts = ctx.task.prompts(s.pool_prompts, "train", seed=s.seed + 1)
    pool = sample_pool(ctx.models["reference"], ctx.tokenizer, ctx.task, prompts, s.pool_samples,
                       max_new_tokens=s.max_new_tokens, temperature=s.temperature, seed=s.seed + 2,
                       batch_size=s.generate_batch_size)
    sets = simulate_feedback(pool, ctx.task.score, seed=s.seed, pair_temperature=s.pair_temperature,
                             thumb_temperature=s.thumb_temperature)
    if s.objectives == 3:
        from feedalign.envs.text_task import TextTask
        from feedalign.quickstart.feedback import simulate_polite_feedback

        sets.update(simulate_polite_feedback(pool, TextTask(seed=s.seed, polite=True).score, seed=s.seed,
                                             thumb_temperature=s.thumb_temperature))
    paths, counts = write_and_reload(sets, ctx.path("feedback"))
    ctx.feedback_paths.update(paths)
    ctx.feedback_counts.update(counts)
    descriptions = {**FEEDBACK_SETS, **POLITE_FEEDBACK_SETS}
    ctx.report["feedback"] = {
        name: {"path": str(ctx.feedback_paths[name]), "description": descriptions[name],
               "counts": ctx.feedback_counts[name]}
        for name in descriptions if name in ctx.feedback_paths
    }
    ctx.report["feedback_pool"] = {
        "prompts": len(prompts), "samples_per_prompt": s.pool_samples, "temperature": s.temperature,
        "judged_samples": len(pool.judged()), "pair_temperature": s.pair_temperature,
        "thumb_temperature": s.thumb_temperature,
        "mean_scores": {o: float(pool.scores[o].mean()) for o in OBJECTIVES},
    }
    for name, c in counts.items():
        ctx.log(f"  {ctx.feedback_paths[name]}: " + ", ".join(f"{k} {v}" for k, v in c.items()))


def _method_source(ctx: Context, spec: MethodSpec) -> dict[str, Any]:
    paths = [str(ctx.feedback_paths[name]) for name in spec.feedback]
    return {"loss": spec.loss, "path": paths[0] if len(paths) == 1 else paths, "hparams": dict(spec.hparams)}


def stage_align(ctx: Context) -> None:
    specs = ctx.settings.method_specs()
    for i, spec in enumerate(specs, start=1):
        ctx.log(f"  [{i}/{len(specs)}] {spec.name}: {spec.summary}; target {spec.target_name}")
        result = train_run(ctx, spec.name, Path(ctx.report["reference"]["dir"]), _method_source(ctx, spec),
                           lr=spec.lr, steps=spec.steps)
        ctx.models[spec.name] = result.model.eval()


def stage_evaluate(ctx: Context) -> None:
    from feedalign.quickstart.evaluate import kl_estimate, sample_and_score

    s = ctx.settings
    ctx.eval_prompts = ctx.task.prompts(s.eval_prompts, "test", seed=s.seed + 3)
    reference = ctx.models["reference"]
    for name in ["reference", *s.methods]:
        samples = sample_and_score(ctx.models[name], ctx.tokenizer, ctx.task, ctx.eval_prompts,
                                   max_new_tokens=s.max_new_tokens, temperature=s.temperature,
                                   seed=s.seed + 4, batch_size=s.generate_batch_size)
        if name != "reference":
            samples.kl = kl_estimate(ctx.models[name], reference, ctx.tokenizer, ctx.eval_prompts, samples,
                                     max_length=s.max_length)
        ctx.samples[name] = samples
        means = ", ".join(f"{o} {samples.scores[o].mean():.3f}" for o in OBJECTIVES)
        ctx.log(f"  {name:<10} {means}")


def stage_front(ctx: Context) -> None:
    from feedalign.quickstart.front_stage import run_front_stage

    ctx.report["front"] = run_front_stage(ctx)


def stage_front3(ctx: Context) -> None:
    from feedalign.quickstart.front_many import run_front_many_stage

    ctx.report["front3"] = run_front_many_stage(ctx)


def stage_report(ctx: Context) -> None:
    from feedalign.quickstart.report import build_report, write_outputs

    build_report(ctx)
    write_outputs(ctx)


def default_stages(settings: QuickstartSettings) -> list[Stage]:
    stages = [
        Stage("base", "build a tokenizer and a tiny Llama-style model", stage_base),
        Stage("sft", "supervised fine-tuning -> reference policy", stage_sft),
        Stage("feedback", "simulate feedback on samples of the reference", stage_feedback),
        Stage("align", "align from the reference, one run per method", stage_align),
        Stage("evaluate", "sample held-out prompts, score with the ground truth", stage_evaluate),
        Stage("front", "steer between helpful and concise: the front", stage_front),
        Stage("report", "write report.json, report.md and plots", stage_report),
    ]
    if settings.objectives == 3:
        stages.insert(-1, Stage("front3", "steer between helpful, concise and polite: the 3-objective front",
                                stage_front3))
    return [st for st in stages if settings.front or st.name not in ("front", "front3")]


MARKER = ".feedalign-quickstart"  # written first into every quickstart output directory


def prepare_output_dir(out: str | Path, *, overwrite: bool) -> None:
    """Refuse a non-empty ``out`` unless ``overwrite``; then clear it, but only if an earlier
    quickstart wrote it (its marker file is there): a directory of other files is never
    emptied. Raises ValueError with the reason."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"--out '{out}' exists and is not a directory")
    entries = list(out.iterdir())
    if not entries:
        return
    if not overwrite:
        raise ValueError(f"--out '{out}' is not empty (an earlier run?); pass --overwrite to replace it, "
                         "or pick another directory")
    if not (out / MARKER).is_file():
        raise ValueError(f"--out '{out}' holds files that no quickstart wrote; refusing to clear it "
                         "even with --overwrite (pick an empty or new directory)")
    import shutil

    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def run_quickstart(settings: QuickstartSettings, out: str | Path, *, stages: Sequence[Stage] | None = None,
                   log: Callable[[str], None] = print) -> Context:
    """Run every stage in order; returns the context (``ctx.report`` is what report.json holds)."""
    ctx = Context(settings=settings, out=Path(out), log=log)
    ctx.out.mkdir(parents=True, exist_ok=True)
    (ctx.out / MARKER).write_text("written by feedalign quickstart; --overwrite may clear this directory\n",
                                  encoding="utf-8")
    stages = list(stages) if stages is not None else default_stages(settings)
    start = time.perf_counter()
    for i, stage in enumerate(stages, start=1):
        log(f"\n== [{i}/{len(stages)}] {stage.name}: {stage.title}")
        t0 = time.perf_counter()
        stage.run(ctx)
        ctx.timings[stage.name] = time.perf_counter() - t0
    ctx.timings["total"] = time.perf_counter() - start
    if "files" in ctx.report:  # the report stage ran: add its own time and the total
        from feedalign.quickstart.report import finalize_timing

        finalize_timing(ctx)
    return ctx
