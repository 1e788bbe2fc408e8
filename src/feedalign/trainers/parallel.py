"""The loop under ``accelerate launch``: the policy as one module, and what changes when
its parameters are sharded.

``LogpsModule`` wraps the policy so that ONE forward computes per-sequence log-probs. That
module is what ``accelerator.prepare`` wraps (DDP, FSDP, a DeepSpeed engine), so the
wrapper's machinery runs around every policy forward of the loop: DDP's gradient all-reduce
(skipped under ``accelerator.accumulate`` until the last micro-step), FSDP's parameter
all-gather and gradient reduce-scatter, ZeRO's partition gathering. The adapter-disabled
reference of a LoRA policy runs through the same module (``adapter_disabled=True``) because
under FSDP the root's parameters (embeddings, final norm, LM head) exist in full only inside
the root module's forward.

Why the chunked head works under FSDP: ``sequence_logps`` reads ``lm_head.weight`` directly
(no module call). ``LogpsModule`` deliberately exposes neither ``get_input_embeddings`` nor
``get_output_embeddings``, so accelerate's FSDP2 preparation leaves the embeddings and the
head in the root unit, which is gathered for the whole root forward (and again for its
backward). DeepSpeed ZeRO-3 gathers a parameter only inside its own module's forward, so
under ZeRO-3 the head is called as a module on the completion positions, chunk by chunk
(``head_as_module``).

Every process must make the same sequence of forward calls (DDP broadcasts buffers and FSDP
all-gathers inside each forward): evaluation therefore gives every process the same number
of equally sized batches, padding the last one with repeated rows that are not counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from feedalign.policies.reference import eval_mode as _eval_mode

MODEL_PREFIX = "model."  # LogpsModule's name for the policy in state dicts


class LogpsModule(torch.nn.Module):
    """``forward(input_ids, attention_mask, completion_mask, position_ids=None) -> [B]`` fp32
    sums of completion-token log-probs of ``model`` (see ``policies.hf.sequence_logps``).

    Args:
        model: a transformers causal LM, possibly peft-wrapped.
        chunk_size: completion tokens whose fp32 vocabulary logits exist at once.
        head_as_module: call the LM head as a module (DeepSpeed ZeRO-3) instead of reading
            its weight.
    """

    def __init__(self, model: torch.nn.Module, chunk_size: int, *, head_as_module: bool = False) -> None:
        super().__init__()
        from feedalign.policies.hf import unwrap_model

        self.model = model
        self.chunk_size = int(chunk_size)
        self.head_as_module = head_as_module
        # accelerate's transformer-based FSDP wrap policy reads this from the prepared module.
        no_split = getattr(unwrap_model(model), "_no_split_modules", None)
        if no_split is not None:
            self._no_split_modules = list(no_split)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        completion_mask: Tensor,
        position_ids: Tensor | None = None,
        adapter_disabled: bool = False,
        packed: Mapping[str, Any] | None = None,
    ) -> Tensor:
        """``packed``: the ``segment_ids``, ``seq_lens``, ``cu_seqlens`` and ``max_seqlen`` of a
        padding-free batch (``data.collate.pack_examples``); the result then has one value
        per packed example."""
        if not adapter_disabled:
            return self._logps(input_ids, attention_mask, completion_mask, position_ids, packed)
        with torch.no_grad(), _eval_mode(self.model), self.model.disable_adapter():
            return self._logps(input_ids, attention_mask, completion_mask, position_ids, packed)

    def _logps(self, input_ids: Tensor, attention_mask: Tensor | None, completion_mask: Tensor,
               position_ids: Tensor | None, packed: Mapping[str, Any] | None) -> Tensor:
        from feedalign.policies.hf import batch_logps

        batch: dict[str, Any] = {"input_ids": input_ids, "completion_mask": completion_mask}
        if attention_mask is not None:
            batch["attention_mask"] = attention_mask
        if position_ids is not None:
            batch["position_ids"] = position_ids
        batch.update(packed or {})
        return batch_logps(self.model, batch, chunk_size=self.chunk_size, head_as_module=self.head_as_module)

    def tie_weights(self) -> None:
        # accelerate's FSDP2 preparation re-ties shared embeddings after moving to meta.
        tie = getattr(self.model, "tie_weights", None)
        if tie is not None:
            tie()


def check_reference_strategy(accelerator: Any, strategy: str, model: torch.nn.Module) -> None:
    """A ``copy`` reference (also the model behind a ``cached`` one without LoRA) deep-copies
    the policy; under ZeRO-3 with ``zero3_init_flag`` the policy was built partitioned, and a
    copy of partitioned parameters cannot run outside the DeepSpeed engine."""
    if not is_zero3(accelerator) or hasattr(model, "disable_adapter") or strategy not in ("copy", "cached"):
        return
    # deepspeed.zero.Init marks every parameter it partitions with a ``ds_id``.
    if any(hasattr(p, "ds_id") for p in model.parameters()):
        from feedalign.config.errors import ConfigError

        raise ConfigError(
            f"reference strategy {strategy!r} copies the policy, which DeepSpeed ZeRO-3 built partitioned "
            "(zero3_init_flag); use LoRA with strategy 'adapter', a precomputed 'cached' reference of a LoRA "
            "policy, or zero3_init_flag: false",
            key="reference.strategy",
        )


# ----------------------------------------------------------------------------- sharding


def sharding(accelerator: Any) -> str:
    """"fsdp", "deepspeed" or "none" (single process, DDP, multi-CPU)."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind == DistributedType.FSDP:
        return "fsdp"
    if kind == DistributedType.DEEPSPEED:
        return "deepspeed"
    return "none"


def is_zero3(accelerator: Any) -> bool:
    if sharding(accelerator) != "deepspeed":
        return False
    plugin = accelerator.state.deepspeed_plugin
    return int(plugin.deepspeed_config.get("zero_optimization", {}).get("stage", 0)) == 3


def honour_zero3_init_flag(accelerator: Any) -> None:
    """Build the policy whole under ZeRO-3 with ``zero3_init_flag: false``; call before loading it.

    accelerate registers its ZeRO-3 config with transformers whatever the flag says (checked
    with accelerate 1.15), and ``from_pretrained`` then builds every model partitioned
    (``deepspeed.zero.Init``), so a ``copy`` reference could not be taken. Dropping the
    registration gives the documented behaviour: each process builds the whole model once
    and the engine partitions it at ``accelerator.prepare``."""
    if not is_zero3(accelerator) or accelerator.state.deepspeed_plugin.zero3_init_flag:
        return
    from transformers.integrations import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()


def _strip(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k[len(MODEL_PREFIX):] if k.startswith(MODEL_PREFIX) else k: v for k, v in state.items()}


def full_state_dict(accelerator: Any, module: Any, model: torch.nn.Module) -> dict[str, Tensor]:
    """The policy's full state dict (``model``'s own key names). Collective when sharded:
    every process must call it; only the main process is guaranteed to get the tensors."""
    if sharding(accelerator) == "none":
        return model.state_dict()
    state = accelerator.get_state_dict(module)
    # Under ZeRO-3 the consolidated state reaches the main process only; the others get None.
    return _strip(state) if state is not None else {}


def trainable_weights(accelerator: Any, module: Any, model: torch.nn.Module, names: Sequence[str]) -> dict[str, Tensor]:
    """The trainable parameters by name (collective when sharded)."""
    if sharding(accelerator) == "none":
        params = dict(model.named_parameters())
        return {name: params[name] for name in names}
    full = full_state_dict(accelerator, module, model)
    return {name: full[name] for name in names if name in full}


def load_trainable_weights(accelerator: Any, module: Any, model: torch.nn.Module, weights: dict[str, Tensor]) -> None:
    """Inverse of :func:`trainable_weights`; every process passes the full tensors."""
    from feedalign.trainers import checkpoint as ckpt

    kind = sharding(accelerator)
    if kind == "none":
        ckpt.load_trainable_state(model, weights)
        return
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(weights) != expected:
        ckpt.load_trainable_state(model, weights)  # raises, naming what differs
    if kind == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        full = {MODEL_PREFIX + k: v for k, v in weights.items()}
        set_model_state_dict(module, full, options=StateDictOptions(full_state_dict=True, strict=False))
        return
    # DeepSpeed: weights and optimizer come back together from accelerate's own state.


def optimizer_state(accelerator: Any, module: Any, optimizer: Any) -> dict[str, Any]:
    """The optimizer state to checkpoint (collective under FSDP: a full, unsharded state on
    the main process, keyed by parameter name)."""
    kind = sharding(accelerator)
    if kind == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return {"fsdp_full": get_optimizer_state_dict(module, optimizer.optimizer, options=options)}
    if kind == "deepspeed":
        return {"deepspeed": "saved with accelerator.save_state under deepspeed/"}
    return optimizer.state_dict()


def load_optimizer_state(accelerator: Any, module: Any, optimizer: Any, state: dict[str, Any]) -> None:
    kind = sharding(accelerator)
    saved_kind = "fsdp" if "fsdp_full" in state else "deepspeed" if "deepspeed" in state else "none"
    if saved_kind != kind:
        raise ValueError(
            f"the checkpoint's optimizer state was saved under {saved_kind!r} sharding; this run uses {kind!r}"
        )
    if kind == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(
            module, optimizer.optimizer, state["fsdp_full"], options=StateDictOptions(full_state_dict=True)
        )
    elif kind == "none":
        optimizer.load_state_dict(state)


# ----------------------------------------------------------------------------- metrics, eval


def merge_sums(accelerator: Any, sums: Mapping[str, tuple[float, float]]) -> dict[str, float]:
    """``{key: (sum, count)}`` of every process -> ``{key: total sum / total count}`` (NaN
    where the count is 0). Keys may differ between processes (e.g. an objective that only
    one process saw in this step)."""
    parts = [dict(sums)]
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        parts = gather_object(parts)
    totals: dict[str, list[float]] = {}
    for part in parts:
        for key, (value, count) in part.items():
            entry = totals.setdefault(key, [0.0, 0.0])
            entry[0] += value
            entry[1] += count
    return {k: (s / c if c else math.nan) for k, (s, c) in totals.items()}


def eval_shards(n: int, batch_size: int, *, world: int, rank: int, min_size: int) -> list[list[int]]:
    """This process's evaluation batches over ``range(n)``: consecutive global batches of
    ``batch_size * world`` rows (a last one smaller than ``min_size * world`` joins the one
    before), each split rank-major into equal slices of at least ``min_size`` rows. A slice
    that runs out of rows repeats rows of its global batch, marked ``-1 - index`` (to be run,
    not counted). Every process gets the same number of batches of the same sizes."""
    if n == 0:
        return []
    size = batch_size * world
    chunks = [list(range(i, min(i + size, n))) for i in range(0, n, size)]
    if len(chunks) > 1 and len(chunks[-1]) < min_size * world:
        chunks[-2].extend(chunks.pop())
    out = []
    for chunk in chunks:
        per_rank = max(min_size, math.ceil(len(chunk) / world))
        own = chunk[rank * per_rank : (rank + 1) * per_rank]
        pad = [-1 - chunk[i % len(chunk)] for i in range(per_rank - len(own))]
        out.append(own + pad)
    return out
