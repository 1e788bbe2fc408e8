"""report.json, report.md, the plots, and the console summary of a quickstart run."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from feedalign.quickstart.settings import OBJECTIVES

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


def _margin_rule(settings: Any) -> str:
    return (f"pass iff the mean target score on held-out prompts improves over the reference by at least "
            f"{settings.margin:g} (absolute, objectives in [0, 1]) AND by at least {settings.z:g} standard "
            f"errors of the paired per-prompt difference")


def build_report(ctx: Any) -> dict[str, Any]:
    """Fill ``ctx.report`` from the evaluation; returns it."""
    from dataclasses import asdict

    from feedalign import __version__
    from feedalign.quickstart.evaluate import compare, policy_summary

    s = ctx.settings
    report = ctx.report
    before = ctx.samples["reference"]
    report.update(
        version=__version__, seed=s.seed, quick=s.quick, objectives=list(OBJECTIVES),
        settings=asdict(s), margin={"absolute": s.margin, "z": s.z, "rule": _margin_rule(s)},
        environment={"python": platform.python_version(), "threads": s.threads, "libraries": library_versions(),
                     "git_commit": git_commit()},
    )
    report.setdefault("reference", {})["eval"] = policy_summary(before, OBJECTIVES)
    report["evaluation"] = {"split": "test", "prompts": len(ctx.eval_prompts), "samples_per_prompt": 1,
                            "temperature": s.temperature, "max_new_tokens": s.max_new_tokens}
    methods = {}
    for spec in s.method_specs():
        after = ctx.samples[spec.name]
        cmp = compare(before, after, OBJECTIVES, spec.target, margin=s.margin, z=s.z)
        run = ctx.runs[spec.name]
        methods[spec.name] = {
            "loss": spec.loss, "summary": spec.summary,
            "target_objective": spec.target_name, "target_weights": dict(zip(OBJECTIVES, spec.target)),
            "feedback_sets": list(spec.feedback),
            "feedback_counts": {f: ctx.feedback_counts[f] for f in spec.feedback},
            "hparams": dict(spec.hparams), "lr": spec.lr, "steps": run["steps"],
            "training_seconds": run["seconds"], "final_loss": run["metrics"].get("loss"),
            "model_dir": str(run["final"]), "metrics_file": str(Path(run["dir"]) / "metrics.jsonl"),
            "n_eval_samples": len(after.completions),
            "before": {o: cmp["per_objective"][o]["before"] for o in OBJECTIVES},
            "after": {o: cmp["per_objective"][o]["after"] for o in OBJECTIVES},
            "improvement": {o: cmp["per_objective"][o]["improvement"] for o in OBJECTIVES},
            "improvement_se": {o: cmp["per_objective"][o]["improvement_se"] for o in OBJECTIVES},
            "target": cmp["target"], "margin": s.margin, "passed": cmp["passed"],
            "eval": policy_summary(after, OBJECTIVES),
            "examples": [{"prompt": p, "reference": r, "completion": c}
                         for p, r, c in list(zip(ctx.eval_prompts, before.completions, after.completions))[:3]],
        }
    report["methods"] = methods
    report["all_passed"] = all(m["passed"] for m in methods.values())
    report["timing"] = {"stages_seconds": dict(ctx.timings)}
    return report


LIBRARIES = ("feedalign", "torch", "transformers", "peft", "accelerate", "numpy", "moocore", "matplotlib")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries a run depends on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str:
    """The commit of the feedalign source that ran (``+ local changes`` if the tree is dirty),
    or why it is unknown (an installed wheel has no git history)."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=30, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--", str(here.parent)],
                               capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return head + (" + local changes" if dirty else "")


# --------------------------------------------------------------------------- plots


def _moving_average(series: list[tuple[float, float]], window: int) -> list[tuple[float, float]]:
    out, total = [], 0.0
    for i, (_, value) in enumerate(series):
        total += value - (series[i - window][1] if i >= window else 0.0)
        if i >= window - 1:
            out.append((series[i][0], total / window))
    return out


def _smoothed(raw: list[tuple[float, float]], name: str) -> dict[str, list[tuple[float, float]]]:
    window = max(1, len(raw) // 20)
    return {name: raw, f"moving average ({window} steps)": _moving_average(raw, window)}


def _training_panels(metrics_file: Path) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Loss, reward margins and reward accuracies of a run (panels it has no metric for are left out):
    a loss alone can look like noise while the margins grow."""
    import math

    from feedalign.trainers.logging import read_metrics

    rows = read_metrics(metrics_file.parent) if metrics_file.exists() else []
    keys = list(dict.fromkeys(k for r in rows for k in r if not k.startswith("eval/")))
    panels: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for panel, suffix in (("loss", None), ("reward margins", "/rewards/margins"), ("reward accuracies", "/rewards/accuracies")):
        chosen = ["loss"] if suffix is None else [k for k in keys if k.endswith(suffix)]
        for key in chosen:
            raw = [(r["step"], r[key]) for r in rows if key in r and math.isfinite(r[key])]
            if raw:
                panels.setdefault(panel, {}).update(_smoothed(raw, key))
    return panels


def write_plots(ctx: Any) -> list[Path]:
    from feedalign.evaluation.plots import plot_bars, plot_front, plot_panels

    report, plots = ctx.report, ctx.path("plots")
    methods = report["methods"]
    for stale in plots.glob("training_*.png"):  # from an earlier run with other methods
        stale.unlink()
    labels = {n: f"{n} ({m['target_objective']})" for n, m in methods.items()}
    paths = [plot_bars(plots / "improvement.png",
                       {labels[n]: {o: (m["before"][o], m["after"][o]) for o in OBJECTIVES} for n, m in methods.items()},
                       title="held-out mean score: after - reference",
                       errors={labels[n]: dict(m["improvement_se"]) for n, m in methods.items()})]
    runs = {"sft": Path(ctx.runs["sft"]["dir"]) / "metrics.jsonl"}
    runs.update({n: Path(m["metrics_file"]) for n, m in methods.items()})
    for name, metrics_file in runs.items():
        panels = _training_panels(metrics_file)
        if panels:
            paths.append(plot_panels(plots / f"training_{name}.png", panels, title=f"{name}: training"))
    points = {"reference": ([[report["reference"]["eval"][o]["mean"] for o in OBJECTIVES]], None)}
    for n, m in methods.items():
        points[n] = ([[m["after"][o] for o in OBJECTIVES]], None)
    front = report.get("front", {})
    if front.get("status") == "done":
        pts = [[row[o] for o in OBJECTIVES] for row in front["per_weight"]]
        points[front["policy"]] = (pts, [row["weights"][0] for row in front["per_weight"]])
    from feedalign.multiobjective.front import text_task_ideal_front

    paths.append(plot_front(plots / "front.png", points, exact=text_task_ideal_front(ctx.task),
                            objectives=OBJECTIVES, title="held-out scores (ideal front dashed)",
                            weight_names=OBJECTIVES))
    return paths


# --------------------------------------------------------------------------- markdown


def method_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, m in report["methods"].items():
        t = m["target"]
        rows.append({
            "method": name, "target": m["target_objective"], "reference": round(t["before"], 4),
            "after": round(t["after"], 4), "improvement": f"{t['improvement']:+.4f} ± {t['improvement_se']:.4f}",
            "margin": f">= {m['margin']:g}", "result": "PASS" if m["passed"] else "FAIL",
        })
    return rows


def _objective_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    ref = report["reference"]["eval"]
    rows = [{"policy": "reference (SFT)", **{o: f"{ref[o]['mean']:.4f} ± {ref[o]['se']:.4f}" for o in OBJECTIVES},
             "KL to reference": 0.0, "well-formed": ref["well_formed"], "words": ref["mean_words"]}]
    for name, m in report["methods"].items():
        ev = m["eval"]
        rows.append({"policy": name, **{o: f"{ev[o]['mean']:.4f} ± {ev[o]['se']:.4f}" for o in OBJECTIVES},
                     "KL to reference": ev.get("kl_to_reference"), "well-formed": ev["well_formed"],
                     "words": ev["mean_words"]})
    return rows


def _feedback_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"set": name, "file": Path(f["path"]).name, "what": f["description"],
             "records": ", ".join(f"{k} {v}" for k, v in f["counts"].items())}
            for name, f in report.get("feedback", {}).items()]


def _training_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    ref = report["reference"]
    rows = [{"run": "sft", "loss": "sft", "hparams": "length_normalize=True", "lr": ref["lr"], "steps": ref["steps"],
             "seconds": round(ref["training_seconds"], 1)}]
    for name, m in report["methods"].items():
        rows.append({"run": name, "loss": m["loss"], "hparams": ", ".join(f"{k}={v}" for k, v in m["hparams"].items()),
                     "lr": m["lr"], "steps": m["steps"], "seconds": round(m["training_seconds"], 1)})
    return rows


def _front_section(report: dict[str, Any]) -> tuple[str, Any]:
    front = report.get("front")
    if not front:
        return "Front", "Not run (--no-front)."
    if front.get("status") != "done":
        return "Front", f"Skipped: {front.get('reason', 'unknown')}."
    rows = [{"w_helpful": row["weights"][0], **{o: f"{row[o]:.4f} ± {row['stderr'][o]:.4f}" for o in OBJECTIVES}}
            for row in front["per_weight"]]
    m = front["metrics"]
    text = (f"{front['description']} ({front['policy']}), {front['n_prompts']} held-out prompts per weight.\n\n"
            + _table(rows) + f"\nhypervolume {m['hypervolume']:.4f} (ideal front {m.get('exact_hypervolume', float('nan')):.4f}), "
            f"EU_front {m['eu_front']:.4f}, EU_cond {m['eu_cond']:.4f}, sparsity {m['sparsity']:.4f}, "
            f"monotonicity violations {len(front['monotonicity_violations'])}. Details: front/front.md.")
    from feedalign.quickstart.front_stage import methods_markdown

    text += methods_markdown(front)
    return "Front (two objectives)", text


def _sample_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, m in report["methods"].items():
        for example in m.get("examples", [])[:3]:
            rows.append({"method": name, "prompt": example["prompt"], "reference (SFT)": example["reference"],
                         "after": example["completion"]})
    return rows or [{"method": "-", "prompt": "(no samples)"}]


def _environment_text(report: dict[str, Any]) -> str:
    env = report.get("environment", {})
    libraries = ", ".join(f"{k} {v}" for k, v in env.get("libraries", {}).items())
    return (f"Python {env.get('python', '?')}, {env.get('threads', '?')} torch thread(s); {libraries}.\n\n"
            f"feedalign commit: `{env.get('git_commit', 'unknown')}`.")


def _table(rows: list[dict[str, Any]]) -> str:
    from feedalign.evaluation.report import markdown_table

    return markdown_table(rows)


def write_markdown(ctx: Any, images: list[Path]) -> Path:
    from feedalign.evaluation.report import write_markdown_report
    from feedalign.quickstart.front_many import front3_markdown

    report = ctx.report
    verdict = "all methods passed" if report["all_passed"] else "some methods FAILED"
    intro = (f"seed {report['seed']}{' (quick run)' if report['quick'] else ''}; {verdict}. "
             f"Margin rule: {report['margin']['rule']}. Held-out: {report['evaluation']['prompts']} test prompts, "
             f"one sample each at temperature {report['evaluation']['temperature']:g}.")
    sections = [
        ("Summary", intro + "\n\n" + _table(method_rows(report))),
        ("Mean score per objective (held-out, ± standard error)", _objective_rows(report)),
        ("Feedback (simulated on samples of the reference)", _feedback_rows(report)),
        ("Training", _training_rows(report)),
        _front_section(report),
        *front3_markdown(report),
        ("Sample completions (first three held-out prompts)", _sample_rows(report)),
        ("Environment", _environment_text(report)),
        ("Timing (seconds)", [{"stage": k, "seconds": round(v, 1)} for k, v in report["timing"]["stages_seconds"].items()]),
    ]
    return write_markdown_report(ctx.path(REPORT_MD), "feedalign quickstart", sections, images=images)


def write_outputs(ctx: Any) -> None:
    from feedalign.evaluation.report import write_json

    images = write_plots(ctx) if ctx.settings.plots else []
    ctx.report["files"] = {"report_json": str(ctx.path(REPORT_JSON)), "report_md": str(ctx.path(REPORT_MD)),
                           "plots": [str(p) for p in images]}
    write_markdown(ctx, images)
    write_json(ctx.path(REPORT_JSON), ctx.report)


def finalize_timing(ctx: Any) -> None:
    """Record the timing of every stage (the report stage included) and rewrite the reports."""
    from feedalign.evaluation.report import write_json

    ctx.report["timing"] = {"stages_seconds": {k: v for k, v in ctx.timings.items() if k != "total"},
                            "total_seconds": ctx.timings["total"]}
    write_markdown(ctx, [Path(p) for p in ctx.report["files"]["plots"]])
    write_json(ctx.path(REPORT_JSON), ctx.report)


def summary_table(report: dict[str, Any]) -> str:
    """A fixed-width table for the console."""
    rows = method_rows(report)
    cols = list(rows[0]) if rows else []
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)
