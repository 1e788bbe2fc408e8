"""Reference-model strategies: where ``log pi_ref(y | x)`` comes from.

Every strategy answers ``reference.logps(batch, example_keys) -> Tensor[B]`` (fp32, no
gradient) for a padded (``collate.pad_batch``) or packed (``collate.pack_examples``) batch,
and ``reference.fingerprint()``, a string that identifies the reference model's weights.

  * ``CopyReference``    - a frozen deep copy of the policy taken at construction
                           (costs one more model in memory; works for any policy);
  * ``AdapterReference`` - the policy itself with its LoRA adapter disabled (no copy; the
                           frozen base weights *are* the reference);
  * ``CachedReference``  - log-probs precomputed once and stored on disk, keyed by
                           (model fingerprint, example key, token ids), so later epochs and
                           later runs need no reference forward pass at all
                           (:mod:`feedalign.policies.reference_cache`, re-exported here);
  * ``PolicyAdapterReference`` - the adapter reference of a training run, run through the
                           prepared (DDP/FSDP/DeepSpeed-wrapped) policy module.

``make_run_reference`` builds a run's reference from ``reference.strategy``; what the
reference scores for each micro-batch (its rows, the cache fill) is decided by the trainer's
one batch builder, ``trainers.forward.reference_rows``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from feedalign.policies.hf import batch_logps, unwrap_model

STRATEGIES = ("none", "copy", "adapter", "cached")
_SAMPLES_PER_PARAM = 4096
_VOLATILE_CONFIG_KEYS = {
    "transformers_version",
    "name_or_path",
    "use_cache",
    "dtype",
    "torch_dtype",
    "architectures",
    "output_hidden_states",
    "output_attentions",
    "return_dict",
}


@runtime_checkable
class Reference(Protocol):
    def logps(self, batch: dict[str, torch.Tensor], example_keys: Sequence[str]) -> torch.Tensor:
        """``[B]`` fp32 reference log-probs (one per example of the batch), no gradient."""
        ...

    def fingerprint(self) -> str:
        """Identity of the reference weights (stable across processes and devices)."""
        ...


class CacheMissError(LookupError):
    """A cached reference was asked for log-probs it does not hold and cannot compute."""


# ----------------------------------------------------------------------------- helpers


def _normalise_param_name(name: str) -> str | None:
    """Parameter name as the plain (adapter-free) model would spell it; None for adapter
    weights."""
    if "lora_" in name or ".modules_to_save." in name:
        return None
    return name.replace(".base_layer", "").replace(".original_module", "")


def model_fingerprint(model: Any, *, base_weights_only: bool = False) -> str:
    """Hash of the model class, its config (minus run-time switches) and a strided sample of
    every parameter's exact bytes (at most 4096 values per tensor).

    The sample makes this cheap for multi-billion-parameter models and independent of the
    device; the price is that a change confined to unsampled entries goes unnoticed (pass an
    explicit fingerprint to ``CachedReference`` when that matters). With
    ``base_weights_only`` LoRA/modules_to_save weights are ignored, so a peft model with its
    adapter disabled gets the same fingerprint as the plain base model.
    """
    base = unwrap_model(model)
    digest = hashlib.sha256(type(base).__name__.encode())
    config = {k: v for k, v in base.config.to_dict().items() if k not in _VOLATILE_CONFIG_KEYS and not k.startswith("_")}
    digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, param in base.named_parameters():
        clean = _normalise_param_name(name) if base_weights_only else name.replace(".base_layer", "")
        if clean is None:
            continue
        flat = param.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // _SAMPLES_PER_PARAM)][:_SAMPLES_PER_PARAM]
        digest.update(f"{clean}|{tuple(param.shape)}|{param.dtype}".encode())
        digest.update(sample.cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:24]


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) for the duration, restoring every module's flag afterwards."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes.items():
            module.training = mode


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _num_examples(batch: dict[str, torch.Tensor]) -> int:
    if "shared_spans" in batch:
        return 2 * int(batch["shared_spans"].shape[0])
    return int(batch["seq_lens"].numel()) if "segment_ids" in batch else int(batch["input_ids"].shape[0])


def _check_keys(batch: dict[str, torch.Tensor], example_keys: Sequence[str] | None) -> None:
    if example_keys is not None and len(example_keys) != _num_examples(batch):
        raise ValueError(f"got {len(example_keys)} example keys for a batch of {_num_examples(batch)} examples")


def example_tokens(batch: dict[str, torch.Tensor]) -> list[tuple[list[int], list[int]]]:
    """(token ids, completion mask) of every example in a padded or packed batch, padding
    removed."""
    if "shared_spans" in batch:
        from feedalign.data.shared_prompt import row_tokens

        return row_tokens(batch)
    ids = batch["input_ids"].detach().cpu()
    cmask = batch["completion_mask"].detach().cpu()
    if "segment_ids" in batch:
        lengths = batch["seq_lens"].detach().cpu().tolist()
        return [(i.tolist(), c.tolist()) for i, c in zip(ids[0].split(lengths), cmask[0].split(lengths))]
    attention = batch.get("attention_mask")
    keep = torch.ones_like(ids, dtype=torch.bool) if attention is None else attention.detach().cpu().bool()
    return [(ids[b][keep[b]].tolist(), cmask[b][keep[b]].tolist()) for b in range(ids.shape[0])]


# ----------------------------------------------------------------------------- strategies


class CopyReference:
    """A frozen deep copy of the policy, taken when this object is created."""

    def __init__(self, model: torch.nn.Module, *, chunk_size: int = 1024) -> None:
        self.model = copy.deepcopy(model)
        self.model.requires_grad_(False)
        self.model.eval()
        self.chunk_size = chunk_size
        self._fingerprint: str | None = None

    def logps(self, batch: dict[str, torch.Tensor], example_keys: Sequence[str] | None = None) -> torch.Tensor:
        _check_keys(batch, example_keys)
        with torch.no_grad(), eval_mode(self.model):
            batch = _to_device(batch, _model_device(self.model))
            return batch_logps(self.model, batch, chunk_size=self.chunk_size).float()

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model)
        return self._fingerprint


class AdapterReference:
    """The peft policy with its adapter disabled: the frozen base weights are the reference.

    No second model is held; each call runs the base model in eval mode.
    """

    def __init__(self, peft_model: torch.nn.Module, *, chunk_size: int = 1024) -> None:
        if not hasattr(peft_model, "disable_adapter"):
            raise TypeError(
                f"AdapterReference needs a peft model (with disable_adapter()); got {type(peft_model).__name__}. "
                "Load the policy with lora=... or use the 'copy' reference strategy"
            )
        self.model = peft_model
        self.chunk_size = chunk_size
        self._fingerprint: str | None = None

    def logps(self, batch: dict[str, torch.Tensor], example_keys: Sequence[str] | None = None) -> torch.Tensor:
        _check_keys(batch, example_keys)
        with torch.no_grad(), eval_mode(self.model), self.model.disable_adapter():
            batch = _to_device(batch, _model_device(self.model))
            return batch_logps(self.model, batch, chunk_size=self.chunk_size).float()

    def fingerprint(self) -> str:
        # The base weights are frozen, so the fingerprint never changes during training.
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model, base_weights_only=True)
        return self._fingerprint


def make_reference(
    strategy: str,
    policy_model: torch.nn.Module,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    chunk_size: int = 1024,
) -> Reference | None:
    """Build a reference for ``policy_model``.

    strategy: "none" (reference-free losses; returns None), "copy", "adapter" (peft policy,
    adapter disabled) or "cached" (on-disk cache under ``cache_dir``; misses are computed by
    an adapter reference for peft policies and a copy otherwise).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown reference strategy {strategy!r}; expected one of {STRATEGIES}")
    if strategy == "none":
        return None
    if strategy == "copy":
        return CopyReference(policy_model, chunk_size=chunk_size)
    if strategy == "adapter":
        return AdapterReference(policy_model, chunk_size=chunk_size)
    from feedalign.policies.reference_cache import CachedReference

    if cache_dir is None:
        raise ValueError("reference strategy 'cached' needs cache_dir")
    is_peft = hasattr(policy_model, "disable_adapter")
    inner: Reference = (
        AdapterReference(policy_model, chunk_size=chunk_size)
        if is_peft
        else CopyReference(policy_model, chunk_size=chunk_size)
    )
    return CachedReference(inner, cache_dir)


# ----------------------------------------------------------------------------- a run's reference

PACKED_FIELDS = ("segment_ids", "seq_lens", "cu_seqlens", "max_seqlen")


def packed_fields(batch: Mapping[str, Any]) -> dict[str, Any] | None:
    """The packing description of a padding-free batch (None for a padded one)."""
    from feedalign.data.shared_prompt import SHARED_FIELDS, is_shared

    if is_shared(batch):
        return {key: batch[key] for key in SHARED_FIELDS}
    if "segment_ids" not in batch:
        return None
    return {key: batch[key] for key in PACKED_FIELDS if key in batch}


class PolicyAdapterReference:
    """The LoRA policy with its adapter disabled, run through the prepared ``LogpsModule``
    (call :meth:`bind` after ``accelerator.prepare``). Same values as
    :class:`AdapterReference`; safe under FSDP, where the root's parameters exist in full
    only inside the prepared module's forward."""

    def __init__(self, peft_model: torch.nn.Module) -> None:
        if not hasattr(peft_model, "disable_adapter"):
            raise TypeError(
                f"the adapter reference needs a peft model (with disable_adapter()); got "
                f"{type(peft_model).__name__}. Set model.lora or use reference.strategy copy"
            )
        self.model = peft_model
        self.module: Any = None
        self._fingerprint: str | None = None

    def bind(self, module: Any) -> None:
        self.module = module

    def logps(self, batch: Mapping[str, torch.Tensor], example_keys: Sequence[str] | None = None) -> torch.Tensor:
        if self.module is None:
            raise RuntimeError("PolicyAdapterReference.bind(prepared_module) was not called")
        with torch.no_grad():
            out = self.module(
                batch["input_ids"], batch.get("attention_mask"), batch["completion_mask"],
                batch.get("position_ids"), adapter_disabled=True, packed=packed_fields(batch),
            )
        return out.float()

    def fingerprint(self) -> str:
        # Only a cached reference asks, when it is built, i.e. before the policy is sharded.
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.model, base_weights_only=True)
        return self._fingerprint


def make_run_reference(
    strategy: str, model: torch.nn.Module, *, cache_dir: Any, chunk_size: int, device: Any = None
) -> Any:
    """The reference of a training run: adapter references go through the prepared policy
    module (:class:`PolicyAdapterReference`, bound with :func:`bind_reference`); the others are
    :func:`make_reference`'s (a copy is frozen, unwrapped and placed on ``device``; under
    FSDP/DeepSpeed the policy itself is still on the CPU here)."""
    from feedalign.policies.reference_cache import CachedReference

    is_peft = hasattr(model, "disable_adapter")
    if strategy == "adapter" or (strategy == "cached" and is_peft):
        inner = PolicyAdapterReference(model)
        if strategy == "adapter":
            return inner
        if cache_dir is None:
            raise ValueError("reference strategy 'cached' needs cache_dir")
        return CachedReference(inner, cache_dir)
    reference = make_reference(strategy, model, cache_dir=cache_dir, chunk_size=chunk_size)
    inner = getattr(reference, "inner", reference)
    if isinstance(inner, CopyReference) and device is not None:
        inner.model.to(device)
    return reference


def bind_reference(reference: Any, module: Any) -> None:
    """Bind a run's adapter reference (also behind a cache) to the prepared policy module."""
    inner = getattr(reference, "inner", reference)
    if isinstance(inner, PolicyAdapterReference):
        inner.bind(module)


def __getattr__(name: str) -> Any:
    # The disk cache imports the helpers above, so it is re-exported lazily.
    if name == "CachedReference":
        from feedalign.policies.reference_cache import CachedReference

        return CachedReference
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
