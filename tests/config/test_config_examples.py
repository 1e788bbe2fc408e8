"""The example training configs load and validate (schema only; their data is not shipped)."""

from __future__ import annotations

from pathlib import Path

import pytest

from feedalign.config import Config, load_config

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("train_*.yaml"))


def test_there_are_examples():
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_loads(path):
    config = load_config(path, ["train.max_steps=1"])
    assert isinstance(config, Config)
    assert config.train.max_steps == 1
    assert len(set(config.source_names)) == len(config.data)


def test_mixed_example_names_every_key():
    # The annotated example documents the whole schema: every field of every section.
    import dataclasses

    import yaml

    from feedalign.config import DataSourceConfig, ModelConfig, ReferenceConfig, TrainConfig

    raw = yaml.safe_load((EXAMPLES[0].parent / "train_mixed_feedback.yaml").read_text())
    for section, cls in (("model", ModelConfig), ("reference", ReferenceConfig), ("train", TrainConfig)):
        assert set(raw[section]) == {f.name for f in dataclasses.fields(cls)}, section
    documented = set().union(*(set(source) for source in raw["data"]))
    assert documented | {"margins"} == {f.name for f in dataclasses.fields(DataSourceConfig)}
