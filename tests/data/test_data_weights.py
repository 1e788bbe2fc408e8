"""Per-row weights: a ``weight`` column multiplies the row's loss; the batch objective is a
weighted mean that does not depend on how a step is cut into micro-batches."""

from __future__ import annotations

import json
import random

import pytest
import torch

from feedalign.data import LabeledRecord, PairRecord, fingerprint_records, load_records
from feedalign.data.batching import collate, examples_from_records, weighted_mean
from feedalign.data.errors import FeedbackDataError

torch.set_num_threads(1)
ALPHABET = "abcdefgh "


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from feedalign.policies.tiny import build_char_tokenizer, build_tiny_causal_lm, save_tiny

    directory = tmp_path_factory.mktemp("weights") / "model"
    tokenizer = build_char_tokenizer(ALPHABET)
    model = build_tiny_causal_lm(len(tokenizer), hidden=32, layers=2, heads=2, kv_heads=1, intermediate=64, seed=0, init_std=0.1)
    save_tiny(model, tokenizer, directory)
    return directory


def _rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    word = lambda k: "".join(rng.choice(ALPHABET[:-1]) for _ in range(k))  # noqa: E731
    return [{"prompt": word(4), "chosen": "ab" + word(3), "rejected": "hg" + word(3), "weight": [0.5, 1.0, 2.0, 3.0][i % 4]} for i in range(n)]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _train(model_dir, out, data, **train):
    from feedalign.trainers import train as run

    cfg = {"output_dir": str(out), "lr": 1e-3, "max_steps": 1, "log_every": 1, "eval_fraction": 0.0, **train}
    result = run({"model": {"path": str(model_dir)}, "data": data, "train": cfg})
    return {k: v.detach().clone() for k, v in result.model.state_dict().items()}, result


def _max_diff(a, b):
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_weight_column_reaches_records_and_is_validated(tmp_path):
    records = load_records(_rows(4, 0)).records
    assert [r.weight for r in records] == [0.5, 1.0, 2.0, 3.0]
    for bad in (0, -1, "two", float("nan"), True, 10**400, [1]):
        with pytest.raises(FeedbackDataError, match="field 'weight': expected a finite number > 0"):
            load_records([{"prompt": "p", "chosen": "a", "rejected": "b", "weight": bad}])
    thumbs = load_records([{"prompt": "p", "completion": "c", "label": 1, "weight": 2}]).records
    assert thumbs[0].weight == 2.0
    csv_path = tmp_path / "w.csv"
    csv_path.write_text("prompt,completion,label,weight\np,c,1,0.25\n")
    assert load_records(csv_path).records[0].weight == 0.25
    # the weight is not part of the id, but it is part of the content fingerprint
    assert records[0].id == load_records([{k: v for k, v in _rows(1, 0)[0].items() if k != "weight"}]).records[0].id
    assert fingerprint_records(records) != fingerprint_records([records[0].__class__(**{**vars(records[0]), "weight": 1.0}), *records[1:]])


def test_weighted_mean_normalises_by_the_source_mean():
    recs = [PairRecord("p", "a", f"b{i}", weight=w) for i, w in enumerate([1.0, 3.0])]
    examples = examples_from_records(recs, "pair", source="s", pairing=None, seed=0)
    assert [ex.weight for ex in examples] == [0.5, 1.5]
    examples = [ex.__class__(**{**vars(ex), "tokens": {"input_ids": [1, 2], "attention_mask": [1, 1], "completion_mask": [0, 1]},
                                "rejected_tokens": {"input_ids": [1, 3], "attention_mask": [1, 1], "completion_mask": [0, 1]}})
                for ex in examples]
    batch = collate(examples, "pair", 0)
    losses = torch.tensor([2.0, 4.0])
    assert float(weighted_mean(losses, batch)) == pytest.approx((0.5 * 2 + 1.5 * 4) / 2)  # = sum(w l)/sum(w)
    unweighted = examples_from_records([PairRecord("p", "a", "b")], "pair", source="s", pairing=None, seed=0)
    assert unweighted[0].weight == 1.0
    thumbs = examples_from_records([LabeledRecord("p", "a", True, weight=4.0), LabeledRecord("p", "b", False)], "unpaired",
                                   source="s", pairing=None, seed=0)
    assert [ex.weight for ex in thumbs] == [1.6, 0.4]


def test_weighted_1x8_equals_8x1(model_dir, tmp_path):
    pairs = _write(tmp_path / "pairs.jsonl", _rows(8, 1))
    thumbs = _write(tmp_path / "up.jsonl", [{"prompt": r["prompt"], "completion": r["chosen"], "label": 1, "weight": r["weight"]} for r in _rows(8, 2)])
    data = [{"path": str(pairs), "loss": "dpo"}, {"path": str(thumbs), "loss": "sft", "weight": 0.5}]
    a, ra = _train(model_dir, tmp_path / "a", data, micro_batch_size=8, grad_accum=1)
    b, rb = _train(model_dir, tmp_path / "b", data, micro_batch_size=1, grad_accum=8)
    assert _max_diff(a, b) <= 1e-6
    assert ra.metrics["grad_norm"] == pytest.approx(rb.metrics["grad_norm"], rel=1e-5)
    unweighted = [{k: v for k, v in r.items() if k != "weight"} for r in _rows(8, 1)]
    c, _ = _train(model_dir, tmp_path / "c", [{"path": str(_write(tmp_path / "plain.jsonl", unweighted)), "loss": "dpo"}],
                  micro_batch_size=8)
    d, _ = _train(model_dir, tmp_path / "d", [{"path": str(pairs), "loss": "dpo"}], micro_batch_size=8)
    assert _max_diff(c, d) > 1e-6  # the weights change the step


def test_weight_two_equals_the_row_twice(model_dir, tmp_path):
    rows = [{k: v for k, v in r.items() if k != "weight"} for r in _rows(7, 3)]
    weighted = rows[:6] + [{**rows[6], "weight": 2.0}]
    doubled = rows + [rows[6]]
    a, _ = _train(model_dir, tmp_path / "w", [{"path": str(_write(tmp_path / "w.jsonl", weighted)), "loss": "dpo"}], micro_batch_size=7)
    b, _ = _train(model_dir, tmp_path / "x", [{"path": str(_write(tmp_path / "x.jsonl", doubled)), "loss": "dpo"}], micro_batch_size=8)
    assert _max_diff(a, b) <= 1e-6


def test_fingerprint_per_source_follows_content_not_location(tmp_path):
    a = _write(tmp_path / "a.jsonl", _rows(3, 5))
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    b = _write(moved / "b.jsonl", _rows(3, 5))
    first, second = load_records(a), load_records(b)
    assert first.per_source[0].fingerprint == second.per_source[0].fingerprint
    assert list(first.fingerprints()) == [str(a)]
    edited = _rows(3, 5)
    edited[1]["rejected"] += "x"
    assert load_records(_write(tmp_path / "c.jsonl", edited)).per_source[0].fingerprint != first.per_source[0].fingerprint
    reordered = _rows(3, 5)[::-1]
    assert load_records(_write(tmp_path / "d.jsonl", reordered)).per_source[0].fingerprint != first.per_source[0].fingerprint
