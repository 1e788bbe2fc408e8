"""The quickstart's front methods: entries, table and plot (on a hand-made front result)."""

from __future__ import annotations

import numpy as np

from feedalign.envs.text_task import TextTask, objective_margins
from feedalign.multiobjective.front import run_front
from feedalign.quickstart.front_stage import _method_entry, methods_markdown


def test_method_entry_and_table():
    task = TextTask()
    prompts = task.prompts(4, "test", seed=0)

    def generate(w, batch):
        c = int(round(4 * w[0]))
        return [" ".join(task.parse_prompt(p)[1][:c]) + " ." for p in batch]

    w1 = np.array([0.0, 0.5, 1.0])
    result = run_front(generate, task.score_many, weights=np.stack([w1, 1 - w1], 1), prompts=prompts,
                       objectives=["helpful", "concise"], ref=[0, 0], lower=[0, 0], upper=[1, 1])
    entry = _method_entry("steerable", {"policy": "steerable", "train_seconds": 1.5, "train_steps": 10}, result)
    assert set(entry) >= {"name", "hv", "eu", "significant_violations", "train_seconds", "points"}
    assert entry["hv"] == result.metrics["hypervolume"] and entry["significant_violations"] == 0
    assert entry["points"][2]["means"]["helpful"] == 1.0 and entry["points"][0]["weights"] == [0.0, 1.0]
    text = methods_markdown({"methods": [entry]})
    assert "| steerable |" in text and "helpful at w_helpful 0 / 1" in text
    assert methods_markdown({}) == ""


def test_objective_margins_are_exact_and_scaled():
    fn = objective_margins(["concise", "helpful"], scale=10.0)
    prompt = "write about fruit with apple pear plum fig :"
    out = fn([prompt, prompt], ["apple , pear .", "."])
    # concise = 1 - words / 12 (punctuation is no word); helpful = items / 4.
    np.testing.assert_allclose(out.numpy(), [[10 * (1 - 2 / 12), 10 * 0.5], [10.0, 0.0]], rtol=1e-6)
