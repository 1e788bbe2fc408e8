"""Helpfulness pairs for the steerable real-model run, from the model's own samples.

    python examples/real_model/steer_build.py --model MODEL.gguf --out examples/real_model/out

1. The model directory and the 48 / 16 question split are those of build_data.py (same
   seed, so the held-out questions are the same).
2. SAMPLES answers per training question are sampled through the chat template
   (temperature 1, at most MAX_NEW_TOKENS new tokens) and judged by judge.py.
3. Helpful pairs with soft labels: every two distinct answers a, b to one question are
   written in both orders, each with the probability of that preference as its row weight,
   P(a > b) = sigmoid(R_FACT * (fact(a) - fact(b))): a Bradley-Terry annotator whose helpful
   reward is R_FACT = log 4 per mentioned fact (it prefers the answer with the fact 4 times
   in 5) and who is indifferent between two answers that both (or neither) mention it.
   With both orders the MODPO optimum is finite (a deterministic label has none: its loss
   falls for ever whatever the weight), so the weight decides the trade-off. The concise
   objective is not judged here: the training source computes it as a margin on the same
   reward scale, -words / 20 (steer_train.yaml: one unit per 20 words, the concise judge's limit).
4. Prompts are written as the chat template renders the question (a string), so the
   trainer conditions the rendered user turn (the tag goes right after its header) and
   the reference scores exactly the prompt the model is asked at evaluation time.

Writes OUT/steer/pairs.jsonl, OUT/steer/heldout.json, OUT/steer/samples.jsonl (the answers,
reused on a rebuild) and OUT/steer/build.json (counts, seconds).
"""

from __future__ import annotations

import itertools
import json
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from build_data import HELD_OUT, MAX_NEW_TOKENS, model_dir, parse_args  # noqa: E402
from judge import mentions_fact  # noqa: E402
from questions import questions  # noqa: E402

SAMPLES = 6
R_FACT = math.log(4.0)  # helpful reward per mentioned fact (BT scale)


def split(seed: int) -> tuple[list, list]:
    """(held-out, training) questions, as build_data.py splits them."""
    qs = questions()
    random.Random(seed).shuffle(qs)
    return qs[:HELD_OUT], qs[HELD_OUT:]


def rendered(tok, question: str) -> str:
    from feedalign.data.chat import render_prompt

    return render_prompt(tok, [{"role": "user", "content": question}])


def own_samples(model, tok, train: list, seed: int, cache: Path) -> list:
    """SAMPLES answers per training question; kept in ``cache`` (reused when it holds the same
    questions, seed and settings, so rebuilding the pairs does not sample again)."""
    from feedalign.policies.generation import Sample, sample

    key = {"questions": [q for q, _ in train], "seed": seed, "samples": SAMPLES, "max_new_tokens": MAX_NEW_TOKENS}
    if cache.exists():
        head, *rows = cache.read_text().splitlines()
        if json.loads(head) == key:
            return [Sample(**json.loads(r)) for r in rows]
    prompts = [q for q, _ in train for _ in range(SAMPLES)]
    samples = sample(model, tok, prompts, max_new_tokens=MAX_NEW_TOKENS, temperature=1.0, seed=seed,
                     batch_size=16, chat=True)
    lines = [json.dumps(key)] + [json.dumps({"prompt": s.prompt, "text": s.text, "truncated": s.truncated},
                                            ensure_ascii=False) for s in samples]
    cache.write_text("\n".join(lines) + "\n")
    return samples


def helpful_pairs(tok, train: list, samples: list) -> list[dict]:
    pairs = []
    for i, (q, aliases) in enumerate(train):
        group = [s for s in samples[i * SAMPLES : (i + 1) * SAMPLES] if s.text.strip()]
        for a, b in itertools.combinations(group, 2):
            if a.text == b.text:
                continue
            p = 1.0 / (1.0 + math.exp(-R_FACT * (mentions_fact(a.text, aliases) - mentions_fact(b.text, aliases))))
            for chosen, rejected, weight in ((a, b, p), (b, a, 1.0 - p)):
                pairs.append({"prompt": rendered(tok, q), "chosen": chosen.text, "rejected": rejected.text,
                              "chosen_truncated": chosen.truncated, "rejected_truncated": rejected.truncated,
                              "weight": round(weight, 6)})
    return pairs


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    (out / "steer").mkdir(parents=True, exist_ok=True)

    from feedalign.policies.hf import load_causal_lm, load_tokenizer, set_threads

    set_threads(1)
    start = time.time()
    directory = model_dir(args.model, out)
    model, tok = load_causal_lm(str(directory), dtype="float32"), load_tokenizer(str(directory))
    held, train = split(args.seed)
    (out / "steer" / "heldout.json").write_text(json.dumps([{"question": q, "aliases": a} for q, a in held],
                                                           indent=1))
    samples = own_samples(model, tok, train, args.seed, out / "steer" / "samples.jsonl")
    pairs = helpful_pairs(tok, train, samples)
    (out / "steer" / "pairs.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in pairs))
    fact_pairs = [p for p in pairs if p["weight"] > 0.5]
    words = [len(p["chosen"].split()) - len(p["rejected"].split()) for p in fact_pairs]
    stats = {"samples": len(samples), "truncated": sum(s.truncated for s in samples), "rows": len(pairs),
             "questions_with_pairs": len({p["prompt"] for p in pairs}),
             "fact_decides": len(fact_pairs), "ties_on_fact": sum(p["weight"] == 0.5 for p in pairs) // 2,
             "fact_answer_longer": sum(d > 0 for d in words), "fact_answer_shorter": sum(d < 0 for d in words),
             "seconds": round(time.time() - start, 1)}
    (out / "steer" / "build.json").write_text(json.dumps(stats, indent=1))
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
