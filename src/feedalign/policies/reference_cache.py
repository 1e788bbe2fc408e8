"""``CachedReference``: reference log-probs stored on disk (re-exported by
:mod:`feedalign.policies.reference`)."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from feedalign.policies.reference import CacheMissError, Reference, _check_keys, example_tokens


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
