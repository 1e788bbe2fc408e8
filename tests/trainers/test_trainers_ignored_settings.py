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


def test_pairs_fed_to_an_unpaired_loss_are_split_and_said_so(caplog):
    from feedalign.data.batching import examples_from_records
    from feedalign.data.records import PairRecord

    pairs = [PairRecord("p", "good", "bad", id="a"), PairRecord("q", "fine", "poor", id="b")]
    with caplog.at_level("WARNING", logger="feedalign.data"):
        examples = examples_from_records(pairs, "unpaired", source="kto", pairing=None, seed=0)
    assert [(e.id, e.label) for e in examples] == [("a/chosen", True), ("a/rejected", False),
                                                   ("b/chosen", True), ("b/rejected", False)]
    assert [r.getMessage() for r in caplog.records] == [
        "source kto: 2 pairs are split into 4 thumbs-up (chosen) and thumbs-down (rejected) examples for an "
        "unpaired loss"
    ]
