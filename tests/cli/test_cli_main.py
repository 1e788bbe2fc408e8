"""The command line as a new user meets it: `config show`, `train --dry-run`, the summary
table, and one-line errors (tracebacks only with --debug)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainers"))
from trainer_fixtures import base_config, labeled_rows, pair_rows, save_tiny_model, write_jsonl  # noqa: E402

from feedalign.cli.main import main  # noqa: E402
from feedalign.config import schema  # noqa: E402
from feedalign.config.describe import field_docs, missing_docs  # noqa: E402


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_main")
    data = [
        {"path": str(write_jsonl(root / "pairs.jsonl", pair_rows(12, seed=1))), "loss": "dpo", "max_length": 12},
        {"path": str(write_jsonl(root / "thumbs.jsonl", labeled_rows(10, seed=2))), "loss": "kto"},
    ]
    return {"model": save_tiny_model(root / "model"), "data": data}


def _cfg(env, tmp_path, **train):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(base_config(env["model"], tmp_path / "out", env["data"], **train)))
    return path


def test_every_config_key_has_a_meaning():
    assert missing_docs() == []
    assert field_docs(schema.TrainConfig)["lr"] == "peak learning rate."


def test_config_show_defaults_lists_every_key_with_default_and_meaning(capsys):
    assert main(["config", "show"]) == 0
    text = capsys.readouterr().out
    shown = yaml.safe_load(text)  # valid YAML: comments carry the meanings
    assert set(shown["train"]) == {f.name for f in dataclasses.fields(schema.TrainConfig)}
    assert set(shown["data"][0]) == {f.name for f in dataclasses.fields(schema.DataSourceConfig)}
    assert shown["train"]["lr"] == schema.TrainConfig.lr
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("grad_accum:"))
    assert line.strip() == "grad_accum: 1  # micro-steps per optimizer step. [default]"
    assert "#   r: 8  # rank of the adapter matrices." in text  # keys of an unset section too


def test_config_show_resolves_a_file_with_overrides(env, tmp_path, capsys):
    cfg = _cfg(env, tmp_path)
    assert main(["config", "show", str(cfg), "train.seed=7"]) == 0
    text = capsys.readouterr().out
    assert yaml.safe_load(text)["train"]["seed"] == 7
    assert "seed: 7  # seed of sampling, evaluation split and initialisation noise. [default: 0]" in text
    assert main(["config", "show", str(cfg), "train.sed=7"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "train.sed" in err


def test_dry_run_checks_everything_and_trains_nothing(env, tmp_path, capsys):
    cfg = _cfg(env, tmp_path, eval_fraction=0.2)
    assert main(["train", str(cfg), "--dry-run", "--quiet"]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.split() and ln.split()[0] in ("dpo", "kto")}
    assert lines["dpo"][1:5] == ["dpo", "pair", "10", "2"] and lines["kto"][1:5] == ["kto", "unpaired", "8", "2"]
    assert "(max_length 12)" in out and "would train 4 steps" in out and "nothing was trained" in out
    assert not (tmp_path / "out" / "metrics.jsonl").exists() and not (tmp_path / "out" / "final").exists()
    assert main(["train", str(cfg), "--dry-run", "--quiet", "--set", "model.path=/no/such/model"]) == 2
    assert "model.path" in capsys.readouterr().err


def test_train_ends_with_a_summary_table(env, tmp_path, capsys):
    cfg = _cfg(env, tmp_path, max_steps=2)
    assert main(["train", str(cfg), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "trained 2 steps in" in out and "s/step" in out
    header = next(ln for ln in out.splitlines() if ln.startswith("source"))
    assert header.split()[:2] == ["source", "loss"]
    rows = [ln.split() for ln in out.splitlines() if ln.split()[:1] in (["dpo"], ["kto"])]
    assert len(rows) == 2 and all(float(r[1]) > 0 for r in rows)
    assert f"final model: {tmp_path / 'out' / 'final'}" in out


def test_failures_are_one_line_exit_2_and_debug_shows_the_traceback(env, tmp_path, capsys, monkeypatch):
    def broken(config):
        raise RuntimeError("something\nunexpected")

    monkeypatch.setattr("feedalign.config.describe.describe_config", broken)
    assert main(["config", "show"]) == 2
    err = capsys.readouterr().err
    assert err == "error: RuntimeError: something unexpected (run with --debug for the traceback)\n"
    with pytest.raises(RuntimeError, match="unexpected"):
        main(["config", "show", "--debug"])
    assert main(["train", str(_cfg(env, tmp_path)), "--allow-changed-data"]) == 2
    assert "--resume" in capsys.readouterr().err


def test_generate_in_batches_under_a_progress_bar_gives_the_same_completions(env):
    from argparse import Namespace

    from feedalign.cli.train_cmd import _generate_with_progress
    from feedalign.policies.generation import sample
    from feedalign.policies.hf import load_causal_lm, load_tokenizer

    model, tokenizer = load_causal_lm(env["model"]), load_tokenizer(env["model"])
    prompts = [f"ab{'c' * (i % 4)}" for i in range(19)]
    args = Namespace(max_new_tokens=3, temperature=1.0, top_p=1.0, seed=5)
    whole = sample(model, tokenizer, prompts, max_new_tokens=3, temperature=1.0, seed=5)
    batched = _generate_with_progress(sample, model, tokenizer, prompts, args, chat=False)
    assert [s.text for s in batched] == [s.text for s in whole]
    assert len({s.text for s in whole}) > 1  # sampled, not constant: the comparison can fail


def test_overrides_may_follow_options(env, tmp_path, capsys):
    cfg = _cfg(env, tmp_path)
    assert main(["train", str(cfg), "--dry-run", "data.1.max_length=10", "--quiet"]) == 0
    assert "(max_length 10)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["train", str(cfg), "--dry-run", "--no-such-flag"])
    assert info.value.code == 2 and "unrecognized arguments: --no-such-flag" in capsys.readouterr().err
