"""What a trained model directory says about itself, and merging a LoRA adapter.

* ``record_base``: an adapter directory names its base model by an ABSOLUTE path (peft
  stores whatever string the base was loaded from, often relative), and ``base_model.json``
  keeps the path and the hub id when there is one, so the adapter loads from any working
  directory.
* ``write_model_card``: ``README.md`` with the base model, the data sources and their
  counts, the losses and hyperparameters, the steps, the final metrics and the feedalign
  version.
* ``merge_adapter``: base + adapter -> one full model directory (``feedalign export``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ADAPTER_CONFIG = "adapter_config.json"
BASE_FILE = "base_model.json"
CARD_FILE = "README.md"


def _absolute(path: str) -> str | None:
    local = Path(path).expanduser()
    return str(local.resolve()) if local.exists() else None


def record_base(directory: str | os.PathLike[str], base: str) -> dict[str, str | None]:
    """Point an adapter directory at its base by absolute path (a hub id stays an id, with
    its local cache directory recorded when cached). Returns what ``base_model.json`` holds."""
    from feedalign.policies.hf import cached_snapshot

    directory = Path(directory)
    local = _absolute(base)
    info = {"path": local or cached_snapshot(base), "hub_id": None if local else base}
    adapter = directory / ADAPTER_CONFIG
    if adapter.is_file():
        config = json.loads(adapter.read_text(encoding="utf-8"))
        config["base_model_name_or_path"] = local or base
        adapter.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    (directory / BASE_FILE).write_text(json.dumps(info, indent=2), encoding="utf-8")
    return info


def base_of(directory: str | os.PathLike[str]) -> str:
    """The base model an adapter directory was trained on (absolute path, else hub id)."""
    directory = Path(directory)
    if (directory / BASE_FILE).is_file():
        info = json.loads((directory / BASE_FILE).read_text(encoding="utf-8"))
        if info.get("path") and Path(info["path"]).exists():
            return info["path"]
        if info.get("hub_id"):
            return info["hub_id"]
    return json.loads((directory / ADAPTER_CONFIG).read_text(encoding="utf-8"))["base_model_name_or_path"]


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_model_card(directory: str | os.PathLike[str], card: Mapping[str, Any]) -> Path:
    """``README.md`` from ``card``: base, lora (or None), sources (name, loss, hparams,
    train, eval, truncated, rejected), steps, metrics, eval_metrics."""
    from feedalign import __version__

    sources = card.get("sources", [])
    rows = [(s["name"], s["loss"], json.dumps(s.get("hparams", {}), sort_keys=True), s.get("train", ""),
             s.get("eval", ""), s.get("truncated", 0), s.get("rejected", 0)) for s in sources]
    metrics = {**card.get("metrics", {}), **card.get("eval_metrics", {})}
    metric_rows = [(k, f"{v:.6g}" if isinstance(v, float) else v) for k, v in sorted(metrics.items())]
    text = "\n\n".join([
        "# Model trained with feedalign",
        f"- base model: `{card.get('base')}`\n- fine-tuning: "
        f"{'LoRA ' + json.dumps(card['lora'], sort_keys=True) if card.get('lora') else 'full'}\n"
        f"- optimizer steps: {card.get('steps')}\n- feedalign version: {__version__}",
        "## Data sources and losses",
        _table(rows, ("source", "loss", "hyperparameters", "train rows", "eval rows", "truncated", "rejected")),
        "## Final metrics",
        _table(metric_rows, ("metric", "value")) if metric_rows else "none logged",
        "## Health warnings",
        "\n".join(f"- {w}" for w in card.get("warnings", [])) or "none",
        "The full configuration is in `feedalign_config.yaml`.",
    ]) + "\n"
    path = Path(directory) / CARD_FILE
    path.write_text(text, encoding="utf-8")
    return path


def merge_adapter(adapter_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                  dtype: str = "float32") -> Path:
    """Write base + LoRA adapter as one full model directory (weights, tokenizer, model
    card and config copied from the adapter directory), atomically (temp dir, rename)."""
    from peft import PeftModel

    from feedalign.policies.hf import load_causal_lm, load_tokenizer

    adapter_dir, out = Path(adapter_dir), Path(out_dir).expanduser()
    if not (adapter_dir / ADAPTER_CONFIG).is_file():
        raise FileNotFoundError(f"'{adapter_dir}' holds no {ADAPTER_CONFIG}: there is no adapter to merge")
    if out.exists():
        raise FileExistsError(f"'{out}' exists; choose a new --out directory")
    model = PeftModel.from_pretrained(load_causal_lm(base_of(adapter_dir), dtype=dtype), str(adapter_dir))
    merged = model.merge_and_unload()
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    merged.save_pretrained(str(tmp))
    load_tokenizer(adapter_dir).save_pretrained(str(tmp))
    for name in (CARD_FILE, "feedalign_config.yaml", BASE_FILE):
        if (adapter_dir / name).is_file():
            shutil.copy2(adapter_dir / name, tmp / name)
    os.rename(tmp, out)
    return out
