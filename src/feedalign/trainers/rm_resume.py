"""Checkpoints and ``--resume`` for ``feedalign rm train``.

Checkpoints are the policy trainer's atomic, verified ones (:mod:`feedalign.trainers.checkpoint`),
in ``output_dir/checkpoints/step-XXXXXXXX`` every ``train.save_every`` steps: all weights
(backbone and heads), the optimizer, the RNG states, each group's sampler position, the
loss history so far, the data fingerprint of every (source, kind) group and the config.
A resume verifies what it resumes like the policy trainer does: other data is refused
unless ``allow_changed_data``; any changed setting other than the step count and the
logging/saving intervals is refused; no usable checkpoint is an error unless
``resume_or_start``. Continuing from step k gives the weights of an uninterrupted run.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from feedalign.config.errors import ConfigError
from feedalign.data.fingerprint import fingerprint_records
from feedalign.trainers import checkpoint as ckpt
from feedalign.trainers import resume as resume_checks

logger = logging.getLogger("feedalign.train")

CHECKPOINT_DIR = "checkpoints"
# Settings that may differ on a resume (they change no step already taken; moved data files
# are checked by the fingerprints).
_MAY_CHANGE = re.compile(r"^(train\.(steps|log_every|save_every|keep_checkpoints)|data\.\d+\.path)$")


class RMCheckpoints:
    """Saves every ``save_every`` steps and restores on resume (one process, no sharding)."""

    def __init__(self, config: Any, train_groups: Sequence[Any], eval_groups: Sequence[Any], *, resume: bool = False,
                 resume_or_start: bool = False, allow_changed_data: bool = False, stop: Any = None) -> None:
        import yaml

        from feedalign.config.loader import config_to_dict

        self.cfg = config.train
        self.dir = Path(self.cfg.output_dir).expanduser() / CHECKPOINT_DIR
        self.config_yaml = yaml.safe_dump(config_to_dict(config), sort_keys=False)
        self.fingerprints = {g.name: fingerprint_records(g.records) for g in train_groups}  # "source/kind"
        self.fingerprints.update({f"{g.name} (held out)": fingerprint_records(g.records) for g in eval_groups})
        self.resume, self.resume_or_start, self.allow = resume or resume_or_start, resume_or_start, allow_changed_data
        self.last: Path | None = None
        self.stop = stop  # a trainers.signals.StopRequest: checkpoint and stop after the step in flight
        if not self.resume and ckpt.list_checkpoints(self.dir):
            raise ConfigError(f"'{self.dir}' holds checkpoints of an earlier run; pass --resume to continue it "
                              "or pick another output_dir", key="train.output_dir")

    def restore(self, model: Any, optimizer: Any, samplers: Sequence[Any]) -> tuple[int, list[dict[str, Any]]]:
        """(the step to continue after, the loss history so far); (0, []) for a fresh run."""
        if not self.resume:
            return 0, []
        path = ckpt.find_resume_checkpoint(self.dir)
        if path is None:
            if not self.resume_or_start:
                raise ConfigError(f"--resume: no usable checkpoint in {self.dir}; pass --resume-or-start to train "
                                  "from scratch instead", key="train.output_dir")
            logger.warning("--resume-or-start: no usable checkpoint in %s; starting from scratch", self.dir)
            return 0, []
        payload = ckpt.load_checkpoint(path)
        diff = resume_checks.config_diff(payload.config_yaml, self.config_yaml)
        refused = [k for k in diff if not _MAY_CHANGE.match(k)]
        if refused:
            shown = ", ".join(f"{k} ({diff[k][0]!r} -> {diff[k][1]!r})" for k in refused[:8])
            raise ConfigError(f"cannot resume from {path} with changed {shown}; restore them or pick another "
                              "output_dir", key="train.output_dir")
        resume_checks.check_fingerprints(payload.trainer_state.get("data_fingerprints"), self.fingerprints,
                                         allow=self.allow, path=path, changed=sorted(diff))
        if payload.step > self.cfg.steps:
            raise ConfigError(f"cannot resume from {path}: it is at step {payload.step}, past the {self.cfg.steps} "
                              "steps of this config", key="train.steps")
        model.load_state_dict(payload.weights)
        optimizer.load_state_dict(payload.optimizer)
        for sampler, state in zip(samplers, payload.state["samplers"]):
            sampler.load_state_dict(state)
        ckpt.set_rng_state(payload.state["rng"])
        self.last = path
        logger.info("resumed from %s (step %d)", path, payload.step)
        return payload.step, list(payload.state["history"])

    def step_done(self, step: int, model: Any, optimizer: Any, samplers: Sequence[Any],
                  history: list[dict[str, Any]]) -> None:
        from feedalign.trainers.signals import TrainingInterrupted

        every = getattr(self.cfg, "save_every", 0)
        signum = getattr(self.stop, "signum", None)
        if signum and step < self.cfg.steps:
            if self.last is None or self.last.name != ckpt.checkpoint_name(step):
                self._save(step, model, optimizer, samplers, history)
            raise TrainingInterrupted(signum, step, self.last)
        if not every or (step % every and step != self.cfg.steps):
            return
        self._save(step, model, optimizer, samplers, history)

    def _save(self, step: int, model: Any, optimizer: Any, samplers: Sequence[Any],
              history: list[dict[str, Any]]) -> None:
        payload = ckpt.CheckpointPayload(
            step=step,
            weights={k: v.detach().cpu() for k, v in model.state_dict().items()},
            optimizer=optimizer.state_dict(),
            scheduler={},
            state={"rng": ckpt.rng_state(), "samplers": [s.state_dict() for s in samplers], "history": list(history)},
            trainer_state={"step": step, "total_steps": self.cfg.steps, "data_fingerprints": self.fingerprints},
            config_yaml=self.config_yaml,
        )
        try:
            self.last = ckpt.save_checkpoint(self.dir, payload, keep=getattr(self.cfg, "keep_checkpoints", 2))
        except (OSError, RuntimeError) as exc:
            if not ckpt.is_write_failure(exc):
                raise
            raise ckpt.write_failure(exc, self.dir, ckpt.checkpoint_name(step), self.last) from exc
