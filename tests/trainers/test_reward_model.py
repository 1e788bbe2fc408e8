"""Multi-objective reward model: heads, routing, normalisation, save/load, CLI, accuracy."""

import json

import numpy as np
import pytest
import torch
import yaml

from feedalign.data.records import LabeledRecord, PairRecord
from feedalign.envs.text_task import TextTask, build_tiny_llama, build_tokenizer
from feedalign.policies.reward_model import MultiObjectiveRewardModel, last_token_index, load_reward_model
from feedalign.trainers.reward_model import (
    RewardModelConfig,
    RMModelConfig,
    RMSourceConfig,
    RMTrainConfig,
    split_by_prompt,
    train_reward_model,
)

OBJECTIVES = ("helpful", "concise")


def simulate(task, n_prompts, seed, temperature=0.1):
    """Per-objective BT pairs (P(a > b) = sigmoid(delta r_k / T)) and logistic thumbs
    (P(up) = sigmoid((r_k - 0.5) / T)) on the text task; objectives alternate by prompt."""
    rng = np.random.default_rng(seed)
    pairs, thumbs = [], []
    for i, prompt in enumerate(task.prompts(n_prompts, seed=seed)):
        a, b = task.sample_sft_completion(prompt, rng), task.sample_sft_completion(prompt, rng)
        sa, sb = task.score(prompt, a), task.score(prompt, b)
        obj, other = OBJECTIVES[i % 2], OBJECTIVES[1 - i % 2]
        if a != b and sa[obj] != sb[obj]:
            a_wins = rng.random() < 1 / (1 + np.exp(-(sa[obj] - sb[obj]) / temperature))
            pairs.append(PairRecord(prompt, a if a_wins else b, b if a_wins else a, objective=obj))
        up = rng.random() < 1 / (1 + np.exp(-(sa[other] - 0.5) / temperature))
        thumbs.append(LabeledRecord(prompt, a, bool(up), objective=other))
    return pairs, thumbs


def write_jsonl(path, records):
    with open(path, "w") as fh:
        for r in records:
            row = {"prompt": r.prompt, "objective": r.objective}
            if isinstance(r, PairRecord):
                row.update(chosen=r.chosen, rejected=r.rejected)
            else:
                row.update(completion=r.completion, label=r.label)
            fh.write(json.dumps(row) + "\n")


@pytest.fixture(scope="module")
def tiny_rm():
    tokenizer = build_tokenizer()
    model = MultiObjectiveRewardModel.from_causal_lm(build_tiny_llama(tokenizer, seed=1), OBJECTIVES, seed=3)
    return model, tokenizer


def test_last_token_index_left_and_right_padding():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_token_index(mask).tolist() == [2, 4, 4]


def test_scores_read_the_last_real_token_and_ignore_padding(tiny_rm):
    model, tokenizer = tiny_rm
    prompts = ["write about fruit with apple pear plum fig :"] * 2
    completions = ["apple .", "i like apple , pear and plum too ."]
    together = model.score(tokenizer, prompts, completions, normalize=False)
    alone = torch.cat([model.score(tokenizer, [p], [c], normalize=False) for p, c in zip(prompts, completions)])
    assert together.shape == (2, 2)
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    # Each column is its own head: a head is a linear map of the same pooled state.
    w = model.heads["concise"].weight.detach().clone()
    with torch.no_grad():
        model.heads["concise"].weight.mul_(2.0)
        model.heads["concise"].bias.fill_(0.5)
    doubled = model.score(tokenizer, prompts, completions, normalize=False)
    torch.testing.assert_close(doubled[:, 0], together[:, 0])
    torch.testing.assert_close(doubled[:, 1], 2 * together[:, 1] + 0.5, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        model.heads["concise"].weight.copy_(w)
        model.heads["concise"].bias.zero_()


def test_normalization_and_save_load_round_trip(tiny_rm, tmp_path):
    model, tokenizer = tiny_rm
    task = TextTask()
    rng = np.random.default_rng(0)
    prompts = task.prompts(40, seed=1)
    completions = [task.sample_sft_completion(p, rng) for p in prompts]
    model.fit_normalization(tokenizer, prompts, completions, source="train")
    normed = model.score(tokenizer, prompts, completions)
    torch.testing.assert_close(normed.mean(0), torch.zeros(2), atol=1e-4, rtol=0)
    torch.testing.assert_close(normed.std(0), torch.ones(2), atol=1e-4, rtol=0)
    model.save(tmp_path / "rm", tokenizer)
    meta = json.loads((tmp_path / "rm" / "reward_model.json").read_text())
    assert meta["objectives"] == list(OBJECTIVES)
    assert meta["normalization"]["source"] == "train"
    loaded, loaded_tok = load_reward_model(tmp_path / "rm")
    assert loaded.objectives == OBJECTIVES
    torch.testing.assert_close(loaded.score(loaded_tok, prompts, completions), normed, rtol=1e-5, atol=1e-5)
    with pytest.raises(KeyError, match=r"no head 'harmless'; heads: \['helpful', 'concise'\]"):
        loaded.index("harmless")


def test_objective_names_are_checked():
    backbone = torch.nn.Identity()
    with pytest.raises(ValueError, match="duplicate"):
        MultiObjectiveRewardModel(backbone, ["a", "a"], hidden_size=4)
    with pytest.raises(ValueError, match="not plain identifiers"):
        MultiObjectiveRewardModel(backbone, ["a.b"], hidden_size=4)


def test_split_by_prompt_is_seeded_and_disjoint():
    records = [PairRecord(f"p{i % 10}", f"a{i}", f"b{i}") for i in range(50)]
    train, held = split_by_prompt(records, 0.2, seed=4)
    assert len({r.prompt for r in held}) == 2
    assert not {r.prompt for r in train} & {r.prompt for r in held}
    assert len(train) + len(held) == 50
    assert split_by_prompt(records, 0.2, seed=4)[1] == held


def test_records_route_to_their_objective_head(tmp_path):
    """Only helpful pairs: the concise head must not move (its gradient is exactly zero)."""
    task = TextTask()
    pairs, _ = simulate(task, 40, seed=2)
    helpful = [p for p in pairs if p.objective == "helpful"]
    config = RewardModelConfig(
        model=RMModelConfig(builder="text_task", seed=5),
        data=(RMSourceConfig(name="pairs", objective="helpful"),),
        objectives=OBJECTIVES,
        train=RMTrainConfig(output_dir=str(tmp_path / "rm"), steps=3, batch_size=4, lr=1e-2,
                            eval_fraction=0.0, normalization="none", device="cpu"),
    )
    result = train_reward_model(config, records={"pairs": pairs})
    fresh = MultiObjectiveRewardModel.from_causal_lm(build_tiny_llama(build_tokenizer(), seed=5), OBJECTIVES, seed=5)
    assert torch.equal(result.model.heads["concise"].weight.cpu(), fresh.heads["concise"].weight)
    assert not torch.equal(result.model.heads["helpful"].weight.cpu(), fresh.heads["helpful"].weight)
    # The objective tag filters: the concise pairs of this source were dropped, not trained.
    assert result.metrics["dropped_records"]["pairs"] == len(pairs) - len(helpful)
    assert result.metrics["n_train"] == {"pairs/pair": len(helpful)}


def test_scored_records_are_refused(tmp_path):
    from feedalign.data.records import ScoredRecord

    config = RewardModelConfig(
        model=RMModelConfig(builder="text_task"), data=(RMSourceConfig(name="s"),),
        train=RMTrainConfig(output_dir=str(tmp_path / "rm"), steps=1),
    )
    with pytest.raises(ValueError, match="takes pairs and thumbs, got a ScoredRecord"):
        train_reward_model(config, records={"s": [ScoredRecord("p", "c", {"a": 1.0}, source="f.jsonl:3")]})


def test_cli_trains_above_chance_per_objective_and_scores(tmp_path):
    """End to end: per-objective pairs + thumbs files -> `rm train` -> held-out accuracy per
    objective >= 0.65 -> `rm score` adds normalised scores."""
    from feedalign.cli.main import main

    task = TextTask()
    pairs, thumbs = simulate(task, 500, seed=0)
    write_jsonl(tmp_path / "pairs.jsonl", pairs)
    write_jsonl(tmp_path / "thumbs.jsonl", thumbs)
    config = {
        "model": {"builder": "text_task", "seed": 0},
        "objectives": list(OBJECTIVES),
        "data": [{"path": str(tmp_path / "pairs.jsonl"), "name": "pairs"},
                 {"path": str(tmp_path / "thumbs.jsonl"), "name": "thumbs"}],
        "train": {"output_dir": str(tmp_path / "rm"), "lr": 3e-3, "steps": 60, "batch_size": 16,
                  "max_length": 64, "device": "cpu"},
    }
    (tmp_path / "rm.yaml").write_text(yaml.safe_dump(config))
    assert main(["rm", "train", str(tmp_path / "rm.yaml"), "train.seed=0"]) == 0
    metrics = json.loads((tmp_path / "rm" / "metrics.json").read_text())["metrics"]
    for objective in OBJECTIVES:
        assert metrics["accuracy"][objective] >= 0.65, metrics["accuracy"]
        assert metrics["count"][objective] >= 40
    rows = [{"prompt": p, "completion": c, "id": i} for i, (p, c) in
            enumerate([(pairs[0].prompt, pairs[0].chosen), (pairs[0].prompt, "ok .")])]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["rm", "score", str(tmp_path / "rm"), "--input", str(tmp_path / "in.jsonl"),
                 "--output", str(tmp_path / "out.jsonl")]) == 0
    scored = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in scored] == [0, 1]
    assert set(scored[0]["scores"]) == set(OBJECTIVES)
    model, tokenizer = load_reward_model(tmp_path / "rm")
    expected = model.score(tokenizer, [r["prompt"] for r in rows], [r["completion"] for r in rows])
    got = torch.tensor([[r["scores"][o] for o in OBJECTIVES] for r in scored])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_example_config_parses():
    from pathlib import Path

    from feedalign.trainers.reward_model import load_rm_config

    example = Path(__file__).resolve().parents[2] / "examples" / "rm_text_task.yaml"
    config = load_rm_config(example, ["train.max_steps=5"])
    assert config.objectives == OBJECTIVES and config.train.steps == 5
    assert [s.objective for s in config.data] == ["helpful", "concise", None]
    from feedalign.config.errors import ConfigError

    with pytest.raises(ConfigError, match=r"train.stepz: unknown key; did you mean 'train.steps'"):
        load_rm_config(example, ["train.stepz=5"])
