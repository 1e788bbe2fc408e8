"""A feedback database (what ``feedalign serve`` writes) as a data source.

``path: sqlite:///feedback.db`` (or ``postgresql+psycopg://user@host:port/db``) in a training
config reads every stored rating as canonical rows; filters go in the URL's query string,
each a comma-separated list::

    sqlite:///feedback.db?objective=helpful&round=1,2&annotator=alice&kind=pair

``kind`` is ``pair`` (A/B comparisons) or ``labeled`` (thumbs, and "both bad" answers);
without it both come (a source trained with one loss usually wants one kind).

How answers become rows (``rows_from_ratings``):

* thumbs ``up``/``down`` -> ``{prompt, completion, label}``;
* ``a``/``b`` better -> ``{prompt, chosen, rejected}``;
* ``both_bad`` -> one ``label: false`` row for each completion (negative-only feedback);
* ``tie`` -> no training row: a tie says neither completion is preferred, which no pair
  or thumbs row can express. Ties are counted (``DatabaseRows.ties``) and written by
  ``feedalign data export`` to a separate ties file, never dropped unseen.

Every row carries ``objective`` and its provenance: ``annotator``, ``round``, ``judge``
(``human``), ``time``, ``submission_id``, ``item_id`` and ``comment``. The location of a row
in errors is ``<database>:submission <id>/<objective>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

SCHEMES = ("sqlite", "postgresql", "postgres")
FILTERS = ("objective", "round", "annotator", "kind")
KINDS = ("pair", "labeled")


def is_database_url(source: Any) -> bool:
    if not isinstance(source, str) or "://" not in source:
        return False
    scheme = source.split("://", 1)[0].split("+", 1)[0].lower()
    return scheme in SCHEMES


@dataclass
class DatabaseQuery:
    url: str  # the SQLAlchemy URL without the filter parameters
    name: str  # for locations: the database file name or the URL without credentials
    objectives: list[str] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    annotators: list[str] = field(default_factory=list)
    kind: str | None = None


def parse_database_url(source: str) -> DatabaseQuery:
    """Split the feedalign filters off a database URL; ValueError names a bad filter."""
    base, _, query_string = source.partition("?")
    kept, filters = [], {}
    for key, value in parse_qsl(query_string, keep_blank_values=True):
        if key in FILTERS:
            filters[key] = [v.strip() for v in value.split(",") if v.strip()]
        else:
            kept.append((key, value))
    url = base + ("?" + urlencode(kept) if kept else "")
    scheme, _, rest = base.partition("://")
    if scheme.startswith("sqlite"):
        name = rest[1:] if rest.startswith("/") else rest  # sqlite:///rel.db, sqlite:////abs.db
    else:
        name = f"{scheme}://{rest.rsplit('@', 1)[-1]}"  # no credentials in locations
    try:
        rounds = [int(r) for r in filters.get("round", [])]
    except ValueError:
        raise ValueError(f"{source}: filter 'round': expected integers, got {filters['round']}") from None
    kinds = filters.get("kind", [])
    if len(kinds) > 1 or (kinds and kinds[0] not in KINDS):
        raise ValueError(f"{source}: filter 'kind': expected one of {KINDS}, got {kinds}")
    return DatabaseQuery(url, name, filters.get("objective", []), rounds, filters.get("annotator", []),
                         kinds[0] if kinds else None)


@dataclass
class DatabaseRows:
    rows: list[tuple[str, dict[str, Any]]]  # (location, canonical row)
    ties: list[dict[str, Any]]


def rows_from_ratings(ratings, name: str, kind: str | None = None) -> DatabaseRows:
    """Canonical rows (and ties) from ``FeedbackStore.rating_rows()`` output."""
    rows, ties = [], []
    for r in ratings:
        loc = f"{name}:submission {r['submission_id']}/{r['objective']}"
        base = {"objective": r["objective"], "annotator": r["annotator"], "round": r["round"], "judge": "human",
                "time": r["created_at"], "submission_id": r["submission_id"], "item_id": r["item_id"],
                "comment": r["comment"]}
        key = f"{r['submission_id']}/{r['objective']}"
        value, texts = r["value"], {"a": r["completion_a"], "b": r["completion_b"]}
        if value in ("up", "down") and kind in (None, "labeled"):
            rows.append((loc, {"id": key, "prompt": r["prompt"], "completion": r["completion_a"],
                               "label": value == "up", **base}))
        elif value in ("a", "b") and kind in (None, "pair"):
            other = "b" if value == "a" else "a"
            rows.append((loc, {"id": key, "prompt": r["prompt"], "chosen": texts[value],
                               "rejected": texts[other], **base}))
        elif value == "both_bad" and kind in (None, "labeled"):
            for side in ("a", "b"):
                rows.append((f"{loc}/{side}", {"id": f"{key}/{side}", "prompt": r["prompt"],
                                               "completion": texts[side], "label": False, **base}))
        elif value == "tie":
            ties.append({"id": key, "prompt": r["prompt"], "completions": [texts["a"], texts["b"]], **base})
    return DatabaseRows(rows, ties)


def read_database(source: str) -> tuple[DatabaseQuery, DatabaseRows]:
    """Every rating of the database named by ``source`` (a URL with optional filters)."""
    try:
        from feedalign.serve.storage import FeedbackStore
    except ImportError as exc:
        raise ValueError(f"reading a feedback database needs {exc.name}: pip install 'feedalign[serve]'") from None

    query = parse_database_url(source)
    try:
        store = FeedbackStore(query.url, create=False)
    except FileNotFoundError:
        raise ValueError(f"{source}: no such database file") from None
    try:
        ratings = store.rating_rows(objectives=query.objectives, rounds=query.rounds, annotators=query.annotators)
        return query, rows_from_ratings(ratings, query.name, query.kind)
    finally:
        store.close()


def open_database(source: str) -> tuple[str, Iterator[tuple[str, Mapping[str, Any], None]]]:
    """``(name, items)`` in the form of ``loaders.open_source``: the loader validates the rows."""
    import logging

    from feedalign.data.errors import FeedbackDataError

    shown = re.sub(r"//([^/@:]*):[^/@]*@", r"//\1:***@", source)  # no password in messages
    try:
        query, result = read_database(source)
    except ValueError as exc:
        raise FeedbackDataError(shown, str(exc).removeprefix(f"{source}: ")) from None
    except Exception as exc:  # noqa: BLE001 - the driver's errors (refused connection, missing table)
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise FeedbackDataError(shown, f"cannot read the database: {type(exc).__name__}: {first}") from None
    if result.ties:
        logging.getLogger(__name__).warning(
            "%s: %d tie answers give no training rows (feedalign data export writes them to a ties file)",
            query.name, len(result.ties))
    return query.name, ((loc, row, None) for loc, row in result.rows)
