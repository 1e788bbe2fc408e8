"""Pre-training checks: paths, losses and hyperparameters fail before any training."""

from __future__ import annotations

import pytest

from feedalign.config import ConfigError, config_from_dict
from feedalign.config.checks import check_config


@pytest.fixture
def files(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n')
    return tmp_path, model, data


def _cfg(tmp_path, model, data, *overrides):
    raw = {
        "model": {"path": str(model)},
        "data": [{"path": str(data), "loss": "dpo"}],
        "train": {"output_dir": str(tmp_path / "out")},
    }
    return config_from_dict(raw, list(overrides))


def test_valid_config_resolves_losses(files):
    tmp_path, model, data = files
    checked = check_config(_cfg(tmp_path, model, data, "data.0.hparams.beta=0.3"))
    assert checked[0].spec.name == "dpo" and checked[0].hparams == {"beta": 0.3}
    assert (tmp_path / "out").is_dir()  # created


def test_unwritable_output_dir(files):
    tmp_path, model, data = files
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ConfigError) as info:
        check_config(_cfg(tmp_path, model, data, f"train.output_dir={blocker}/out"))
    assert info.value.key == "train.output_dir" and str(blocker) in str(info.value)


@pytest.mark.parametrize("path", ["/no/such/model/dir", "./missing-model", "a/b/c"])
def test_missing_model_path(files, path):
    tmp_path, model, data = files
    with pytest.raises(ConfigError) as info:
        check_config(_cfg(tmp_path, model, data, f"model.path={path}"))
    assert info.value.key == "model.path" and path in str(info.value)


def test_hub_id_passes_and_model_object_skips_the_check(files):
    tmp_path, model, data = files
    check_config(_cfg(tmp_path, model, data, "model.path=org/some-model"))
    check_config(_cfg(tmp_path, model, data, "model.path=/no/such"), model_given=True, tokenizer_given=True)


def test_missing_data_file_and_in_memory_sources(files):
    tmp_path, model, data = files
    with pytest.raises(ConfigError) as info:
        check_config(_cfg(tmp_path, model, data, f"data.0.path={tmp_path}/nope.jsonl"))
    assert info.value.key == "data.0.path" and "nope.jsonl" in str(info.value)
    with pytest.raises(ConfigError, match="data.0.path: is required"):
        check_config(_cfg(tmp_path, model, data, "data.0.path=null"))
    check_config(_cfg(tmp_path, model, data, "data.0.path=null"), in_memory={"dpo"})


@pytest.mark.parametrize(
    "overrides, key, text",
    [
        (["data.0.loss=dpoo"], "data.0.loss", "valid: ["),
        (["data.0.loss=bt_reward"], "data.0.loss", "reward-model loss"),
        (["data.0.hparams.betta=1"], "data.0.hparams.betta", "loss 'dpo': ['beta']"),
        (["reference.strategy=none"], "reference.strategy", "needs reference log-probs"),
        (["data.0.loss=kto", "data.0.pairing=discordant"], "data.0.pairing", "makes pairs"),
    ],
)
def test_loss_errors(files, overrides, key, text):
    tmp_path, model, data = files
    with pytest.raises(ConfigError) as info:
        check_config(_cfg(tmp_path, model, data, *overrides))
    assert info.value.key == key and text in str(info.value)


def test_reference_free_loss_allows_no_reference(files):
    tmp_path, model, data = files
    check_config(_cfg(tmp_path, model, data, "data.0.loss=sft", "reference.strategy=none"))


def test_existing_checkpoints_need_resume_or_overwrite(files):
    tmp_path, model, data = files
    (tmp_path / "out" / "step-00000002").mkdir(parents=True)
    with pytest.raises(ConfigError, match="--resume"):
        check_config(_cfg(tmp_path, model, data))
    check_config(_cfg(tmp_path, model, data), resume=True)
    check_config(_cfg(tmp_path, model, data, "train.overwrite_output_dir=true"))


def test_requested_tracker_must_be_installed(files, monkeypatch):
    import importlib.util

    tmp_path, model, data = files
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    with pytest.raises(ConfigError) as info:
        check_config(_cfg(tmp_path, model, data, "train.log_with=[wandb]"))
    assert info.value.key == "train.log_with" and "pip install wandb" in str(info.value)


def test_model_object_without_tokenizer_needs_a_path(files):
    tmp_path, model, data = files
    with pytest.raises(ConfigError, match="model.path: is required"):
        check_config(_cfg(tmp_path, model, data, "model.path=null"), model_given=True)
    check_config(_cfg(tmp_path, model, data, "model.path=null"), model_given=True, tokenizer_given=True)
