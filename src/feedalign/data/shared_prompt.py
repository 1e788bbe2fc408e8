"""Prompt-shared packing of preference pairs: each pair's prompt runs once.

A pair's chosen row is ``prompt + chosen`` and its rejected row ``prompt + rejected``. The
shared layout packs a micro-batch of B pairs into ONE padding-free row::

    [P_1 C_1 R_1 | P_2 C_2 R_2 | ...]

where ``P_i`` is the longest common prefix of the two rows that holds no completion token
(the prompt, as tokenised), ``C_i`` and ``R_i`` the rest of each row. Attention is split in
2B query segments, contiguous in the row: ``P_i C_i`` attends causally to itself, and
``R_i`` attends to ``P_i`` and causally to itself, never to ``C_i``. The rejected tokens keep
their unshared positions (``len(P_i)`` onwards), so every token sees exactly the context and
positions it has in its own row and the log-probs (and gradients) equal the unshared ones.

Scoring cannot use the usual shift by one: the first tokens of ``C_i`` and ``R_i`` are both
predicted from the last prompt position. The layout therefore lists every scored token
explicitly (``score_positions``: the hidden state that predicts it, ``score_targets``: its
id, ``score_rows``: its row, chosen rows 0..B-1 then rejected rows B..2B-1, the order of
the unshared pair batch).

Keys of the dict (S = row length, N = scored tokens, K = total key length):
    input_ids        [1, S] long
    position_ids     [1, S] long (unshared positions)
    completion_mask  [1, S] long, each token's own row's completion flag (for display)
    shared_spans     [B, 4] long: row offset, prefix length, chosen length, rejected length
                     (the lengths of the unshared rows)
    shared_key_index [K] long: for each query segment in turn, the row positions of its keys
    shared_cu_q      [2B + 1] int32 cumulative query lengths (segments are contiguous)
    shared_cu_k      [2B + 1] int32 cumulative key lengths
    shared_max_q, shared_max_k  host ints
    score_positions, score_targets, score_rows  [N] long

Only torch and the standard library are imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

SHARED_MARKER = "shared_spans"
SHARED_FIELDS = (
    "shared_spans", "shared_key_index", "shared_cu_q", "shared_cu_k", "shared_max_q", "shared_max_k",
    "score_positions", "score_targets", "score_rows",
)


def is_shared(batch: dict[str, Any]) -> bool:
    """Whether ``batch`` is in the prompt-shared layout."""
    return SHARED_MARKER in batch


def shared_prefix_length(chosen: dict[str, Sequence[int]], rejected: dict[str, Sequence[int]]) -> int:
    """Length of the longest common prefix of the two rows with no completion token in it."""
    n = 0
    for a, b, ma, mb in zip(chosen["input_ids"], rejected["input_ids"], chosen["completion_mask"],
                            rejected["completion_mask"]):
        if a != b or ma or mb:
            break
        n += 1
    return n


def _scored(ids: Sequence[int], mask: Sequence[int], hidden_at: Any, row: int, out: list[list[int]]) -> None:
    for t in range(1, len(ids)):
        if mask[t]:
            out[0].append(hidden_at(t - 1))
            out[1].append(int(ids[t]))
            out[2].append(row)


def pack_shared_pairs(
    chosen_rows: Sequence[dict[str, Sequence[int]]], rejected_rows: Sequence[dict[str, Sequence[int]]]
) -> dict[str, Any]:
    """The prompt-shared row of B pairs (chosen_rows[i], rejected_rows[i]); see the module
    docstring for the layout. Raises ValueError on rows that cannot be scored."""
    if not chosen_rows or len(chosen_rows) != len(rejected_rows):
        raise ValueError(f"pack_shared_pairs: need B >= 1 chosen and B rejected rows, got "
                         f"{len(chosen_rows)} and {len(rejected_rows)}")
    b = len(chosen_rows)
    ids: list[int] = []
    pos: list[int] = []
    cmask: list[int] = []
    spans: list[list[int]] = []
    keys: list[int] = []
    q_lens: list[int] = []
    k_lens: list[int] = []
    scored: list[list[int]] = [[], [], []]
    for i, (c, r) in enumerate(zip(chosen_rows, rejected_rows)):
        for which, row in (("chosen", c), ("rejected", r)):
            if not row["input_ids"] or len(row["completion_mask"]) != len(row["input_ids"]):
                raise ValueError(f"pair {i}: {which} input_ids and completion_mask must be non-empty and of equal length")
            if row["completion_mask"][0]:
                raise ValueError(f"pair {i}: {which} position 0 cannot be a completion token (it has no context)")
        off, p, lc, lr = len(ids), shared_prefix_length(c, r), len(c["input_ids"]), len(r["input_ids"])
        if lr == p:
            raise ValueError(f"pair {i}: the rejected row is a prefix of the chosen row; nothing left to score")
        ids += list(c["input_ids"]) + list(r["input_ids"][p:])
        pos += list(range(lc)) + list(range(p, lr))
        cmask += list(c["completion_mask"]) + list(r["completion_mask"][p:])
        spans.append([off, p, lc, lr])
        keys += list(range(off, off + lc)) + list(range(off, off + p)) + list(range(off + lc, off + lc + lr - p))
        q_lens += [lc, lr - p]
        k_lens += [lc, lr]
        _scored(c["input_ids"], c["completion_mask"], lambda t, off=off: off + t, i, scored)
        _scored(r["input_ids"], r["completion_mask"],
                lambda t, off=off, p=p, lc=lc: off + t if t < p else off + lc + t - p, b + i, scored)

    def cumulative(lengths: list[int]) -> torch.Tensor:
        out = torch.zeros(len(lengths) + 1, dtype=torch.int32)
        out[1:] = torch.cumsum(torch.tensor(lengths, dtype=torch.int64), 0).to(torch.int32)
        return out

    return {
        "input_ids": torch.tensor(ids, dtype=torch.long)[None],
        "position_ids": torch.tensor(pos, dtype=torch.long)[None],
        "completion_mask": torch.tensor(cmask, dtype=torch.long)[None],
        "shared_spans": torch.tensor(spans, dtype=torch.long),
        "shared_key_index": torch.tensor(keys, dtype=torch.long),
        "shared_cu_q": cumulative(q_lens),
        "shared_cu_k": cumulative(k_lens),
        "shared_max_q": max(q_lens),
        "shared_max_k": max(k_lens),
        "score_positions": torch.tensor(scored[0], dtype=torch.long),
        "score_targets": torch.tensor(scored[1], dtype=torch.long),
        "score_rows": torch.tensor(scored[2], dtype=torch.long),
    }


def num_rows(batch: dict[str, Any]) -> int:
    """Rows (2B: chosen then rejected) a shared batch stands for."""
    return 2 * int(batch[SHARED_MARKER].shape[0])


def row_tokens(batch: dict[str, Any]) -> list[tuple[list[int], list[int]]]:
    """(token ids, completion mask) of every unshared row (chosen rows, then rejected rows),
    exactly as the unshared layout holds them."""
    ids = batch["input_ids"][0].detach().cpu().tolist()
    cmask = batch["completion_mask"][0].detach().cpu().tolist()
    chosen, rejected = [], []
    for off, p, lc, lr in batch[SHARED_MARKER].detach().cpu().tolist():
        chosen.append((ids[off : off + lc], cmask[off : off + lc]))
        tail = slice(off + lc, off + lc + lr - p)
        rejected.append((ids[off : off + p] + ids[tail], cmask[off : off + p] + cmask[tail]))
    return chosen + rejected


def last_token_positions(batch: dict[str, Any]) -> torch.Tensor:
    """Row position ``[2B]`` of each unshared row's last token (chosen rows, then rejected),
    e.g. for a reward model that pools the last token."""
    spans = batch[SHARED_MARKER]
    off, p, lc, lr = spans.unbind(1)
    return torch.cat([off + lc - 1, off + lc + lr - p - 1])


def shared_block_mask(batch: dict[str, Any], *, dtype: torch.dtype = torch.bool) -> torch.Tensor:
    """Explicit ``[1, 1, S, S]`` mask of the shared layout (for eager / sdpa attention):
    query ``q`` attends key ``k`` iff ``k`` is among ``q``'s segment keys and not later in
    that segment's own sequence. bool: True = attend; float: additive (0 / dtype minimum)."""
    s = batch["input_ids"].shape[1]
    device = batch["input_ids"].device
    allowed = torch.zeros(s, s, dtype=torch.bool, device=device)
    cu_q, cu_k = batch["shared_cu_q"].tolist(), batch["shared_cu_k"].tolist()
    keys = batch["shared_key_index"]
    for qa, qb, ka, kb in zip(cu_q[:-1], cu_q[1:], cu_k[:-1], cu_k[1:]):
        lq, lk = qb - qa, kb - ka
        causal = torch.ones(lq, lk, dtype=torch.bool, device=device).tril(diagonal=lk - lq)
        allowed[qa:qb, keys[ka:kb]] = causal
    allowed = allowed[None, None]
    if dtype == torch.bool:
        return allowed
    zero = torch.zeros((), dtype=dtype, device=device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


def pack_rows(rows: Sequence[dict[str, Sequence[int]]]) -> dict[str, Any]:
    """``pack_shared_pairs`` of a pair batch's 2B rows (chosen rows, then rejected rows)."""
    if len(rows) % 2:
        raise ValueError(f"pack_rows: a pair batch has an even number of rows, got {len(rows)}")
    half = len(rows) // 2
    return pack_shared_pairs(rows[:half], rows[half:])
