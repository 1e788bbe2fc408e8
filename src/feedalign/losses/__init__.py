"""Pure loss functions over per-sequence log-probs, and the registry that describes them."""

from feedalign.losses._registry import LossSpec, get_loss, list_losses, register_loss

__all__ = ["LossSpec", "get_loss", "list_losses", "register_loss"]
