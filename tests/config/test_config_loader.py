"""Config loading: YAML, dotted overrides, unknown keys, types, ranges, round trip."""

from __future__ import annotations

import pytest

from feedalign.config import (
    Config,
    ConfigError,
    TrainConfig,
    config_from_dict,
    dump_config,
    load_config,
)

YAML = """
model:
  path: org/tiny-model
  lora: {r: 4, alpha: 8, target_modules: [q_proj, v_proj]}
reference: {strategy: adapter}
data:
  - path: pairs.jsonl
    loss: dpo
    objective: helpful
    hparams: {beta: 0.2}
  - path: [a.jsonl, b.jsonl]
    loss: kto
    weight: 0.5
train:
  output_dir: runs/x
  lr: 1e-5
  micro_batch_size: 2
"""


def _minimal(**train):
    return {
        "model": {"path": "org/m"},
        "data": [{"path": "x.jsonl", "loss": "dpo"}],
        "train": {"output_dir": "o", **train},
    }


def test_yaml_with_overrides(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(YAML)
    cfg = load_config(
        path, ["train.lr=1e-4", "data.0.weight=2", "data.1.hparams.beta=0.3", "train.log_with=[tensorboard]"]
    )
    assert isinstance(cfg, Config)
    assert cfg.train.lr == 1e-4 and isinstance(
        cfg.train.lr, float
    )  # "1e-4" is a YAML string; accepted as float
    assert cfg.data[0].weight == 2.0
    assert cfg.data[1].hparams == {"beta": 0.3}
    assert cfg.data[1].path == ("a.jsonl", "b.jsonl")
    assert cfg.model.lora.target_modules == ("q_proj", "v_proj")
    assert cfg.train.log_with == ("tensorboard",)
    assert cfg.source_names == ["dpo", "kto"]


def test_dump_round_trip(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(YAML)
    cfg = load_config(path)
    again = tmp_path / "again.yaml"
    again.write_text(dump_config(cfg))
    assert load_config(again) == cfg


@pytest.mark.parametrize(
    "overrides, key, hint",
    [
        (["train.lrr=1"], "train.lrr", "did you mean 'train.lr'"),
        (["model.pth=x"], "model.pth", "did you mean 'model.path'"),
        (["data.0.wieght=1"], "data.0.wieght", "did you mean 'data.0.weight'"),
        (["trian.lr=1"], "trian", "did you mean 'train'"),
        (["train.zzz=1"], "train.zzz", "valid keys here"),
    ],
)
def test_unknown_keys_name_the_path_and_suggest(overrides, key, hint):
    with pytest.raises(ConfigError) as info:
        config_from_dict(_minimal(), overrides)
    assert info.value.key == key
    assert key in str(info.value) and hint in str(info.value)


@pytest.mark.parametrize(
    "overrides, key, expected",
    [
        (["train.lr=fast"], "train.lr", "expected float, got str 'fast'"),
        (["train.max_steps=1.5"], "train.max_steps", "expected int or null"),
        (["train.cpu=maybe"], "train.cpu", "expected bool"),
        (["data.0.hparams=3"], "data.0.hparams", "expected a mapping"),
        (["data=5"], "data", "expected a list of"),
        (["model.lora.r=two"], "model.lora.r", "expected int"),
    ],
)
def test_type_errors_name_key_and_expected_type(overrides, key, expected):
    with pytest.raises(ConfigError) as info:
        config_from_dict(_minimal(), overrides)
    assert info.value.key == key
    assert expected in str(info.value)


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["train.lr=-1"], "train.lr"),
        (["train.scheduler=step"], "train.scheduler"),
        (["train.eval_fraction=1.5"], "train.eval_fraction"),
        (["data.0.weight=-1"], "data.0.weight"),
        (["data.0.pairing=random"], "data.0.pairing"),
        (["reference.strategy=adapter"], "reference.strategy"),  # needs model.lora
        (["reference.strategy=cached"], "reference.cache_dir"),
        (["train.on_invalid=ignore"], "train.on_invalid"),
    ],
)
def test_out_of_range_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as info:
        config_from_dict(_minimal(), overrides)
    assert info.value.key == key


def test_missing_required_and_duplicate_names():
    with pytest.raises(ConfigError, match="data.0.loss: is a required key"):
        config_from_dict({"model": {}, "data": [{"path": "x"}], "train": {"output_dir": "o"}})
    with pytest.raises(ConfigError, match="train: is a required key"):
        config_from_dict({"model": {}, "data": [{"path": "x", "loss": "dpo"}]})
    raw = _minimal()
    raw["data"].append({"path": "y.jsonl", "loss": "kto", "name": "mine"})
    raw["data"][0]["name"] = "mine"
    with pytest.raises(ConfigError, match="data.1.name: duplicate source name 'mine'"):
        config_from_dict(raw)
    raw["data"][0]["name"] = None
    raw["data"][1] = {"path": "y.jsonl", "loss": "dpo"}
    assert config_from_dict(raw).source_names == ["dpo_0", "dpo_1"]


def test_bad_override_syntax_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="key.sub=value"):
        config_from_dict(_minimal(), ["train.lr"])
    with pytest.raises(ConfigError, match="index 3 out of range"):
        config_from_dict(_minimal(), ["data.3.weight=1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  path: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")


def test_dataclasses_validate_on_direct_construction():
    with pytest.raises(ConfigError, match="micro_batch_size: must be >= 1"):
        TrainConfig(output_dir="o", micro_batch_size=0)
