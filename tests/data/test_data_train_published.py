"""Published datasets train end to end on a tiny model through `feedalign train` and
`feedalign rm train`, with no options beyond `format:` (or none when detected)."""

from __future__ import annotations

import gzip
import json
import string

import pytest
import torch
import yaml

import published_schemas as published
from feedalign.cli.main import main

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from feedalign.policies.tiny import build_char_tokenizer, build_tiny_causal_lm, save_tiny

    directory = tmp_path_factory.mktemp("published") / "model"
    tokenizer = build_char_tokenizer(string.printable)
    model = build_tiny_causal_lm(len(tokenizer), hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64, seed=0, init_std=0.1)
    save_tiny(model, tokenizer, directory)
    return directory


def _yaml(path, data) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _rm(tiny, tmp_path, name, data) -> dict:
    out = tmp_path / name
    cfg = {"model": {"path": str(tiny)}, "data": data,
           "train": {"output_dir": str(out), "steps": 3, "batch_size": 4, "eval_fraction": 0.0, "max_length": 96, "log_every": 1, "device": "cpu"}}
    assert main(["rm", "train", _yaml(tmp_path / f"{name}.yaml", cfg)]) == 0
    return json.loads((out / "reward_model.json").read_text())


def test_modpo_on_pku_saferlhf_with_a_harmless_head_from_the_same_file(tiny, tmp_path, capsys):
    data_dir = published.pku_saferlhf(tmp_path)
    meta = _rm(tiny, tmp_path, "rm", [{"path": str(data_dir), "format": "pku-saferlhf", "objective": "harmless"}])
    assert meta["objectives"] == ["harmless"]
    cfg = {
        "model": {"path": str(tiny)},
        "data": [{"path": str(data_dir), "format": "pku-saferlhf", "objective": "helpful", "loss": "modpo", "max_length": 96,
                  "hparams": {"beta": 0.1, "weight": 0.5, "margin_weights": [0.5]},
                  "margins": {"kind": "reward_model", "target": str(tmp_path / "rm"), "options": {"heads": ["harmless"]}}}],
        "train": {"output_dir": str(tmp_path / "modpo"), "max_steps": 2, "micro_batch_size": 2, "eval_fraction": 0.0, "log_every": 1},
    }
    assert main(["train", _yaml(tmp_path / "modpo.yaml", cfg), "--quiet"]) == 0
    assert (tmp_path / "modpo" / "final").is_dir()


def _helpsteer_all_attributes(tmp_path):
    names = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
    rows = []
    for i in range(3):
        rows.append({"prompt": f"Question {i}?", "response": f"A short answer {i}.", **dict(zip(names, (4, 4, 3, 1, 0)))})
        rows.append({"prompt": f"Question {i}?", "response": f"A long, wrong answer {i}!", **dict(zip(names, (1, 0, 2, 3, 4)))})
    path = tmp_path / "train.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in rows))
    return path, names


def test_reward_model_on_helpsteer2_one_head_per_attribute(tiny, tmp_path):
    path, names = _helpsteer_all_attributes(tmp_path)
    meta = _rm(tiny, tmp_path, "rm_hs", [{"path": str(path)}])  # detected: helpsteer2
    assert sorted(meta["objectives"]) == sorted(names)


def test_reward_model_on_ultrafeedback_one_head_per_aspect(tiny, tmp_path):
    directory = published.ultrafeedback(tmp_path)
    meta = _rm(tiny, tmp_path, "rm_uf", [{"path": str(directory), "format": "ultrafeedback"}])
    assert sorted(meta["objectives"]) == ["helpfulness", "honesty", "instruction_following", "truthfulness"]


def test_train_hh_rlhf_dpo_and_thumbs_kto(tiny, tmp_path):
    cfg = {
        "model": {"path": str(tiny)},
        "data": [{"path": str(published.hh_rlhf(tmp_path)), "loss": "dpo", "max_length": 128},
                 {"path": str(published.thumbs_log(tmp_path)), "loss": "kto", "max_length": 64}],
        "train": {"output_dir": str(tmp_path / "run"), "max_steps": 1, "micro_batch_size": 2, "eval_fraction": 0.0},
    }
    assert main(["train", _yaml(tmp_path / "run.yaml", cfg), "--quiet"]) == 0


def test_arena_ties_train_a_tie_aware_loss_and_are_refused_by_others(tiny, tmp_path, capsys):
    path = str(published.arena_lmsys(tmp_path))
    base = {"model": {"path": str(tiny)}, "train": {"output_dir": str(tmp_path / "ties"), "max_steps": 1,
                                                     "micro_batch_size": 4, "eval_fraction": 0.0}}
    keep = {**base, "data": [{"path": path, "loss": "dpo_rk", "ties": "keep", "max_length": 64}]}
    assert main(["train", _yaml(tmp_path / "rk.yaml", keep), "--quiet"]) == 0
    refused = {**base, "data": [{"path": path, "loss": "dpo", "ties": "keep", "max_length": 64}]}
    capsys.readouterr()
    assert main(["train", _yaml(tmp_path / "dpo.yaml", refused), "--quiet"]) == 2
    assert "takes no `ties` input" in capsys.readouterr().err


def test_scored_rows_train_as_pairs_and_a_refusal_is_one_line(tiny, tmp_path, capsys):
    rows = [{"prompt": f"q{i // 2}", "completion": f"answer {i}", "scores": {"helpful": float(i % 2), "brief": float(-(i % 2))}}
            for i in range(8)]
    path = tmp_path / "scored.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = _rm(tiny, tmp_path, "rm_scored", [{"path": str(path)}])
    assert sorted(meta["objectives"]) == ["brief", "helpful"]
    cfg = {"model": {"path": str(tiny)}, "data": [{"path": str(path), "loss": "dpo", "objective": "helpful", "max_length": 64}],
           "train": {"output_dir": str(tmp_path / "dpo"), "max_steps": 1, "micro_batch_size": 2, "eval_fraction": 0.0}}
    assert main(["train", _yaml(tmp_path / "dpo.yaml", cfg), "--quiet"]) == 0
    capsys.readouterr()
    keep = {"model": {"path": str(tiny)}, "data": [{"path": str(path), "scores": "scores"}],
            "train": {"output_dir": str(tmp_path / "rm_keep"), "steps": 1, "device": "cpu"}}
    assert main(["rm", "train", _yaml(tmp_path / "keep.yaml", keep)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "takes pairs and thumbs, got a ScoredRecord" in err[0] and "Traceback" not in err[0]
