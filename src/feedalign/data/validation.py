"""Turn one raw row (a mapping of column -> value) into feedback records, or say precisely why not.

The accepted layouts are documented in :mod:`feedalign.data.loaders` and docs/data.md. Every
check raises :class:`~feedalign.data.errors.RowError` naming the field and the expected form;
the reader adds the location (``file:line``). A row is atomic: if any part is invalid (one bad
label in a ``labels`` dict), the whole row is rejected and none of its records is kept.
"""

from __future__ import annotations

import math
import numbers
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from feedalign.data.errors import RowError
from feedalign.data.marks import mark_truncated
from feedalign.data.messages import (
    check_messages,
    common_prefix,
    describe_value,
    split_conversation,
    split_last_assistant,
)
from feedalign.data.conflicts import Conflict, find_conflicts  # noqa: F401 (re-exported)
from feedalign.data.records import FeedbackKind, LabeledRecord, PairRecord, Record, ScoredRecord

# Scores given as a bare ``score`` with no ``objective`` are stored under this key; like a
# record whose objective is None it means "the single, unnamed objective".
SCORE_KEY = "score"

TRUE_FORMS = frozenset({"true", "1", "+1", "up", "yes", "thumbs_up", "good"})
FALSE_FORMS = frozenset({"false", "0", "-1", "down", "no", "thumbs_down", "bad"})
# Columns whose values are feedback; a layout that would ignore one is an error, not a guess.
FEEDBACK_VALUE_COLUMNS = ("rating", "label", "labels", "feedback", "thumbs", "vote", "winner", "score", "scores")

ACCEPTED_LAYOUTS = (
    "pairs: prompt + chosen + rejected (strings, or lists of messages; with message lists and no "
    "prompt the shared leading messages are the prompt); "
    "labeled: prompt + completion + label, or messages + label; "
    "multi-objective labeled: ... + labels {objective: label}; "
    "scored: ... + scores {objective: number} or score; "
    "optional columns: id, objective, weight; other layouts: pass format: (see docs/data.md)"
)
FEEDBACK_FIELDS = (
    "prompt",
    "chosen",
    "rejected",
    "completion",
    "messages",
    "label",
    "labels",
    "score",
    "scores",
)
_SINGLE_KINDS = ("labeled", "positive", "negative", "scored")


def normalize_kind(kind: str | FeedbackKind | None) -> str | None:
    """``None`` (detect per row) or one of pair / labeled / positive / negative / scored."""
    if kind is None:
        return None
    try:
        return FeedbackKind(kind).value
    except ValueError:
        valid = ", ".join(k.value for k in FeedbackKind)
        raise ValueError(f"unknown feedback kind {kind!r}; expected one of: {valid}") from None


def parse_label(value: Any, field: str = "label") -> bool:
    """A thumbs label: bool, 1/0/-1 (-1 and 0 are down), or (any case) true/false, 1/0/-1,
    up/down, yes/no, thumbs_up/thumbs_down, good/bad. Anything else is an error."""
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral) and value in (0, 1, -1):
        return value == 1
    if isinstance(value, str):
        form = value.strip().lower()
        if form in TRUE_FORMS:
            return True
        if form in FALSE_FORMS:
            return False
    shown = repr(value) if isinstance(value, (str, numbers.Number)) else describe_value(value)
    raise RowError(
        field,
        f"expected a bool or one of true/false, 1/0/-1, up/down, yes/no, thumbs_up/thumbs_down, good/bad "
        f"(or set label_values:), got {shown}",
    )


def parse_score(value: Any, field: str = "score") -> float:
    """A finite real number (bools and numeric strings are not scores, except CSV cells)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        shown = f"str {value!r}" if isinstance(value, str) else describe_value(value)
        raise RowError(field, f"expected a finite number, got {shown}")
    try:
        score = float(value)
    except OverflowError:
        raise RowError(field, "expected a finite number, got an integer too large for a float") from None
    if not math.isfinite(score):
        raise RowError(field, f"expected a finite number, got {score}")
    return score


def check_text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise RowError(field, f"expected a non-empty string, got {describe_value(value)}")
    return value


def check_objective(value: Any, field: str, objectives: frozenset[str] | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise RowError(field, f"expected an objective name (non-empty string), got {describe_value(value)}")
    if objectives is not None and value not in objectives:
        raise RowError(
            field, f"unknown objective {value!r}; expected one of: {', '.join(sorted(objectives))}"
        )
    return value


def check_id(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str) or not value.strip():
        raise RowError("id", f"expected a non-empty string or an integer, got {describe_value(value)}")
    return value


def row_to_records(
    row: Mapping[str, Any],
    *,
    kind: str | None = None,
    objectives: frozenset[str] | None = None,
    label_values: Any = None,
) -> list[Record]:
    """Convert one row. ``kind`` (normalised) forces a layout; ``objectives`` restricts names;
    ``label_values`` (a :class:`~feedalign.data.mapping.LabelValues`) replaces the label forms."""
    if not isinstance(row, Mapping):
        raise RowError(None, f"expected an object (one row of named columns), got {describe_value(row)}")
    if all(value is None for value in row.values()):
        raise RowError(None, "empty row: every column is missing, null or empty")
    present = {k for k in FEEDBACK_FIELDS if row.get(k) is not None}
    has_pair = bool(present & {"chosen", "rejected"})
    has_single = bool(present & {"completion", "messages"})
    if has_pair and has_single and not present & {"label", "labels", "score", "scores"}:
        has_single = False  # e.g. UltraFeedback-style rows whose `messages` repeats `chosen`
    if kind == "pair" or (kind is None and has_pair and not has_single):
        if not has_pair:
            raise RowError("chosen", "missing; kind='pair' expects prompt + chosen + rejected columns")
        return mark_truncated(row, [_pair(row, objectives)])
    if kind in _SINGLE_KINDS or (kind is None and has_single and not has_pair):
        if not has_single:
            raise RowError("completion", f"missing; kind={kind!r} expects prompt + completion (or messages)")
        return mark_truncated(row, _single(row, kind, objectives, label_values))
    if has_pair and has_single:
        raise RowError(
            None, "ambiguous row: has both chosen/rejected and completion/messages; pass kind= to choose"
        )
    columns = ", ".join(sorted(map(str, row))) or "none"
    guess = suggest_columns(row)
    fix = f"map them: columns: {guess}" if guess else f"accepted layouts: {ACCEPTED_LAYOUTS}"
    raise RowError(None, f"unrecognised columns ({columns}); {fix}")


_LIKELY = (
    ("prompt", ("question", "instruction", "input", "query", "prompt_text", "user", "request")),
    ("completion", ("answer", "response", "output", "reply", "generation", "assistant", "text")),
    ("label", ("feedback", "rating", "thumbs", "vote", "is_good", "liked", "helpful")),
)


def suggest_columns(row: Mapping[str, Any]) -> str | None:
    """A ``columns:`` mapping for a row whose names are common synonyms (question/answer/
    feedback ...), or None when no prompt + completion pair can be guessed."""
    names = {str(c).lower(): str(c) for c in row}
    picks = {}
    for canonical, synonyms in _LIKELY:
        hit = next((names[s] for s in synonyms if s in names), None)
        if hit is not None:
            picks[canonical] = hit
    if not {"prompt", "completion"} <= set(picks):
        return None
    mapping = "{" + ", ".join(f"{k}: {v}" for k, v in picks.items()) + "}"
    return mapping if "label" in picks else f"{mapping} with kind: positive or negative (no feedback column found)"


def _pair(row: Mapping[str, Any], objectives: frozenset[str] | None) -> PairRecord:
    chosen, rejected, prompt = row.get("chosen"), row.get("rejected"), row.get("prompt")
    if isinstance(chosen, (list, tuple)) or isinstance(rejected, (list, tuple)):
        prompt_text, chosen_text, rejected_text = _conversational_pair(prompt, chosen, rejected)
    else:
        prompt_text = check_text(prompt, "prompt")
        chosen_text, rejected_text = check_text(chosen, "chosen"), check_text(rejected, "rejected")
    if chosen_text == rejected_text:
        raise RowError("rejected", "identical to 'chosen'; a pair needs two different completions")
    objective = check_objective(row.get("objective"), "objective", objectives)
    return PairRecord(prompt_text, chosen_text, rejected_text, objective, id=check_id(row.get("id")))


def _conversational_pair(prompt: Any, chosen: Any, rejected: Any) -> tuple[str, str, str]:
    chosen_msgs, rejected_msgs = check_messages(chosen, "chosen"), check_messages(rejected, "rejected")
    shared = common_prefix(chosen_msgs, rejected_msgs)
    if prompt is None:  # implicit prompt: the shared leading messages
        if shared == 0:
            raise RowError(
                "prompt", "missing, and chosen/rejected share no leading messages to use as the prompt"
            )
        prompt_msgs = _shared_prefix(chosen_msgs, rejected_msgs, shared)
    elif isinstance(prompt, str):
        # Either the conversations already hold the prompt (full conversations, as in
        # UltraFeedback-style data) or they hold only the replies: the prompt is one user turn.
        check_text(prompt, "prompt")
        if shared == 0:
            prompt_msgs = [{"role": "user", "content": prompt}]
        elif any(m["content"] == prompt for m in chosen_msgs[:shared]):
            prompt_msgs = _shared_prefix(chosen_msgs, rejected_msgs, shared)
        else:
            raise RowError(
                "prompt", "does not match any message in the prefix that chosen and rejected share"
            )
    else:
        prompt_msgs = check_messages(prompt, "prompt")
        n = len(prompt_msgs)  # chosen/rejected may repeat the prompt messages in full
        repeated = chosen_msgs[:n] == prompt_msgs and rejected_msgs[:n] == prompt_msgs
        shared = n if repeated else 0
    prompt_text, chosen_text = split_conversation(prompt_msgs, chosen_msgs[shared:], "chosen")
    _, rejected_text = split_conversation(prompt_msgs, rejected_msgs[shared:], "rejected")
    return prompt_text, chosen_text, rejected_text


def _shared_prefix(chosen: list, rejected: list, shared: int) -> list:
    if shared == len(chosen) or shared == len(rejected):
        raise RowError(
            "rejected",
            "chosen and rejected conversations leave no separate completion after their shared prefix",
        )
    return chosen[:shared]


def _prompt_completion(row: Mapping[str, Any]) -> tuple[str, str]:
    if row.get("messages") is not None:
        for other in ("prompt", "completion"):
            if row.get(other) is not None:
                raise RowError(other, "ambiguous: give either 'messages' or prompt + completion, not both")
        return split_last_assistant(check_messages(row["messages"], "messages"), "messages")
    prompt, completion = row.get("prompt"), row.get("completion")
    if isinstance(prompt, (list, tuple)) or isinstance(completion, (list, tuple)):
        if isinstance(prompt, str):
            raise RowError(
                "prompt", "expected a list of messages (completion is a message list), got a string"
            )
        if isinstance(completion, str):
            raise RowError(
                "completion", "expected a list of messages (prompt is a message list), got a string"
            )
        return split_conversation(
            check_messages(prompt, "prompt"), check_messages(completion, "completion"), "completion"
        )
    return check_text(prompt, "prompt"), check_text(completion, "completion")


def _single(row: Mapping[str, Any], kind: str | None, objectives: frozenset[str] | None, label_values: Any = None) -> list[Record]:
    prompt, completion = _prompt_completion(row)
    rid = check_id(row.get("id"))
    has = {k for k in ("label", "labels", "score", "scores") if row.get(k) is not None}
    if kind == "scored" or (kind is None and has <= {"score", "scores"} and has):
        return [_scored(row, prompt, completion, rid, objectives)]
    if kind is None and has & {"label", "labels"} and has & {"score", "scores"}:
        raise RowError(
            None, "ambiguous row: has both a label and a score; pass kind='labeled' or kind='scored'"
        )
    held = [c for c in row if c not in FEEDBACK_FIELDS and looks_like_feedback(c) and row.get(c) is not None]
    if kind in ("positive", "negative") and held:
        side = "up" if kind == "positive" else "down"
        raise RowError(
            held[0],
            f"holds feedback, and kind={kind!r} would mark every row {side}; drop kind (the thumbs "
            f"preset reads rating 1/-1 and thumbs_up/thumbs_down) or map it: columns: {{label: {held[0]}}}",
        )
    if not has & {"label", "labels"}:
        if kind in ("positive", "negative"):  # positive-/negative-only sets may omit the label
            return [
                LabeledRecord(prompt, completion, kind == "positive", _objective(row, objectives), id=rid)
            ]
        if held:
            fix = f"map it, e.g. columns: {{label: {held[0]}}} (with label_values: if its values are not 1/-1, up/down, ...)"
        else:
            fix = "pass kind='positive' or kind='negative' for prompt/completion rows without labels"
        raise RowError("label", f"missing: expected 'label', 'labels', 'score' or 'scores' ({fix})")
    records = _labeled(row, prompt, completion, rid, objectives, label_values)
    if kind in ("positive", "negative"):
        for rec in records:
            if rec.label != (kind == "positive"):
                raise RowError("label", f"expected {kind == 'positive'} (kind={kind!r}), got {rec.label}")
    return records


def _objective(row: Mapping[str, Any], objectives: frozenset[str] | None) -> str | None:
    return check_objective(row.get("objective"), "objective", objectives)


def looks_like_feedback(column: str) -> bool:
    """A column name that holds feedback values (rating, label, feedback, winner, score_x ...)."""
    name = str(column).lower()
    return name in FEEDBACK_VALUE_COLUMNS or name.startswith(("score", "rating", "winner"))


def _labeled(row, prompt, completion, rid, objectives, label_values=None) -> list[LabeledRecord]:
    if row.get("labels") is None:
        label = label_values.parse(row["label"], "label") if label_values else parse_label(row["label"], "label")
        return [LabeledRecord(prompt, completion, label, _objective(row, objectives), id=rid)]
    for other in ("label", "objective"):
        if row.get(other) is not None:
            raise RowError(
                other, "ambiguous: give either 'labels' {objective: label} or 'label' (+ 'objective')"
            )
    labels = _objective_map(row["labels"], "labels", objectives, label_values.parse if label_values else parse_label)
    return [
        LabeledRecord(prompt, completion, label, obj, id=f"{rid}/{obj}" if rid else "")
        for obj, label in labels.items()
    ]


def _scored(row, prompt, completion, rid, objectives) -> ScoredRecord:
    if row.get("scores") is not None and row.get("score") is not None:
        raise RowError("score", "ambiguous: give either 'scores' {objective: number} or 'score', not both")
    if row.get("scores") is not None:
        if row.get("objective") is not None:
            raise RowError("objective", "ambiguous: 'scores' already names its objectives")
        scores = _objective_map(row["scores"], "scores", objectives, parse_score)
    elif row.get("score") is not None:
        objective = _objective(row, objectives) or SCORE_KEY
        scores = {objective: parse_score(row["score"], "score")}
    else:
        raise RowError("scores", "missing: kind='scored' expects 'scores' {objective: number} or 'score'")
    return ScoredRecord(prompt, completion, scores, id=rid)


def _objective_map(value, field, objectives, parse) -> dict[str, Any]:
    """``{objective: value}``; None values mean "not rated" and are skipped; at least one needed."""
    if not isinstance(value, Mapping):
        raise RowError(field, f"expected an object {{objective: value}}, got {describe_value(value)}")
    out = {}
    for name, item in value.items():
        check_objective(name, f"{field}.{name}", objectives)
        if item is not None:
            out[name] = parse(item, f"{field}.{name}")
    if not out:
        raise RowError(field, "expected at least one objective with a value, got none")
    return out


class IdRegistry:
    """Tracks ids across rows (and sources) of one load.

    Explicit ids (an ``id`` column) must be unique: a repeat is an error naming the first
    occurrence. Content-hash ids repeat only for exact duplicate rows, which are kept (two
    annotators giving the same thumbs are two data points) with ``-2``, ``-3`` ... suffixes.
    """

    def __init__(self) -> None:
        self._first: dict[str, str] = {}
        self._hash_count: dict[str, int] = defaultdict(int)

    def assign(self, records: list[Record], source: str, explicit: bool) -> list[Record]:
        if explicit:
            for rec in records:
                if rec.id in self._first:
                    raise RowError("id", f"duplicate id {rec.id!r} (first seen at {self._first[rec.id]})")
            for rec in records:
                self._first[rec.id] = source
            return [replace(rec, source=source) for rec in records]
        out = []
        for rec in records:
            self._hash_count[rec.id] += 1
            n = self._hash_count[rec.id]
            out.append(replace(rec, id=rec.id if n == 1 else f"{rec.id}-{n}", source=source))
        return out
