"""SIGTERM and SIGINT during training: finish the optimizer step in flight, save, stop.

While the loop runs, the first SIGTERM or SIGINT only sets a flag; the loop looks at it after
each optimizer step, writes a checkpoint and raises :class:`TrainingInterrupted` (the CLI
prints the checkpoint and the ``--resume`` command and exits 128 + signal number: 130 for
SIGINT, 143 for SIGTERM). A second signal while that is under way stops at once
(``KeyboardInterrupt``), without saving. Outside the steps (loading, the final save) the CLI
turns SIGTERM into :class:`Terminated` (one line, exit 143; there is no step to finish).
Handlers can only be installed from the main thread; elsewhere (a run started from a worker
thread) signals keep their defaults.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

HANDLED = (signal.SIGTERM, signal.SIGINT)


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving ``checkpoint`` at ``step``."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None) -> None:
        self.signum = signum
        self.step = step
        self.checkpoint = checkpoint
        self.exit_code = 128 + signum
        where = f"checkpoint {checkpoint}" if checkpoint is not None else "no checkpoint (nothing trained yet)"
        super().__init__(f"interrupted by {signal.Signals(signum).name} after step {step}; {where}")


class Terminated(SystemExit):
    """SIGTERM outside the training steps (loading, the final save): nothing to finish first.
    A SystemExit (exit code 128 + signum when nobody catches it), so that no ``except
    Exception`` swallows it, nor handlers that re-raise only KeyboardInterrupt and SystemExit
    around a bare ``except:`` (tqdm's logging redirect does: a SIGTERM that landed while a log
    line was written was printed as a logging error and training went on)."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum
        self.exit_code = 128 + signum

    def __str__(self) -> str:
        return signal.Signals(self.signum).name


class TerminateAsException:
    """``with TerminateAsException():`` SIGTERM raises :class:`Terminated` (main thread only);
    inside the loop :class:`StopRequest` takes over and restores this on exit."""

    def __enter__(self) -> TerminateAsException:
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._raise)
        return self

    @staticmethod
    def _raise(signum: int, frame: FrameType | None) -> None:
        raise Terminated(signum)

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class StopRequest:
    """Installs the handlers on enter and restores the previous ones on exit.

    ``signum`` is the first signal received (None while there was none)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # a second signal: stop now
            self._restore()
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopped without saving")
        self.signum = signum

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in HANDLED:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __exit__(self, *exc: object) -> None:
        self._restore()
