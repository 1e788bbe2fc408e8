"""Build the real-model example's feedback data by sampling the model itself.

    python examples/real_model/build_data.py --model MODEL.gguf --out examples/real_model/out

1. A .gguf model is dequantised once to OUT/smollm2-hf (a Hugging Face directory the
   configs train from); a directory is used as it is (symlinked there).
2. 64 questions are split (seeded) into 48 training and 16 held-out questions.
3. Four completions per training question are sampled through the chat template and
   judged: fact = mentions the right fact, concise = at most 20 words and not cut off.
   score = fact + concise.
4. OUT/pairs.jsonl: conversational pairs (chosen has the higher score) for DPO;
   OUT/thumbs.jsonl: one thumbs-up (fact and concise) or thumbs-down row per sample, for KTO
   (imbalanced, as real thumbs are); samples cut off at the limit carry "truncated": true.
   OUT/heldout.json: the held-out questions.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from judge import concise, mentions_fact  # noqa: E402
from questions import questions  # noqa: E402

HELD_OUT = 16
SAMPLES = 4
MAX_NEW_TOKENS = 48


def model_dir(model: str, out: Path) -> Path:
    from feedalign.policies.gguf import dequantize_to_dir, is_gguf

    target = out / "smollm2-hf"
    if is_gguf(model):
        return dequantize_to_dir(model, target)
    if not target.exists():
        target.symlink_to(Path(model).resolve(), target_is_directory=True)
    return target


def parse_args() -> argparse.Namespace:
    """--model, --out, --seed: shared with steer_build.py."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True, help="the .gguf file or a Hugging Face directory")
    parser.add_argument("--out", default="examples/real_model/out")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import torch

    from feedalign.policies.generation import sample
    from feedalign.policies.hf import load_causal_lm, load_tokenizer, set_threads

    set_threads(1)
    start = time.time()
    directory = model_dir(args.model, out)
    model, tok = load_causal_lm(str(directory), dtype="float32"), load_tokenizer(str(directory))
    qs = questions()
    random.Random(args.seed).shuffle(qs)
    held, train = qs[:HELD_OUT], qs[HELD_OUT:]
    (out / "heldout.json").write_text(json.dumps([{"question": q, "aliases": a} for q, a in held], indent=1))
    prompts = [q for q, _ in train for _ in range(SAMPLES)]
    with torch.no_grad():
        samples = sample(model, tok, prompts, max_new_tokens=MAX_NEW_TOKENS, temperature=1.0, seed=args.seed,
                         batch_size=16, chat=True)
    pairs, thumbs = [], []
    for i, (q, aliases) in enumerate(train):
        group = samples[i * SAMPLES : (i + 1) * SAMPLES]
        scored = []
        for s in group:
            fact, short = mentions_fact(s.text, aliases), concise(s.text, s.truncated)
            scored.append((int(fact) + int(short), s))
            row = {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": s.text}],
                   "label": bool(fact and short)}
            if s.truncated:
                row["truncated"] = True
            thumbs.append(row)
        for (a, sa), (b, sb) in itertools.combinations(scored, 2):
            if a != b and sa.text.strip() and sb.text.strip() and sa.text != sb.text:
                chosen, rejected = (sa, sb) if a > b else (sb, sa)
                pairs.append({"prompt": [{"role": "user", "content": q}],
                              "chosen": [{"role": "assistant", "content": chosen.text}],
                              "rejected": [{"role": "assistant", "content": rejected.text}]})
    for name, rows in (("pairs", pairs), ("thumbs", thumbs)):
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    ups = sum(r["label"] for r in thumbs)
    print(json.dumps({"pairs": len(pairs), "thumbs_up": ups, "thumbs_down": len(thumbs) - ups,
                      "truncated": sum(s.truncated for s in samples), "seconds": round(time.time() - start, 1)}))


if __name__ == "__main__":
    main()
