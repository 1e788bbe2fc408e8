"""Anthropic hh-rlhf: ``{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": ...}``.

Each transcript is split into turns at its ``\\n\\nHuman:`` / ``\\n\\nAssistant:`` markers.
The prompt is the longest run of leading TURNS the two transcripts share (never a character
split inside a turn); each completion is the rest of its transcript and must start with an
assistant turn.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from feedalign.data.errors import RowError
from feedalign.data.formats import Context, Preset, register
from feedalign.data.messages import common_prefix, describe_value, split_conversation
from feedalign.data.records import PairRecord, Record
from feedalign.data.validation import check_id, check_objective

_TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")
_ROLES = {"Human": "user", "Assistant": "assistant"}


def parse_transcript(text: Any, field: str) -> list[dict[str, str]]:
    """``"\\n\\nHuman: a\\n\\nAssistant: b"`` -> ``[{user: a}, {assistant: b}]``."""
    if not isinstance(text, str) or not text.strip():
        raise RowError(field, f"expected a '\\n\\nHuman: ... \\n\\nAssistant: ...' transcript, got {describe_value(text)}")
    parts = _TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise RowError(field, "expected the transcript to start with '\\n\\nHuman:' (hh-rlhf layout)")
    return [{"role": _ROLES[who], "content": content.strip()} for who, content in zip(parts[1::2], parts[2::2])]


def _hh(row: Mapping[str, Any], ctx: Context) -> list[Record]:
    chosen, rejected = parse_transcript(row.get("chosen"), "chosen"), parse_transcript(row.get("rejected"), "rejected")
    shared = common_prefix(chosen, rejected)
    if shared == len(chosen) and shared == len(rejected):
        raise RowError("rejected", "identical to 'chosen'; a pair needs two different completions")
    if shared == 0:
        raise RowError("rejected", "chosen and rejected share no leading turns to use as the prompt")
    for name, msgs in (("chosen", chosen), ("rejected", rejected)):
        if shared == len(msgs):
            raise RowError(name, "this transcript ends where the other continues: no completion of its own")
    prompt, chosen_text = split_conversation(chosen[:shared], chosen[shared:], "chosen")
    _, rejected_text = split_conversation(chosen[:shared], rejected[shared:], "rejected")
    objective = check_objective(row.get("objective"), "objective", ctx.objectives)
    return [PairRecord(prompt, chosen_text, rejected_text, objective, id=check_id(row.get("id")))]


def _is_hh(row: Mapping[str, Any]) -> bool:
    chosen = row.get("chosen")
    return "prompt" not in row and "rejected" in row and isinstance(chosen, str) and chosen.lstrip(" ").startswith("\n\nHuman:")


register(
    Preset(
        "hh-rlhf",
        frozenset({"chosen", "rejected", "id", "objective", "weight"}),
        _is_hh,
        _hh,
        summary="chosen/rejected Human/Assistant transcripts; the shared leading turns are the prompt",
    )
)
