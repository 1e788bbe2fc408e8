"""`feedalign quickstart --out DIR` refuses a non-empty DIR without --overwrite, and never
clears a directory that no quickstart wrote."""

from __future__ import annotations

from types import SimpleNamespace

from feedalign.cli.main import main
from feedalign.quickstart import pipeline


def _fake(monkeypatch, calls):
    def fake_run(settings, out, *, log=print):
        calls.append(out)
        report = {"methods": {}, "all_passed": True}
        return SimpleNamespace(report=report, timings={"total": 0.0}, path=lambda *p: out)

    monkeypatch.setattr(pipeline, "run_quickstart", fake_run)
    monkeypatch.setattr("feedalign.quickstart.report.summary_table", lambda report: "")


def test_non_empty_out_needs_overwrite_and_only_a_quickstart_dir_is_cleared(tmp_path, monkeypatch, capsys):
    calls: list = []
    _fake(monkeypatch, calls)
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    argv = ["quickstart", "--out", str(out), "--no-plots"]
    assert main(argv) == 2
    assert "not empty" in capsys.readouterr().err and calls == []
    assert main(argv + ["--overwrite"]) == 2
    assert "no quickstart wrote" in capsys.readouterr().err and calls == []
    assert (out / "notes.txt").read_text() == "mine"
    # An earlier quickstart's directory (its marker is there) is cleared with --overwrite.
    (out / pipeline.MARKER).write_text("")
    (out / "plots").mkdir()
    (out / "plots" / "old.png").write_bytes(b"png")
    assert main(argv) == 2
    assert main(argv + ["--overwrite"]) == 0
    assert calls == [str(out)] and list(out.iterdir()) == []


def test_run_quickstart_marks_its_directory(tmp_path):
    ctx = pipeline.run_quickstart(pipeline.QuickstartSettings.preset("quick"), tmp_path / "q", stages=[],
                                  log=lambda line: None)
    assert (ctx.out / pipeline.MARKER).is_file()
