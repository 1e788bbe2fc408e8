"""Held-out before/after for the real-model example: judge scores, health, samples.

    python examples/real_model/evaluate.py --out examples/real_model/out \\
        --runs examples/real_model/out/runs/dpo/final examples/real_model/out/runs/kto/final

Samples 3 completions for each of the 16 held-out questions (n = 48) from the base model
and from every trained model (same seeds, temperature 1, through the chat template),
judges them (fact, concise, both) and reports mean ± standard error, distinct-2,
repetition rate, the sequence KL to the base model (nats), and five before/after samples.
Writes OUT/report.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from judge import concise, mentions_fact  # noqa: E402

SAMPLES = 3
MAX_NEW_TOKENS = 48


def mean_se(values: list[float]) -> tuple[float, float]:
    n = len(values)
    m = sum(values) / n
    var = sum((v - m) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return m, math.sqrt(var / n)


def logps(model, tok, samples) -> list[float]:
    import torch

    from feedalign.data.collate import pad_batch, tokenize_example
    from feedalign.policies.hf import batch_logps

    out = []
    for start in range(0, len(samples), 16):
        rows = [tokenize_example(tok, s.prompt, s.text, 512, truncated=s.truncated, min_prompt_length=0)
                for s in samples[start : start + 16]]
        with torch.no_grad():
            out += batch_logps(model, pad_batch(rows, tok.pad_token_id)).tolist()
    return out


def score(model, tok, heldout, reference=None) -> dict:
    from feedalign.policies.generation import sample
    from feedalign.trainers.health import generation_health

    prompts = [h["question"] for h in heldout for _ in range(SAMPLES)]
    aliases = [tuple(h["aliases"]) for h in heldout for _ in range(SAMPLES)]
    samples = sample(model, tok, prompts, max_new_tokens=MAX_NEW_TOKENS, temperature=1.0, seed=123,
                     batch_size=16, chat=True)
    fact = [float(mentions_fact(s.text, a)) for s, a in zip(samples, aliases)]
    short = [float(concise(s.text, s.truncated)) for s in samples]
    both = [f * c for f, c in zip(fact, short)]
    own, ref = (logps(model, tok, samples), reference(samples)) if reference else (None, None)
    report = {k: mean_se(v) for k, v in (("fact", fact), ("concise", short), ("fact_and_concise", both))}
    report.update(generation_health(samples, own, ref))
    report["n"] = len(samples)
    report["samples"] = [{"question": p, "answer": s.text, "truncated": s.truncated}
                         for p, s in zip(prompts[::SAMPLES], samples[::SAMPLES])][:5]
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="examples/real_model/out")
    parser.add_argument("--runs", nargs="*", default=[])
    parser.add_argument("--no-base", action="store_true", help="score only the runs (merged into report.json)")
    args = parser.parse_args()
    out = Path(args.out)

    from feedalign.cli.train_cmd import load_for_generation
    from feedalign.policies.hf import load_causal_lm, load_tokenizer, set_threads

    set_threads(1)
    heldout = json.loads((out / "heldout.json").read_text())
    base_dir = str(out / "smollm2-hf")
    base, tok = load_causal_lm(base_dir, dtype="float32"), load_tokenizer(base_dir)
    start = time.time()
    path = out / "report.json"
    report = {}
    if not args.no_base:
        report["base"] = score(base, tok, heldout)
    for run in args.runs:
        model, run_tok = load_for_generation(run)
        report[Path(run).parent.name] = score(model, run_tok, heldout, reference=lambda s: logps(base, tok, s))
        del model
    report[f"seconds/{'+'.join(Path(r).parent.name for r in args.runs) or 'base'}"] = round(time.time() - start, 1)
    if args.no_base and path.exists():  # read at the end: another evaluation may have written it meanwhile
        report = {**json.loads(path.read_text()), **report}
    path.write_text(json.dumps(report, indent=1, ensure_ascii=False))
    for name, r in report.items():
        if isinstance(r, dict):
            cells = ", ".join(f"{k} {r[k][0]:.3f} ± {r[k][1]:.3f}" for k in ("fact", "concise", "fact_and_concise"))
            extra = ", ".join(f"{k[7:]} {r[k]:.3f}" for k in sorted(r) if k.startswith("health/"))
            print(f"{name} (n={r['n']}): {cells}; {extra}")


if __name__ == "__main__":
    main()
