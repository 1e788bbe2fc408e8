"""feedalign: turn the feedback people give generative models into better models.

The package root imports nothing heavy; import submodules directly, e.g.
``from feedalign.losses import get_loss``.
"""

__version__ = "0.1.0"
