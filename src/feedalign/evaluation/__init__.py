"""Multi-objective evaluation: Pareto filter, hypervolume, expected utility, sparsity,
reports and plots.

Importing this package loads numpy only; ``plots`` imports matplotlib inside its functions.
"""

from feedalign.evaluation.pareto import (
    conditional_expected_utility,
    expected_utility,
    front_summary,
    hypervolume,
    monotonic_violations,
    nondominated,
    nondominated_mask,
    normalize,
    sparsity,
)

__all__ = [
    "conditional_expected_utility",
    "expected_utility",
    "front_summary",
    "hypervolume",
    "monotonic_violations",
    "nondominated",
    "nondominated_mask",
    "normalize",
    "sparsity",
]
