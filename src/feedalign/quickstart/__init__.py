"""The offline quickstart: a tiny model built locally, SFT, simulated feedback of every kind,
alignment with several losses through the one trainer, held-out evaluation, a front, a report.

``feedalign quickstart --out DIR`` runs it; :func:`run_quickstart` is the library entry point.
Importing this package is light; torch and transformers load when a stage runs.
"""

from feedalign.quickstart.pipeline import Context, Stage, default_stages, run_quickstart
from feedalign.quickstart.settings import (
    DEFAULT_METHODS,
    FEEDBACK_SETS,
    METHODS,
    MethodSpec,
    QuickstartSettings,
)

__all__ = [
    "DEFAULT_METHODS",
    "FEEDBACK_SETS",
    "METHODS",
    "Context",
    "MethodSpec",
    "QuickstartSettings",
    "Stage",
    "default_stages",
    "run_quickstart",
]
