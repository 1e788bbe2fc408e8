"""`feedalign bench exact`: every loss against its closed-form target on the exact environment."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser("bench", help="benchmarks with ground truth")
    bench_sub = bench.add_subparsers(dest="bench_command", metavar="BENCH")
    exact = bench_sub.add_parser(
        "exact",
        help="train every loss on sampled feedback in the tabular environment and compare with its exact target",
        description=(
            "Trains each method on feedback drawn from simulated annotators and reports the total "
            "variation / KL to its closed-form population target, plus hypervolume ratios of "
            "multi-objective fronts. Exit code 1 if any row with an acceptance bound fails."
        ),
    )
    exact.add_argument("--json", type=Path, default=None, help="write the rows as a JSON list to this path")
    exact.add_argument("--quick", action="store_true", help="smaller problem and datasets (CI, < 1 min)")
    exact.add_argument("--seed", type=int, default=0, help="seed of the environment and all samples")
    exact.add_argument("--objectives", type=int, default=2,
                       help="number of objectives m (m >= 3: fronts scored against a dense exact front)")
    exact.add_argument("--beta", type=float, default=None, help="KL coefficient of the targets (default 1.0)")
    exact.add_argument(
        "--groups",
        default="pairwise,unpaired,front",
        help="comma-separated row groups to run (pairwise, unpaired, front)",
    )
    exact.set_defaults(func=run_exact)
    bench.set_defaults(func=lambda args: bench.print_help() or 2)


def run_exact(args: argparse.Namespace) -> int:
    from feedalign.bench.exact import ExactBenchConfig, format_table, run_exact_bench

    from feedalign.bench.exact_front_many import config_for_objectives

    config = ExactBenchConfig.quick(seed=args.seed) if args.quick else ExactBenchConfig(seed=args.seed)
    try:
        config = config_for_objectives(config, args.objectives, beta=args.beta)
    except ValueError as err:
        print(str(err), file=sys.stderr)
        return 2
    groups = tuple(g.strip() for g in args.groups.split(",") if g.strip())
    valid = ("pairwise", "unpaired", "front")
    unknown = [g for g in groups if g not in valid]
    if unknown:
        print(f"--groups: unknown group(s) {unknown}; valid: {list(valid)}", file=sys.stderr)
        return 2
    rows = run_exact_bench(config, groups=groups, log=lambda msg: print(msg, file=sys.stderr))
    preset = "quick" if args.quick else "full"
    for row in rows:
        row.update(preset=preset, seed=args.seed, objectives=config.n_objectives, beta=config.beta)
    print(format_table(rows))
    failed = [f"{r['method']} -> {r['target']}" for r in rows if r.get("passed") is False]
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
        print(f"wrote {len(rows)} rows to {args.json}", file=sys.stderr)
    if failed:
        print(f"FAILED acceptance bounds: {failed}", file=sys.stderr)
        return 1
    return 0
