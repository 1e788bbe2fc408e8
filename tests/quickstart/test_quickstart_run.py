"""The quickstart end to end (--quick), its report's structure, and the command's exit codes."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from feedalign.cli.main import main
from feedalign.data import load_records
from feedalign.quickstart import (
    DEFAULT_METHODS,
    METHODS,
    QuickstartSettings,
    default_stages,
)
from feedalign.quickstart.settings import FEEDBACK_SETS, OBJECTIVES, MethodSpec

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _walk(value, path=""):
    """Yield (path, leaf) for every leaf of a JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _walk(item, f"{path}/{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _walk(item, f"{path}[{i}]")
    else:
        yield path, value


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart")
    code = main(["quickstart", "--out", str(out), "--quick", "--seed", "0"])
    return code, out, json.loads((out / "report.json").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_quick_run_completes_with_exit_code_zero(quick_run):
    code, _, report = quick_run
    assert code == 0
    assert report["quick"] is True and report["seed"] == 0
    assert set(report["methods"]) == set(DEFAULT_METHODS)
    assert set(report["timing"]["stages_seconds"]) == {s.name for s in default_stages(QuickstartSettings())}
    assert report["timing"]["total_seconds"] >= sum(report["timing"]["stages_seconds"].values()) - 1e-6


@pytest.mark.slow
def test_every_number_in_the_report_is_finite(quick_run):
    _, _, report = quick_run
    leaves = list(_walk(report))
    assert not [p for p, v in leaves if v is None], "null (non-finite or missing) values in report.json"
    numbers = [v for _, v in leaves if isinstance(v, (int, float)) and not isinstance(v, bool)]
    assert numbers and all(math.isfinite(v) for v in numbers)


@pytest.mark.slow
def test_method_entries_are_consistent(quick_run):
    _, _, report = quick_run
    ref = report["reference"]["eval"]
    for name, m in report["methods"].items():
        spec = METHODS[name]
        assert m["loss"] == spec.loss and m["target_objective"] == spec.target_name
        assert m["target_weights"] == dict(zip(OBJECTIVES, spec.target))
        assert m["n_eval_samples"] == report["evaluation"]["prompts"] > 0
        assert m["steps"] >= 2 and m["training_seconds"] > 0
        for o in OBJECTIVES:
            assert m["before"][o] == pytest.approx(ref[o]["mean"])
            assert m["improvement"][o] == pytest.approx(m["after"][o] - m["before"][o])
            assert 0.0 <= m["after"][o] <= 1.0
        t = m["target"]
        assert t["before"] == pytest.approx(sum(w * m["before"][o] for o, w in m["target_weights"].items()))
        assert t["improvement"] == pytest.approx(t["after"] - t["before"])
        margin, z = report["margin"]["absolute"], report["margin"]["z"]
        expected = t["improvement"] >= margin and t["improvement"] >= z * t["improvement_se"]
        assert m["passed"] is expected
        assert set(m["feedback_counts"]) == set(spec.feedback)
        assert Path(m["metrics_file"]).is_file() and (Path(m["model_dir"]) / "config.json").is_file()
    assert report["all_passed"] is all(m["passed"] for m in report["methods"].values())


@pytest.mark.slow
def test_feedback_files_are_real_and_load(quick_run):
    _, out, report = quick_run
    assert set(report["feedback"]) == set(FEEDBACK_SETS)
    for entry in report["feedback"].values():
        path = Path(entry["path"])
        assert path.parent == out / "feedback" and path.suffix == ".jsonl"
        records = load_records(path).records
        assert sum(entry["counts"].values()) == len(records) > 0
    first = json.loads((out / "feedback" / "pairs_helpful.jsonl").read_text().splitlines()[0])
    assert {"prompt", "chosen", "rejected"} <= set(first)
    first = json.loads((out / "feedback" / "thumbs_concise.jsonl").read_text().splitlines()[0])
    assert {"prompt", "completion", "label"} <= set(first)
    assert (out / "base" / "config.json").is_file() and (out / "base" / "tokenizer.json").is_file()


@pytest.mark.slow
def test_markdown_plots_and_front(quick_run):
    _, out, report = quick_run
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| method | target | reference | after | improvement | margin | result |" in md
    for name in DEFAULT_METHODS:
        assert f"| {name} |" in md
    plots = [Path(p) for p in report["files"]["plots"]]
    names = {p.name for p in plots}
    assert {"improvement.png", "front.png", "training_sft.png"} <= names
    assert {f"training_{m}.png" for m in DEFAULT_METHODS} <= names
    for p in plots:
        assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 1000
        assert f"plots/{p.name}" in md
    front = report["front"]
    assert front["status"] == "done" and front["components"] == {"helpful": "dpo", "concise": "bco"}
    assert [row["weights"] for row in front["per_weight"]] == [[w, 1 - w] for w in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert (out / "front" / "front.json").is_file() and (out / "front" / "front.png").is_file()
    assert [e["name"] for e in front["methods"]] == ["soups", "steerable", "modpo_sweep"]
    rm = front["reward_model"]  # the sweep's margin model: BT heads, calibrated on held-out pairs
    assert rm["heads"] == ["helpful", "concise"] and rm["normalization"] == "none"
    for head in rm["heads"]:
        fit = rm["calibration"][head]
        assert fit["n"] >= 10 and fit["se"] > 0 and len(fit["table"]) >= 2
    assert rm["margin_scale"]["concise"] == pytest.approx(rm["calibration"]["concise"]["slope"])
    assert "Margin reward model" in md and "b = " in md


@pytest.mark.slow
def test_report_has_samples_versions_commit_and_plain_file_modes(quick_run):
    import stat

    _, out, report = quick_run
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "## Sample completions (first three held-out prompts)" in md
    for name, m in report["methods"].items():
        assert len(m["examples"]) == 3
        assert sum(line.startswith(f"| {name} | ") for line in md.split("## Sample completions")[1].splitlines()) == 3
    env = report["environment"]
    import torch

    assert env["libraries"]["torch"] == torch.__version__.split("+")[0] or env["libraries"]["torch"] == torch.__version__
    assert env["git_commit"] and f"feedalign commit: `{env['git_commit']}`" in md
    for path in [out / "report.md", out / "report.json", *map(Path, report["files"]["plots"])]:
        assert stat.S_IMODE(path.stat().st_mode) & 0o044 == 0o044, path  # readable by group and others


def test_settings_validation_and_presets():
    with pytest.raises(ValueError, match="unknown methods"):
        QuickstartSettings(methods=("dpo", "ppo"))
    with pytest.raises(ValueError, match="listed twice"):
        QuickstartSettings(methods=("dpo", "dpo"))
    with pytest.raises(ValueError, match="unknown preset"):
        QuickstartSettings.preset("huge")
    quick = QuickstartSettings.preset("quick", seed=3)
    assert quick.quick and quick.seed == 3 and quick.sft_steps < QuickstartSettings().sft_steps
    assert [s.steps for s in quick.method_specs()] == [max(2, round(METHODS[m].steps * 0.1)) for m in DEFAULT_METHODS]
    assert "front" not in {s.name for s in default_stages(QuickstartSettings(front=False))}
    with pytest.raises(ValueError, match="summing to 1"):
        MethodSpec("x", "dpo", ("pairs_helpful",), (0.5, 0.6))
    with pytest.raises(ValueError, match="unknown feedback sets"):
        MethodSpec("x", "dpo", ("pairs_harmless",), (1.0, 0.0))
    assert METHODS["pmpo"].target_name == "0.5*helpful + 0.5*concise" and METHODS["bco"].target_name == "concise"


def test_every_method_names_a_registered_loss_with_its_hyperparameters():
    from feedalign.losses import get_loss

    for spec in METHODS.values():
        get_loss(spec.loss).resolve_hparams(spec.hparams)  # unknown names raise


def _fake_context(tmp_path, passed: bool):
    report = {"methods": {"dpo": {"target_objective": "helpful", "margin": 0.05, "passed": passed,
                                  "target": {"before": 0.2, "after": 0.3, "improvement": 0.1, "improvement_se": 0.01}}},
              "all_passed": passed}
    return SimpleNamespace(report=report, timings={"total": 1.0}, path=lambda *p: tmp_path.joinpath(*p))


@pytest.mark.parametrize("passed,strict,code", [(True, True, 0), (False, False, 0), (False, True, 1)])
def test_exit_code_follows_strict_and_margins(monkeypatch, tmp_path, capsys, passed, strict, code):
    from feedalign.quickstart import pipeline

    seen = {}

    def fake_run(settings, out, *, log=print):
        seen["settings"] = settings
        return _fake_context(tmp_path, passed)

    monkeypatch.setattr(pipeline, "run_quickstart", fake_run)
    argv = ["quickstart", "--out", str(tmp_path), "--methods", "dpo", "--seed", "7", "--no-plots"]
    assert main(argv + (["--strict"] if strict else [])) == code
    assert seen["settings"].methods == ("dpo",) and seen["settings"].seed == 7 and not seen["settings"].plots
    printed = capsys.readouterr().out
    assert "report:" in printed and "dpo" in printed and ("PASS" if passed else "FAIL") in printed


def test_bad_method_is_an_input_error(tmp_path, capsys):
    assert main(["quickstart", "--out", str(tmp_path), "--methods", "dpo,nope"]) == 2
    assert "unknown methods" in capsys.readouterr().err
