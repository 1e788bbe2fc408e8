"""The one offline training loop for every registered policy loss.

``train(config)`` is the entry point; see :mod:`feedalign.trainers.loop`. Submodules:
``batching`` (records -> micro-batches), ``state`` (loss-state providers), ``forward``
(one source's loss), ``checkpoint`` (atomic checkpoints), ``logging`` (metrics).
"""

from __future__ import annotations

from typing import Any

__all__ = ["NonFiniteLossError", "TrainResult", "TrainerCallback", "train"]


def __getattr__(name: str) -> Any:
    # Lazy: importing feedalign.trainers (e.g. for a sibling module) does not pull in
    # torch/accelerate until the loop is used.
    if name in __all__:
        from feedalign.trainers import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'feedalign.trainers' has no attribute {name!r}")
