"""Helpfulness pairs for the steerable real-model run, from the model's own samples.

    python examples/real_model/steer_build.py --model MODEL.gguf --out examples/real_model/out

1. The model directory and the 48 / 16 question split are those of build_data.py (same
   seed, so the held-out questions are the same).
2. SAMPLES answers per training question are sampled through the chat template
   (temperature 1, at most MAX_NEW_TOKENS new tokens) and judged by judge.py.
3. Helpful pairs: every two answers to one question of which exactly one mentions the
   fact (chosen) and the other does not. The concise objective is not judged here: the
   training source computes it as a margin, -words / 20 (steer.yaml).
4. Prompts are written as the chat template renders the question (a string), so the
   trainer conditions the rendered user turn (the tag goes right after its header) and
   the reference scores exactly the prompt the model is asked at evaluation time.

Writes OUT/steer/pairs.jsonl, OUT/steer/heldout.json and OUT/steer/build.json (counts,
lengths, seconds).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from build_data import HELD_OUT, MAX_NEW_TOKENS, model_dir  # noqa: E402
from judge import mentions_fact  # noqa: E402
from questions import questions  # noqa: E402

SAMPLES = 6


def split(seed: int) -> tuple[list, list]:
    """(held-out, training) questions, as build_data.py splits them."""
    qs = questions()
    random.Random(seed).shuffle(qs)
    return qs[:HELD_OUT], qs[HELD_OUT:]


def rendered(tok, question: str) -> str:
    from feedalign.data.chat import render_prompt

    return render_prompt(tok, [{"role": "user", "content": question}])


def helpful_pairs(tok, train: list, samples: list) -> list[dict]:
    pairs = []
    for i, (q, aliases) in enumerate(train):
        group = [s for s in samples[i * SAMPLES : (i + 1) * SAMPLES] if s.text.strip()]
        for a, b in itertools.combinations(group, 2):
            fa, fb = mentions_fact(a.text, aliases), mentions_fact(b.text, aliases)
            if fa == fb or a.text == b.text:
                continue
            chosen, rejected = (a, b) if fa else (b, a)
            pairs.append({"prompt": rendered(tok, q), "chosen": chosen.text, "rejected": rejected.text,
                          "chosen_truncated": chosen.truncated, "rejected_truncated": rejected.truncated})
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="the .gguf file or a Hugging Face directory")
    parser.add_argument("--out", default="examples/real_model/out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    (out / "steer").mkdir(parents=True, exist_ok=True)

    from feedalign.policies.generation import sample
    from feedalign.policies.hf import load_causal_lm, load_tokenizer, set_threads

    set_threads(1)
    start = time.time()
    directory = model_dir(args.model, out)
    model, tok = load_causal_lm(str(directory), dtype="float32"), load_tokenizer(str(directory))
    held, train = split(args.seed)
    (out / "steer" / "heldout.json").write_text(json.dumps([{"question": q, "aliases": a} for q, a in held],
                                                           indent=1))
    prompts = [q for q, _ in train for _ in range(SAMPLES)]
    samples = sample(model, tok, prompts, max_new_tokens=MAX_NEW_TOKENS, temperature=1.0, seed=args.seed,
                     batch_size=16, chat=True)
    pairs = helpful_pairs(tok, train, samples)
    (out / "steer" / "pairs.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in pairs))
    words = [len(p["chosen"].split()) - len(p["rejected"].split()) for p in pairs]
    stats = {"samples": len(samples), "truncated": sum(s.truncated for s in samples), "pairs": len(pairs),
             "questions_with_pairs": len({p["prompt"] for p in pairs}),
             "chosen_longer": sum(d > 0 for d in words), "chosen_shorter": sum(d < 0 for d in words),
             "mean_words_chosen_minus_rejected": round(statistics.fmean(words), 2) if words else None,
             "seconds": round(time.time() - start, 1)}
    (out / "steer" / "build.json").write_text(json.dumps(stats, indent=1))
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
