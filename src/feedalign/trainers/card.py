"""What ``final/`` says about the run that made it: an absolute base-model path for an
adapter (``policies.export.record_base``) and a model card (``README.md``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def run_card(run: Any, metrics: Mapping[str, float], eval_metrics: Mapping[str, float]) -> dict[str, Any]:
    """The model card's content for a finished run."""
    config = run.config
    lora = config.model.lora
    sources = [
        {"name": s.name, "loss": s.spec.name, "hparams": dict(s.hparams), "train": len(s.train_examples),
         "eval": len(s.eval_examples), **s.data_counts}
        for s in run.sources
    ]
    base = config.model.path
    if base is not None and Path(base).expanduser().exists():
        base = str(Path(base).expanduser().resolve())
    return {
        "base": base,
        "lora": None if lora is None else {"r": lora.r, "alpha": lora.alpha, "dropout": lora.dropout},
        "sources": sources,
        "steps": run.step,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "eval_metrics": {k: float(v) for k, v in eval_metrics.items()},
        "warnings": list(getattr(run, "health_warnings", [])),
    }


def write_final_extras(run: Any, directory: Path, metrics: Mapping[str, float],
                       eval_metrics: Mapping[str, float]) -> None:
    from feedalign.policies.export import record_base, write_model_card

    if run.config.model.path is not None and run.config.model.lora is not None:
        record_base(directory, run.config.model.path)
    write_model_card(directory, run_card(run, metrics, eval_metrics))
