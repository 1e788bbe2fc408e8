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
    pairs_per_step: int = 8,
    lora: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The YAML-layout config of one run (``extra`` is merged into ``train``); ``lora``
    trains adapters (``model.lora``)."""
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
            # model.lora.target_modules unset means peft's "all-linear", as TRL is given.
            **({"lora": {k: v for k, v in lora.items() if (k, v) != ("target_modules", "all-linear")}}
               if lora else {}),
        },
        "reference": ref,
        "data": [{"loss": loss, "name": "bench", "max_length": 4096}],
        "train": {
            "output_dir": output_dir,
            "seed": 0,
            "lr": 1e-6,
            "micro_batch_size": pairs_per_step if loss == "dpo" else 2 * pairs_per_step,
            "max_steps": steps,
            "log_every": 1,
            "precision": "bf16" if on_gpu else "fp32",
            "cpu": not on_gpu,
            "overwrite_output_dir": True,
            **(extra or {}),
        },
    }


def run_feedalign(loss: str, *, pairs: list[dict[str, list[int]]], **settings: Any) -> RunResult:
    """One feedalign run (``settings``: the keyword arguments of :func:`feedalign_config`);
    wall time covers setup (tokenisation, reference model, and for a cached reference the
    trainer's fill of the cache before training) and training."""
    from feedalign.trainers import TrainerCallback, train

    device = settings["device"]
    result = RunResult()

    class StepTimer(TrainerCallback):
        def on_step_end(self, step: int, metrics: Any) -> None:
            result.mark_step(device)
            if "loss" in metrics:
                result.losses.append(float(metrics["loss"]))

    config = feedalign_config(loss, **settings)
    records = records_for(loss, pairs)
    with PeakMemory(device) as memory:
        result.start(device)
        train(config, records={"bench": records}, callbacks=[StepTimer()])
        result.stop(device)
    result.peak_mem_gib, result.mem_kind = memory.gib, memory.kind
    return result
