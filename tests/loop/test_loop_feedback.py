import json

import numpy as np
import pytest

from feedalign.config.errors import ConfigError
from feedalign.data import load_records
from feedalign.loop.config import JudgeConfig
from feedalign.loop.feedback import judged_sets, write_sets
from feedalign.loop.judges import check_scores, make_judge

SAMPLES = [("p1", "a"), ("p1", "b b"), ("p1", "c c c"), ("p1", "d d d d"),
           ("p2", "x"), ("p2", "y y"), ("p2", "z"), ("p2", "w w w")]


def _scores():
    short = np.array([-len(c.split()) for _, c in SAMPLES], dtype=float)
    return {"short": short, "long": -short}


def test_sets_follow_the_scores_at_temperature_zero():
    sets = judged_sets(SAMPLES, _scores(), ["short", "long"], temperature=0.0, seed=0, tag="round_1")
    length = {c: len(c.split()) for _, c in SAMPLES}
    for pair in sets["pairs_short"]:
        assert length[pair.chosen] < length[pair.rejected]
    for pair in sets["pairs_long"]:
        assert length[pair.chosen] > length[pair.rejected]
    # "x" and "z" tie on both objectives: never a preference, always a tie when paired
    all_pairs = sets["pairs_short"] + sets["ties_short"]
    assert len(all_pairs) == 4  # disjoint pairing: 2 pairs per prompt of 4 samples
    for tie in sets["ties_short"]:
        assert length[tie.chosen] == length[tie.rejected]
    assert {r.completion for r in sets["positives_short"]} <= {"a", "x", "z"}
    assert {r.completion for r in sets["negatives_short"]} == {"d d d d", "w w w"}
    thumbs = {r.completion: r.label for r in sets["thumbs_short"]}
    assert thumbs["a"] and not thumbs["d d d d"]  # above / below the prompt's mean
    # p2's scores are -1, -2, -1, -3: mean -1.75, none exactly at it; all equal -> all neutral
    same = judged_sets([("q", "a"), ("q", "b"), ("q", "c")], {"short": np.zeros(3)}, ["short"],
                       temperature=0.0, seed=0, tag="r")
    assert same["thumbs_short"] == [] and len(same["neutral_short"]) == 3
    assert same["pairs_short"] == [] and len(same["ties_short"]) == 1
    assert all(r.objective == "short" for r in sets["thumbs_short"] + sets["positives_short"])
    assert sets["pairs_short"][0].id.startswith("round_1/pairs_short/")


def test_empty_completions_are_not_judged():
    samples = SAMPLES + [("p2", "")]
    scores = {k: np.append(v, 0.0) for k, v in _scores().items()}
    sets = judged_sets(samples, scores, ["short"], temperature=0.1, seed=0, tag="r")
    assert all(r.completion for r in sets["thumbs_short"])
    assert "ties_short" not in sets  # with annotator noise every pair is a (noisy) preference


def test_files_have_provenance_and_load(tmp_path):
    sets = judged_sets(SAMPLES, _scores(), ["short"], temperature=0.0, seed=0, tag="round_2")
    table = {pc: {"short": float(s)} for pc, s in zip(SAMPLES, _scores()["short"])}
    files = write_sets(sets, tmp_path, round_=2, judge="test", raw_prompts={"p1": "P1"}, scores=table)
    rows = [json.loads(line) for line in open(files["pairs_short"]["path"])]
    assert rows and all(r["round"] == 2 and r["judge"] == "test" and "time" in r for r in rows)
    assert {r["raw_prompt"] for r in rows} <= {"P1", "p2"}
    assert len(load_records(files["thumbs_short"]["path"]).records) == files["thumbs_short"]["records"] == 8
    assert files["neutral_short"]["records"] == 0
    if sets["ties_short"]:
        tie = json.loads(open(files["ties_short"]["path"]).readline())
        assert len(tie["completions"]) == 2 and tie["judge_scores"][0] == tie["judge_scores"][1]


def test_callable_judge_and_score_checks():
    judge = make_judge(JudgeConfig(kind="callable", target="judge_fns:shortness", objectives=("short",)))
    assert judge.score(["p"], ["a b c"])["short"].tolist() == [-3.0]
    rows = make_judge(JudgeConfig(kind="callable", target="judge_fns:rows_of_dicts", objectives=("short",)))
    assert rows.score(["p", "q"], ["ab", "c"])["short"].tolist() == [-2.0, -1.0]
    bad = make_judge(JudgeConfig(kind="callable", target="judge_fns:wrong_length", objectives=("short",)))
    with pytest.raises(ValueError, match="1 scores for 'short', expected 2"):
        bad.score(["p", "q"], ["a", "b"])
    with pytest.raises(ValueError, match="no scores for objective 'long'"):
        check_scores({"short": [1.0]}, ["long"], 1, "j")
    with pytest.raises(ValueError, match="non-finite"):
        check_scores({"short": [float("nan")]}, ["short"], 1, "j")
    with pytest.raises(ConfigError, match="judge.target"):
        make_judge(JudgeConfig(kind="callable", target="judge_fns:missing", objectives=("short",)))
    with pytest.raises(ConfigError, match="target: must look like"):
        JudgeConfig(kind="callable", target="no_colon")


def test_reward_model_judge_scores_per_objective(tmp_path):
    from feedalign.envs.text_task import build_tiny_llama, build_tokenizer
    from feedalign.policies.reward_model import MultiObjectiveRewardModel

    tokenizer = build_tokenizer()
    rm = MultiObjectiveRewardModel.from_causal_lm(build_tiny_llama(tokenizer, seed=0), ["helpful", "concise"])
    rm.save(tmp_path / "rm", tokenizer=tokenizer)
    judge = make_judge(JudgeConfig(kind="reward_model", path=str(tmp_path / "rm"), objectives=("concise",)))
    prompts = ["write about fruit with apple kiwi plum fig :"] * 2
    scores = judge.score(prompts, ["apple .", "i like apple , kiwi and fig too ."])
    direct = rm.score(tokenizer, prompts, ["apple .", "i like apple , kiwi and fig too ."])[:, rm.index("concise")]
    assert np.allclose(scores["concise"], direct.double().numpy(), atol=1e-6)
    assert set(scores) == {"concise"} and scores["concise"][0] != scores["concise"][1]
    with pytest.raises(ConfigError, match="judge.objectives"):
        make_judge(JudgeConfig(kind="reward_model", path=str(tmp_path / "rm"), objectives=("safe",)))
