"""Sources: compressed files, directories of shards with splits, globs, hub dataset ids."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma

import pytest

from feedalign.cli.main import main
from feedalign.data import load_records
from feedalign.data.errors import FeedbackDataError
from feedalign.data.sources import reader_for, split_of

ROW = {"prompt": "p", "chosen": "a", "rejected": "b"}


def _lines(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@pytest.mark.parametrize(("suffix", "compress"), [(".jsonl.gz", gzip.compress), (".jsonl.bz2", bz2.compress),
                                                  (".jsonl.xz", lzma.compress)])
def test_compressed_jsonl(tmp_path, suffix, compress):
    path = tmp_path / f"pairs{suffix}"
    path.write_bytes(compress(_lines([ROW, {**ROW, "rejected": "c"}])))
    result = load_records(path)
    assert [r.rejected for r in result.records] == ["b", "c"]
    assert result.records[1].source == f"{path}:2"


def test_compressed_csv_and_json(tmp_path):
    csv_path = tmp_path / "t.csv.gz"
    csv_path.write_bytes(gzip.compress(b"prompt,completion,label\np,c,-1\n"))
    assert [r.label for r in load_records(csv_path).records] == [False]
    json_path = tmp_path / "t.json.gz"
    json_path.write_bytes(gzip.compress(json.dumps([ROW]).encode()))
    assert len(load_records(json_path).records) == 1


def test_zst_needs_its_package_or_reads(tmp_path):
    path = tmp_path / "pairs.jsonl.zst"
    try:
        import zstandard
    except ImportError:
        path.write_bytes(b"\x28\xb5\x2f\xfd")
        result = load_records(path, on_invalid="collect")
        assert "zstandard" in result.rejected[0].reason
        return
    path.write_bytes(zstandard.ZstdCompressor().compress(_lines([ROW])))
    assert len(load_records(path).records) == 1


def test_reader_for_suffixes(tmp_path):
    assert reader_for(tmp_path / "a.jsonl.gz").__name__ == "read_jsonl"
    assert reader_for(tmp_path / "a.parquet").__name__ == "read_parquet"
    assert reader_for(tmp_path / "a.parquet.gz") is None and reader_for(tmp_path / "a.txt") is None


def test_directory_of_shards_with_splits(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "ds" / "data"
    data.mkdir(parents=True)
    for split, n in (("train", 3), ("test", 1)):
        for shard in range(2):
            rows = [{**ROW, "rejected": f"{split}{shard}{i}"} for i in range(n)]
            pq.write_table(pa.Table.from_pylist(rows), data / f"{split}-0000{shard}-of-00002.parquet")
    (tmp_path / "ds" / "README.md").write_text("# card")
    train = load_records(tmp_path / "ds")
    assert len(train.records) == 6 and all(r.rejected.startswith("train") for r in train.records)
    assert train.records[0].source == f"{data / 'train-00000-of-00002.parquet'}[0]"
    test = load_records(tmp_path / "ds", split="test")
    assert [r.rejected for r in test.records] == ["test00", "test10"]
    with pytest.raises(FeedbackDataError, match="no split 'dev'; available: test, train"):
        load_records(tmp_path / "ds", split="dev")
    assert split_of(data / "validation-00000-of-00001.parquet", tmp_path) == "validation"
    assert split_of(tmp_path / "logs" / "part-0.jsonl", tmp_path) is None


def test_directory_without_a_train_split_must_name_one(tmp_path):
    for split in ("test", "validation"):
        (tmp_path / f"{split}.jsonl").write_bytes(_lines([ROW]))
    with pytest.raises(FeedbackDataError, match="no 'train' split"):
        load_records(tmp_path)
    assert len(load_records(tmp_path, split="validation").records) == 1


def test_glob_and_no_match(tmp_path, capsys):
    for day in ("01", "02"):
        (tmp_path / f"log-2024-{day}.jsonl").write_bytes(_lines([{**ROW, "rejected": day}]))
    result = load_records(str(tmp_path / "log-2024-*.jsonl"))
    assert [r.rejected for r in result.records] == ["01", "02"]
    with pytest.raises(FeedbackDataError, match="no files match"):
        load_records(str(tmp_path / "nothing-*.jsonl"))
    assert main(["data", "inspect", str(tmp_path / "log-2024-*.jsonl")]) == 0
    assert "rows: 2 read, 2 accepted" in capsys.readouterr().out


def test_hub_id_not_in_the_cache_is_a_clear_error(monkeypatch, tmp_path):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FeedbackDataError, match="not a local path, and loading it as a hub dataset id failed"):
        load_records("nobody-xyz/no-such-feedback-dataset")


def test_hub_id_goes_through_load_dataset(monkeypatch, tmp_path):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(name, split=None):
        calls.append((name, split))
        return datasets.DatasetDict({"train": datasets.Dataset.from_list([ROW]), "test": datasets.Dataset.from_list([ROW, ROW])})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.chdir(tmp_path)
    result = load_records("Anthropic/hh-rlhf-like")
    assert calls == [("Anthropic/hh-rlhf-like", None)] and result.sources == ["Anthropic/hh-rlhf-like:train"]


def test_a_missing_relative_file_is_not_taken_for_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FeedbackDataError, match="no such file or directory"):
        load_records("data/pairs.jsonl")
