"""Rewarded soups: steer between objectives by interpolating fine-tuned weights.

Given policies ``theta_i`` fine-tuned from the SAME initialisation, each on one objective,
the policy for preference ``lambda`` on the simplex is ``theta(lambda) = sum_i lambda_i *
theta_i`` (Rame et al., "Rewarded soups", arXiv 2306.04488; docs/ALGORITHMS.md 12.1). It
relies on linear mode connectivity and carries no guarantee of reaching pi*_lambda.

LoRA: interpolate the merged updates ``Delta W_i = scaling * B_i @ A_i`` (or full weights
after merging), never the factors ``A_i`` and ``B_i`` separately: averaging the factors
produces cross terms ``B_i @ A_j`` and a different matrix. With peft, call
``merge_and_unload()`` on each model and interpolate the resulting full state dicts, or use
:func:`interpolate_lora_deltas` per adapted matrix.

Adapters of peft models: :func:`soup_lora_adapters` merges every per-objective LoRA adapter
into its own copy of the shared base (``W + scaling * B A``), then averages the merged weights
with :func:`interpolate_state_dicts`; peft is imported only there.
"""

from __future__ import annotations

import copy
import os

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from feedalign.multiobjective.weights import validate_weights

__all__ = [
    "interpolate_state_dicts",
    "lora_delta",
    "interpolate_lora_deltas",
    "soup_lora_adapters",
    "SoupPolicy",
]


def interpolate_state_dicts(
    state_dicts: Sequence[Mapping[str, torch.Tensor]], weights: Any
) -> dict[str, torch.Tensor]:
    """``sum_i weights[i] * state_dicts[i]`` key by key.

    Floating-point (and complex) tensors are averaged, accumulating in at least float32 and
    cast back to their dtype. Other tensors (integer buffers, boolean masks) are copied from
    the first state dict after checking that all dicts hold the same values. Output tensors
    never alias the inputs.

    Args:
        state_dicts: ``N >= 1`` state dicts with identical keys, shapes and dtypes.
        weights: ``[N]`` weights on the simplex.

    Raises:
        ValueError: naming the key and the state dict index on any mismatch, or the weight
            vector if it is not on the simplex.
    """
    if len(state_dicts) == 0:
        raise ValueError("interpolate_state_dicts: need at least one state dict")
    lam = validate_weights(weights, len(state_dicts), name="soup weights")
    first = state_dicts[0]
    _check_same_keys(state_dicts)
    merged: dict[str, torch.Tensor] = {}
    for key, base in first.items():
        tensors = [sd[key] for sd in state_dicts]
        for i, t in enumerate(tensors[1:], start=1):
            if t.shape != base.shape or t.dtype != base.dtype:
                raise ValueError(
                    f"interpolate_state_dicts: key '{key}' is {tuple(t.shape)} {t.dtype} in "
                    f"state dict {i} but {tuple(base.shape)} {base.dtype} in state dict 0"
                )
        if base.is_floating_point() or base.is_complex():
            acc_dtype = torch.promote_types(base.dtype, torch.float32)
            acc = torch.zeros(base.shape, dtype=acc_dtype, device=base.device)
            for coef, t in zip(lam.tolist(), tensors):
                acc.add_(t.detach().to(device=base.device, dtype=acc_dtype), alpha=coef)
            merged[key] = acc.to(base.dtype)
        else:
            for i, t in enumerate(tensors[1:], start=1):
                if not torch.equal(t.to(base.device), base):
                    raise ValueError(
                        f"interpolate_state_dicts: non-float key '{key}' ({base.dtype}) differs "
                        f"between state dict 0 and {i}; it cannot be interpolated"
                    )
            merged[key] = base.detach().clone()
    return merged


def _check_same_keys(state_dicts: Sequence[Mapping[str, torch.Tensor]]) -> None:
    keys = set(state_dicts[0])
    for i, sd in enumerate(state_dicts[1:], start=1):
        if set(sd) != keys:
            missing = sorted(keys - set(sd))[:5]
            extra = sorted(set(sd) - keys)[:5]
            raise ValueError(
                f"interpolate_state_dicts: state dict {i} keys differ from state dict 0 "
                f"(missing {missing}, extra {extra}); soups need models of one architecture"
            )


def lora_delta(A: torch.Tensor, B: torch.Tensor, scaling: float) -> torch.Tensor:
    """Merged LoRA update ``Delta W = scaling * B @ A``.

    Args:
        A: ``[r, in_features]`` (peft ``lora_A.weight``).
        B: ``[out_features, r]`` (peft ``lora_B.weight``).
        scaling: ``lora_alpha / r`` (``lora_alpha / sqrt(r)`` for rsLoRA).

    Returns:
        ``[out_features, in_features]``, to be added to the base ``weight``.
    """
    if A.ndim != 2 or B.ndim != 2 or B.shape[1] != A.shape[0]:
        raise ValueError(
            f"lora_delta: expected A [r, in] and B [out, r], got A {tuple(A.shape)}, "
            f"B {tuple(B.shape)}"
        )
    return scaling * (B @ A)


def interpolate_lora_deltas(
    factors: Sequence[tuple[torch.Tensor, torch.Tensor]],
    weights: Any,
    scaling: float | Sequence[float],
) -> torch.Tensor:
    """``sum_i weights[i] * lora_delta(A_i, B_i, scaling_i)`` for one adapted matrix.

    Args:
        factors: ``N`` pairs ``(A_i [r_i, in], B_i [out, r_i])``; ranks may differ.
        weights: ``[N]`` weights on the simplex.
        scaling: one scaling for all adapters or one per adapter.

    Returns:
        ``[out, in]`` update to add to the shared base weight.
    """
    lam = validate_weights(weights, len(factors), name="soup weights")
    scalings = [float(scaling)] * len(factors) if isinstance(scaling, (int, float)) else list(scaling)
    if len(scalings) != len(factors):
        raise ValueError(f"interpolate_lora_deltas: {len(scalings)} scalings for {len(factors)} adapters")
    deltas = [lora_delta(A, B, s) for (A, B), s in zip(factors, scalings)]
    if len({tuple(d.shape) for d in deltas}) != 1:
        raise ValueError(
            f"interpolate_lora_deltas: adapters update matrices of different shapes "
            f"{[tuple(d.shape) for d in deltas]}"
        )
    return sum(coef * d for coef, d in zip(lam.tolist(), deltas))

def _merged_state_dict(base: Any, adapter_dir: str) -> dict[str, torch.Tensor]:
    from peft import PeftModel

    merged = PeftModel.from_pretrained(copy.deepcopy(base), adapter_dir).merge_and_unload()
    return {k: v.detach() for k, v in merged.state_dict().items()}


def soup_lora_adapters(base: Any, adapter_dirs: Sequence[str | os.PathLike[str]], weights: Any) -> Any:
    """``sum_i weights[i] * (W + Delta W_i)``: each adapter merged into a copy of ``base``,
    then the merged weights averaged (never the LoRA factors). Streams: at most three full
    state dicts exist at once. Returns a new model; ``base`` is left unchanged.

    Args:
        base: the shared base causal LM (the adapters' initialisation).
        adapter_dirs: ``N`` saved peft LoRA adapters, one per objective.
        weights: ``[N]`` on the simplex.
    """
    lam = validate_weights(weights, len(adapter_dirs), name="soup weights")
    acc: dict[str, torch.Tensor] | None = None
    total = 0.0
    for coef, adapter in zip(lam.tolist(), adapter_dirs):
        if coef == 0.0:
            continue
        merged = _merged_state_dict(base, os.fspath(adapter))
        total += coef
        if acc is None:
            acc = merged
        else:  # running weighted mean: acc_i = (S_{i-1} acc_{i-1} + c_i sd_i) / S_i
            acc = interpolate_state_dicts([acc, merged], [1.0 - coef / total, coef / total])
    model = copy.deepcopy(base)
    model.load_state_dict(acc)
    return model


class SoupPolicy:
    """A rewarded soup of per-objective LoRA adapters: ``model_for(w)`` builds the merged model
    for a weight vector (adapters in objective order)."""

    def __init__(self, base: Any, adapter_dirs: Mapping[str, str] | Sequence[str], objectives: Sequence[str] | None = None):
        if isinstance(adapter_dirs, Mapping):
            objectives = list(objectives or adapter_dirs)
            missing = [o for o in objectives if o not in adapter_dirs]
            if missing:
                raise ValueError(f"SoupPolicy: no adapter for objectives {missing}")
            adapter_dirs = [adapter_dirs[o] for o in objectives]
        self.base, self.adapter_dirs = base, [os.fspath(a) for a in adapter_dirs]
        self.objectives = list(objectives or [f"objective_{i}" for i in range(len(self.adapter_dirs))])

    def model_for(self, w: Any) -> Any:
        return soup_lora_adapters(self.base, self.adapter_dirs, w)
