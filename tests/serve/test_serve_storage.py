import sqlite3

import pytest

from feedalign.serve.storage import FeedbackStore, Item, Submission, SubmissionConflict
from serve_fixtures import make_items


@pytest.fixture()
def store(tmp_path):
    s = FeedbackStore(tmp_path / "fb.db")
    s.add_items(make_items())
    yield s
    s.close()


def test_wal_mode_and_tables(tmp_path, store):
    conn = sqlite3.connect(tmp_path / "fb.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    names = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
    assert {"items", "submissions", "ratings"} <= names


def test_items_idempotent_and_immutable(store):
    assert store.add_items(make_items()) == 0
    assert [i.id for i in store.items()] == ["p0", "p1", "p2", "s0", "s1"]
    with pytest.raises(SubmissionConflict, match="p0"):
        store.add_items([Item("p0", "prompt 0", "changed", "answer B0")])


def test_submit_duplicate_and_conflicts(store):
    sub = Submission("sub-1", "p0", "alice", {"helpful": "a", "concise": "tie"}, "a", "fine")
    assert store.submit(sub) == "created"
    assert store.submit(sub) == "duplicate"
    assert store.counts() == {"items": 5, "submissions": 1, "ratings": 2}
    with pytest.raises(SubmissionConflict, match="other content"):
        store.submit(Submission("sub-1", "p0", "alice", {"helpful": "b"}, "a"))
    with pytest.raises(SubmissionConflict, match="already rated"):
        store.submit(Submission("sub-2", "p0", "alice", {"helpful": "b"}, "a"))
    assert store.counts()["ratings"] == 2  # the failed writes left nothing behind


def test_next_item_and_progress(store):
    assert store.next_item("bob").id == "p0"
    store.submit(Submission("x1", "p0", "bob", {"helpful": "b"}, "b"))
    assert store.next_item("bob").id == "p1"
    assert store.next_item("carol").id == "p0"
    assert store.progress("bob") == {"done": 1, "total": 5}


def test_rating_rows_filters(store):
    store.submit(Submission("x1", "p0", "bob", {"helpful": "b", "concise": "a"}, "b"))
    store.submit(Submission("x2", "s0", "ann", {"helpful": "up"}))
    rows = list(store.rating_rows())
    assert len(rows) == 3
    assert [r["value"] for r in store.rating_rows(objectives=["concise"])] == ["a"]
    assert [r["submission_id"] for r in store.rating_rows(rounds=[2])] == ["x2"]
    assert {r["annotator"] for r in store.rating_rows(annotators=["bob"])} == {"bob"}


def test_missing_database_not_created(tmp_path):
    with pytest.raises(FileNotFoundError):
        FeedbackStore(tmp_path / "nope.db", create=False)
    assert not (tmp_path / "nope.db").exists()


WRITER = """
import sys
from feedalign.serve.storage import FeedbackStore, Submission
store = FeedbackStore(sys.argv[1])
for k in range(40):
    for _ in range(2):  # every submission twice, as a retry would
        store.submit(Submission(f"{sys.argv[2]}-{k}", f"i{k}", sys.argv[2], {"helpful": "a"}, "a"))
"""


def test_two_processes_write_one_sqlite_file(tmp_path):
    import os
    import subprocess
    import sys

    path = tmp_path / "shared.db"
    store = FeedbackStore(path)
    store.add_items([Item(f"i{k}", f"q{k}", "a", "b") for k in range(40)])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name], env=env, stderr=subprocess.PIPE,
                              text=True) for name in ("w1", "w2", "w3")]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    assert store.counts() == {"items": 40, "submissions": 120, "ratings": 120}
    store.close()
