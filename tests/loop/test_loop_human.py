"""People as the judge: the round's items go to the database, simulated people rate them
through the real web app (HTTP on 127.0.0.1), and the round trains on their answers."""

import json
import sys
from dataclasses import replace
import threading
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))
from serve_fixtures import live_server  # noqa: E402

from feedalign.envs.text_task import TextTask  # noqa: E402
from feedalign.loop.config import IterateConfig, load_iterate_config  # noqa: E402
from feedalign.loop.iterate import run_iterate  # noqa: E402
from feedalign.serve.app import create_app  # noqa: E402
from feedalign.serve.storage import FeedbackStore  # noqa: E402


def _annotate(base, name, stop, task):
    """Rate every item offered, preferring the more helpful completion (ties: 'tie')."""
    while not stop.is_set():
        with urllib.request.urlopen(f"{base}/api/next?annotator={name}", timeout=60) as r:
            nxt = json.loads(r.read())
        item = nxt["item"]
        if item is None:
            time.sleep(0.2)
            continue
        left = task.score(item["prompt"], item["left_text"])["helpful"]
        right = task.score(item["prompt"], item["right_text"])["helpful"]
        value = "left" if left > right else "right" if right > left else "tie"
        body = {"submission_id": nxt["submission_id"], "item_id": item["id"], "annotator": name,
                "left": item["left"], "values": {"helpful": value}}
        request = urllib.request.Request(f"{base}/api/ratings", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        urllib.request.urlopen(request, timeout=60).read()


@pytest.mark.slow
def test_round_waits_for_people_and_trains_on_their_answers(tmp_path):
    db = tmp_path / "people.db"
    config = load_iterate_config(Path(__file__).parents[2] / "examples" / "iterate" / "config.yaml")
    config = replace(
        config, rounds=1, offline_baseline=False,
        initial=replace(config.initial, sft_examples=64, sft_steps=20),
        prompts=replace(config.prompts, per_round=6, eval_prompts=8),
        sampling=replace(config.sampling, max_new_tokens=10),
        judge=replace(config.judge, kind="human", db=str(db), objectives=("helpful",), poll_seconds=0.2,
                      wait_seconds=300),
        train=replace(config.train, steps=2, batch_size=4))
    store = FeedbackStore(db)
    stop = threading.Event()
    with live_server(create_app(store, ["helpful"])) as base:
        people = threading.Thread(target=_annotate, args=(base, "pat", stop, TextTask(seed=0)), daemon=True)
        people.start()
        try:
            report = run_iterate(config, tmp_path / "out", log=lambda _msg: None)
        finally:
            stop.set()
            people.join(timeout=60)
    round_1 = report["rounds"][0]
    files = round_1["feedback_files"]
    pairs = [json.loads(line) for line in open(files["pairs_helpful"]["path"])]
    ties = [json.loads(line) for line in open(files["ties_helpful"]["path"])]
    assert round_1["n_feedback"] == len(pairs) > 0
    assert all(r["judge"] == "human" and r["annotator"] == "pat" and r["round"] == 1 for r in pairs)
    task = TextTask(seed=0)
    assert all(task.score(r["prompt"], r["chosen"])["helpful"] > task.score(r["prompt"], r["rejected"])["helpful"]
               for r in pairs)
    assert store.counts()["submissions"] == len(pairs) + len(ties)
    assert report["offline_baseline"] is None and "helpful" in round_1["metrics"]
    store.close()


def test_human_judge_config_rules():
    from feedalign.config.errors import ConfigError
    from feedalign.loop.config import JudgeConfig

    with pytest.raises(ConfigError, match="offline_baseline"):
        IterateConfig(judge=JudgeConfig(kind="human", db="x.db"), offline_baseline=True)
    with pytest.raises(ConfigError, match="db"):
        JudgeConfig(kind="human")
