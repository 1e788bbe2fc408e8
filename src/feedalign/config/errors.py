"""The one error type for bad configuration."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range.

    ``key`` is the dotted path of the offending entry (``train.lr``, ``data.0.loss``) when
    known, ``detail`` what is wrong with it; the message always names the key.
    """

    def __init__(self, detail: str, *, key: str | None = None) -> None:
        super().__init__(f"{key}: {detail}" if key else detail)
        self.key = key
        self.detail = detail

    def under(self, prefix: str) -> ConfigError:
        """The same error with its key placed under ``prefix`` (``lr`` -> ``train.lr``)."""
        key = f"{prefix}.{self.key}" if self.key else prefix
        return ConfigError(self.detail, key=key)


def require(ok: bool, key: str, detail: str) -> None:
    """Raise ``ConfigError(detail, key=key)`` unless ``ok``."""
    if not ok:
        raise ConfigError(detail, key=key)


def check_choice(value: object, choices: tuple[str, ...], key: str) -> None:
    """``value`` must be one of ``choices``."""
    require(value in choices, key, f"must be one of {list(choices)}, got {value!r}")
