"""Margin rewards for MODPO: the other objectives' rewards, in reward units, detached.

MODPO trains on pairs of ONE objective k and needs ``m(x, y) = r_{-k}(x, y)``, the rewards of
the other objectives, for both sides of each pair (docs/ALGORITHMS.md 10). A margin source
is any callable ``(prompts, completions) -> Tensor [B, m-1]`` (float32, no grad); the columns
follow the order of the other objectives, matching the loss's ``margin_weights``.

Sources:
  * :class:`RewardModelMargins`   selected heads of a trained multi-objective reward model
    (normalised by default, so ``w . r`` mixes comparable scales);
  * :class:`ImplicitRewardMargins`   ``beta * (logp_adapter(y|x) - logp_ref(y|x))`` of a model
    (a LoRA adapter on the same base, or a separate model dir) trained by DPO on another
    objective; the reference is the base with the adapter disabled, or a given model;
  * :class:`LengthMargins`   ``-scale * length(y)`` in tokens, characters or words;
  * :class:`CallableMargins`   any user function, its output checked and detached;
  * :class:`StackedMargins`   columns of several sources side by side (m > 2).

:func:`build_margin_source` builds one from ``(kind, target, options)`` as written in a
config's ``margins:`` block, through the one registry of kinds in
:mod:`feedalign.multiobjective.margin_sources` (re-exported here).

torch, numpy and the standard library at import time; transformers/peft inside the classes.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

__all__ = [
    "MarginSource",
    "RewardModelMargins",
    "ImplicitRewardMargins",
    "LengthMargins",
    "CallableMargins",
    "StackedMargins",
    "PromptMappedMargins",
    "build_margin_source",
    "import_target",
    "MARGIN_SOURCE_FACTORIES",
    "BUILTIN_MARGINS",
]


class MarginSource(Protocol):
    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor: ...


def import_target(target: str) -> Callable[..., Any]:
    """Import ``"package.module:attr"`` (``attr`` may be dotted) and check it is callable."""
    module_name, sep, attr = str(target).partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{target!r} must look like 'package.module:function'")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module '{module_name}' of '{target}': {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"module '{module_name}' has no attribute '{attr}' (from '{target}')")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"'{target}' is not callable")
    return obj


def as_margins(values: Any, n: int, *, width: int | None = None, where: str = "margin source") -> Tensor:
    """``values`` as a detached float32 ``[n, k]`` tensor (a ``[n]`` vector becomes ``[n, 1]``)."""
    out = torch.as_tensor(values, dtype=torch.float32)
    if out.dim() == 1:
        out = out[:, None]
    if out.dim() != 2 or out.shape[0] != n:
        raise ValueError(f"{where}: returned shape {tuple(out.shape)} for {n} rows; expected [{n}, m-1]")
    if width is not None and out.shape[1] != width:
        raise ValueError(f"{where}: returned {out.shape[1]} margin columns; expected {width}")
    if not torch.isfinite(out).all():
        raise ValueError(f"{where}: returned non-finite margins")
    return out.detach()


def _default_device(device: Any) -> Any:
    """``device``, else the current CUDA device when there is one (the trainer's device under
    accelerate, which sets it per process), else the CPU."""
    if device is not None:
        return device
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def _check_lengths(prompts: Sequence[str], completions: Sequence[str]) -> None:
    if len(prompts) != len(completions):
        raise ValueError(f"margins: {len(prompts)} prompts but {len(completions)} completions")


@contextlib.contextmanager
def _frozen_eval(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and no grad inside; training flags and requires_grad restored after."""
    modes = {m: m.training for m in model.modules()}
    grads = {p: p.requires_grad for p in model.parameters()}
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, mode in modes.items():
            module.training = mode
        for param, flag in grads.items():
            param.requires_grad_(flag)


# --------------------------------------------------------------------------- reward model


class RewardModelMargins:
    """Selected heads of a :class:`~feedalign.policies.reward_model.MultiObjectiveRewardModel`.

    Args:
        model, tokenizer: the reward model and its tokenizer.
        heads: objective names, one margin column each, in ``margin_weights`` order.
        normalize: apply the heads' stored mean/std (recommended; ALGORITHMS 2.3).
        scale: multiplies every margin (reward units relative to the policy's beta).
    """

    def __init__(self, model: Any, tokenizer: Any, heads: Sequence[str], *, normalize: bool = True,
                 scale: float = 1.0, batch_size: int = 32, max_length: int = 512) -> None:
        if isinstance(heads, str):
            heads = [heads]
        self.model, self.tokenizer, self.heads = model, tokenizer, tuple(heads)
        self.columns = [model.index(h) for h in self.heads]
        self.normalize, self.scale = normalize, float(scale)
        self.batch_size, self.max_length = batch_size, max_length

    @classmethod
    def from_dir(cls, directory: str | os.PathLike[str], heads: Sequence[str], *, device: Any = None, **kwargs: Any) -> RewardModelMargins:
        from feedalign.policies.reward_model import load_reward_model

        model, tokenizer = load_reward_model(directory, device=_default_device(device))
        return cls(model, tokenizer, heads, **kwargs)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        _check_lengths(prompts, completions)
        with _frozen_eval(self.model):
            scores = self.model.score(self.tokenizer, list(prompts), list(completions), normalize=self.normalize,
                                      batch_size=self.batch_size, max_length=self.max_length)
        return as_margins(scores[:, self.columns].cpu() * self.scale, len(prompts), where="reward-model margins")


# --------------------------------------------------------------------------- implicit reward


class ImplicitRewardMargins:
    """``beta * (logp_model(y|x) - logp_ref(y|x))``: the implicit reward of a DPO-trained model.

    Args:
        model: a causal LM. If it is a peft model and ``reference`` is None, the reference is
            the same model with its adapters disabled; ``adapter_name`` selects which of its
            adapters scores (the previously active adapter, ``requires_grad`` flags and
            train/eval modes are restored after each call, so the model may be the policy being
            trained with the margin adapter loaded next to its own).
        tokenizer: the tokenizer of ``model``.
        beta: the beta the margin model was trained with (MODPO uses the same beta).
        reference: a separate reference causal LM (for a full fine-tuned margin model).
    """

    def __init__(self, model: Any, tokenizer: Any, *, beta: float, reference: Any = None,
                 adapter_name: str | None = None, batch_size: int = 16, max_length: int = 512,
                 chunk_size: int = 1024) -> None:
        if beta <= 0:
            raise ValueError(f"ImplicitRewardMargins: beta must be > 0, got {beta}")
        if reference is None and not hasattr(model, "disable_adapter"):
            raise ValueError("ImplicitRewardMargins: give `reference` or a peft model whose adapter can be disabled")
        self.model, self.tokenizer, self.beta, self.reference = model, tokenizer, float(beta), reference
        self.adapter_name = adapter_name
        self.batch_size, self.max_length, self.chunk_size = batch_size, max_length, chunk_size

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], *, beta: float, base: str | None = None,
                        reference: str | None = None, tokenizer: str | None = None, dtype: str = "auto",
                        device: Any = None, adapter_name: str = "margin", **kwargs: Any) -> ImplicitRewardMargins:
        """From a saved LoRA adapter dir (base: ``base`` or the adapter's recorded base model;
        reference: the base, adapter disabled) or a full model dir (``reference`` required)."""
        from feedalign.policies.hf import load_causal_lm, load_tokenizer

        path = os.fspath(path)
        ref_model = None
        if os.path.exists(os.path.join(path, "adapter_config.json")):
            from peft import PeftConfig, PeftModel

            base_path = base or PeftConfig.from_pretrained(path).base_model_name_or_path
            if not base_path:
                raise ValueError(f"{path}: the adapter names no base model; pass `base`")
            model = PeftModel.from_pretrained(load_causal_lm(base_path, dtype=dtype), path, adapter_name=adapter_name)
            tok_path = tokenizer or (path if os.path.exists(os.path.join(path, "tokenizer_config.json")) else base_path)
        else:
            if reference is None:
                raise ValueError(f"{path}: a full margin model needs `reference` (the model it was trained from)")
            model, ref_model = load_causal_lm(path, dtype=dtype), load_causal_lm(reference, dtype=dtype)
            tok_path, adapter_name = tokenizer or path, None
        device = _default_device(device)
        model.to(device)
        if ref_model is not None:
            ref_model.to(device)
        return cls(model, load_tokenizer(tok_path), beta=beta, reference=ref_model, adapter_name=adapter_name, **kwargs)

    @classmethod
    def attach(cls, peft_model: Any, adapter_dir: str | os.PathLike[str], tokenizer: Any, *, beta: float,
               adapter_name: str = "margin", **kwargs: Any) -> ImplicitRewardMargins:
        """Load ``adapter_dir`` as a second (frozen) adapter of ``peft_model`` and score with it:
        one base in memory for the policy, its reference and the margin model."""
        active = peft_model.active_adapter
        grads = {p: p.requires_grad for p in peft_model.parameters()}
        modes = {m: m.training for m in peft_model.modules()}
        peft_model.load_adapter(os.fspath(adapter_dir), adapter_name=adapter_name, is_trainable=False)
        peft_model.set_adapter(active)
        for param, flag in grads.items():
            param.requires_grad_(flag)
        for module in peft_model.modules():  # new adapter modules follow their parent's mode
            module.training = modes.get(module, False)
        return cls(peft_model, tokenizer, beta=beta, adapter_name=adapter_name, **kwargs)

    def _logps(self, model: Any, batch: dict[str, Tensor]) -> Tensor:
        from feedalign.policies.hf import sequence_logps

        device = next(model.parameters()).device
        return sequence_logps(model, batch["input_ids"].to(device), batch["attention_mask"].to(device),
                              batch["completion_mask"].to(device), chunk_size=self.chunk_size).float().cpu()

    @contextlib.contextmanager
    def _adapter(self) -> Iterator[None]:
        if self.adapter_name is None or not hasattr(self.model, "set_adapter"):
            yield
            return
        previous = self.model.active_adapter
        self.model.set_adapter(self.adapter_name)
        try:
            yield
        finally:
            self.model.set_adapter(previous)

    def log_ratios(self, prompts: Sequence[str], completions: Sequence[str]) -> tuple[Tensor, Tensor]:
        """``(logp_model [B], logp_ref [B])`` fp32, no grad."""
        from feedalign.policies.reward_model import encode_texts

        _check_lengths(prompts, completions)
        policy, reference = [], []
        models = [self.model] + ([self.reference] if self.reference is not None else [])
        with contextlib.ExitStack() as stack:
            for model in models:
                stack.enter_context(_frozen_eval(model))
            for start in range(0, len(prompts), self.batch_size):
                sl = slice(start, start + self.batch_size)
                batch = encode_texts(self.tokenizer, list(prompts[sl]), list(completions[sl]), self.max_length)
                with self._adapter():
                    policy.append(self._logps(self.model, batch))
                if self.reference is not None:
                    reference.append(self._logps(self.reference, batch))
                else:
                    with self.model.disable_adapter():
                        reference.append(self._logps(self.model, batch))
        empty = torch.zeros(0)
        return (torch.cat(policy) if policy else empty), (torch.cat(reference) if reference else empty)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        policy, reference = self.log_ratios(prompts, completions)
        return as_margins(self.beta * (policy - reference), len(prompts), width=1, where="implicit-reward margins")


# --------------------------------------------------------------------------- simple sources


class LengthMargins:
    """``-scale * length(completion)``: a length penalty as a margin (MODPO's hand-made reward).

    ``unit`` is ``tokens`` (needs ``tokenizer``; the EOS is not counted), ``chars`` or ``words``
    (whitespace-separated).
    """

    UNITS = ("tokens", "chars", "words")

    def __init__(self, unit: str = "tokens", *, tokenizer: Any = None, scale: float = 1.0) -> None:
        if unit not in self.UNITS:
            raise ValueError(f"LengthMargins: unit={unit!r}; expected one of {self.UNITS}")
        if unit == "tokens" and tokenizer is None:
            raise ValueError("LengthMargins: unit 'tokens' needs a tokenizer (or use unit 'chars' / 'words')")
        self.unit, self.tokenizer, self.scale = unit, tokenizer, float(scale)

    def _length(self, text: str) -> int:
        if self.unit == "chars":
            return len(text)
        if self.unit == "words":
            return len(text.split())
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        _check_lengths(prompts, completions)
        values = [-self.scale * self._length(c) for c in completions]
        return as_margins(values, len(completions), width=1, where="length margins")


class CallableMargins:
    """A user function ``(prompts, completions) -> [B, k]`` (array-like), checked and detached."""

    def __init__(self, fn: Callable[[Sequence[str], Sequence[str]], Any], *, name: str | None = None) -> None:
        self.fn, self.name = fn, name or getattr(fn, "__name__", "margin function")

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        _check_lengths(prompts, completions)
        with torch.no_grad():
            values = self.fn(list(prompts), list(completions))
        if isinstance(values, Tensor):
            values = values.detach().float().cpu()
        return as_margins(values, len(prompts), where=f"margin function {self.name!r}")


class StackedMargins:
    """Columns of several sources, concatenated in order (one per other objective)."""

    def __init__(self, sources: Sequence[MarginSource]) -> None:
        if not sources:
            raise ValueError("StackedMargins: needs at least one source")
        self.sources = list(sources)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        parts = [as_margins(s(prompts, completions), len(prompts)).cpu() for s in self.sources]
        return torch.cat(parts, dim=1)


class PromptMappedMargins:
    """Calls ``inner`` on ``prompt_fn(prompt)``, e.g. the prompt without a steering prefix."""

    def __init__(self, inner: MarginSource, prompt_fn: Callable[[str], str]) -> None:
        self.inner, self.prompt_fn = inner, prompt_fn

    def __call__(self, prompts: Sequence[str], completions: Sequence[str]) -> Tensor:
        return self.inner([self.prompt_fn(p) for p in prompts], completions)


_REGISTRY_NAMES = ("BUILTIN_MARGINS", "MARGIN_SOURCE_FACTORIES", "build_margin_source", "margin_kinds",
                   "margin_source_from_config", "register_margin_source")


def __getattr__(name: str) -> Any:
    # The registry module imports the classes above, so it is re-exported lazily.
    if name in _REGISTRY_NAMES:
        from feedalign.multiobjective import margin_sources

        return getattr(margin_sources, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
