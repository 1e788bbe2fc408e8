"""The quickstart's three-objective front: the ideal front of the polite text task (brute
force), the polite feedback, the stage list, the --objectives option, and a quick m = 3 run."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from feedalign.cli.main import main
from feedalign.envs.text_task import TextTask
from feedalign.evaluation.pareto import hypervolume, nondominated_mask
from feedalign.quickstart import QuickstartSettings, default_stages
from feedalign.quickstart.feedback import SamplePool, simulate_polite_feedback
from feedalign.quickstart.front_many import ideal_front_dense, ideal_front_vertices

PROMPT = "write about fruit with apple pear plum fig :"


def _brute_force_scores(words: tuple[str, ...], max_len: int) -> np.ndarray:
    task = TextTask(polite=True)
    rows = []
    for n in range(max_len + 1):
        for seq in itertools.product(words, repeat=n):
            s = task.score(PROMPT, " ".join(seq) + " .")
            rows.append((s["helpful"], s["concise"], s["polite"]))
    return np.unique(np.round(np.array(rows), 12), axis=0)


def test_ideal_vertices_are_the_brute_force_front_on_a_small_case():
    # Three topic items, the one-word opener and closer, a two-word opener, up to
    # five words: the nondominated score vectors must be exactly the derived vertices that fit
    # (at most 3 items, items + politeness words <= 5).
    vocab = ("apple", "pear", "kiwi", "well", "too", "i", "like")
    found = _brute_force_scores(vocab, 5)
    front = found[nondominated_mask(found)]
    v = ideal_front_vertices()
    n_words = np.round(12 * (1 - v[:, 1])).astype(int)
    expected = v[(4 * v[:, 0] <= 3 + 1e-9) & (n_words <= 5)]
    assert {tuple(r) for r in np.round(front, 9)} == {tuple(r) for r in np.round(expected, 9)}
    # Nothing attainable lies above the derived plane concise = 1 - h/3 - p/6.
    assert np.all(found[:, 1] <= 1 - found[:, 0] / 3 - found[:, 2] / 6 + 1e-12)


def test_vertices_have_the_derived_word_counts_and_are_mutually_nondominated():
    v = ideal_front_vertices()
    assert v.shape == (15, 3) and nondominated_mask(v).all()
    for h, c, p in v:  # c items and politeness k/2 cost c + k words (k = 0, 1, 2)
        assert math.isclose(c, 1 - (4 * h + 2 * p) / 12)
    # consecutive rows are edges of the front: they differ in one coordinate step
    steps = np.abs(np.diff(v[:, [0, 2]], axis=0))
    assert np.all((np.isclose(steps, [0.25, 0]).all(1)) | (np.isclose(steps, [0, 0.5]).all(1)))


@pytest.mark.parametrize("n", [1, 2, 5, 10])
def test_dense_front_hypervolume_matches_its_closed_form(n):
    dense = ideal_front_dense(per_item=n)
    assert dense.shape == ((4 * n + 1) * (2 * n + 1), 3)
    vertices = {tuple(r) for r in np.round(ideal_front_vertices(), 9)}
    assert vertices <= {tuple(r) for r in np.round(dense, 9)}
    # Plane 1 - h/3 - p/6 over the unit square: HV 0.75; a grid of steps 1/(4n) in h and
    # 1/(2n) in p misses half a step of each slope: 1/(24n) + 1/(24n).
    assert math.isclose(hypervolume(dense, [0, 0, 0]), 0.75 - 1 / (12 * n), rel_tol=1e-9)
    assert hypervolume(ideal_front_vertices(), [0, 0, 0]) <= hypervolume(dense, [0, 0, 0])


def test_dense_front_refuses_a_task_that_clips_concise():
    with pytest.raises(ValueError, match="max_words=5"):
        ideal_front_dense(TextTask(polite=True, max_words=5))


def test_polite_thumbs_judge_politeness_with_their_own_seed():
    completions = ["well apple too .", "apple .", "i like apple for you .", "pear ."]
    pool = SamplePool([(PROMPT, c) for c in completions] + [(PROMPT, "")], {})
    scorer = TextTask(polite=True).score
    sets = simulate_polite_feedback(pool, scorer, seed=0, thumb_temperature=0.0)
    records = sets["thumbs_polite"]
    assert list(sets) == ["thumbs_polite"] and len(records) == 4  # the empty completion is not judged
    # temperature 0: thumbs up iff polite > the prompt's mean politeness (0.5)
    assert {r.completion: r.label for r in records} == {completions[0]: True, completions[1]: False,
                                                       completions[2]: True, completions[3]: False}
    assert [r.id for r in records] == [f"thumbs_polite-{i}" for i in range(4)]
    again = simulate_polite_feedback(pool, scorer, seed=0, thumb_temperature=0.5)["thumbs_polite"]
    assert again == simulate_polite_feedback(pool, scorer, seed=0, thumb_temperature=0.5)["thumbs_polite"]


def test_settings_and_stages_for_three_objectives():
    names = [s.name for s in default_stages(QuickstartSettings(objectives=3))]
    assert names[-3:] == ["front", "front3", "report"]
    assert "front3" not in [s.name for s in default_stages(QuickstartSettings())]
    assert not {"front", "front3"} & {s.name for s in default_stages(QuickstartSettings(objectives=3, front=False))}
    with pytest.raises(ValueError, match="objectives must be 2 or 3"):
        QuickstartSettings(objectives=4)
    with pytest.raises(ValueError, match="front3_per_axis"):
        QuickstartSettings(front3_per_axis=1)


def test_objectives_option(monkeypatch, tmp_path, capsys):
    from types import SimpleNamespace

    from feedalign.quickstart import pipeline

    seen = {}

    def fake_run(settings, out, *, log=print):
        seen["settings"] = settings
        report = {"methods": {}, "all_passed": True}
        return SimpleNamespace(report=report, timings={"total": 1.0}, path=lambda *p: tmp_path.joinpath(*p))

    monkeypatch.setattr(pipeline, "run_quickstart", fake_run)
    assert main(["quickstart", "--out", str(tmp_path / "a"), "--objectives", "3"]) == 0
    assert seen["settings"].objectives == 3
    assert main(["quickstart", "--out", str(tmp_path / "b")]) == 0 and seen["settings"].objectives == 2
    capsys.readouterr()
    assert main(["quickstart", "--out", str(tmp_path / "c"), "--objectives", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --objectives must be 2 or 3, got 4"]


@pytest.mark.slow
def test_quick_three_objective_front(tmp_path):
    from feedalign.data import load_records
    from feedalign.quickstart.pipeline import run_quickstart

    settings = QuickstartSettings.preset("quick", objectives=3, methods=("dpo", "bco"))
    stages = [st for st in default_stages(settings) if st.name != "front"]  # the m = 2 front is tested elsewhere
    ctx = run_quickstart(settings, tmp_path, stages=stages, log=lambda line: None)
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    front = report["front3"]
    assert front["status"] == "done" and front["objectives"] == ["helpful", "concise", "polite"]
    assert [e["name"] for e in front["methods"]] == ["soups", "steerable"] and "modpo_sweep" in front["skipped"]
    exact_hv = front["exact"]["hypervolume"]
    assert math.isclose(exact_hv, 0.75 - 1 / (12 * 40), rel_tol=1e-9)
    soup_steps = sum(ctx.runs[n]["steps"] for n in ("dpo", "bco", "bco_polite"))
    for e in front["methods"]:
        assert {"name", "hv", "eu", "significant_violations", "train_seconds", "points", "hv_ratio"} <= set(e)
        assert len(e["points"]) == front["n_weights"] == 6  # simplex_grid(3, 3)
        assert all(len(p["weights"]) == 3 and math.isclose(sum(p["weights"]), 1) for p in e["points"])
        assert math.isclose(e["hv_ratio"], e["hv"] / exact_hv, rel_tol=1e-9) and 0 <= e["hv_ratio"] <= 1
        assert [t["objective"] for t in e["trend"]] == front["objectives"]
        assert e["train_steps"] == soup_steps
        for key in ("json", "png", "pairs_png", "parallel_png"):
            assert (tmp_path / "front3" / e["name"] / e["paths"][key].rsplit("/", 1)[-1]).is_file()
    assert ctx.runs["steerable3"]["steps"] == soup_steps
    assert (tmp_path / "front3" / "pairs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    polite = report["feedback"]["thumbs_polite"]
    assert polite["counts"]["up"] + polite["counts"]["down"] == len(load_records(polite["path"]).records) > 0
    assert "Front, 3 objectives" in (tmp_path / "report.md").read_text(encoding="utf-8")
