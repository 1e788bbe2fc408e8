"""TRL side of bench/throughput.py: DPOTrainer / KTOTrainer run as a user would run them.

Settings left at TRL's defaults except: ``max_steps``, the per-device batch (8 pairs for DPO,
16 unpaired rows for KTO: the same tokens per step), ``report_to="none"``, no saving, no
evaluation, sequential sampling (KTO requires it for its KL pairs; DPO uses it too so both
frameworks see the same batches), the model dtype of the workload (bf16 on a GPU, fp32 on a
CPU, where bf16 autocast is also switched off) and ``use_cpu`` on a CPU.
"""

from __future__ import annotations

from typing import Any

import torch

from _throughput_workload import PeakMemory, RunResult, pair_texts, unpaired_texts


def _step_timer(device: torch.device, result: RunResult):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Host time at the end of every optimizer step, after a device synchronize."""

        def on_step_end(self, args, state, control, **kwargs):
            result.mark_step(device)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                result.losses.append(float(logs["loss"]))

    return StepTimer()


def _common_args(device: torch.device, steps: int, batch: int, output_dir: str) -> dict[str, Any]:
    on_gpu = device.type == "cuda"
    return dict(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=batch,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        train_sampling_strategy="sequential",
        bf16=on_gpu,
        use_cpu=not on_gpu,
        seed=0,
    )


def run_trl(
    loss: str,
    *,
    model_dir: str,
    tokenizer_dir: str,
    pairs: list[dict[str, list[int]]],
    steps: int,
    device: torch.device,
    dtype: torch.dtype,
    output_dir: str,
    precompute_reference: bool = False,
    gradient_checkpointing: bool = True,
    pairs_per_step: int = 8,
    lora: dict[str, Any] | None = None,
    use_liger_kernel: bool = False,
) -> RunResult:
    """One TRL run of ``loss`` ("dpo" or "kto"); wall time covers trainer construction
    (tokenisation, reference precomputation) and training. ``lora`` (feedalign's LoRA keys)
    becomes a peft ``LoraConfig`` (TRL's reference is then the adapter-disabled model)."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    result = RunResult()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    dtype_name = str(dtype).removeprefix("torch.")
    with PeakMemory(device) as memory:
        result.start(device)
        if loss == "dpo":
            from trl import DPOConfig, DPOTrainer

            config_cls, trainer_cls, batch = DPOConfig, DPOTrainer, pairs_per_step
            rows = pair_texts(pairs)
        elif loss == "kto":
            from trl import KTOConfig, KTOTrainer

            config_cls, trainer_cls, batch = KTOConfig, KTOTrainer, 2 * pairs_per_step
            rows = unpaired_texts(pairs)
        else:
            raise ValueError(f"run_trl: loss must be 'dpo' or 'kto', got {loss!r}")
        args = config_cls(
            **_common_args(device, steps, batch, output_dir),
            model_init_kwargs={"dtype": dtype_name},
            gradient_checkpointing=gradient_checkpointing,
            precompute_ref_log_probs=precompute_reference,
            **({"use_liger_kernel": True} if use_liger_kernel else {}),
        )
        peft_config = None
        if lora:
            from peft import LoraConfig

            peft_config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                                     target_modules=lora["target_modules"], task_type="CAUSAL_LM")
        trainer = trainer_cls(
            model=model_dir,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            callbacks=[_step_timer(device, result)],
            peft_config=peft_config,
        )
        # Keep stdout for the report: drop the callback that prints every log dict.
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
        trainer.train()
        result.stop(device)
    result.peak_mem_gib, result.mem_kind = memory.gib, memory.kind
    del trainer
    return result
