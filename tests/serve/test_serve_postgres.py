"""The same store, app and data source on a real PostgreSQL server started for the test."""

import threading

import pytest

from feedalign.serve.app import create_app
from feedalign.serve.storage import FeedbackStore, Item, Submission, SubmissionConflict
from pg_server import postgres_url
from serve_fixtures import make_items


@pytest.fixture(scope="module")
def pg_url():
    with postgres_url() as url:
        yield url


def test_postgres_store_roundtrip_and_idempotence(pg_url):
    store = FeedbackStore(pg_url)
    store.add_items(make_items())
    sub = Submission("pg-1", "p0", "alice", {"helpful": "b"}, "a", "hm")
    assert store.submit(sub) == "created"
    assert store.submit(sub) == "duplicate"
    with pytest.raises(SubmissionConflict):
        store.submit(Submission("pg-2", "p0", "alice", {"helpful": "a"}, "a"))
    assert store.counts() == {"items": 5, "submissions": 1, "ratings": 1}
    assert store.next_item("alice").id == "p1"
    store.close()


def test_postgres_concurrent_submissions(pg_url):
    store = FeedbackStore(pg_url)
    store.add_items([Item(f"c{k}", f"q {k}", f"a {k}", f"b {k}") for k in range(20)])
    client_errors = []

    def worker(j):
        try:
            for k in range(20):
                for _ in range(2):  # each sent twice, as a retry would
                    store.submit(Submission(f"w{j}-{k}", f"c{k}", f"w{j}", {"concise": "tie"}, "a"))
        except Exception as exc:  # noqa: BLE001
            client_errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(j,)) for j in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not client_errors
    rows = [r for r in store.rating_rows(objectives=["concise"])]
    assert len(rows) == 160 and len({r["submission_id"] for r in rows}) == 160
    store.close()


def test_postgres_app_and_training_rows(pg_url):
    from feedalign.data import load_records

    store = FeedbackStore(pg_url)
    client = create_app(store, ["helpful"]).test_client()
    nxt = client.get("/api/next?annotator=bob").get_json()
    item = nxt["item"]
    body = {"submission_id": nxt["submission_id"], "item_id": item["id"], "annotator": "bob",
            "left": item["left"], "values": {"helpful": "left"}}
    assert client.post("/api/ratings", json=body).get_json()["status"] == "created"
    records = load_records(pg_url + "?annotator=bob&kind=pair").records
    assert len(records) == 1 and records[0].chosen == item["left_text"] and records[0].objective == "helpful"
    store.close()
