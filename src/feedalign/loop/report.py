"""``OUT/iterate_report.json`` and ``OUT/iterate_plot.png``.

The report::

    {"initial": {"metrics": M},
     "rounds": [{"round": r, "n_feedback": n, "metrics": M, ...}, ...],
     "offline_baseline": {"n_feedback": n, "metrics": M, ...} or null,
     "comparison": {objective: {"on_policy": m, "offline": m, "difference": d, "se": s}},
     "winner": {objective: "on_policy" | "offline" | "neither (within 2 s.e.)"}, ...}

with ``M = {objective: {"mean": m, "se": s}}`` on the held-out prompts (``se`` the standard
error of the mean over prompts). ``difference`` compares the last round with the offline
baseline; its ``se`` is sqrt(se_1^2 + se_2^2) (the two policies' samples are independent).
"""

from __future__ import annotations

import math
from typing import Any

from feedalign.loop.rounds import Loop, write_json


def _compare(last: dict[str, dict[str, float]], offline: dict[str, dict[str, float]]) -> tuple[dict, dict]:
    comparison, winner = {}, {}
    for o in last:
        if o not in offline or o == "mean_words":
            continue
        d = last[o]["mean"] - offline[o]["mean"]
        se = math.hypot(last[o]["se"], offline[o]["se"])
        comparison[o] = {"on_policy": last[o]["mean"], "offline": offline[o]["mean"], "difference": d, "se": se}
        winner[o] = "on_policy" if d > 2 * se else "offline" if d < -2 * se else "neither (within 2 s.e.)"
    return comparison, winner


def build_report(loop: Loop, initial: dict[str, Any], rounds: list[dict[str, Any]], offline: dict[str, Any] | None,
                 *, seconds: float) -> dict[str, Any]:
    from feedalign.config.loader import config_to_dict

    c = loop.config
    report: dict[str, Any] = {
        "config": config_to_dict(c),
        "judge": c.judge.kind,
        "loss": c.train.loss,
        "eval_prompts": len(loop.eval_prompts),
        "initial": {"model_dir": initial["model_dir"], "metrics": initial["metrics"]},
        "rounds": [{k: r[k] for k in ("round", "n_feedback", "metrics", "model_dir", "train_steps", "seconds",
                                      "feedback_files")} for r in rounds],
        "offline_baseline": None,
        "seconds": seconds,
    }
    if offline is not None:
        report["offline_baseline"] = {k: offline[k] for k in ("n_feedback", "metrics", "model_dir", "train_steps",
                                                               "seconds", "training_file")}
        report["comparison"], report["winner"] = _compare(rounds[-1]["metrics"], offline["metrics"])
    return report


def plot(loop: Loop, report: dict[str, Any]) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objectives = [o for o in report["initial"]["metrics"] if o != "mean_words"]
    fig, axes = plt.subplots(1, len(objectives), figsize=(4.5 * len(objectives), 3.5), squeeze=False)
    xs = [0] + [r["round"] for r in report["rounds"]]
    for ax, o in zip(axes[0], objectives):
        points = [report["initial"]["metrics"][o]] + [r["metrics"][o] for r in report["rounds"]]
        ax.errorbar(xs, [p["mean"] for p in points], yerr=[p["se"] for p in points], marker="o", capsize=3,
                    label="on-policy rounds")
        base = report.get("offline_baseline")
        if base is not None:
            m, se = base["metrics"][o]["mean"], base["metrics"][o]["se"]
            ax.axhline(m, color="C1", linestyle="--", label="offline, same feedback")
            ax.axhspan(m - se, m + se, color="C1", alpha=0.2)
        ax.set_xlabel("round (0 = initial policy)")
        ax.set_ylabel(f"{o} (mean ± s.e.)")
        ax.set_xticks(xs)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = loop.out / "iterate_plot.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def write_outputs(loop: Loop, report: dict[str, Any]) -> None:
    if loop.config.plots:
        report["plot"] = plot(loop, report)
    write_json(loop.out / "iterate_report.json", report)
