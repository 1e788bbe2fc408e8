"""Front sweep: exact metrics on a hand-made policy, monotonicity report, outputs, CLI."""

import json

import numpy as np
import pytest
import yaml

from feedalign.envs.text_task import TextTask
from feedalign.multiobjective.front import make_scorer, parse_weight_list, run_front, text_task_ideal_front

TASK = TextTask()
PROMPTS = TASK.prompts(6, "test", seed=0)


def items_policy(counts):
    """A policy for w mentioning ``counts[w1]`` requested items and nothing else."""

    def generate(w, prompts):
        c = counts[round(float(w[0]), 6)]
        return [" ".join(TASK.parse_prompt(p)[1][:c]) + " ." for p in prompts]

    return generate


def test_ideal_policy_reaches_the_ideal_front_with_hand_computed_metrics(tmp_path):
    weights = parse_weight_list("0,0.25,0.5,0.75,1")
    generate = items_policy({0.0: 0, 0.25: 1, 0.5: 2, 0.75: 3, 1.0: 4})
    score, objectives, defaults = make_scorer("builtin:text_task")
    assert objectives == ["helpful", "concise"]
    result = run_front(generate, score, weights=weights, prompts=PROMPTS, objectives=objectives,
                       output_dir=tmp_path, samples_per_prompt=2, ref=defaults["ref"], lower=defaults["lower"],
                       upper=defaults["upper"], exact=defaults["exact"])
    c = np.arange(5)
    expected = np.stack([c / 4, 1 - c / 12], axis=1)
    np.testing.assert_allclose(result.points, expected)
    np.testing.assert_allclose(result.points, text_task_ideal_front())
    np.testing.assert_allclose(result.stderr, 0.0, atol=1e-12)
    m = result.metrics
    # HV w.r.t. (0, 0): (0, 1) does not count (not > ref); the rest form a staircase.
    assert m["hypervolume"] == pytest.approx(8 / 12 + (0.75 + 0.5 + 0.25) / 12)
    assert m["hypervolume_ratio"] == pytest.approx(1.0)
    eu_cond = np.mean([w @ p for w, p in zip(weights, expected)])
    assert m["eu_cond"] == pytest.approx(eu_cond)
    grid = np.linspace(0, 1, 11)
    assert m["eu_front"] == pytest.approx(np.mean([max(g * p[0] + (1 - g) * p[1] for p in expected) for g in grid]))
    assert m["n_nondominated"] == 5
    assert result.violations == []
    saved = json.loads((tmp_path / "front.json").read_text())
    assert [row["helpful"] for row in saved["per_weight"]] == pytest.approx(expected[:, 0].tolist())
    assert saved["metrics"]["hypervolume"] == pytest.approx(m["hypervolume"])
    assert (tmp_path / "front.png").stat().st_size > 1000
    report = (tmp_path / "front.md").read_text()
    assert "| w | helpful | concise |" in report and "the trade-off is monotone in w" in report


def test_non_monotone_sweep_is_reported():
    generate = items_policy({0.0: 0, 0.25: 1, 0.5: 0, 1.0: 4})
    score, objectives, _ = make_scorer("builtin:text_task")
    result = run_front(generate, score, weights=parse_weight_list("0,0.25,0.5,1"), prompts=PROMPTS,
                       objectives=objectives, lower=[0, 0], upper=[1, 1], ref=[0, 0])
    found = {(v["objective"], v["w_prev"], v["w_next"]) for v in result.violations}
    assert found == {("helpful", 0.25, 0.5), ("concise", 0.25, 0.5)}
    assert all(v["significant"] for v in result.violations)  # deterministic: no noise at all
    assert result.metrics["n_nondominated"] == 3  # (0.25 items) point and the duplicate drop out


def test_kl_is_reported_when_log_ratios_are_given():
    score, objectives, _ = make_scorer("builtin:text_task")
    result = run_front(items_policy({0.0: 0, 1.0: 4}), score, weights=[[0, 1], [1, 0]], prompts=PROMPTS,
                       objectives=objectives, log_ratio=lambda w, p, c: np.full(len(p), 2.0 * w[0]))
    assert result.kl.tolist() == [0.0, 2.0]
    assert result.to_dict()["per_weight"][1]["kl"] == 2.0


def test_parse_weight_list():
    np.testing.assert_allclose(parse_weight_list("0, 0.3 ,1"), [[0, 1], [0.3, 0.7], [1, 0]])
    np.testing.assert_allclose(parse_weight_list("0.2,0.3,0.5;1,0,0", 3), [[0.2, 0.3, 0.5], [1, 0, 0]])
    with pytest.raises(ValueError, match="must be in"):
        parse_weight_list("0,1.5")
    with pytest.raises(ValueError, match="must sum to 1"):
        parse_weight_list("0.2,0.3,0.6", 3)


@pytest.fixture(scope="module")
def steerable_dir(tmp_path_factory):
    from feedalign.envs.text_task import build_tiny_llama, build_tokenizer
    from feedalign.multiobjective.steering import SteeringSpec, save_spec
    from feedalign.policies.tiny import save_tiny

    tokenizer = build_tokenizer()
    model = build_tiny_llama(tokenizer, seed=0)
    spec = SteeringSpec(("helpful", "concise"), trained="helpful", grid=20, render="tokens")
    spec.prepare(tokenizer, model)
    out = save_tiny(model, tokenizer, tmp_path_factory.mktemp("steerable"))
    save_spec(spec, out)
    return out


def test_cli_front_on_a_steerable_model(steerable_dir, tmp_path):
    from feedalign.cli.main import main

    config = {
        "output_dir": str(tmp_path / "front"),
        "policy": {"kind": "steerable", "path": str(steerable_dir), "reference": str(steerable_dir), "dtype": "float32"},
        "scorer": "builtin:text_task",
        "prompts": {"source": "builtin:text_task", "n": 4},
        "max_new_tokens": 6,
        "device": "cpu",
    }
    (tmp_path / "front.yaml").write_text(yaml.safe_dump(config))
    assert main(["front", str(tmp_path / "front.yaml"), "seed=1", "--weights", "0,0.5,1"]) == 0
    saved = json.loads((tmp_path / "front" / "front.json").read_text())
    assert [row["weights"] for row in saved["per_weight"]] == [[0, 1], [0.5, 0.5], [1, 0]]
    assert all(np.isfinite(row["kl"]) for row in saved["per_weight"])
    assert saved["metrics"]["exact_hypervolume"] == pytest.approx(8 / 12 + 1.5 / 12)
    assert (tmp_path / "front" / "front.png").exists() and (tmp_path / "front" / "front.md").exists()


def test_cli_steer_prints_the_conditioned_prompt(steerable_dir, capsys):
    from feedalign.cli.main import main

    prompt = PROMPTS[0]
    assert main(["steer", str(steerable_dir), "--weights", "0.3,0.7", "--prompt", prompt, "--max-new-tokens", "4"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["conditioned_prompt"] == "<w:0.30> <w:0.70> " + prompt
    assert main(["steer", str(steerable_dir), "--weights", "0.3,0.6", "--prompt", prompt]) == 2


def test_cli_front_on_a_soup_matches_the_merged_adapter_at_a_vertex(tmp_path):
    import copy

    import torch
    from peft import LoraConfig, PeftModel, get_peft_model

    from feedalign.cli.main import main
    from feedalign.envs.text_task import build_tiny_llama, build_tokenizer
    from feedalign.policies.hf import generate
    from feedalign.policies.tiny import save_tiny

    tokenizer = build_tokenizer()
    base = build_tiny_llama(tokenizer, seed=0)
    base_dir = save_tiny(base, tokenizer, tmp_path / "base")
    adapters = {}
    for seed, objective in ((1, "helpful"), (2, "concise")):
        torch.manual_seed(seed)
        lora = get_peft_model(copy.deepcopy(base), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                                              init_lora_weights=False))
        lora.save_pretrained(tmp_path / objective)
        adapters[objective] = str(tmp_path / objective)
    config = {
        "output_dir": str(tmp_path / "front"),
        "policy": {"kind": "soups", "base": str(base_dir), "adapters": adapters, "dtype": "float32"},
        "prompts": {"n": 3},
        "max_new_tokens": 6,
        "device": "cpu",
    }
    # Keys sorted on purpose: the weight order follows the scorer's objectives, not the mapping.
    (tmp_path / "front.yaml").write_text(yaml.safe_dump(config, sort_keys=True))
    assert main(["front", str(tmp_path / "front.yaml"), "--weights", "1,0.5"]) == 0
    saved = json.loads((tmp_path / "front" / "front.json").read_text())
    merged = PeftModel.from_pretrained(copy.deepcopy(base), adapters["helpful"]).merge_and_unload()
    prompts = TASK.prompts(3, "test", 0)
    direct = generate(merged, tokenizer, prompts, max_new_tokens=6, seed=0, batch_size=32)
    scores = TASK.score_many(prompts, direct)
    assert saved["per_weight"][0]["helpful"] == pytest.approx(scores["helpful"].mean())
    assert saved["per_weight"][0]["concise"] == pytest.approx(scores["concise"].mean())
    assert saved["samples"][0]["examples"][0]["completion"] == direct[0]


@pytest.mark.parametrize("name", ["front_text_task.yaml", "front_soups.yaml"])
def test_example_configs_parse(name):
    from pathlib import Path

    from feedalign.cli.front_cmd import load_front_config

    config = load_front_config(Path(__file__).resolve().parents[2] / "examples" / name)
    assert config.scorer == "builtin:text_task"
    assert parse_weight_list(config.weights).shape == (5, 2)


def test_reversed_sweep_counts_as_significant_violations():
    # Items fall as w_helpful rises: reversed end to end.
    generate = items_policy({0.0: 4, 0.25: 3, 0.5: 2, 0.75: 1, 1.0: 0})
    score, objectives, _ = make_scorer("builtin:text_task")
    result = run_front(generate, score, weights=parse_weight_list("0,0.25,0.5,0.75,1"), prompts=PROMPTS,
                       objectives=objectives, lower=[0, 0], upper=[1, 1], ref=[0, 0])
    assert [t["status"] for t in result.trend] == ["reversed", "reversed"]
    assert result.metrics["significant_violations"] == len(result.violations) + 2
    ok = run_front(items_policy({0.0: 0, 0.5: 2, 1.0: 4}), score, weights=parse_weight_list("0,0.5,1"),
                   prompts=PROMPTS, objectives=objectives, lower=[0, 0], upper=[1, 1], ref=[0, 0])
    assert ok.metrics["significant_violations"] == 0
    assert [t["status"] for t in ok.trend] == ["increasing", "increasing"]


def test_three_objective_front_writes_projection_plots_and_checks_trends(tmp_path):
    from feedalign.multiobjective.weights import simplex_grid

    weights = simplex_grid(3, 4)
    prompts = ["p"] * 4

    def generate(w, batch):
        return [",".join(f"{v:.4f}" for v in w)] * len(batch)

    def score(batch, completions):
        vals = np.array([[float(v) for v in c.split(",")] for c in completions])
        return {"a": 0.1 + 0.8 * vals[:, 0], "b": 0.1 + 0.8 * vals[:, 1], "c": 0.9 - 0.8 * vals[:, 2]}

    result = run_front(generate, score, weights=weights, prompts=prompts, objectives=["a", "b", "c"],
                       output_dir=tmp_path, ref=[0, 0, 0], lower=[0, 0, 0], upper=[1, 1, 1])
    # "c" falls as its own weight rises: reversed; the other two steer.
    assert [t["status"] for t in result.trend] == ["increasing", "increasing", "reversed"]
    assert result.metrics["significant_violations"] == 1
    assert (tmp_path / "front_pairs.png").stat().st_size > 5000
    assert (tmp_path / "front_parallel.png").stat().st_size > 5000
    assert "front_parallel.png" in (tmp_path / "front.md").read_text()
