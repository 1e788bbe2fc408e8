"""Atomic, verifiable checkpoints.

Layout of ``output_dir``::

    step-00000040/          a complete checkpoint
        weights.safetensors trainable parameters (the adapter only, for LoRA)
        optimizer.pt        optimizer state_dict
        scheduler.pt        LR scheduler state_dict
        state.pt            RNG states of the main process (python, numpy, torch, cuda),
                            sampler positions, loss-state providers (e.g. BCO's delta),
                            grad scaler
        rng_state_<r>.pt    RNG states of process r (one file per process)
        deepspeed/          accelerator.save_state (DeepSpeed runs only: engine, optimizer)
        trainer_state.json  step, epoch counters (human readable)
        config.yaml         the run's config
        manifest.json       sha256 of every file above; written last
    latest                  name of the newest complete checkpoint
    ckpt-00000050.tmp/      a checkpoint being written (ignored, removed on resume)

A checkpoint is written into ``ckpt-XXXXXXXX.tmp`` (with several processes: the main process
creates it, every process writes its own files into it, then the main process writes the
rest, see ``trainers.run.save_run``), every file and the directory are fsynced,
then the directory is renamed to ``step-XXXXXXXX`` (``os.replace``) and ``latest`` is
replaced atomically. A kill at any point leaves either the previous or the new checkpoint
complete; resume verifies the manifest and falls back to the newest checkpoint that passes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger("feedalign.train")

LATEST = "latest"
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointWriteError(RuntimeError):
    """A checkpoint (or the final model) could not be written: disk full or another OS error."""


_NO_SPACE = ("no space left", "errno 28", "code: 28", "enospc", "disk quota")


def is_write_failure(exc: BaseException) -> bool:
    """An OSError, or a library's RuntimeError wrapping one (torch.save, safetensors)."""
    if isinstance(exc, OSError):
        return True
    text = str(exc).lower()
    return any(word in text for word in ("write", "ioerror", "i/o", "os {", "file")) or _says_no_space(exc)


def _says_no_space(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(word in str(exc).lower() for word in _NO_SPACE)


def free_space(path: str | os.PathLike[str]) -> str:
    """Free space on the disk holding ``path`` (the nearest existing parent), for messages."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return "unknown"
    return f"{free / 2**20:.1f} MiB"


def write_failure(exc: BaseException, out: Path, what: str, last_good: Path | None) -> CheckpointWriteError:
    """One line: what could not be written, where, why, the free space, what is kept."""
    if _says_no_space(exc):
        reason = "disk full (no space left on device)"
    elif isinstance(exc, OSError):
        reason = f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")
    else:
        reason = " ".join(str(exc).split())[:200]
    kept = f"the last good checkpoint {last_good} is kept" if last_good is not None else "no earlier checkpoint"
    return CheckpointWriteError(f"cannot write {what} in {out}: {reason}; free space there: {free_space(out)}; {kept}")


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


@dataclass
class CheckpointPayload:
    """Everything a checkpoint holds, in memory."""

    step: int
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    state: dict[str, Any]  # rng, samplers, providers, scaler
    trainer_state: dict[str, Any]
    config_yaml: str


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # not supported on this platform (e.g. Windows)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def staging_dir(output_dir: str | os.PathLike[str], step: int) -> Path:
    return Path(output_dir) / f"ckpt-{step:08d}.tmp"


def begin_checkpoint(output_dir: str | os.PathLike[str], step: int) -> Path:
    """Create an empty staging directory for the checkpoint of ``step``."""
    tmp = staging_dir(output_dir, step)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def rank_rng_name(rank: int) -> str:
    return f"rng_state_{rank}.pt"


def save_rank_rng(directory: Path, rank: int) -> None:
    """This process's RNG state into a staging directory."""
    torch.save(rng_state(), directory / rank_rng_name(rank))


def load_rank_rng(path: str | os.PathLike[str], rank: int) -> dict[str, Any] | None:
    """Process ``rank``'s RNG state from a checkpoint, or None if it has none."""
    file = Path(path) / rank_rng_name(rank)
    if not file.is_file():
        return None
    return torch.load(file, map_location="cpu", weights_only=False)  # our own file (numpy state)


def _files(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def save_checkpoint(
    output_dir: str | os.PathLike[str], payload: CheckpointPayload, *, keep: int, staged: bool = False
) -> Path:
    """Write ``payload`` atomically as ``step-XXXXXXXX``, point ``latest`` at it and delete
    all but the newest ``keep`` checkpoints (0 keeps all). Returns the checkpoint path.

    ``staged``: the staging directory was made by :func:`begin_checkpoint` and may already
    hold files of other processes (they join the manifest)."""
    from safetensors.torch import save_file

    out = Path(output_dir)
    tmp = staging_dir(out, payload.step) if staged else begin_checkpoint(out, payload.step)
    weights = {k: v.detach().cpu().contiguous() for k, v in payload.weights.items()}
    save_file(weights, str(tmp / WEIGHTS), metadata={"format": "pt"})
    torch.save(payload.optimizer, tmp / "optimizer.pt")
    torch.save(payload.scheduler, tmp / "scheduler.pt")
    torch.save(payload.state, tmp / "state.pt")
    (tmp / "trainer_state.json").write_text(json.dumps(payload.trainer_state, indent=2), encoding="utf-8")
    (tmp / "config.yaml").write_text(payload.config_yaml, encoding="utf-8")
    files = _files(tmp)
    manifest = {"format": FORMAT_VERSION, "step": payload.step, "files": {n: _sha256(tmp / n) for n in files}}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    for name in files + [MANIFEST]:
        _fsync_file(tmp / name)
    for sub in sorted({(tmp / n).parent for n in files}, key=lambda d: len(d.parts), reverse=True):
        _fsync_dir(sub)
    final = out / checkpoint_name(payload.step)
    if final.exists():  # a previous attempt at this step (e.g. before a kill); replace it
        stale = out / f"ckpt-{payload.step:08d}.old.tmp"
        os.replace(final, stale)
        shutil.rmtree(stale, ignore_errors=True)
    os.replace(tmp, final)
    _fsync_dir(out)
    write_text_atomic(out / LATEST, final.name + "\n")
    rotate_checkpoints(out, keep=keep, protect=final.name)
    return final


def list_checkpoints(output_dir: str | os.PathLike[str]) -> list[Path]:
    """Complete-looking checkpoint directories (``step-*``), oldest first."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def rotate_checkpoints(output_dir: Path, *, keep: int, protect: str | None = None) -> None:
    if keep <= 0:
        return
    checkpoints = list_checkpoints(output_dir)
    for path in checkpoints[:-keep]:
        if path.name != protect:
            shutil.rmtree(path, ignore_errors=True)


def verify_checkpoint(path: str | os.PathLike[str]) -> str | None:
    """None if ``path`` is a complete checkpoint whose files match the manifest, else why not."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        return "no manifest (incomplete write)"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = dict(manifest["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable manifest: {exc}"
    for name, digest in files.items():
        file = path / name
        if not file.is_file():
            return f"missing file {name}"
        try:
            actual = _sha256(file)
        except OSError as exc:
            return f"cannot read {name}: {exc.strerror or exc}"
        if actual != digest:
            return f"checksum mismatch for {name}"
    return None


def find_resume_checkpoint(output_dir: str | os.PathLike[str]) -> Path | None:
    """The checkpoint to resume from: the one ``latest`` names if it verifies, else the
    newest ``step-*`` that verifies. ``*.tmp`` directories are never considered."""
    out = Path(output_dir)
    candidates = list(reversed(list_checkpoints(out)))
    pointer = out / LATEST
    if pointer.is_file():
        try:
            named = out / pointer.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            logger.warning("ignoring unreadable %s (%s); looking at every checkpoint", pointer, exc)
            named = None
        if named in candidates:
            candidates.remove(named)
            candidates.insert(0, named)
    for path in candidates:
        problem = verify_checkpoint(path)
        if problem is None:
            return path
        logger.warning("skipping checkpoint %s: %s", path, problem)
    return None


def remove_incomplete(output_dir: str | os.PathLike[str]) -> None:
    """Delete leftovers of interrupted saves (``*.tmp`` directories)."""
    out = Path(output_dir)
    if out.is_dir():
        for path in out.iterdir():
            if path.is_dir() and path.name.endswith(".tmp"):
                shutil.rmtree(path, ignore_errors=True)


def load_checkpoint(path: str | os.PathLike[str]) -> CheckpointPayload:
    """Read a checkpoint written by :func:`save_checkpoint` (verify it first)."""
    from safetensors.torch import load_file

    path = Path(path)
    trainer_state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    return CheckpointPayload(
        step=int(trainer_state["step"]),
        weights=load_file(str(path / WEIGHTS)),
        # Our own files, written by save_checkpoint: they hold numpy RNG tuples, so the
        # weights-only unpickler cannot read them.
        optimizer=torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False),
        scheduler=torch.load(path / "scheduler.pt", map_location="cpu", weights_only=False),
        state=torch.load(path / "state.pt", map_location="cpu", weights_only=False),
        trainer_state=trainer_state,
        config_yaml=(path / "config.yaml").read_text(encoding="utf-8"),
    )


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train (all of them, or the LoRA adapter only)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    expected = {name for name, p in params.items() if p.requires_grad}
    missing, unexpected = expected - set(weights), set(weights) - expected
    if missing or unexpected:
        raise ValueError(
            "checkpoint weights do not match the model: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))
