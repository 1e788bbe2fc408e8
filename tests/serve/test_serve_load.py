"""Load on 127.0.0.1: 20 concurrent annotators x 50 ratings each against the real server
(waitress threads, SQLite in WAL mode). Every 10th rating is sent twice (a retry): 0 lost,
0 duplicated, and the p95 latency of the acknowledged submissions is printed."""

import json
import threading
import time
import urllib.request

import numpy as np
import pytest

from feedalign.serve.app import create_app
from feedalign.serve.storage import FeedbackStore, Item
from serve_fixtures import live_server

ANNOTATORS, RATINGS = 20, 50


def _post(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def _annotator(base, name, latencies, statuses, errors):
    try:
        for i in range(RATINGS):
            with urllib.request.urlopen(f"{base}/api/next?annotator={name}", timeout=120) as response:
                nxt = json.loads(response.read())
            item = nxt["item"]
            body = {"submission_id": nxt["submission_id"], "item_id": item["id"], "annotator": name,
                    "left": item["left"], "values": {"helpful": "left" if i % 2 else "tie"}}
            start = time.perf_counter()
            statuses.append(_post(f"{base}/api/ratings", body)["status"])
            latencies.append(time.perf_counter() - start)
            if i % 10 == 0:
                statuses.append(_post(f"{base}/api/ratings", body)["status"])
    except Exception as exc:  # noqa: BLE001 - reported by the test
        errors.append(f"{name}: {exc!r}")


@pytest.mark.slow
def test_concurrent_annotators_lose_and_duplicate_nothing(tmp_path):
    store = FeedbackStore(tmp_path / "load.db")
    store.add_items([Item(f"i{k}", f"prompt {k}", f"a {k}", f"b {k}") for k in range(RATINGS)])
    app = create_app(store, ["helpful"])
    latencies, statuses, errors = [], [], []
    with live_server(app, threads=8) as base:
        threads = [threading.Thread(target=_annotator, args=(base, f"ann{j}", latencies, statuses, errors))
                   for j in range(ANNOTATORS)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        wall = time.perf_counter() - start
    assert not errors, errors[:3]
    assert not any(t.is_alive() for t in threads)
    total = ANNOTATORS * RATINGS
    assert statuses.count("created") == total
    assert statuses.count("duplicate") == ANNOTATORS * RATINGS // 10
    counts = store.counts()
    assert counts == {"items": RATINGS, "submissions": total, "ratings": total}  # 0 lost, 0 duplicated
    rows = list(store.rating_rows())
    pairs = {(r["annotator"], r["item_id"]) for r in rows}
    assert len(pairs) == total
    p50, p95 = np.percentile(latencies, [50, 95])
    report = {"annotators": ANNOTATORS, "ratings_each": RATINGS, "acknowledged": len(latencies),
              "lost": total - counts["submissions"], "duplicated": len(rows) - len(pairs),
              "p50_ms": round(1000 * p50, 1), "p95_ms": round(1000 * p95, 1), "wall_s": round(wall, 1)}
    print("load test:", json.dumps(report))
    store.close()
