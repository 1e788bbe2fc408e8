"""``output_dir/final``: the trained model, its tokenizer and the config that ran."""

from __future__ import annotations

import dataclasses

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path

from feedalign.config.loader import dump_config
from feedalign.trainers import checkpoint as ckpt
from feedalign.trainers.parallel import full_state_dict, sharding
from feedalign.trainers.run import Run

logger = logging.getLogger("feedalign.train")

FINAL_DIR = "final"


def _save_steering_spec(run: Run, directory: Path) -> None:
    """A steered run's SteeringSpec next to the model, for ``feedalign steer`` / ``front``."""
    from feedalign.multiobjective.steering import save_spec

    specs = [s.steer for s in run.sources if s.steer is not None]
    if not specs:
        return
    # One source per objective (scalarize) differs only in the trained objective: the model
    # serves every weight, so the saved spec names none.
    merged = {dataclasses.replace(spec, trained=None) for spec in specs}
    if len(specs) > 1 and len(merged) == 1:
        save_spec(merged.pop(), directory)
        return
    if any(spec != specs[0] for spec in specs[1:]):
        logger.warning("steered sources use different steering specs; final/ holds the first one's")
    save_spec(specs[0], directory)


def save_final(run: Run, metrics: Mapping[str, float] | None = None,
               eval_metrics: Mapping[str, float] | None = None) -> Path | None:
    """``output_dir/final``: save_pretrained (the adapter for LoRA) + tokenizer + config.
    Under FSDP/DeepSpeed the full weights are gathered first (every process takes part).
    A disk-full or other OS error is a one-line CheckpointWriteError (the checkpoints stay)."""
    try:
        return _write_final(run, metrics or {}, eval_metrics or {})
    except (OSError, RuntimeError) as exc:
        if not ckpt.is_write_failure(exc):
            raise
        shutil.rmtree(run.out / f"{FINAL_DIR}.tmp", ignore_errors=True)
        raise ckpt.write_failure(exc, run.out, f"the final model ({FINAL_DIR}/)", run.last_checkpoint) from exc


def _write_final(run: Run, metrics: Mapping[str, float], eval_metrics: Mapping[str, float]) -> Path | None:
    accelerator = run.accelerator
    final = run.out / FINAL_DIR
    accelerator.wait_for_everyone()
    model = run.runtime.model
    state = None
    if sharding(accelerator) != "none":
        state = full_state_dict(accelerator, run.runtime.policy, model)
    if accelerator.is_main_process:
        tmp = run.out / f"{FINAL_DIR}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        from feedalign.multiobjective import weight_adapters

        if state is None and weight_adapters.find(model) is not None:
            state = weight_adapters.base_state_dict(model)  # the adapters go to their own file
        if state is None:
            model.save_pretrained(str(tmp))
        else:
            model.save_pretrained(str(tmp), state_dict=state)
        weight_adapters.save(model, tmp)
        run.runtime.tokenizer.save_pretrained(str(tmp))
        (tmp / "feedalign_config.yaml").write_text(dump_config(run.config), encoding="utf-8")
        _save_steering_spec(run, tmp)
        from feedalign.trainers.card import write_final_extras

        write_final_extras(run, tmp, metrics, eval_metrics)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    accelerator.wait_for_everyone()
    return final
