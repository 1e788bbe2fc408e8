"""Checks of a loaded policy against its config, before anything trains."""

from __future__ import annotations

from typing import Any

from feedalign.config.errors import ConfigError
from feedalign.config.schema import Config


def check_lora_targets(config: Config, model: Any) -> None:
    """Every ``model.lora.target_modules`` entry must name a module of the model: peft
    silently skips an entry that matches nothing as long as another one matches."""
    lora = config.model.lora
    if lora is None or not lora.target_modules:
        return
    modules = [(name, m) for name, m in model.named_modules() if "lora_" not in name]
    names = [name for name, _ in modules]
    unmatched = [t for t in lora.target_modules if not any(n == t or n.endswith("." + t) for n in names)]
    if unmatched:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in modules if n and type(m).__name__ in _ADAPTABLE})
        raise ConfigError(f"{unmatched} match no module of the model, so they would be ignored; its adaptable "
                          f"modules are {linear[:30]}", key="model.lora.target_modules")


_ADAPTABLE = ("Linear", "Conv1D", "Embedding")  # module types LoRA adapts (peft's own names for them too)
