"""Multi-objective tools: weight vectors on the simplex and weight interpolation (soups).

Importing this package loads numpy only; ``feedalign.multiobjective.soups`` needs torch and
is imported explicitly.
"""

from feedalign.multiobjective.weights import (
    parse_weights,
    sample_simplex,
    simplex_grid,
    validate_weights,
)

__all__ = ["parse_weights", "sample_simplex", "simplex_grid", "validate_weights"]
