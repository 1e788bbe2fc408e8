"""What the model will see: every row of a feedback file as rendered text and tokens.

``preview_rows`` runs the trainer's own path (loader -> records -> examples -> chat template
and truncation, ``data.tokenize.tokenize_source``) and returns, per row::

    {"id", "kind", "source", "label"?, "prompt_text", "prompt_tokens", "truncated",
     "completions": [{"name": "chosen" | "rejected" | "completion", "text", "tokens"}]}

``prompt_text`` is the text the prompt tokens encode (the chat template's rendering for
conversational rows); ``tokens`` are token ids (the completion's include the EOS the trainer
appends, if any). For a truncated row the texts are the decoded kept tokens. Rows that
cannot be tokenised appear with ``"rejected": reason`` and no tokens.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from feedalign.data.batching import Example, examples_from_records
from feedalign.data.tokenize import TokenizeOptions, tokenize_source
from feedalign.data.records import LabeledRecord, PairRecord

BOUNDARY = "\u2502"  # marks the prompt/completion boundary in the readable view


def _split(tokens: dict[str, list[int]]) -> tuple[list[int], list[int]]:
    n_prompt = len(tokens["completion_mask"]) - sum(tokens["completion_mask"])
    return tokens["input_ids"][:n_prompt], tokens["input_ids"][n_prompt:]


def _row(tokenizer: Any, ex: Example, kind: str, truncated: bool) -> dict[str, Any]:
    prompt_ids, completion_ids = _split(ex.tokens)
    names = ["chosen", "rejected"] if ex.rejected is not None else ["completion"]
    token_rows = [ex.tokens] + ([ex.rejected_tokens] if ex.rejected is not None else [])
    texts = [ex.completion] + ([ex.rejected] if ex.rejected is not None else [])

    def shown(text: str, ids: list[int]) -> str:
        return tokenizer.decode(ids) if truncated else text

    row: dict[str, Any] = {"id": ex.id, "kind": kind, "source": ex.where}
    if ex.label is not None:
        row["label"] = ex.label
    row.update(prompt_text=shown(ex.prompt, prompt_ids), prompt_tokens=prompt_ids, truncated=truncated)
    row["completions"] = [
        {"name": name, "text": shown(text, _split(tokens)[1]), "tokens": _split(tokens)[1]}
        for name, text, tokens in zip(names, texts, token_rows)
    ]
    return row


def preview_rows(
    records: Sequence[Any], tokenizer: Any, options: TokenizeOptions, *, limit: int | None = None
) -> Iterator[dict[str, Any]]:
    """Preview dicts for the first ``limit`` records (pairs as pairs, labeled rows as
    single completions), in file order."""
    for record in list(records)[:limit]:
        if isinstance(record, PairRecord):
            feedback, kind = "pair", "pair"
        elif isinstance(record, LabeledRecord):
            feedback, kind = "unpaired", record.kind.value
        else:
            feedback, kind = "sequence", "scored"
            record = LabeledRecord(record.prompt, record.completion, True, id=record.id, source=record.source)
        (example,) = examples_from_records([record], feedback, source=record.source, pairing=None, seed=0)
        if feedback == "sequence":
            example = Example(example.id, example.prompt, example.completion, where=example.where)
        result = tokenize_source([example], tokenizer, options)
        if result.rejected:
            yield {"id": example.id, "kind": kind, "source": example.where, "rejected": result.rejected[0][1]}
            continue
        yield _row(tokenizer, result.examples[0], kind, bool(result.truncated))


def format_row(row: dict[str, Any]) -> str:
    """A readable view of one preview row, the prompt/completion boundary marked."""
    head = f"=== {row['id']} ({row['kind']}{', label ' + str(row['label']) if 'label' in row else ''}) {row['source']}"
    if "rejected" in row:
        return f"{head}\nREJECTED: {row['rejected']}\n"
    lines = [head + (" [truncated]" if row["truncated"] else "")]
    for comp in row["completions"]:
        lines.append(f"--- {comp['name']}: {len(row['prompt_tokens'])} prompt + {len(comp['tokens'])} completion tokens")
        lines.append(f"{row['prompt_text']}{BOUNDARY}{comp['text']}{BOUNDARY}")
    return "\n".join(lines) + "\n"
