"""`feedalign quickstart --out DIR`: the whole offline pipeline on a built-in task.

    feedalign quickstart --out DIR [--seed N] [--quick] [--methods dpo,kto,bco,pmpo]
                         [--no-plots] [--no-front] [--front-points K] [--objectives 2|3]
                         [--threads N] [--strict] [--overwrite]

Exit codes: 0 the pipeline completed (margins are reported, pass or fail); 1 with --strict
when a method missed its margin; 2 bad arguments or a non-empty DIR without --overwrite.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

EXIT_MARGIN_MISSED = 1
EXIT_BAD_INPUT = 2


def register(subparsers: Any) -> None:
    from feedalign.quickstart.settings import DEFAULT_METHODS, METHODS

    parser = subparsers.add_parser(
        "quickstart",
        help="offline end-to-end run: tiny model, SFT, simulated feedback, DPO/KTO/BCO/PMPO, report",
        description="Build a tiny model locally, fine-tune it on a synthetic task, simulate pairs, thumbs, "
        "positive-only and negative-only feedback from ground-truth scorers, align with several losses, "
        "evaluate on held-out prompts and write DIR/report.json, DIR/report.md and plots. No network.",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="seed of everything (default 0)")
    parser.add_argument("--quick", action="store_true", help="a much smaller smoke run (< 1 min; margins not expected to pass)")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help=f"comma-separated methods (default {','.join(DEFAULT_METHODS)}; available: {','.join(METHODS)})")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    parser.add_argument("--no-front", action="store_true", help="skip the multi-objective front stage")
    parser.add_argument("--front-points", type=int, default=None, metavar="K",
                        help="weights of the front sweep, evenly spaced in w_helpful (default 5; the MODPO sweep "
                             "trains one run per weight)")
    parser.add_argument("--objectives", type=int, default=2, metavar="M",
                        help="objectives of the front: 2 (helpful, concise; default) or 3 (adds polite: a second "
                             "front over a simplex grid, written to DIR/front3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 1: fastest for this model size)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any method misses its margin")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier quickstart run in DIR (a non-empty DIR is refused without it)")
    parser.set_defaults(func=run_quickstart_cmd)


def _settings(args: argparse.Namespace) -> Any:
    from feedalign.quickstart.settings import QuickstartSettings

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    options: dict[str, Any] = {"seed": args.seed, "methods": methods, "plots": not args.no_plots,
                               "front": not args.no_front}
    if args.threads is not None:
        options["threads"] = args.threads
    if args.objectives not in (2, 3):
        raise ValueError(f"--objectives must be 2 or 3, got {args.objectives}")
    options["objectives"] = args.objectives
    if args.front_points is not None:
        if args.front_points < 2:
            raise ValueError(f"--front-points must be >= 2, got {args.front_points}")
        import numpy as np

        options["front_weights"] = tuple(float(round(v, 6)) for v in np.linspace(0.0, 1.0, args.front_points))
    return QuickstartSettings.preset("quick" if args.quick else "full", **options)


def run_quickstart_cmd(args: argparse.Namespace) -> int:
    from feedalign.quickstart import pipeline

    try:
        settings = _settings(args)
        pipeline.prepare_output_dir(args.out, overwrite=args.overwrite)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    run_quickstart = pipeline.run_quickstart
    from feedalign.quickstart.report import REPORT_JSON, REPORT_MD, summary_table

    _quiet_libraries()
    from tqdm.auto import tqdm

    # tqdm.write: stage lines go above a progress bar instead of through it.
    ctx = run_quickstart(settings, args.out, log=lambda line: tqdm.write(line))
    report = ctx.report
    print(f"\n== done in {ctx.timings['total']:.0f} s")
    print(summary_table(report))
    front = report.get("front", {})
    if front.get("status") == "done":
        m = front["metrics"]
        print(f"front ({front['policy']}, {len(front['per_weight'])} weights): hypervolume {m['hypervolume']:.4f}, "
              f"EU_front {m['eu_front']:.4f}")
    front3 = report.get("front3", {})
    for e in front3.get("methods", []):
        print(f"front3 {e['name']} ({front3['n_weights']} weights): hypervolume {e['hv']:.4f} "
              f"({e['hv_ratio']:.3f} of the dense ideal front), EU_front {e['eu']:.4f}")
    print(f"report: {ctx.path(REPORT_MD)}  (data: {ctx.path(REPORT_JSON)})")
    if not report["all_passed"]:
        failed = [n for n, m in report["methods"].items() if not m["passed"]]
        print(f"margin missed by: {', '.join(failed)}" + ("" if args.strict else " (use --strict to fail the exit code)"))
        if args.strict:
            return EXIT_MARGIN_MISSED
    return 0


def _quiet_libraries() -> None:
    """Keep the console to stage headers, progress bars and results."""
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # keep the trainer's bars, not the weight-loading ones

    logging.getLogger("feedalign").setLevel(logging.WARNING)
    for name in ("transformers", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module="transformers")
