"""Does the steerable real model follow its weight? Held-out answers per w_concise.

    python examples/real_model/steer_eval.py --out examples/real_model/out \\
        --run examples/real_model/out/runs/steer/final [--weights 0,0.25,0.5,0.75,1] [--samples 3] [--base]
        [--probe]

For every w_concise (w = (1 - w_concise, w_concise) in the order [helpful, concise], served as
``spec.snap(w)``) each of the 16 held-out questions is asked with the weight tag in its user
turn, rendered by the chat template exactly as ``generate_steered(..., chat=True)`` renders
it: one greedy answer and ``--samples`` answers at temperature 1 (the same seeds at every
weight). Reported per weight: mean words, tokens, fact, concise (judge.py) and cut-off share, each
± standard error, for the greedy and the sampled answers. The length trend in w_concise:

* ``paired``: per question, the least-squares slope of its mean answer length (greedy and
  sampled answers together) on w_concise; the mean of the 16 slopes ± their standard
  error (questions are the independent units);
* ``wls``: ``evaluation.pareto.trend_test`` on the per-weight means (fact, -words).

``greedy_differ``: the share of questions whose greedy answers are not all the same across
the weights, and between the lowest and highest weight. ``--base`` also runs the untrained
model on the same tagged prompts as a control (``--base-only``: only it); ``--probe`` adds
:func:`tag_sensitivity` (``--weights ""``: only that). Writes OUT/steer_report.json.
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

MAX_NEW_TOKENS = 48
SEED = 123


def mean_se(values: list[float]) -> list[float]:
    n = len(values)
    m = sum(values) / n
    var = sum((v - m) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return [round(m, 4), round(math.sqrt(var / n), 4)]


def slope(xs: list[float], ys: list[float]) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def paired_trend(weights: list[float], words: list[list[float]]) -> dict:
    """``words[k][i]``: question i's mean answer length at weight k. The mean over questions
    of each question's slope in the weight, its standard error and z."""
    slopes = [slope(weights, [row[i] for row in words]) for i in range(len(words[0]))]
    m, se = mean_se(slopes)
    return {"slope": m, "se": se, "z": round(m / se, 2) if se > 0 else None, "n_questions": len(slopes)}


def tagged_prompts(tok, spec, questions: list[str], w: list[float]) -> list[str]:
    from feedalign.data.chat import render_prompt

    return [render_prompt(tok, spec.condition_prompt([{"role": "user", "content": q}], w)) for q in questions]


def answers_at(model, tok, spec, heldout: list[dict], w: list[float], samples: int) -> dict:
    from feedalign.policies.generation import sample

    qs = [h["question"] for h in heldout]
    prompts = tagged_prompts(tok, spec, qs, w)
    greedy = sample(model, tok, prompts, max_new_tokens=MAX_NEW_TOKENS, temperature=0, batch_size=16)
    drawn = sample(model, tok, [p for p in prompts for _ in range(samples)], max_new_tokens=MAX_NEW_TOKENS,
                   temperature=1.0, seed=SEED, batch_size=16)
    return {"prompts": prompts, "greedy": greedy, "sampled": drawn}


def n_tokens(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


def judge_rows(rows, aliases, tok) -> dict:
    words = [float(len(s.text.split())) for s in rows]
    return {"words": mean_se(words), "tokens": mean_se([float(n_tokens(tok, s.text)) for s in rows]),
            "fact": mean_se([float(mentions_fact(s.text, a)) for s, a in zip(rows, aliases)]),
            "concise": mean_se([float(concise(s.text, s.truncated)) for s in rows]),
            "cut_off": mean_se([float(s.truncated) for s in rows]), "n": len(rows)}


def per_question_length(result: dict, n_questions: int, samples: int, length) -> list[float]:
    """Question i's mean answer length (``length(text)``) over its greedy and sampled answers."""
    out = []
    for i in range(n_questions):
        group = [result["greedy"][i]] + result["sampled"][i * samples : (i + 1) * samples]
        out.append(sum(length(s.text) for s in group) / len(group))
    return out


def sweep(model, tok, spec, heldout: list[dict], w_concise: list[float], samples: int) -> dict:
    import numpy as np

    from feedalign.evaluation.pareto import trend_test

    c = spec.objectives.index("concise")
    aliases = [tuple(h["aliases"]) for h in heldout]
    points, words, tokens, greedy_texts, means, ses, ws = [], [], [], [], [], [], []
    for wc in w_concise:
        w = [0.0] * spec.m
        w[c], w[1 - c] = wc, 1.0 - wc
        served = [float(v) for v in spec.snap(w)]
        res = answers_at(model, tok, spec, heldout, w, samples)
        point = {"w_concise": wc, "served": served, "greedy": judge_rows(res["greedy"], aliases, tok),
                 "sampled": judge_rows(res["sampled"], [a for a in aliases for _ in range(samples)], tok),
                 "example": {"question": heldout[0]["question"], "prompt": res["prompts"][0],
                             "greedy": res["greedy"][0].text}}
        points.append(point)
        words.append(per_question_length(res, len(heldout), samples, lambda t: len(t.split())))
        tokens.append(per_question_length(res, len(heldout), samples, lambda t: n_tokens(tok, t)))
        greedy_texts.append([s.text for s in res["greedy"]])
        s = point["sampled"]
        means.append([s["fact"][0], -s["words"][0]] if c == 1 else [-s["words"][0], s["fact"][0]])
        ses.append([s["fact"][1], s["words"][1]] if c == 1 else [s["words"][1], s["fact"][1]])
        ws.append(served)
        print(f"w_concise {wc:.2f} (served {served}): greedy words {point['greedy']['words']}, "
              f"sampled words {s['words']}, tokens {s['tokens']}, fact {s['fact']}, concise {s['concise']}, "
              f"cut off {s['cut_off']}", flush=True)
    served_c = [p["served"][c] for p in points]
    wls = trend_test(np.array(ws), np.array(means), np.array(ses), names=list(spec.objectives))
    n = len(heldout)
    return {"points": points,
            "trend_words_paired": paired_trend(served_c, words),
            "trend_tokens_paired": paired_trend(served_c, tokens),
            "trend_wls": [{k: (round(float(v), 4) if isinstance(v, float) else v) for k, v in t.items()}
                          for t in wls],
            "greedy_differ": {"any": sum(len({g[i] for g in greedy_texts}) > 1 for i in range(n)) / n,
                              "lowest_vs_highest": sum(greedy_texts[0][i] != greedy_texts[-1][i]
                                                       for i in range(n)) / n},
            "greedy_answers": {q["question"]: [g[i] for g in greedy_texts] for i, q in enumerate(heldout)}}


def margin_length(run: Path, tok):
    """(length function, scale) of the run's length margin ``-scale * length``
    (``builtin: length_words`` or ``length_tokens`` in ``final/feedalign_config.yaml``)."""
    import yaml

    margins = yaml.safe_load((Path(run) / "feedalign_config.yaml").read_text())["data"][0]["margins"]
    scale = float((margins.get("options") or {}).get("scale", 1.0))
    if str(margins["target"]).removeprefix("builtin:") == "length_tokens":
        return (lambda text: n_tokens(tok, text)), scale
    return (lambda text: len(text.split())), scale


def tag_sensitivity(model, tok, spec, pairs_file: Path, run: Path, n: int = 24, min_gap: int = 15) -> dict:
    """Does the tag move the model's preference between a short and a long answer? On ``n``
    tie rows of the training pairs (both or neither answer mentions the fact) whose answers
    differ by >= ``min_gap`` words: ``d = logp(short) - logp(long)`` (sequence log-probs) with
    the tag of w_concise = 1 minus with the tag of w_concise = 0, mean ± s.e. MODPO's target
    for this change is ``0.95 * scale * (length(long) - length(short)) / beta`` nats, with the
    run's length margin ``-scale * length`` (:func:`margin_length`)."""
    import random

    import torch

    from feedalign.data.collate import pad_batch, tokenize_example
    from feedalign.policies.hf import batch_logps

    rows = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    gap = lambda r: abs(len(r["chosen"].split()) - len(r["rejected"].split()))  # noqa: E731
    ties = [r for r in rows if r["weight"] == 0.5 and gap(r) >= min_gap]
    random.Random(0).shuffle(ties)
    ties = ties[:n]
    sides = [sorted([(r["chosen"], r["chosen_truncated"]), (r["rejected"], r["rejected_truncated"])],
                    key=lambda side: len(side[0].split())) for r in ties]

    def logps(prompts: list[str], completions: list[tuple[str, bool]]) -> list[float]:
        rows = [tokenize_example(tok, p, c, 160, truncated=cut, min_prompt_length=0)
                for p, (c, cut) in zip(prompts, completions)]
        with torch.no_grad():
            return [v for i in range(0, len(rows), 8)
                    for v in batch_logps(model, pad_batch(rows[i : i + 8], tok.pad_token_id)).tolist()]

    gaps = {}
    for wc in (0.0, 1.0):
        prompts = [spec.condition_prompt(r["prompt"], [1.0 - wc, wc]) for r in ties]
        short, long_ = logps(prompts, [s[0] for s in sides]), logps(prompts, [s[1] for s in sides])
        gaps[wc] = [a - b for a, b in zip(short, long_)]
    change = [a - b for a, b in zip(gaps[1.0], gaps[0.0])]
    length, scale = margin_length(run, tok)
    target = [0.95 * scale * (length(s[1][0]) - length(s[0][0])) / spec.beta for s in sides]
    return {"pairs": len(change), "change_nats": mean_se(change), "target_nats": mean_se(target)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="examples/real_model/out")
    parser.add_argument("--run", default="examples/real_model/out/runs/steer/final")
    parser.add_argument("--weights", default="0,0.25,0.5,0.75,1", help="values of w_concise")
    parser.add_argument("--samples", type=int, default=3, help="sampled answers per question and weight")
    parser.add_argument("--base", action="store_true", help="also the untrained model on the same prompts")
    parser.add_argument("--base-only", action="store_true", help="only the untrained model (a control)")
    parser.add_argument("--probe", action="store_true", help="also the tag sensitivity on training tie pairs")
    parser.add_argument("--report", default=None, help="default: OUT/steer_report.json")
    args = parser.parse_args()
    out = Path(args.out)

    from feedalign.cli.train_cmd import load_for_generation
    from feedalign.multiobjective.steering import load_spec
    from feedalign.policies.hf import load_causal_lm, load_tokenizer, set_threads

    set_threads(1)
    heldout = json.loads((out / "steer" / "heldout.json").read_text())
    spec = load_spec(args.run)
    w_concise = [float(v) for v in args.weights.split(",") if v.strip()]  # "": no sweep
    report = {"run": str(args.run), "spec": spec.to_dict(), "samples_per_question": args.samples,
              "max_new_tokens": MAX_NEW_TOKENS}
    models = [] if args.base_only else [("steered", lambda: load_for_generation(args.run))]
    if args.base or args.base_only:
        base_dir = str(out / "smollm2-hf")
        models.append(("base", lambda: (load_causal_lm(base_dir, dtype="float32"), load_tokenizer(base_dir))))
    for name, load in models:
        model, tok = load()
        start = time.time()
        report[name] = sweep(model, tok, spec, heldout, w_concise, args.samples) if w_concise else {}
        if w_concise:
            print(f"{name}: paired length trend in words {report[name]['trend_words_paired']}, in tokens "
                  f"{report[name]['trend_tokens_paired']}, "
                  f"greedy differ {report[name]['greedy_differ']}", flush=True)
        if args.probe:
            report[name]["tag_sensitivity"] = tag_sensitivity(model, tok, spec, out / "steer" / "pairs.jsonl", Path(args.run))
            print(f"{name}: tag sensitivity {report[name]['tag_sensitivity']}", flush=True)
        report[name]["seconds"] = round(time.time() - start, 1)
        del model
    path = Path(args.report) if args.report else out / "steer_report.json"
    path.write_text(json.dumps(report, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
