"""Strict JSON decoding of untrusted rows: every way a row can be malformed is a reason, never
an exception.

``json.loads`` alone keeps the last of two duplicate keys, raises ``RecursionError`` on deep
nesting, ``ValueError`` on integers past Python's digit limit, and happily returns lone
surrogates (``"\\ud800"``) that later fail to encode. :func:`decode_row` turns each of these
into a short message saying what was found and what was expected.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 100  # nesting levels of objects/lists in one row
_SURROGATE = re.compile("[\ud800-\udfff]")


class DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    row = dict(pairs)
    if len(row) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(key)
            seen.add(key)
    return row


DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)


def decode_row(text: str) -> tuple[Any, str | None]:
    """``(value, None)`` for a well-formed JSON text, else ``(None, reason)``."""
    try:
        value = DECODER.decode(text)
    except json.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc.msg} at column {exc.colno}"
    except DuplicateKeyError as exc:
        return None, f"duplicate key {exc.key!r} in one JSON object (expected each key once)"
    except RecursionError:
        return None, f"JSON nested too deeply (expected at most {MAX_DEPTH} levels)"
    except ValueError as exc:  # integer beyond Python's digit limit
        return None, f"invalid number: {exc}"
    return value, check_value(value, text)


def raw_decode(text: str, pos: int) -> tuple[Any, int, str | None]:
    """One JSON value starting at ``pos``: ``(value, end, None)`` or ``(None, pos, reason)``;
    a JSONDecodeError is re-raised so the caller can locate it."""
    try:
        value, end = DECODER.raw_decode(text, pos)
    except json.JSONDecodeError:
        raise
    except DuplicateKeyError as exc:
        return None, pos, f"duplicate key {exc.key!r} in one JSON object (expected each key once)"
    except RecursionError:
        return None, pos, f"JSON nested too deeply (expected at most {MAX_DEPTH} levels)"
    except ValueError as exc:
        return None, pos, f"invalid number: {exc}"
    return value, end, check_value(value, text[pos:end])


def check_value(value: Any, text: str) -> str | None:
    """Depth and lone surrogates; both checks run only when the text could hold the problem."""
    if text.count("{") + text.count("[") > MAX_DEPTH and depth(value) > MAX_DEPTH:
        return f"JSON nested too deeply (expected at most {MAX_DEPTH} levels)"
    if "\\u" in text or "\\U" in text:
        where = find_surrogate(value)
        if where is not None:
            return f"lone surrogate escape in {where} (not a valid Unicode character)"
    return None


def depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            items = item.values()
        elif isinstance(item, list):
            items = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in items)
    return deepest


def find_surrogate(value: Any, where: str = "the row") -> str | None:
    """The path of the first string (key or value) holding a lone surrogate, or None."""
    stack = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return path
        elif isinstance(item, dict):
            for key, child in item.items():
                if _SURROGATE.search(key):
                    return f"a key of {path}"
                stack.append((child, f"field '{key}'" if path == where else f"{path}.{key}"))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
    return None
