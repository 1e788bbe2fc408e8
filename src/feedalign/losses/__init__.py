"""Pure loss functions over per-sequence log-probs, the registry that describes them, and
``call_loss``, the one place they are called."""

from feedalign.losses._call import LossOutput, call_loss, loss_inputs
from feedalign.losses._hparams import HParamError
from feedalign.losses._registry import (
    LossSpec,
    default_reward_loss,
    get_loss,
    list_losses,
    register_loss,
    unregister_loss,
)
from feedalign.losses._state import StateContext, StateProvider

__all__ = [
    "HParamError",
    "LossOutput",
    "LossSpec",
    "StateContext",
    "StateProvider",
    "call_loss",
    "default_reward_loss",
    "get_loss",
    "list_losses",
    "loss_inputs",
    "register_loss",
    "unregister_loss",
]
