"""Invalid loss hyperparameters stop `feedalign train` at config-check time: exit code 2, one
line naming the key, the value and the valid range, before any model or tokenizer loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from feedalign.cli.main import main

PAIRS = [{"prompt": f"p{i}", "chosen": "good", "rejected": "bad"} for i in range(4)]
THUMBS = [{"prompt": f"p{i}", "completion": "good" if i % 2 else "bad", "label": bool(i % 2)} for i in range(4)]
LOSSES = {"dpo": "pairs", "ipo": "pairs", "cdpo": "pairs", "rdpo": "pairs", "modpo": "pairs",
          "kto": "thumbs", "bco": "thumbs"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("hparams")
    for name, rows in (("pairs", PAIRS), ("thumbs", THUMBS)):
        (root / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (root / "model").mkdir()  # not a model: loading it would fail with another error
    return root


@pytest.fixture(autouse=True)
def no_model_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model or tokenizer was loaded before the hyperparameters were checked")

    # Import what binds these names at import time first, so no module keeps the stand-in.
    import feedalign.trainers.loop  # noqa: F401
    import feedalign.trainers.run

    monkeypatch.setattr("feedalign.policies.hf.load_tokenizer", refuse)
    monkeypatch.setattr("feedalign.trainers.setup.load_policy", refuse)
    monkeypatch.setattr(feedalign.trainers.run, "load_policy", refuse)


def _config(root: Path, loss: str, out: Path) -> Path:
    source = {"path": str(root / f"{LOSSES[loss]}.jsonl"), "loss": loss}
    if loss == "modpo":
        source["margins"] = {"kind": "builtin", "target": "length_chars"}
    cfg = {"model": {"path": str(root / "model")}, "data": [source], "train": {"output_dir": str(out)}}
    path = out.parent / f"{loss}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("loss", sorted(LOSSES))
@pytest.mark.parametrize("value, shown", [("-0.5", "-0.5"), ("0", "0"), ("abc", "'abc'"), (".nan", "nan")])
def test_invalid_beta_exits_2_naming_the_key(files, tmp_path, capsys, loss, value, shown):
    cfg = _config(files, loss, tmp_path / "out")
    assert main(["train", str(cfg), f"data.0.hparams.beta={value}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("error: ") and "data.0.hparams.beta" in err
    assert shown in err and "> 0" in err


def test_other_hyperparameters_and_unknown_names(files, tmp_path, capsys):
    cfg = _config(files, "cdpo", tmp_path / "out")
    assert main(["train", str(cfg), "data.0.hparams.epsilon=0.5"]) == 2
    err = capsys.readouterr().err
    assert "data.0.hparams.epsilon" in err and "[0, 0.5)" in err
    cfg = _config(files, "bco", tmp_path / "out2")
    assert main(["train", str(cfg), "data.0.hparams.delta_rule=ema"]) == 2
    err = capsys.readouterr().err
    assert "data.0.hparams.delta_rule" in err and "midpoint" in err
    assert main(["train", str(cfg), "data.0.hparams.bta=1"]) == 2
    assert "data.0.hparams.bta" in capsys.readouterr().err
