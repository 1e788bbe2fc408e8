"""Weight adapters: a steerable model whose weights mix per-objective low-rank deltas.

``steer.adapter_rank: r`` (with ``render: tokens``) gives every linear layer of the decoder
one rank-``r`` delta per objective and mixes them by each example's weight vector ``w``:

    W(w) x = W0 x + sum_k w_k B_k A_k x

(A_k random, B_k zero at the start, so the untrained model is the base model; the base
stays frozen). The weight is read from the level tokens the prompt carries, so the same
model file serves every weight and a prompt without a tag gets ``W0``. At a vertex
``w = e_k`` the model is the base plus delta k alone; in between it is the linear
interpolation of the deltas, i.e. a weight soup of the ``m`` low-rank fine-tunings, all of
them trained in ONE run on examples whose weights are drawn per example (Panacea, Zhong et
al. 2024, arXiv 2402.02030, puts ``w`` into an SVD-LoRA's singular values in the same spirit;
this is the plain per-objective form). The conditioning signal needs no learning: the delta
of objective k is scaled by ``w_k`` in every layer, so examples with large ``w_k`` train it
and examples with ``w_k = 0`` cannot move it.

Reading the weight: a forward pre-hook on the decoder finds, in each row of ``input_ids``,
the first ``m`` level tokens (``<w:v>``, objective order). A row without any level token gets
``w = 0`` (the base model). A cached decoding step (``past_key_values`` holds tokens) keeps
the weights of the prompt it continues, whatever tokens it feeds. Packed rows (several examples
in one row) are refused at configuration time: a row has one weight.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

ADAPTERS_FILE = "weight_adapters.safetensors"
MODULE_NAME = "feedalign_weight_adapters"


class _Delta(nn.Module):
    """The ``m`` low-rank deltas of one linear layer, stacked: A [m*r, in], B [out, m*r]."""

    def __init__(self, owner: WeightAdapters, linear: nn.Linear, m: int, rank: int, generator: torch.Generator):
        super().__init__()
        self.rank = rank
        a = torch.empty(m * rank, linear.in_features)
        bound = 1.0 / math.sqrt(linear.in_features)  # LoRA's A init (kaiming-uniform, a = sqrt 5)
        a.uniform_(-bound, bound, generator=generator)
        self.a = nn.Parameter(a.to(linear.weight.dtype))
        self.b = nn.Parameter(torch.zeros(linear.out_features, m * rank, dtype=linear.weight.dtype))
        object.__setattr__(self, "_owner", owner)  # not a submodule: no cycle in the module tree

    def hook(self, module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        gate = self._owner.gate  # [B, m*r]: w_k repeated over delta k's r ranks
        if gate is None:
            return output
        x = inputs[0]
        if x.shape[0] != gate.shape[0]:
            raise RuntimeError(f"weight adapters: {x.shape[0]} rows but weights for {gate.shape[0]}")
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (gate.shape[1],)
        return output + ((x @ self.a.t()) * gate.to(x.dtype).view(shape)) @ self.b.t()


class WeightAdapters(nn.Module):
    """Per-objective low-rank deltas on every ``nn.Linear`` of ``decoder``, gated by ``w``.

    ``tags`` maps token ids to what they say about ``w``: with ``per_objective`` (the
    steering spec's level tokens) each token is one objective's value and a tag is the first
    ``m`` such tokens of a row, in objective order; otherwise each token is a whole weight
    vector (one token per grid vector, as the N-grams benchmark's tags) and the first one counts.
    """

    def __init__(self, decoder: nn.Module, tags: dict[int, Any], m: int, rank: int, *, per_objective: bool = True,
                 seed: int = 0):
        super().__init__()
        if rank < 1:
            raise ValueError(f"weight adapters: rank must be >= 1, got {rank}")
        self.m, self.rank, self.per_objective = m, rank, per_objective
        self.current: torch.Tensor | None = None  # [B, m], the rows' weights
        self.gate: torch.Tensor | None = None  # [B, m*r]
        gen = torch.Generator().manual_seed(seed)
        self.deltas = nn.ModuleDict()
        for name, module in decoder.named_modules():
            if isinstance(module, nn.Linear):
                delta = _Delta(self, module, m, rank, gen)
                self.deltas[name.replace(".", "__")] = delta
                module.register_forward_hook(delta.hook)
        if not self.deltas:
            raise ValueError(f"weight adapters: {type(decoder).__name__} has no nn.Linear layer to adapt")
        decoder.register_forward_pre_hook(self.read_weights, with_kwargs=True)
        width = 1 if per_objective else m
        table = torch.zeros(max(tags) + 1, width)
        known = torch.zeros(max(tags) + 1, dtype=torch.bool)
        for token, value in tags.items():
            table[token] = torch.as_tensor(value, dtype=torch.float32).reshape(width)
            known[token] = True
        self.register_buffer("tag_value", table, persistent=False)
        self.register_buffer("is_tag", known, persistent=False)

    def read_weights(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            raise RuntimeError("weight adapters read the weight from input_ids; got inputs_embeds only")
        cache = kwargs.get("past_key_values", kwargs.get("cache"))  # the name differs by transformers version
        continuing = cache is not None and hasattr(cache, "get_seq_length") and cache.get_seq_length() > 0
        if continuing:  # a decoding step keeps its prompt's weights (even if it sampled a tag token)
            if self.current is None or self.current.shape[0] != ids.shape[0]:
                raise RuntimeError("weight adapters: a cached decoding step without the prompt's weights")
            return
        inside = ids < self.is_tag.shape[0]
        safe = torch.where(inside, ids, torch.zeros_like(ids))
        is_tag = self.is_tag.to(ids.device)[safe] & inside
        values = self.tag_value.to(ids.device)[safe]  # [B, T, width]
        order = torch.cumsum(is_tag.long(), dim=1)  # the j-th tag token of its row has order j
        need = self.m if self.per_objective else 1
        found = is_tag.sum(dim=1)
        if bool(((found > 0) & (found < need)).any()):
            raise ValueError(f"weight adapters: a row carries {int(found[(found > 0) & (found < need)][0])} "
                             f"level tokens; a weight tag has {need}")
        if self.per_objective:
            picks = torch.stack([is_tag & (order == k + 1) for k in range(self.m)], dim=-1)  # [B, T, m]
            w = (values * picks).sum(dim=1)
        else:
            w = (values * (is_tag & (order == 1))[..., None]).sum(dim=1)
        self.current = w.float()
        self.gate = self.current.repeat_interleave(self.rank, dim=1)


def _decoder(model: Any) -> nn.Module:
    from feedalign.policies.hf import unwrap_model

    return unwrap_model(model).get_decoder()


def find(model: Any) -> WeightAdapters | None:
    """The adapters attached to ``model`` (None if there are none)."""
    from feedalign.policies.hf import unwrap_model

    return getattr(unwrap_model(model), MODULE_NAME, None)


def attach(model: Any, spec: Any, tokenizer: Any) -> WeightAdapters:
    """Give ``model`` the weight adapters of ``spec`` (rank ``spec.adapter_rank``), freeze
    everything else; idempotent."""
    existing = find(model)
    if existing is not None:
        return existing
    if spec.render != "tokens":
        raise ValueError("steer.adapter_rank needs render: tokens (the adapters read the weight's level tokens)")
    ids = [tokenizer.convert_tokens_to_ids(t) for t in spec.level_tokens()]
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise ValueError("weight adapters: the tokenizer lacks the level tokens (SteeringSpec.prepare first)")
    tags = {token: level / spec.grid for level, token in enumerate(ids)}
    return attach_tags(model, tags, spec.m, spec.adapter_rank, per_objective=True, seed=spec.seed)


def attach_tags(model: Any, tags: dict[int, Any], m: int, rank: int, *, per_objective: bool, seed: int = 0
                ) -> WeightAdapters:
    """Weight adapters that read ``tags`` (see :class:`WeightAdapters`); freezes the rest."""
    from feedalign.policies.hf import unwrap_model

    base = unwrap_model(model)
    param = next(base.parameters())
    adapters = WeightAdapters(_decoder(model), tags, m, rank, per_objective=per_objective, seed=seed)
    adapters = adapters.to(param.device)
    for p in base.parameters():
        p.requires_grad_(False)
    base.add_module(MODULE_NAME, adapters)
    for p in adapters.parameters():
        p.requires_grad_(True)
    return adapters


def attach_for_run(specs: list[Any], model: Any, tokenizer: Any, *, lora: bool, packing: bool) -> WeightAdapters | None:
    """The weight adapters of a run whose steered sources are ``specs`` (None when no spec
    asks for them). Every steered source must then use the same objectives, grid and rank:
    one model mixes one set of deltas."""
    ranked = [s for s in specs if s.adapter_rank]
    if not ranked:
        return None
    first = ranked[0]
    for spec in specs:
        same = (spec.objectives, spec.grid, spec.adapter_rank) == (first.objectives, first.grid, first.adapter_rank)
        if not same:
            raise ValueError("weight adapters: every steered source needs the same objectives, grid and "
                             f"adapter_rank; got {list(spec.objectives)}/{spec.grid}/{spec.adapter_rank} and "
                             f"{list(first.objectives)}/{first.grid}/{first.adapter_rank}")
    if lora:
        raise ValueError("steer.adapter_rank replaces model.lora (the base model stays frozen); drop model.lora")
    if packing:
        raise ValueError("steer.adapter_rank reads one weight per row; train.packing puts several examples in "
                         "a row: set train.packing: false")
    return attach(model, first, tokenizer)


def base_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """``model``'s state dict without the adapters (what ``save_pretrained`` should write)."""
    prefix = MODULE_NAME + "."
    return {k: v for k, v in model.state_dict().items() if not k.startswith(prefix)}


def save(model: Any, directory: str | os.PathLike[str]) -> Path | None:
    """Write the adapters' tensors to ``directory/weight_adapters.safetensors`` (if any)."""
    from safetensors.torch import save_file

    adapters = find(model)
    if adapters is None:
        return None
    path = Path(directory) / ADAPTERS_FILE
    save_file({k: v.detach().cpu().contiguous() for k, v in adapters.state_dict().items()}, str(path))
    return path


def load_saved(model: Any, tokenizer: Any, directory: str | os.PathLike[str]) -> Any:
    """``model`` with the weight adapters saved in ``directory`` (unchanged when it has none)."""
    from safetensors.torch import load_file

    path = Path(directory) / ADAPTERS_FILE
    if not path.is_file():
        return model
    from feedalign.multiobjective.steer_io import load_spec

    adapters = attach(model, load_spec(directory), tokenizer)
    adapters.load_state_dict(load_file(str(path)))
    return model
