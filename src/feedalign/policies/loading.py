"""Loading Hugging Face causal LMs and tokenizers: local directories, hub ids (from the local
cache when there), ``.gguf`` files; LoRA, dtype, dropout and thread settings.

Re-exported by :mod:`feedalign.policies.hf`, where callers import them from.
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}
_LORA_KEYS = ("r", "alpha", "dropout", "target_modules", "bias", "modules_to_save", "use_rslora")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


# ----------------------------------------------------------------------------- loading


def _resolve_source(path_or_id: str | os.PathLike[str], caller: str) -> str:
    """Return the string to hand to ``from_pretrained``; fail at once on a missing local path.

    An existing path is used as it is (a directory, or a ``.gguf`` file). A name that looks
    local (``config.checks.looks_local``: starts with '.', '/' or '~', its parent exists, no
    'org/name' shape) and is missing raises FileNotFoundError without touching the network.
    A hub id already in the local Hugging Face cache resolves to that snapshot directory,
    so no request is made for it; any other hub id is left to transformers."""
    from feedalign.config.checks import looks_local

    text = os.fspath(path_or_id)
    if os.path.exists(os.path.expanduser(text)):
        return os.path.expanduser(text)
    if not isinstance(path_or_id, str) or looks_local(text):
        raise FileNotFoundError(
            f"{caller}: {text!r} does not exist and is not a Hugging Face hub id "
            "(expected an existing local directory, a .gguf file or 'owner/name')"
        )
    return cached_snapshot(text) or text


def cached_snapshot(repo_id: str) -> str | None:
    """The local cache directory of a hub model (None if it is not cached)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # an id the hub client rejects is simply not cached
        return None
    return os.path.dirname(found) if isinstance(found, str) else None


def default_threads() -> int:
    """Half the CPU cores this process may use, between 1 and 8: on a small shared machine
    one thread per process avoids oversubscription (two threads were ~9x slower than one
    on a busy 2-core machine, docs/real_model.md); the cap of 8 is a conservative choice
    for larger machines, not a measured optimum."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores // 2))


def set_threads(threads: int | None) -> int:
    """``torch.set_num_threads(threads or default_threads())``; returns the number used."""
    n = threads if threads is not None else default_threads()
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    return n


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """"auto" -> bfloat16 on a CUDA device that supports it, else float32."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    if dtype not in _DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; expected 'auto' or one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def _lora_config(lora: dict[str, Any]) -> Any:
    from peft import LoraConfig

    unknown = sorted(set(lora) - set(_LORA_KEYS))
    if unknown:
        raise ValueError(f"lora: unknown keys {unknown}; valid keys are {list(_LORA_KEYS)}")
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=int(lora.get("r", 8)),
        lora_alpha=float(lora.get("alpha", 16)),
        lora_dropout=float(lora.get("dropout", 0.0)),
        target_modules=lora.get("target_modules", "all-linear"),
        bias=lora.get("bias", "none"),
        modules_to_save=lora.get("modules_to_save"),
        use_rslora=bool(lora.get("use_rslora", False)),
    )


def disable_dropout(model: Any) -> int:
    """Set the model's dropout to 0 (``torch.nn.Dropout`` modules and the dropout
    probabilities of attention layers that read them from their config), leaving LoRA's
    own dropout (``lora_dropout``, a deliberate regulariser) as it is. Returns the number of
    modules changed. With dropout off, ``train()`` and ``eval()`` compute the same function,
    so training metrics agree with evaluation and the step-1 DPO loss is log 2 when the
    reference is the policy."""
    changed = 0
    for name, module in model.named_modules():
        if "lora_dropout" in name:
            continue
        if isinstance(module, torch.nn.Dropout) and module.p != 0.0:
            module.p = 0.0
            changed += 1
        elif isinstance(getattr(module, "attention_dropout", None), float) and module.attention_dropout:
            module.attention_dropout = 0.0
            changed += 1
    return changed


def enable_gradient_checkpointing(model: Any) -> None:
    """Non-reentrant activation checkpointing (works with frozen inputs, e.g. LoRA)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False


def load_causal_lm(
    path_or_id: str | os.PathLike[str],
    *,
    dtype: str | torch.dtype = "auto",
    lora: dict[str, Any] | None = None,
    gradient_checkpointing: bool = False,
    attn_implementation: str | None = None,
) -> Any:
    """Load a causal LM from a local directory or a hub id, optionally wrapped with LoRA.

    Args:
        dtype: "auto" (bf16 on a bf16-capable GPU, else fp32), "float32", "bfloat16",
            "float16" or a torch.dtype.
        lora: None for full fine-tuning, or a dict with keys r (8), alpha (16), dropout (0.0),
            target_modules ("all-linear"), bias ("none"), modules_to_save, use_rslora.
        gradient_checkpointing: enable (non-reentrant) activation checkpointing.
        attn_implementation: e.g. "eager", "sdpa", "flash_attention_2", or
            "feedalign_varlen" (per-sequence attention for packed batches, see
            ``policies.varlen``); None = the transformers default.

    Raises:
        FileNotFoundError: the path does not exist and is not a plausible hub id (checked
            before anything is imported or loaded).
    """
    source = _resolve_source(path_or_id, "load_causal_lm")
    torch_dtype = resolve_dtype(dtype)
    lora_config = _lora_config(lora) if lora is not None else None
    import transformers
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {}
    dtype_key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    kwargs[dtype_key] = torch_dtype
    if attn_implementation is not None:
        from feedalign.policies.varlen import VARLEN_ATTENTION, register

        if attn_implementation == VARLEN_ATTENTION:
            register()
        kwargs["attn_implementation"] = attn_implementation
    from feedalign.policies.gguf import is_gguf, load_gguf_model

    if is_gguf(source):
        model = load_gguf_model(source, **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if lora_config is not None:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config)
    return model


def load_tokenizer(path_or_id: str | os.PathLike[str]) -> Any:
    """Load a tokenizer; if it has no pad token, the EOS token is used for padding."""
    source = _resolve_source(path_or_id, "load_tokenizer")
    from transformers import AutoTokenizer

    from feedalign.policies.gguf import is_gguf, load_gguf_tokenizer

    tokenizer = load_gguf_tokenizer(source) if is_gguf(source) else AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"load_tokenizer: {source!r} defines neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
