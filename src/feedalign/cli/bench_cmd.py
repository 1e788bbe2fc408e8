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
    register_ngrams(bench_sub)
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


def register_ngrams(bench_sub: argparse._SubParsersAction) -> None:
    ngrams = bench_sub.add_parser(
        "ngrams",
        help="one-run steerable LM on the N-grams task (Jain et al. 2023), hypervolume vs the exact front",
        description=(
            "Fine-tunes a tiny causal LM (built locally) on prior sequences, trains ONE steerable model "
            "from simulated feedback (users' weighted choices, or with --set feedback=modpo pairs per "
            "objective and exact margins), samples at a sweep of weights and temperatures under the "
            "task's validity constraints and reports hypervolume against the exact Pareto front "
            "(dynamic programming), expected utility, the trend of each objective in its weight and "
            "diversity."
        ),
    )
    ngrams.add_argument("--objectives", type=int, default=2, help="2, 3 or 4 bigram objectives (1-4 unigrams)")
    ngrams.add_argument("--kind", choices=("bigram", "unigram"), default="bigram", help="task variant")
    ngrams.add_argument("--seed", type=int, default=0, help="seed of data, models and sampling")
    ngrams.add_argument("--json", type=Path, default=None, help="write the report as JSON to this path")
    ngrams.add_argument("--output-dir", type=Path, default=None, help="where the models go (default: a temp dir)")
    ngrams.add_argument("--quick", action="store_true", help="tiny sizes (smoke test, seconds)")
    ngrams.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a setting of NGramBenchConfig, e.g. beta=0.2 or temperatures=1,0.5 (repeatable)")
    ngrams.set_defaults(func=run_ngrams)


def ngram_overrides(items: list[str]) -> dict[str, object]:
    """``FIELD=VALUE`` strings -> typed NGramBenchConfig changes (ValueError names the bad one)."""
    import dataclasses

    from feedalign.bench.ngrams import NGramBenchConfig

    fields = {f.name: f for f in dataclasses.fields(NGramBenchConfig)}
    fixed = {"n_objectives", "kind", "seed"}  # they have their own options
    out: dict[str, object] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or name not in fields or name in fixed:
            valid = sorted(set(fields) - fixed)
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {valid}")
        default = fields[name].default
        try:
            if name == "temperatures":
                out[name] = tuple(float(v) for v in raw.split(","))
            elif raw.lower() == "none" and (default is None or "None" in str(fields[name].type)):
                out[name] = None
            elif isinstance(default, bool):
                if raw.lower() not in ("true", "false"):
                    raise ValueError("expected true or false")
                out[name] = raw.lower() == "true"
            elif isinstance(default, (int, float, str)):
                out[name] = type(default)(raw)
            else:  # optional numbers (default None)
                out[name] = float(raw) if "float" in str(fields[name].type) else int(raw)
        except ValueError as err:
            raise ValueError(f"--set {item!r}: {err}") from None
    return out


def run_ngrams(args: argparse.Namespace) -> int:
    import tempfile

    from feedalign.bench.ngrams import NGramBenchConfig, run_ngrams_bench

    try:
        changes = {"n_objectives": args.objectives, "kind": args.kind, "seed": args.seed,
                   **ngram_overrides(args.set)}
        config = NGramBenchConfig.quick(**changes) if args.quick else NGramBenchConfig(**changes)
        config.task  # validates the variant
    except ValueError as err:
        print(f"bench ngrams: {err}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="feedalign-ngrams-") as tmp:
        report = run_ngrams_bench(config, args.output_dir or tmp, log=lambda msg: print(msg, file=sys.stderr))
    for t, s in report["steerable"].items():
        print(f"T={t}  hv_ratio {s['hv_ratio']:.4f}  hypervolume {s['hypervolume']:.4f} / exact "
              f"{report['task']['exact_hypervolume']:.4f}  eu_front {s['eu_front']:.4f}  reference hv_ratio "
              f"{report['reference'][t]['hv_ratio']:.4f}  valid {s['valid_share']:.2f}  distinct "
              f"{s['diversity']['distinct']:.3f}  edit {s['diversity']['mean_edit_distance']:.2f}")
    print(f"seconds {report['seconds']['total']:.0f}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0
