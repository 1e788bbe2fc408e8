"""Speed levers of the trainer: up-front reference precompute (cached strategy, copy freed),
fused AdamW on CUDA, ``train.compile``, batched metric reads."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from trainer_fixtures import (
    assert_states_equal,
    base_config,
    labeled_rows,
    model_state,
    pair_rows,
    save_tiny_model,
    write_jsonl,
)

from feedalign.config.errors import ConfigError
from feedalign.config.loader import config_from_dict
from feedalign.policies.reference import CachedReference, CopyReference
from feedalign.trainers import TrainerCallback, train
from feedalign.trainers import loop as loop_module
from feedalign.trainers.logging import METRICS_FILE, MetricsAverager
from feedalign.trainers.setup import adamw_kernel


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("speed")
    return root, {
        "model": save_tiny_model(root / "model"),
        "pairs": write_jsonl(root / "pairs.jsonl", pair_rows(12, seed=1)),
        "thumbs": write_jsonl(root / "thumbs.jsonl", labeled_rows(12, seed=2)),
        "negatives": write_jsonl(root / "negatives.jsonl", labeled_rows(8, seed=3, labels="down", prefix="n")),
        "samples": write_jsonl(root / "samples.jsonl", labeled_rows(6, seed=4, prefix="r")),
    }


def _data(d):
    # Every kind of reference row: pairs, KTO rows and its rotated kl_ref rows (train and
    # eval batches), and kl_samples rows concatenated to PMPO's batches.
    return [
        {"path": str(d["pairs"]), "loss": "dpo"},
        {"path": str(d["thumbs"]), "loss": "kto"},
        {"path": str(d["negatives"]), "loss": "pmpo", "hparams": {"alpha": 0.0, "beta": 1.0},
         "kl_samples": str(d["samples"]), "kl_batch_size": 3, "weight": 0.5},
    ]


class _Counter:
    """Counts the reference copy's forwards (CopyReference.logps calls)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        original = CopyReference.logps

        def counted(ref, batch, example_keys=None):
            self.calls += 1
            return original(ref, batch, example_keys)

        monkeypatch.setattr(CopyReference, "logps", counted)


class _AtStep(TrainerCallback):
    def __init__(self, counter):
        self.counter, self.seen = counter, []

    def on_step_end(self, step, metrics):
        self.seen.append(self.counter.calls)


def test_cached_precompute_runs_no_reference_forward_in_training(env, tmp_path, monkeypatch):
    root, d = env
    train_cfg = {"max_steps": 5, "eval_fraction": 0.25, "eval_every": 2, "grad_accum": 2}
    copy = train(base_config(d["model"], tmp_path / "copy", _data(d), **train_cfg))
    counter = _Counter(monkeypatch)
    drops = []
    original_drop = CachedReference.drop_inner
    monkeypatch.setattr(CachedReference, "drop_inner", lambda ref: (drops.append(ref), original_drop(ref)))
    cfg = base_config(d["model"], tmp_path / "cached", _data(d), **train_cfg)
    cfg["reference"] = {"strategy": "cached", "cache_dir": str(tmp_path / "cache")}
    at_step = _AtStep(counter)
    cached = train(cfg, callbacks=[at_step])
    assert counter.calls > 0 and at_step.seen[0] == counter.calls  # all before step 1
    assert at_step.seen == [counter.calls] * 5  # none during training or evaluation
    assert len(drops) == 1 and drops[0].inner is None  # the copy is released
    assert_states_equal(model_state(copy.model), model_state(cached.model), atol=1e-6)
    for key in ("eval/loss", "eval/kto/rewards/accuracy"):
        assert cached.eval_metrics[key] == pytest.approx(copy.eval_metrics[key], abs=1e-6)
    # A second run over the same data reads everything from disk: no reference forward.
    before = counter.calls
    cfg["train"]["output_dir"] = str(tmp_path / "cached_again")
    again = train(cfg)
    assert counter.calls == before
    assert_states_equal(model_state(cached.model), model_state(again.model))


class _CrashAfter(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_save(self, step, path):
        if step == self.step:
            raise KeyboardInterrupt


def test_cached_resume_reuses_disk_cache(env, tmp_path, monkeypatch):
    root, d = env
    data = _data(d)[:2]
    cfg = base_config(d["model"], tmp_path / "run", data, max_steps=4, save_every=2)
    cfg["reference"] = {"strategy": "cached", "cache_dir": str(tmp_path / "cache")}
    full_cfg = {**cfg, "train": {**cfg["train"], "output_dir": str(tmp_path / "full")}}
    full = train({**full_cfg, "reference": {"strategy": "copy"}})
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[_CrashAfter(2)])
    counter = _Counter(monkeypatch)
    resumed = train(cfg, resume=True)
    assert resumed.resumed_from is not None and resumed.steps == 4
    assert counter.calls == 0  # the interrupted run precomputed every row up to step 4
    assert_states_equal(model_state(full.model), model_state(resumed.model), atol=1e-6)


def test_adamw_kernel_is_the_default_off_cuda():
    cpu = [torch.nn.Parameter(torch.zeros(3))]
    assert adamw_kernel(cpu) == {}
    assert adamw_kernel([]) == {}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fused AdamW needs CUDA")
def test_adamw_kernel_fused_on_cuda():
    params = [torch.nn.Parameter(torch.zeros(3, device="cuda"))]
    assert adamw_kernel(params) == {"fused": True}
    mixed = params + [torch.nn.Parameter(torch.zeros(3))]
    assert adamw_kernel(mixed) == {}
    optimizer = torch.optim.AdamW(params, **adamw_kernel(params))
    assert optimizer.defaults["fused"] is True


def test_compile_option_validates(tmp_path):
    base = {"model": {"path": "m"}, "data": [{"loss": "dpo", "path": "x.jsonl"}],
            "train": {"output_dir": str(tmp_path)}}
    assert config_from_dict(base).train.compile is False
    assert config_from_dict(base, ["train.compile=true"]).train.compile is True
    with pytest.raises(ConfigError, match="train.compile"):
        config_from_dict(base, ["train.compile=maybe"])


@pytest.mark.slow  # a cold CPU compile of even a 2-layer model took ~60 s here
def test_compile_on_tiny_run_matches_eager(env, tmp_path):
    """train.compile is shipped: it must build and give the eager run's weights (no skip on a
    slow or missing compiler: either is a failure of the option)."""
    root, d = env
    cfg = base_config(d["model"], tmp_path / "c", _data(d)[:1], max_steps=2, compile=True)
    result = train(cfg)
    eager = train(base_config(d["model"], tmp_path / "e", _data(d)[:1], max_steps=2))
    assert result.steps == 2
    assert_states_equal(model_state(eager.model), model_state(result.model), atol=1e-5)


class _LegacyAverager:
    """The averager as it was: every metric read to a Python float on every micro-step."""

    def __init__(self):
        self._sums, self._counts = {}, {}

    def add(self, metrics):
        self.add_sums({k: (float(v.detach().float().mean()) if isinstance(v, torch.Tensor) else float(v), 1.0)
                       for k, v in metrics.items()})

    def add_sums(self, sums):
        for key, (value, count) in sums.items():
            value = float(value)
            self._sums.setdefault(key, 0.0)
            self._counts.setdefault(key, 0.0)
            if math.isnan(value):
                continue
            self._sums[key] += value
            self._counts[key] += count

    def sums(self):
        return {k: (self._sums[k], self._counts[k]) for k in self._sums}

    def result(self):
        return {k: (self._sums[k] / self._counts[k] if self._counts[k] else math.nan) for k in self._sums}


def test_averager_matches_host_floats_bitwise():
    gen = torch.Generator().manual_seed(0)
    new, old = MetricsAverager(), _LegacyAverager()
    for i in range(7):
        metrics = {
            "loss": torch.rand((), generator=gen) * 3,
            "vec": torch.randn(5, generator=gen),
            "sometimes_nan": torch.tensor(math.nan if i % 3 else 0.1 * i),
            "always_nan": torch.tensor(math.nan),
            "half": torch.rand((), generator=gen).half(),
            "plain": 0.3 * i,
        }
        new.add(metrics)
        old.add(metrics)
        extra = {"rewards/accuracy/x": (float(i % 2), 2.0)}
        new.add_sums(extra)
        old.add_sums(extra)
    assert new.sums() == old.sums()
    a, b = new.result(), old.result()
    assert a.keys() == b.keys() and math.isnan(a["always_nan"]) and math.isnan(b["always_nan"])
    assert {k: v for k, v in a.items() if k != "always_nan"} == {k: v for k, v in b.items() if k != "always_nan"}


def test_metrics_file_identical_to_per_step_reads(env, tmp_path, monkeypatch):
    root, d = env
    data = _data(d)
    cfg = base_config(d["model"], tmp_path / "new", data, max_steps=3, grad_accum=2, eval_fraction=0.25)
    train(cfg)
    monkeypatch.setattr(loop_module, "MetricsAverager", _LegacyAverager)
    cfg["train"]["output_dir"] = str(tmp_path / "old")
    train(cfg)
    new = (tmp_path / "new" / METRICS_FILE).read_text(encoding="utf-8").splitlines()
    old = (tmp_path / "old" / METRICS_FILE).read_text(encoding="utf-8").splitlines()
    assert len(new) == len(old) == 4 and "loss/kto" in json.loads(new[0])
    assert new == old


def test_one_metrics_read_per_optimizer_step(env, tmp_path, monkeypatch):
    """Losses, per-source metrics, reward sums per objective, the grad norm and the
    finiteness flags of every micro-step come back to the host in ONE transfer per step."""
    from feedalign.trainers import logging as logging_module

    root, d = env
    reads = []
    real = logging_module._read
    monkeypatch.setattr(logging_module, "_read", lambda tensors: (reads.append(len(tensors)) if tensors else None) or real(tensors))

    class Mark(TrainerCallback):
        def on_step_end(self, step, metrics):
            reads.append(("step", step, metrics["grad_norm"]))

    cfg = base_config(d["model"], tmp_path / "out", _data(d)[:2], max_steps=3, grad_accum=2)
    train(cfg, callbacks=[Mark()])
    steps = [i for i, r in enumerate(reads) if isinstance(r, tuple)]
    per_step = [reads[a + 1:b] for a, b in zip([-1] + steps[:-1], steps)]
    assert [len(chunk) for chunk in per_step] == [1, 1, 1]
    assert all(math.isfinite(r[2]) and r[2] > 0 for r in reads if isinstance(r, tuple))
    metrics = [json.loads(line) for line in (tmp_path / "out" / METRICS_FILE).read_text().splitlines()]
    assert all("_finite" not in m for m in metrics)
    assert {"rewards/accuracy/default", "rewards/margins/default", "grad_norm"} <= metrics[0].keys()
