"""``feedalign iterate`` end to end at tiny sizes: report shape, files, resume, refusal."""

import json
from pathlib import Path

import pytest
import yaml

from feedalign.cli.main import main
from feedalign.config.errors import ConfigError
from feedalign.loop.config import load_iterate_config

TINY = {
    "rounds": 2, "seed": 0,
    "initial": {"sft_examples": 64, "sft_steps": 20},
    "prompts": {"per_round": 12, "eval_prompts": 16},
    "sampling": {"samples_per_prompt": 4, "max_new_tokens": 12, "batch_size": 64},
    "judge": {"kind": "text_task", "objectives": ["helpful", "concise"]},
    "train": {"loss": "dpo", "feedback": "pairs", "objective": "helpful", "hparams": {"beta": 0.1},
              "lr": 1e-3, "steps": 3, "batch_size": 8, "max_length": 48},
    "plots": True,
}


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "iterate.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_iterate_report_files_and_resume(tmp_path):
    config = _write(tmp_path, TINY)
    out = tmp_path / "out"
    assert main(["iterate", str(config), "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "iterate_report.json").read_text())
    assert [r["round"] for r in report["rounds"]] == [1, 2]
    for entry in [*report["rounds"], report["offline_baseline"]]:
        assert entry["n_feedback"] > 0
        for objective in ("helpful", "concise"):
            m = entry["metrics"][objective]
            assert 0 <= m["mean"] <= 1 and m["se"] >= 0
    total = sum(r["n_feedback"] for r in report["rounds"])
    assert report["offline_baseline"]["n_feedback"] <= total
    assert report["offline_baseline"]["train_steps"] == 2 * 3
    assert set(report["winner"]) == {"helpful", "concise"}
    assert (out / "iterate_plot.png").stat().st_size > 0
    files = report["rounds"][1]["feedback_files"]
    for kind in ("pairs", "thumbs", "positives", "negatives"):
        rows = [json.loads(line) for line in open(files[f"{kind}_helpful"]["path"])]
        assert all(r["round"] == 2 and r["judge"] == "text_task" for r in rows)
    # round 2 trained from round 1's policy
    stage2 = json.loads((out / "round_2" / "stage.json").read_text())
    assert stage2["started_from"] == report["rounds"][0]["model_dir"]

    # Resume: a finished run redoes nothing; a lost round is redone alone.
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/stage.json")}
    (out / "round_2" / "stage.json").unlink()
    assert main(["iterate", str(config), "--out", str(out), "--quiet"]) == 0
    after = {p: p.stat().st_mtime_ns for p in out.glob("*/stage.json")}
    assert after[out / "round_1" / "stage.json"] == before[out / "round_1" / "stage.json"]
    assert after[out / "offline" / "stage.json"] == before[out / "offline" / "stage.json"]
    again = json.loads((out / "iterate_report.json").read_text())
    assert again["rounds"][1]["metrics"] == report["rounds"][1]["metrics"]  # seeded: the same round again

    # Another config in the same directory is refused.
    changed = _write(tmp_path, {**TINY, "seed": 1})
    assert main(["iterate", str(changed), "--out", str(out), "--quiet"]) == 2


def test_config_errors_name_the_key(tmp_path, capsys):
    bad = _write(tmp_path, {**TINY, "train": {**TINY["train"], "feedback": "stars"}})
    with pytest.raises(ConfigError, match="train.feedback"):
        load_iterate_config(bad)
    assert main(["iterate", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "train.feedback" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="train.objective"):
        load_iterate_config(_write(tmp_path, {**TINY, "train": {**TINY["train"], "objective": "safe"}}))
    with pytest.raises(ConfigError, match="unknown|rounds_"):
        load_iterate_config(_write(tmp_path, {**TINY, "rounds_": 2}))


def test_example_config_loads():
    config = load_iterate_config(Path(__file__).parents[2] / "examples" / "iterate" / "config.yaml")
    assert config.rounds == 3 and config.offline_baseline and config.judge.kind == "text_task"


@pytest.mark.slow
def test_reference_initial_keeps_the_initial_weights_as_reference(tmp_path):
    """reference: initial -> a LoRA adapter on the initial model carried across rounds; the
    reference of every round is the initial model (adapter disabled)."""
    import torch

    from feedalign.loop.iterate import run_iterate
    from feedalign.loop.rounds import Loop, round_policy

    data = {**TINY, "offline_baseline": False, "plots": False,
            "train": {**TINY["train"], "reference": "initial", "lora": {"r": 4, "alpha": 8}}}
    config = load_iterate_config(_write(tmp_path, data))
    out = tmp_path / "out"
    report = run_iterate(config, out, log=lambda _m: None)
    stages = [json.loads((out / f"round_{r}" / "stage.json").read_text()) for r in (1, 2)]
    initial = report["initial"]["model_dir"]
    assert [s["reference"] for s in stages] == [initial, initial]
    assert stages[1]["started_from"] == stages[0]["model_dir"]
    assert (Path(stages[1]["model_dir"]) / "adapter_config.json").is_file()
    loop = Loop(config=config, out=out, initial_dir=initial)
    policy = round_policy(loop, stages[1]["model_dir"])
    base = round_policy(loop, initial)  # a fresh adapter: the initial model's outputs
    ids = torch.tensor([[2, 5, 6, 7, 8]])
    with torch.no_grad(), policy.disable_adapter():
        disabled = policy(input_ids=ids).logits
    with torch.no_grad():
        trained, fresh = policy(input_ids=ids).logits, base(input_ids=ids).logits
    assert torch.allclose(disabled, fresh, atol=1e-6)  # the reference is the initial model
    assert not torch.allclose(trained, fresh, atol=1e-4)  # the adapter has learned across rounds


def test_reference_initial_needs_lora(tmp_path):
    data = {**TINY, "train": {**TINY["train"], "reference": "initial"}}
    with pytest.raises(ConfigError, match="train.lora"):
        load_iterate_config(_write(tmp_path, data))


@pytest.mark.slow
def test_callable_judge_on_prompt_files_with_a_model_directory(tmp_path):
    """No text task: prompts from files, the initial policy from a directory, a Python
    function as the judge; the held-out metrics are then the judge's own scores."""
    from feedalign.envs.text_task import TextTask, build_tiny_llama, build_tokenizer

    tokenizer = build_tokenizer()
    build_tiny_llama(tokenizer, seed=0).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    task = TextTask(seed=0)
    for name, split in (("train", "train"), ("eval", "test")):
        (tmp_path / f"{name}.txt").write_text("\n".join(task.prompts(10, split)) + "\n")
    data = {"rounds": 1, "offline_baseline": True, "plots": False,
            "initial": {"path": str(tmp_path / "model")},
            "prompts": {"source": "files", "train": str(tmp_path / "train.txt"), "eval": str(tmp_path / "eval.txt"),
                        "per_round": 8, "eval_prompts": 6},
            "sampling": {"samples_per_prompt": 4, "max_new_tokens": 8},
            "judge": {"kind": "callable", "target": "judge_fns:shortness", "objectives": ["short"]},
            "train": {"loss": "kto", "feedback": "thumbs", "objective": "short", "steps": 2, "batch_size": 4,
                      "max_length": 40}}
    out = tmp_path / "out"
    assert main(["iterate", str(_write(tmp_path, data)), "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "iterate_report.json").read_text())
    assert set(report["rounds"][0]["metrics"]) == {"short", "mean_words"}
    assert report["rounds"][0]["metrics"]["short"]["mean"] <= 0
    rows = [json.loads(line) for line in open(report["rounds"][0]["feedback_files"]["thumbs_short"]["path"])]
    assert rows and all(r["judge"] == "judge_fns:shortness" for r in rows)
    assert report["offline_baseline"]["n_feedback"] <= report["rounds"][0]["n_feedback"]
