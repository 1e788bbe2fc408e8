"""The annotation web app (Flask, served by waitress).

Routes:
    GET  /                 the page (serve/page.py): one item at a time, keyboard and mouse
    GET  /api/next         ?annotator=ID -> the next unrated item (A/B sides already placed),
                           a fresh submission id, the objectives and the annotator's progress
    POST /api/ratings      a submission (serve/validation.py); 200 {"status": "created" |
                           "duplicate"} only after the commit; 400 bad input (field named),
                           409 conflict, 401 missing/wrong token
    GET  /healthz          "ok"

With a token every /api request must send ``Authorization: Bearer TOKEN`` (the page reads
it from ``?token=`` once and sends the header). :func:`serve` refuses to bind anything but
a loopback address without a token.
"""

from __future__ import annotations

import hmac
import ipaddress
import uuid
from collections.abc import Sequence
from typing import Any

from feedalign.serve.storage import FeedbackStore, SubmissionConflict
from feedalign.serve.validation import SubmissionError, check_id, left_side, parse_submission

MAX_BODY_BYTES = 64 * 1024


def create_app(store: FeedbackStore, objectives: Sequence[str], *, token: str | None = None,
               title: str = "feedalign feedback") -> Any:
    """A Flask app over ``store``; ``objectives`` are the names people rate."""
    from flask import Flask, Response, jsonify, request

    from feedalign.serve.page import render_page

    objectives = tuple(objectives)
    if not objectives:
        raise ValueError("create_app: at least one objective is needed")
    for name in objectives:
        check_id(name, "objectives")
    app = Flask("feedalign.serve")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    def error(status: int, reason: str, field: str | None = None):
        response = jsonify({"error": reason, "field": field})
        response.status_code = status
        return response

    @app.before_request
    def _authorise():
        if token is None or not request.path.startswith("/api/") or bearer_ok(request.headers, token):
            return None
        return error(401, "missing or wrong access token (send 'Authorization: Bearer TOKEN')")

    @app.get("/")
    def _page():
        return Response(render_page(title, objectives), mimetype="text/html")

    @app.get("/healthz")
    def _health():
        return Response("ok", mimetype="text/plain")

    @app.get("/api/next")
    def _next():
        try:
            annotator = check_id(request.args.get("annotator"), "annotator")
        except SubmissionError as exc:
            return error(400, exc.reason, exc.field)
        return jsonify(next_payload(store, objectives, annotator))

    @app.post("/api/ratings")
    def _rate():
        body = request.get_json(silent=True)
        if body is None:
            return error(400, "expected a JSON body (Content-Type: application/json)")
        try:
            submission = parse_submission(body, store.item, objectives)
            status = store.submit(submission)
        except SubmissionError as exc:
            return error(400, exc.reason, exc.field)
        except SubmissionConflict as exc:
            return error(409, str(exc))
        return jsonify({"status": status, "submission_id": submission.id,
                        "progress": store.progress(submission.annotator)})

    @app.errorhandler(413)
    def _too_large(_exc):
        return error(413, f"request body over {MAX_BODY_BYTES} bytes")

    return app


def bearer_ok(headers: Any, token: str) -> bool:
    header = headers.get("Authorization", "")
    given = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
    return hmac.compare_digest(given.encode(), token.encode())


def next_payload(store: FeedbackStore, objectives: Sequence[str], annotator: str) -> dict[str, Any]:
    """The annotator's next item with its A/B sides placed, a fresh submission id, progress."""
    item = store.next_item(annotator)
    body: dict[str, Any] = {"objectives": list(objectives), "progress": store.progress(annotator),
                            "item": None, "submission_id": uuid.uuid4().hex}
    if item is None:
        return body
    shown = {"id": item.id, "prompt": item.prompt, "kind": "pair" if item.is_pair else "single",
             "left_text": item.completion_a}
    if item.is_pair:
        left = left_side(annotator, item.id)
        texts = {"a": item.completion_a, "b": item.completion_b}
        shown.update(left=left, left_text=texts[left], right_text=texts["b" if left == "a" else "a"])
    body["item"] = shown
    return body


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(app: Any, host: str = "127.0.0.1", port: int = 8000, *, token: str | None = None,
                threads: int = 8) -> Any:
    """A waitress server for ``app`` (not yet running: call ``.run()``; ``.close()`` stops
    it). ``port=0`` picks a free port (``server.effective_port``)."""
    from waitress.server import create_server

    if not is_loopback(host) and not token:
        raise ValueError(f"binding to {host} exposes the app beyond this machine: give an access token "
                         "(--token or FEEDALIGN_SERVE_TOKEN)")
    return create_server(app, host=host, port=port, threads=threads, ident="feedalign")
