"""One vocabulary across commands: the policy trainer's key names are the names.

``feedalign rm train`` used ``train.steps`` and ``train.batch_size`` where ``feedalign train``
says ``train.max_steps`` and ``train.micro_batch_size``; both commands now take the trainer's
names, and the old spellings still work with a deprecation warning (for now).
"""

from __future__ import annotations

import warnings
from typing import Any

# section -> {name used everywhere: old rm spelling (the reward-model config's field)}
RM_RENAMES = {"train": {"max_steps": "steps", "micro_batch_size": "batch_size"}}


def normalize_rm_config(raw: dict[str, Any]) -> None:
    """Map the shared names onto the reward-model config's fields, in place; warn about the
    old spellings. Both spellings of one key at once is an error."""
    from feedalign.config.errors import ConfigError

    for section, renames in RM_RENAMES.items():
        node = raw.get(section)
        if not isinstance(node, dict):
            continue
        for new, old in renames.items():
            if new in node and old in node:
                raise ConfigError(f"both '{new}' and its old spelling '{old}' are set; keep '{new}'",
                                  key=f"{section}.{new}")
            if old in node:
                warnings.warn(f"{section}.{old} is deprecated for `rm train`: use {section}.{new} "
                              "(the name `feedalign train` uses)", FutureWarning, stacklevel=2)
            elif new in node:
                node[old] = node.pop(new)
