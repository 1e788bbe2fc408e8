"""The steerable real-model example (examples/real_model/steer_*.py).

Fast checks (always run): the evaluation asks the question exactly as the training data
conditioned it, and the length-trend statistics. Opt-in, slow (about 25-30 min on one CPU
thread): build the pairs from SmolLM2-135M-Instruct's own samples, train the one steerable
run of steer_train.yaml (weight adapters, 120 steps), sample the held-out questions at w_concise
in {0, 0.5, 1}; answers must get shorter as w_concise grows (z <= -2) and greedy answers must
differ between weights (measured: paired slope -6.9 ± 2.3 words, z = -3.1, and -8.4 ± 2.4 tokens,
z = -3.5; docs/real_model.md,
"Steering a real model"). Run as

    FEEDALIGN_REAL_MODEL=path/to/SmolLM2-135M-Instruct.Q4_1.gguf python -m pytest -m real_model tests/examples

(the path may also be a Hugging Face directory of the dequantised model)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = "import sys; from feedalign.cli.main import main; sys.exit(main())"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "real_model"
sys.path.insert(0, str(EXAMPLE))

import steer_build  # noqa: E402
import steer_eval  # noqa: E402


@pytest.fixture(scope="module")
def chat_tok():
    from feedalign.policies.tiny import build_chat_tokenizer

    return build_chat_tokenizer()


@pytest.mark.parametrize("render", ["text", "tokens"])
def test_evaluation_prompt_is_the_trained_prompt(chat_tok, render):
    """Training conditions the rendered question (a string); evaluation conditions the
    message and renders it (as generate_steered(chat=True) does): the same text."""
    import copy

    from feedalign.data.chat import render_prompt
    from feedalign.multiobjective.steering import SteeringSpec

    spec = SteeringSpec(objectives=("helpful", "concise"), trained="helpful", grid=20, placement="user",
                        render=render)
    chat_tok = copy.deepcopy(chat_tok)
    spec.prepare(chat_tok)  # render "tokens": the level tokens the run adds
    question = "what is the capital of peru?"
    for w in ([0.95, 0.05], [0.5, 0.5], [0.05, 0.95]):
        (asked,) = steer_eval.tagged_prompts(chat_tok, spec, [question], w)
        assert asked == spec.condition_prompt(steer_build.rendered(chat_tok, question), w)
        assert "<|im_start|>user\n" + spec.prefix(w) + question + "<|im_end|>" in asked
        assert asked.endswith("<|im_start|>assistant\n")
        # the reference scores the untagged prompt
        assert spec.strip_prompt(asked) == render_prompt(chat_tok, [{"role": "user", "content": question}])


def test_paired_trend_sign_and_error():
    weights = [0.0, 0.5, 1.0]
    # three questions, lengths falling by 10, 20, 30 words from w = 0 to 1
    words = [[30.0, 40.0, 50.0], [25.0, 30.0, 35.0], [20.0, 20.0, 20.0]]
    trend = steer_eval.paired_trend(weights, words)
    assert trend["slope"] == pytest.approx(-20.0)
    assert trend["se"] == pytest.approx(10.0 / 3 ** 0.5, abs=1e-3)  # sd of (-10, -20, -30) / sqrt(3)
    assert trend["z"] < -2 and trend["n_questions"] == 3
    flat = steer_eval.paired_trend(weights, [[10.0, 12.0, 11.0], [12.0, 10.0, 11.0], [11.0, 11.0, 12.0]])
    assert abs(flat["z"]) < 2


def test_helpful_pairs_are_soft_labelled_in_both_orders(chat_tok):
    from feedalign.policies.generation import Sample

    train = [("what is the capital of peru?", ("lima",))]
    texts = [("lima.", False), ("it is lima, a large city on the coast", True), ("cusco.", False),
             ("cusco.", False), ("", False), ("lima.", False)]
    samples = [Sample("p", t, c) for t, c in texts]
    pairs = steer_build.helpful_pairs(chat_tok, train, samples)
    # 5 non-empty answers, 10 unordered pairs, 2 of identical texts skipped: 8 pairs, 2 rows each
    assert len(pairs) == 16
    by_weight = {}
    for p in pairs:
        by_weight.setdefault(p["weight"], []).append(p)
        assert p["chosen_truncated"] == p["chosen"].startswith("it is") and not p["chosen"] == p["rejected"]
    assert sorted((w, len(rows)) for w, rows in by_weight.items()) == [(0.2, 6), (0.5, 4), (0.8, 6)]
    assert all("lima" in p["chosen"] and "cusco" in p["rejected"] for p in by_weight[0.8])  # P = 4 / 5
    assert all("lima" in p["chosen"] and "lima" in p["rejected"] for p in by_weight[0.5])  # indifferent
    orders = {(p["chosen"], p["rejected"]): p["weight"] for p in pairs}
    assert all(abs(w + orders[(b, a)] - 1) < 1e-9 for (a, b), w in orders.items())
    assert pairs[0]["prompt"].endswith("<|im_start|>assistant\n")


def _run(args: list[str], cwd: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.real_model
def test_real_model_steers_answer_length(real_model, tmp_path):
    root = EXAMPLE.parents[1]
    out = tmp_path / "out"
    _run([sys.executable, str(EXAMPLE / "steer_build.py"), "--model", real_model, "--out", str(out)], root)
    _run([sys.executable, "-c", CLI, "train", str(EXAMPLE / "steer_train.yaml"),
          f"model.path={out / 'smollm2-hf'}", f"data.0.path={out / 'steer' / 'pairs.jsonl'}",
          f"data.0.margins.options.tokenizer={out / 'smollm2-hf'}",
          f"train.output_dir={out / 'runs' / 'steer'}"], root)
    _run([sys.executable, str(EXAMPLE / "steer_eval.py"), "--out", str(out), "--run",
          str(out / "runs" / "steer" / "final"), "--weights", "0,0.5,1"], root)
    report = json.loads((out / "steer_report.json").read_text())["steered"]
    trend = report["trend_words_paired"]
    assert trend["z"] is not None and trend["z"] <= -2, trend  # shorter answers as w_concise grows
    tokens = report["trend_tokens_paired"]
    assert tokens["z"] is not None and tokens["z"] <= -2, tokens  # in tokens too
    assert report["greedy_differ"]["lowest_vs_highest"] > 0, report["greedy_answers"]
