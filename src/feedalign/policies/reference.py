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
                           later runs need no reference forward pass at all.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import uuid
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
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


def _write_shard(directory: Path, pending: dict[str, float]) -> None:
    """Write ``pending`` as a new shard (temporary file + ``os.replace``) and empty it."""
    if not pending:
        return
    directory.mkdir(parents=True, exist_ok=True)
    name = f"shard-{os.getpid()}-{uuid.uuid4().hex[:12]}.pt"
    temporary = directory / f".tmp-{name}"
    keys = list(pending)
    torch.save({"keys": keys, "logps": torch.tensor([pending[k] for k in keys], dtype=torch.float32)}, temporary)
    os.replace(temporary, directory / name)
    pending.clear()


class CachedReference:
    """Reference log-probs stored on disk under ``cache_dir/<fingerprint>/shard-*.pt``.

    Entries are keyed by sha256(fingerprint, example key, token ids, completion mask), so a
    changed tokenisation or truncation is a miss rather than a stale hit. Misses are computed
    with ``inner`` (if given), kept in memory and written as a new shard every
    ``flush_every`` entries, on ``flush()`` and when the object is collected or the process
    exits; every shard is written to a temporary file and
    moved into place with ``os.replace``, so readers never see a partial shard.

    Args:
        inner: the reference that computes misses, or None (read-only: a miss raises
            ``CacheMissError``).
        cache_dir: root directory of the cache.
        fingerprint: identity of the reference weights; default ``inner.fingerprint()``, or,
            with ``inner=None``, the only fingerprint present under ``cache_dir``.
    """

    def __init__(
        self,
        inner: Reference | None,
        cache_dir: str | os.PathLike[str],
        *,
        fingerprint: str | None = None,
        flush_every: int = 256,
    ) -> None:
        self.inner = inner
        self.root = Path(cache_dir)
        self._fingerprint = fingerprint or self._default_fingerprint()
        self.directory = self.root / self._fingerprint
        self.flush_every = flush_every
        self._table = self._load()
        self._pending: dict[str, float] = {}
        # Holds the directory and the pending dict, not self, so it does not keep self alive.
        weakref.finalize(self, _write_shard, self.directory, self._pending)

    def _default_fingerprint(self) -> str:
        if self.inner is not None:
            return self.inner.fingerprint()
        found = sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []
        if len(found) != 1:
            raise ValueError(
                f"CachedReference: with no model, the fingerprint must be given or the cache directory "
                f"{str(self.root)!r} must hold exactly one fingerprint; found {found}"
            )
        return found[0]

    def _load(self) -> dict[str, float]:
        table: dict[str, float] = {}
        for shard in sorted(self.directory.glob("shard-*.pt")):
            try:
                payload = torch.load(shard, map_location="cpu", weights_only=True)
                table.update(zip(payload["keys"], payload["logps"].tolist()))
            except Exception as exc:  # noqa: BLE001 - re-raised with the file named
                raise ValueError(f"CachedReference: cannot read cache shard {shard}: {exc}") from exc
        return table

    def _key(self, example_key: str, ids: list[int], cmask: list[int]) -> str:
        digest = hashlib.sha256(f"{self._fingerprint}\0{example_key}\0".encode())
        digest.update(json.dumps([ids, cmask], separators=(",", ":")).encode())
        return digest.hexdigest()[:32]

    def _keys(self, batch: dict[str, torch.Tensor], example_keys: Sequence[str]) -> list[str]:
        _check_keys(batch, example_keys)
        return [self._key(k, ids, cm) for k, (ids, cm) in zip(example_keys, example_tokens(batch))]

    def _lookup(self, key: str) -> float | None:
        value = self._table.get(key)
        return self._pending.get(key) if value is None else value

    def logps(self, batch: dict[str, torch.Tensor], example_keys: Sequence[str]) -> torch.Tensor:
        if example_keys is None:
            raise ValueError("CachedReference.logps needs example_keys")
        keys = self._keys(batch, example_keys)
        values = [self._lookup(k) for k in keys]
        missing = [i for i, v in enumerate(values) if v is None]
        if missing:
            if self.inner is None:
                raise CacheMissError(
                    f"CachedReference: {len(missing)} of {len(keys)} examples (first: {example_keys[missing[0]]!r}) "
                    f"are not in the cache {str(self.directory)!r} and there is no reference model to compute "
                    "them; run precompute() over the data first or pass inner="
                )
            # The whole batch is recomputed (sub-batching the misses is not worth the
            # complexity: after the first epoch every lookup is a hit).
            computed = self.inner.logps(batch, example_keys).detach().float().cpu().tolist()
            for i in missing:
                values[i] = computed[i]
                self._pending[keys[i]] = computed[i]
            if len(self._pending) >= self.flush_every:
                self.flush()
        return torch.tensor(values, dtype=torch.float32, device=batch["input_ids"].device)

    def precompute(self, batches: Iterable[tuple[dict[str, torch.Tensor], Sequence[str]]]) -> int:
        """Compute and store every missing example of ``(batch, example_keys)`` pairs; returns
        the number of newly computed examples."""
        before = len(self)
        for batch, example_keys in batches:
            keys = self._keys(batch, example_keys)
            if any(self._lookup(k) is None for k in keys):
                self.logps(batch, example_keys)
        self.flush()
        return len(self) - before

    def flush(self) -> None:
        """Write pending entries as one new shard (atomically). Also runs when the object is
        garbage-collected or the interpreter exits, so computed entries are not lost."""
        self._table.update(self._pending)
        _write_shard(self.directory, self._pending)

    def drop_inner(self) -> None:
        """Release the computing reference (e.g. a model copy) once everything is cached."""
        self.flush()
        self.inner = None

    def fingerprint(self) -> str:
        return self._fingerprint

    def __len__(self) -> int:
        return len(self._table) + sum(1 for k in self._pending if k not in self._table)


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
    if cache_dir is None:
        raise ValueError("reference strategy 'cached' needs cache_dir")
    is_peft = hasattr(policy_model, "disable_adapter")
    inner: Reference = (
        AdapterReference(policy_model, chunk_size=chunk_size)
        if is_peft
        else CopyReference(policy_model, chunk_size=chunk_size)
    )
    return CachedReference(inner, cache_dir)
