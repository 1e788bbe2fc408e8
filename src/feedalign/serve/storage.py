"""Where collected feedback lives: SQLite (a file path, the default) or PostgreSQL (a URL).

Three tables (SQLAlchemy Core, one schema for both databases):

    items        id, position, prompt, completion_a, completion_b (NULL: a single completion,
                 rated with thumbs), source, round, created_at
    submissions  id (the client's submission id), item_id, annotator, left_side ('a' or 'b':
                 which completion the page showed on the left), comment, created_at;
                 UNIQUE (item_id, annotator): a person rates an item once
    ratings      submission_id, objective, value ('up'/'down' for thumbs; 'a', 'b', 'tie',
                 'both_bad' for comparisons); PRIMARY KEY (submission_id, objective)

A submission and its ratings are written in one transaction, and :meth:`FeedbackStore.submit`
returns only after the commit, so an acknowledged answer is on disk. Sending the same
submission again (a double click, a retry after a lost response) finds the stored row and
returns ``"duplicate"`` instead of writing twice; the same id with different content, or a
second submission of one annotator for one item, is a :class:`SubmissionConflict`.

SQLite runs in WAL mode (readers never block the writer) with a busy timeout; writes of one
process go through one lock (one writer at a time), and ``synchronous=FULL`` makes each
commit durable. PostgreSQL serialises conflicting inserts through the unique keys.
"""

from __future__ import annotations

import datetime as _dt
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

SCHEMA_VERSION = 1
THUMB_VALUES = ("up", "down")
COMPARE_VALUES = ("a", "b", "tie", "both_bad")

metadata = sa.MetaData()
items_table = sa.Table(
    "items", metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False, unique=True),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("completion_a", sa.Text, nullable=False),
    sa.Column("completion_b", sa.Text, nullable=True),
    sa.Column("source", sa.Text, nullable=False, default=""),
    sa.Column("round", sa.Integer, nullable=True),
    sa.Column("created_at", sa.String(40), nullable=False),
)
submissions_table = sa.Table(
    "submissions", metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("item_id", sa.String(128), sa.ForeignKey("items.id"), nullable=False),
    sa.Column("annotator", sa.String(128), nullable=False),
    sa.Column("left_side", sa.String(1), nullable=True),
    sa.Column("comment", sa.Text, nullable=True),
    sa.Column("created_at", sa.String(40), nullable=False),
    sa.UniqueConstraint("item_id", "annotator", name="one_submission_per_annotator_and_item"),
)
ratings_table = sa.Table(
    "ratings", metadata,
    sa.Column("submission_id", sa.String(128), sa.ForeignKey("submissions.id"), primary_key=True),
    sa.Column("objective", sa.String(128), primary_key=True),
    sa.Column("value", sa.String(16), nullable=False),
)
meta_table = sa.Table(
    "feedalign_meta", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)


class SubmissionConflict(ValueError):
    """A submission id reused with other content, or an item rated twice by one annotator."""


@dataclass(frozen=True)
class Item:
    """One thing to rate: a prompt and one completion (thumbs) or two (A/B comparison)."""

    id: str
    prompt: str
    completion_a: str
    completion_b: str | None = None
    source: str = ""
    round: int | None = None

    @property
    def is_pair(self) -> bool:
        return self.completion_b is not None


@dataclass(frozen=True)
class Submission:
    """One annotator's answer on one item: a value per objective (objectives left out were
    not rated) and an optional comment. ``left_side`` records the A/B position shown."""

    id: str
    item_id: str
    annotator: str
    values: Mapping[str, str]
    left_side: str | None = None
    comment: str | None = None
    created_at: str = field(default="")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def database_url(target: str | Path) -> str:
    """A SQLAlchemy URL for ``target``: URLs pass through, a file path becomes ``sqlite:///``."""
    text = str(target)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class FeedbackStore:
    """Items, submissions and ratings in one database (see the module docstring).

    Args:
        target: a SQLite file path, or a SQLAlchemy URL (``sqlite:///...``,
            ``postgresql+psycopg://user@host:port/db``).
        create: create the tables when missing (``False``: the database must exist already).
    """

    def __init__(self, target: str | Path, *, create: bool = True) -> None:
        self.url = database_url(target)
        self.shown_url = sa.engine.make_url(self.url).render_as_string(hide_password=True)
        self.is_sqlite = self.url.startswith("sqlite")
        if self.is_sqlite:
            path = sa.engine.make_url(self.url).database
            if not create and (not path or not Path(path).exists()):
                raise FileNotFoundError(f"{path}: no such database file")
            self.engine = sa.create_engine(self.url, connect_args={"timeout": 30, "check_same_thread": False})
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            self.engine = sa.create_engine(self.url, pool_size=10, max_overflow=20, pool_pre_ping=True)
        self._write_lock = threading.Lock() if self.is_sqlite else None
        if create:
            with self._writing():
                metadata.create_all(self.engine)
                with self.engine.begin() as conn:
                    if conn.execute(sa.select(meta_table.c.value).where(meta_table.c.key == "schema")).first() is None:
                        conn.execute(meta_table.insert().values(key="schema", value=str(SCHEMA_VERSION)))

    def close(self) -> None:
        self.engine.dispose()

    def _writing(self):
        return self._write_lock if self._write_lock is not None else _NoLock()

    # ------------------------------------------------------------------ items
    def add_items(self, items: Iterable[Item]) -> int:
        """Insert items not yet present (by id); returns how many were new. An id already
        stored with other texts is an error (items are immutable once rated)."""
        items = list(items)
        added = 0
        with self._writing(), self.engine.begin() as conn:
            position = conn.execute(sa.select(sa.func.coalesce(sa.func.max(items_table.c.position), 0))).scalar_one()
            for item in items:
                row = conn.execute(sa.select(items_table).where(items_table.c.id == item.id)).mappings().first()
                if row is not None:
                    if (row["prompt"], row["completion_a"], row["completion_b"]) != (
                            item.prompt, item.completion_a, item.completion_b):
                        raise SubmissionConflict(f"item {item.id!r} is already stored with other texts")
                    continue
                position += 1
                conn.execute(items_table.insert().values(
                    id=item.id, position=position, prompt=item.prompt, completion_a=item.completion_a,
                    completion_b=item.completion_b, source=item.source, round=item.round, created_at=now()))
                added += 1
        return added

    def item(self, item_id: str) -> Item | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(items_table).where(items_table.c.id == item_id)).mappings().first()
        return _item(row) if row is not None else None

    def items(self) -> list[Item]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(items_table).order_by(items_table.c.position)).mappings().all()
        return [_item(r) for r in rows]

    def next_item(self, annotator: str) -> Item | None:
        """The first item (in insertion order) this annotator has not rated yet."""
        rated = sa.select(submissions_table.c.item_id).where(submissions_table.c.annotator == annotator)
        query = (sa.select(items_table).where(items_table.c.id.not_in(rated))
                 .order_by(items_table.c.position).limit(1))
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return _item(row) if row is not None else None

    def progress(self, annotator: str) -> dict[str, int]:
        with self.engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(items_table)).scalar_one()
            done = conn.execute(sa.select(sa.func.count()).select_from(submissions_table)
                                .where(submissions_table.c.annotator == annotator)).scalar_one()
        return {"done": int(done), "total": int(total)}

    # ------------------------------------------------------------ submissions
    def submit(self, submission: Submission) -> str:
        """Store ``submission`` with its ratings in one transaction; returns ``"created"`` or
        ``"duplicate"`` (the same submission was stored before). Raises SubmissionConflict."""
        created_at = submission.created_at or now()
        try:
            with self._writing(), self.engine.begin() as conn:
                conn.execute(submissions_table.insert().values(
                    id=submission.id, item_id=submission.item_id, annotator=submission.annotator,
                    left_side=submission.left_side, comment=submission.comment, created_at=created_at))
                conn.execute(ratings_table.insert(), [
                    {"submission_id": submission.id, "objective": o, "value": v}
                    for o, v in sorted(submission.values.items())])
            return "created"
        except IntegrityError:
            stored = self.submission(submission.id)
            if stored is not None and _same(stored, submission):
                return "duplicate"
            if stored is not None:
                raise SubmissionConflict(
                    f"submission {submission.id!r} was already stored with other content") from None
            raise SubmissionConflict(
                f"annotator {submission.annotator!r} has already rated item {submission.item_id!r}") from None

    def submission(self, submission_id: str) -> Submission | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(submissions_table)
                               .where(submissions_table.c.id == submission_id)).mappings().first()
            if row is None:
                return None
            values = conn.execute(sa.select(ratings_table.c.objective, ratings_table.c.value)
                                  .where(ratings_table.c.submission_id == submission_id)).all()
        return Submission(row["id"], row["item_id"], row["annotator"], dict(values), row["left_side"],
                          row["comment"], row["created_at"])

    def rating_rows(self, *, objectives: Sequence[str] | None = None, rounds: Sequence[int] | None = None,
                    annotators: Sequence[str] | None = None) -> Iterator[dict[str, Any]]:
        """Every stored rating joined with its submission and item, in submission order,
        optionally filtered (each filter a list of accepted values)."""
        s, r, i = submissions_table, ratings_table, items_table
        query = (sa.select(r.c.objective, r.c.value, s.c.id.label("submission_id"), s.c.annotator,
                           s.c.left_side, s.c.comment, s.c.created_at, i.c.id.label("item_id"), i.c.prompt,
                           i.c.completion_a, i.c.completion_b, i.c.source, i.c.round)
                 .join(s, r.c.submission_id == s.c.id).join(i, s.c.item_id == i.c.id)
                 .order_by(s.c.created_at, s.c.id, r.c.objective))
        if objectives:
            query = query.where(r.c.objective.in_(list(objectives)))
        if rounds:
            query = query.where(i.c.round.in_(list(rounds)))
        if annotators:
            query = query.where(s.c.annotator.in_(list(annotators)))
        with self.engine.connect() as conn:
            for row in conn.execute(query).mappings():
                yield dict(row)

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {name: int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
                    for name, table in (("items", items_table), ("submissions", submissions_table),
                                        ("ratings", ratings_table))}


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def _item(row: Mapping[str, Any]) -> Item:
    return Item(row["id"], row["prompt"], row["completion_a"], row["completion_b"], row["source"] or "", row["round"])


def _same(a: Submission, b: Submission) -> bool:
    return (a.item_id, a.annotator, dict(a.values), a.left_side, a.comment or None) == (
        b.item_id, b.annotator, dict(b.values), b.left_side, b.comment or None)
