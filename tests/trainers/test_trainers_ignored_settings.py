"""Settings that would be ignored are errors naming the key."""

from __future__ import annotations

import pytest
from trainer_fixtures import base_config, pair_rows, save_tiny_model, write_jsonl

from feedalign.config import ConfigError
from feedalign.trainers import train


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("ignored")
    return {"model": save_tiny_model(root / "model"), "pairs": write_jsonl(root / "pairs.jsonl", pair_rows(8, seed=1))}


def test_margins_on_a_loss_without_margin_state_is_an_error(env, tmp_path):
    data = [{"path": str(env["pairs"]), "loss": "dpo",
             "margins": {"kind": "callable", "target": "trainer_fixtures:length_margins"}}]
    with pytest.raises(ConfigError, match="would be ignored") as info:
        train(base_config(env["model"], tmp_path / "out", data))
    assert info.value.key == "data.0.margins"


def test_a_lora_target_that_matches_no_module_is_an_error(env, tmp_path):
    cfg = base_config(env["model"], tmp_path / "out", [{"path": str(env["pairs"]), "loss": "dpo"}], max_steps=1)
    cfg["model"]["lora"] = {"r": 2, "target_modules": ["q_proj", "qproj"]}
    with pytest.raises(ConfigError, match=r"\['qproj'\] match no module") as info:
        train(cfg)
    assert info.value.key == "model.lora.target_modules" and "q_proj" in str(info.value)
    cfg["model"]["lora"] = {"r": 2, "target_modules": ["q_proj", "v_proj"]}
    assert train(cfg).steps == 1
