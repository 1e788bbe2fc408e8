"""feedalign side of bench/throughput.py: ``feedalign.trainers.train`` as a user runs it.

The data goes in as records (PairRecords for DPO, LabeledRecords for KTO: each pair a
thumbs-up and a thumbs-down row, so a micro-batch of 16 rows carries the tokens of 8 pairs);
the model and tokenizer are read from the saved workload directories. Step times come from
the trainer's own ``TrainerCallback.on_step_end``, after a device synchronize.
"""

from __future__ import annotations

from typing import Any

import torch

from _throughput_workload import PeakMemory, RunResult, pair_texts, unpaired_texts


def records_for(loss: str, pairs: list[dict[str, list[int]]]) -> list[Any]:
    from feedalign.data.records import LabeledRecord, PairRecord

    if loss == "dpo":
        return [PairRecord(r["prompt"], r["chosen"], r["rejected"]) for r in pair_texts(pairs)]
    return [LabeledRecord(str(r["prompt"]), str(r["completion"]), bool(r["label"])) for r in unpaired_texts(pairs)]


def feedalign_config(
    loss: str,
    *,
    model_dir: str,
    tokenizer_dir: str,
    steps: int,
    device: torch.device,
    dtype: torch.dtype,
    output_dir: str,
    reference: str = "copy",
    gradient_checkpointing: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The YAML-layout config of one run (``extra`` is merged into ``train``)."""
    on_gpu = device.type == "cuda"
    ref: dict[str, Any] = {"strategy": reference}
    if reference == "cached":
        ref["cache_dir"] = f"{output_dir}/reference_cache"
    return {
        "model": {
            "path": model_dir,
            "tokenizer": tokenizer_dir,
            "dtype": str(dtype).removeprefix("torch."),
            "gradient_checkpointing": gradient_checkpointing,
        },
        "reference": ref,
        "data": [{"loss": loss, "name": "bench", "max_length": 4096}],
        "train": {
            "output_dir": output_dir,
            "seed": 0,
            "lr": 1e-6,
            "micro_batch_size": 8 if loss == "dpo" else 16,
            "max_steps": steps,
            "log_every": 1,
            "precision": "bf16" if on_gpu else "fp32",
            "cpu": not on_gpu,
            "overwrite_output_dir": True,
            **(extra or {}),
        },
    }


def run_feedalign(
    loss: str,
    *,
    model_dir: str,
    tokenizer_dir: str,
    pairs: list[dict[str, list[int]]],
    steps: int,
    device: torch.device,
    dtype: torch.dtype,
    output_dir: str,
    reference: str = "copy",
    gradient_checkpointing: bool = False,
    extra: dict[str, Any] | None = None,
    precompute: bool = False,
) -> RunResult:
    """One feedalign run; wall time covers setup (tokenisation, reference, and with
    ``precompute`` the reference pass of :func:`precompute_reference`) and training."""
    from feedalign.trainers import TrainerCallback, train

    result = RunResult()

    class StepTimer(TrainerCallback):
        def on_step_end(self, step: int, metrics: Any) -> None:
            result.mark_step(device)
            if "loss" in metrics:
                result.losses.append(float(metrics["loss"]))

    config = feedalign_config(
        loss,
        model_dir=model_dir,
        tokenizer_dir=tokenizer_dir,
        steps=steps,
        device=device,
        dtype=dtype,
        output_dir=output_dir,
        reference=reference,
        gradient_checkpointing=gradient_checkpointing,
        extra=extra,
    )
    if precompute and reference != "cached":
        raise ValueError("run_feedalign: precompute needs reference='cached'")
    records = records_for(loss, pairs)
    with PeakMemory(device) as memory:
        result.start(device)
        if precompute:
            precompute_reference(config, records, steps)
        train(config, records={"bench": records}, callbacks=[StepTimer()])
        result.stop(device)
    result.peak_mem_gib, result.mem_kind = memory.gib, memory.kind
    return result


def precompute_reference(config: dict[str, Any], records: list[Any], steps: int) -> int:
    """Fill the ``cached`` reference of ``config`` before training, with feedalign's public
    pieces: the trainer's own sources and seeded sampler are replayed for ``steps`` optimizer
    steps, so every row the run will ask for (including KTO's mismatched KL rows, which
    depend on the batch) is a cache hit. Returns the number of cached entries.

    The trainer computes cache misses lazily inside its steps (first epoch = a reference
    forward per step); this pass is what an up-front precompute in the trainer would do.
    """
    from feedalign.config.checks import check_config
    from feedalign.config.loader import config_from_dict
    from feedalign.policies.hf import load_tokenizer
    from feedalign.policies.reference import CachedReference
    from feedalign.trainers.batching import collate_texts, move_to
    from feedalign.trainers.setup import build_sources, load_policy, pad_id_of

    cfg = config_from_dict(config)
    checked = check_config(cfg, in_memory={"bench"})
    tokenizer = load_tokenizer(cfg.model.tokenizer or cfg.model.path)
    device = torch.device("cpu" if cfg.train.cpu or not torch.cuda.is_available() else "cuda")
    (source,) = build_sources(cfg, checked, tokenizer, {"bench": records}, rank=0, world=1)
    frozen = _FrozenPolicy(load_policy(cfg).to(device), cfg.train.logps_chunk_size)
    cache = CachedReference(frozen, cfg.reference.cache_dir)
    pad_id = pad_id_of(tokenizer)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16")
    with torch.no_grad(), autocast:
        for _ in range(steps * cfg.train.grad_accum):
            batch = source.next_batch(cfg.train.micro_batch_size, pad_id)
            cache.logps(move_to(batch.tensors, device), batch.row_ids)
            if "kl_ref" in source.spec.state:
                rotated = batch.completions[1:] + batch.completions[:1]
                ids = batch.row_ids
                kl_ids = [f"{a}|kl|{b}" for a, b in zip(ids, ids[1:] + ids[:1])]
                tensors = collate_texts(tokenizer, batch.prompts, rotated, source.max_length, pad_id)
                cache.logps(move_to(tensors, device), kl_ids)
    cache.flush()
    return len(cache)


class _FrozenPolicy:
    """The freshly loaded policy as the reference that fills the cache, without the copy
    ``make_reference`` would take (nothing trains in this pass). Its fingerprint equals the
    trainer's reference copy's, so the trainer's cache lookups hit."""

    def __init__(self, model: Any, chunk_size: int) -> None:
        self.model, self.chunk_size = model.eval(), chunk_size

    def logps(self, batch: dict[str, torch.Tensor], example_keys: Any = None) -> torch.Tensor:
        from feedalign.policies.hf import batch_logps

        with torch.no_grad():
            return batch_logps(self.model, batch, chunk_size=self.chunk_size).float()

    def fingerprint(self) -> str:
        from feedalign.policies.reference import model_fingerprint

        return model_fingerprint(self.model)
