"""Shared helpers for the trainer tests: a tiny saved model and JSONL feedback files."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch

# Tiny matmuls are far slower with several threads competing for 2 cores.
torch.set_num_threads(1)

ALPHABET = "abcdefgh "


def save_tiny_model(directory: Path, *, seed: int = 0) -> Path:
    from feedalign.policies.tiny import build_char_tokenizer, build_tiny_causal_lm, save_tiny

    tokenizer = build_char_tokenizer(ALPHABET)
    model = build_tiny_causal_lm(
        len(tokenizer), hidden=32, layers=2, heads=2, kv_heads=1, intermediate=64, seed=seed, init_std=0.1
    )
    save_tiny(model, tokenizer, directory)
    return directory


def _word(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(ALPHABET[:-1]) for _ in range(n))


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def pair_rows(n: int, *, seed: int, objective: str | None = None) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row = {
            "id": f"p{i}",
            "prompt": _word(rng, 4),
            "chosen": "ab" + _word(rng, 3),
            "rejected": "hg" + _word(rng, 3),
        }
        if objective:
            row["objective"] = objective
        rows.append(row)
    return rows


def labeled_rows(n: int, *, seed: int, labels: str = "mixed", prefix: str = "l") -> list[dict[str, Any]]:
    """labels: "mixed" (alternating), "up" or "down"."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = {"mixed": i % 2 == 0, "up": True, "down": False}[labels]
        completion = ("ab" if label else "hg") + _word(rng, 3)
        rows.append({"id": f"{prefix}{i}", "prompt": _word(rng, 4), "completion": completion, "label": label})
    return rows


def same_prompt_thumbs(n_prompts: int, *, seed: int) -> list[dict[str, Any]]:
    """One thumbs-up and one thumbs-down completion per prompt (discordant pairs)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n_prompts):
        prompt = _word(rng, 4)
        rows.append({"id": f"s{i}u", "prompt": prompt, "completion": "ab" + _word(rng, 3), "label": True})
        rows.append({"id": f"s{i}d", "prompt": prompt, "completion": "hg" + _word(rng, 3), "label": False})
    return rows


def base_config(
    model_dir: Path, output_dir: Path, data: list[dict[str, Any]], **train: Any
) -> dict[str, Any]:
    train_cfg = {
        "output_dir": str(output_dir),
        "lr": 1e-3,
        "micro_batch_size": 4,
        "max_steps": 4,
        "log_every": 1,
    }
    train_cfg.update(train)
    return {"model": {"path": str(model_dir)}, "data": data, "train": train_cfg}


def final_state(output_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(output_dir) / "final" / "model.safetensors"))


def assert_states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], *, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if atol == 0.0:
            assert torch.equal(a[name], b[name]), (
                f"{name} differs (max {float((a[name] - b[name]).abs().max())})"
            )
        else:
            diff = float((a[name] - b[name]).abs().max())
            assert diff <= atol, f"{name} differs by {diff}"


def model_state(model: Any) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def length_margins(prompts: list[str], completions: list[str]) -> torch.Tensor:
    """A hand-made margin reward for MODPO tests: minus the completion length, [N, 1]."""
    return torch.tensor([[-float(len(c))] for c in completions])


def length_judge(prompts: list[str], completions: list[str]) -> list[float]:
    """A judge for health tests: the completion's length in characters."""
    return [float(len(c)) for c in completions]
