import pytest

from feedalign.serve.app import create_app, make_server
from feedalign.serve.storage import FeedbackStore
from feedalign.serve.validation import left_side
from serve_fixtures import make_items

OBJECTIVES = ("helpful", "concise")


@pytest.fixture()
def setup(tmp_path):
    store = FeedbackStore(tmp_path / "fb.db")
    store.add_items(make_items())
    yield store, create_app(store, OBJECTIVES).test_client()
    store.close()


def _body(client, annotator="alice", **values):
    nxt = client.get(f"/api/next?annotator={annotator}").get_json()
    item = nxt["item"]
    body = {"submission_id": nxt["submission_id"], "item_id": item["id"], "annotator": annotator,
            "values": values or {"helpful": "left"}}
    if item["kind"] == "pair":
        body["left"] = item["left"]
    return nxt, body


def test_page_served(setup):
    _, client = setup
    page = client.get("/").get_data(as_text=True)
    assert '["helpful", "concise"]' in page and "api/ratings" in page


def test_next_places_sides_and_maps_positions(setup):
    store, client = setup
    nxt, body = _body(client, helpful="left", concise="right")
    item = nxt["item"]
    left = left_side("alice", item["id"])
    assert item["left"] == left
    texts = {"a": "answer A0", "b": "answer B0"}
    assert item["left_text"] == texts[left]
    answer = client.post("/api/ratings", json=body)
    assert answer.status_code == 200 and answer.get_json()["status"] == "created"
    stored = store.submission(body["submission_id"])
    other = "b" if left == "a" else "a"
    assert stored.values == {"helpful": left, "concise": other} and stored.left_side == left


def test_position_randomised_over_items():
    sides = {left_side("alice", f"item-{i}") for i in range(40)}
    assert sides == {"a", "b"}


def test_retry_is_idempotent(setup):
    store, client = setup
    _, body = _body(client)
    first = client.post("/api/ratings", json=body).get_json()
    second = client.post("/api/ratings", json=body).get_json()
    assert (first["status"], second["status"]) == ("created", "duplicate")
    assert store.counts()["submissions"] == 1
    assert client.get("/api/next?annotator=alice").get_json()["item"]["id"] == "p1"


@pytest.mark.parametrize("change, field", [
    ({"values": {"helpful": "up"}}, "values.helpful"),          # thumbs value on a pair item
    ({"values": {"harmless": "left"}}, "values.harmless"),      # unknown objective
    ({"values": {}}, "values"),
    ({"annotator": "a b"}, "annotator"),
    ({"item_id": "nope"}, "item_id"),
    ({"comment": "x" * 3000}, "comment"),
    ({"extra": 1}, "extra"),
    ({"submission_id": ""}, "submission_id"),
])
def test_invalid_input_rejected_with_field(setup, change, field):
    store, client = setup
    _, body = _body(client)
    body.update(change)
    answer = client.post("/api/ratings", json=body)
    assert answer.status_code == 400, answer.get_json()
    assert answer.get_json()["field"] == field
    assert store.counts()["submissions"] == 0


def test_wrong_left_side_rejected(setup):
    _, client = setup
    _, body = _body(client)
    body["left"] = "b" if body["left"] == "a" else "a"
    assert client.post("/api/ratings", json=body).get_json()["field"] == "left"


def test_second_submission_for_same_item_conflicts(setup):
    _, client = setup
    nxt, body = _body(client)
    client.post("/api/ratings", json=body)
    answer = client.post("/api/ratings", json={**body, "submission_id": "another-id"})
    assert answer.status_code == 409


def test_single_completion_thumbs(setup):
    store, client = setup
    for _ in range(3):
        _, body = _body(client)
        client.post("/api/ratings", json=body)
    nxt, body = _body(client, helpful="up", concise="down")
    assert nxt["item"]["kind"] == "single" and "left" not in body
    assert client.post("/api/ratings", json=body).status_code == 200
    assert store.submission(body["submission_id"]).values == {"helpful": "up", "concise": "down"}


def test_token_required_on_api(tmp_path):
    store = FeedbackStore(tmp_path / "fb.db")
    client = create_app(store, OBJECTIVES, token="s3cret").test_client()
    assert client.get("/api/next?annotator=a").status_code == 401
    assert client.get("/api/next?annotator=a", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/next?annotator=a", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/").status_code == 200


def test_non_loopback_bind_needs_token(tmp_path):
    store = FeedbackStore(tmp_path / "fb.db")
    app = create_app(store, OBJECTIVES)
    with pytest.raises(ValueError, match="token"):
        make_server(app, "0.0.0.0", 0)
