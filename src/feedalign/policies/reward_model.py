"""A multi-objective reward model: one shared backbone, one linear head per objective.

The backbone is a transformer without its LM head (``transformers.AutoModel``, or the decoder
of a causal LM). A sequence ``prompt + completion (+ eos)`` is encoded and the hidden state of
its LAST real token is read by every head, giving one raw score per objective
(docs/ALGORITHMS.md 2.3: one head per objective, each trained on that objective's pairs or
thumbs).

Each head also carries normalisation statistics (mean and std of its raw scores over pi_ref
samples or the training completions) so that weighted sums ``w . r`` compare objectives on one
scale; :meth:`MultiObjectiveRewardModel.score` applies them unless told not to.

On disk (``save`` / ``load``)::

    RM_DIR/reward_model.json   format, objectives, pooling, hidden size, normalisation stats
    RM_DIR/heads.safetensors   "<objective>.weight" [1, hidden], "<objective>.bias" [1]
    RM_DIR/backbone/           the backbone's save_pretrained directory
    RM_DIR/tokenizer files     when a tokenizer is given to ``save``
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

FORMAT = "feedalign.reward_model"
FORMAT_VERSION = 1
CONFIG_FILE = "reward_model.json"
HEADS_FILE = "heads.safetensors"
BACKBONE_DIR = "backbone"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


def _check_objectives(objectives: Sequence[str]) -> tuple[str, ...]:
    names = tuple(objectives)
    if not names:
        raise ValueError("MultiObjectiveRewardModel: needs at least one objective")
    bad = [n for n in names if not isinstance(n, str) or not _NAME.match(n)]
    if bad:
        raise ValueError(
            f"MultiObjectiveRewardModel: objective names {bad} are not plain identifiers "
            "(letters, digits, '_' or '-', not starting with a digit)"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"MultiObjectiveRewardModel: duplicate objective names in {list(names)}")
    return names


def last_token_index(attention_mask: Tensor) -> Tensor:
    """Index ``[B]`` of the last attended token of each row (left or right padding)."""
    positions = torch.arange(1, attention_mask.shape[-1] + 1, device=attention_mask.device)
    return (attention_mask.long() * positions).argmax(dim=-1)


class MultiObjectiveRewardModel(nn.Module):
    """Shared backbone + ``len(objectives)`` linear heads.

    Args:
        backbone: a module returning ``last_hidden_state [B, T, H]`` when called with
            ``input_ids`` and ``attention_mask`` (a ``transformers`` base model).
        objectives: head names, in the order of the score columns.
        hidden_size: ``H``; read from ``backbone.config.hidden_size`` when omitted.
        seed: seeds the head initialisation (normal, std 1/sqrt(H); zero bias) without
            touching the global RNG.
    """

    def __init__(
        self,
        backbone: nn.Module,
        objectives: Sequence[str],
        *,
        hidden_size: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.objectives = _check_objectives(objectives)
        if hidden_size is None:
            hidden_size = int(backbone.config.hidden_size)
        self.hidden_size = hidden_size
        self.backbone = backbone
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.heads = nn.ModuleDict({name: nn.Linear(hidden_size, 1) for name in self.objectives})
            for head in self.heads.values():
                nn.init.normal_(head.weight, std=hidden_size**-0.5)
                nn.init.zeros_(head.bias)
        m = len(self.objectives)
        self.register_buffer("norm_mean", torch.zeros(m))
        self.register_buffer("norm_std", torch.ones(m))
        self.norm_source: str | None = None

    # ------------------------------------------------------------------ building
    @classmethod
    def from_causal_lm(cls, causal_lm: nn.Module, objectives: Sequence[str], *, seed: int = 0) -> MultiObjectiveRewardModel:
        """Reuse a causal LM's decoder (its LM head is dropped) as the backbone."""
        get_decoder = getattr(causal_lm, "get_decoder", None)
        backbone = get_decoder() if callable(get_decoder) else None
        if backbone is None:
            backbone = getattr(causal_lm, "base_model", causal_lm)
        return cls(backbone, objectives, hidden_size=int(causal_lm.config.hidden_size), seed=seed)

    @classmethod
    def from_pretrained_backbone(
        cls, path: str | os.PathLike[str], objectives: Sequence[str], *, seed: int = 0, dtype: Any = None
    ) -> MultiObjectiveRewardModel:
        """Load ``AutoModel.from_pretrained(path)`` (a causal LM checkpoint loads without
        its LM head) and add fresh heads."""
        from transformers import AutoModel

        kwargs = {"dtype": dtype} if dtype is not None else {}
        backbone = AutoModel.from_pretrained(os.fspath(path), **kwargs)
        return cls(backbone, objectives, seed=seed)

    # ------------------------------------------------------------------- scoring
    def index(self, objective: str) -> int:
        try:
            return self.objectives.index(objective)
        except ValueError:
            raise KeyError(
                f"reward model has no head {objective!r}; heads: {list(self.objectives)}"
            ) from None

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Raw (unnormalised) scores ``[B, m]`` in fp32, differentiable."""
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        pooled = hidden[rows, last_token_index(attention_mask)].float()
        return torch.cat([self.heads[name](pooled) for name in self.objectives], dim=-1)

    def normalize(self, raw_scores: Tensor) -> Tensor:
        """``(raw - mean) / std`` per column; columns follow ``objectives``."""
        mean = self.norm_mean.to(raw_scores)
        std = self.norm_std.to(raw_scores)
        return (raw_scores - mean) / std

    def set_normalization(self, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor, source: str) -> None:
        """Store per-head statistics; a std <= 1e-8 (a constant head) is replaced by 1."""
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        m = len(self.objectives)
        if mean_t.numel() != m or std_t.numel() != m:
            raise ValueError(f"set_normalization: expected {m} means and stds, got {mean_t.numel()}, {std_t.numel()}")
        if not (torch.isfinite(mean_t).all() and torch.isfinite(std_t).all()):
            raise ValueError("set_normalization: statistics must be finite")
        std_t = torch.where(std_t > 1e-8, std_t, torch.ones_like(std_t))
        self.norm_mean.copy_(mean_t)
        self.norm_std.copy_(std_t)
        self.norm_source = source

    @torch.no_grad()
    def score(
        self,
        tokenizer: Any,
        prompts: Sequence[str],
        completions: Sequence[str],
        *,
        normalize: bool = True,
        batch_size: int = 32,
        max_length: int = 512,
    ) -> Tensor:
        """Scores ``[B, m]`` (fp32, on the model's device, no grad) of aligned text lists."""
        if len(prompts) != len(completions):
            raise ValueError(f"score: {len(prompts)} prompts but {len(completions)} completions")
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out = []
        try:
            for start in range(0, len(prompts), batch_size):
                batch = encode_texts(
                    tokenizer, prompts[start : start + batch_size], completions[start : start + batch_size], max_length
                )
                raw = self(batch["input_ids"].to(device), batch["attention_mask"].to(device))
                out.append(self.normalize(raw) if normalize else raw)
        finally:
            self.train(was_training)
        if not out:
            return torch.zeros(0, len(self.objectives), device=device)
        return torch.cat(out)

    @torch.no_grad()
    def fit_normalization(
        self, tokenizer: Any, prompts: Sequence[str], completions: Sequence[str], *, source: str, **kwargs: Any
    ) -> None:
        """Set each head's mean/std from its raw scores on ``(prompts, completions)``, e.g. pi_ref
        samples (ALGORITHMS 2.3) or the distinct training completions."""
        if len(prompts) < 2:
            raise ValueError(f"fit_normalization: need at least 2 samples, got {len(prompts)}")
        raw = self.score(tokenizer, prompts, completions, normalize=False, **kwargs)
        self.set_normalization(raw.mean(0).cpu(), raw.std(0).cpu(), source)

    # ---------------------------------------------------------------- persistence
    def save(self, directory: str | os.PathLike[str], tokenizer: Any = None) -> Path:
        """Write the model (and the tokenizer, if given) to ``directory``; returns it."""
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(directory / BACKBONE_DIR)
        tensors = {}
        for name, head in self.heads.items():
            tensors[f"{name}.weight"] = head.weight.detach().float().cpu().contiguous()
            tensors[f"{name}.bias"] = head.bias.detach().float().cpu().contiguous()
        save_file(tensors, str(directory / HEADS_FILE))
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "objectives": list(self.objectives),
            "pooling": "last_token",
            "hidden_size": self.hidden_size,
            "normalization": {
                "mean": self.norm_mean.tolist(),
                "std": self.norm_std.tolist(),
                "source": self.norm_source,
            },
        }
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if tokenizer is not None:
            tokenizer.save_pretrained(str(directory))
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, device: Any = None, dtype: Any = None) -> MultiObjectiveRewardModel:
        """Read a directory written by :meth:`save`."""
        from safetensors.torch import load_file
        from transformers import AutoModel

        directory = Path(directory)
        meta = read_metadata(directory)
        kwargs = {"dtype": dtype} if dtype is not None else {}
        backbone = AutoModel.from_pretrained(str(directory / BACKBONE_DIR), **kwargs)
        model = cls(backbone, meta["objectives"], hidden_size=int(meta["hidden_size"]))
        heads = load_file(str(directory / HEADS_FILE))
        for name, head in model.heads.items():
            for part in ("weight", "bias"):
                key = f"{name}.{part}"
                if key not in heads:
                    raise ValueError(f"{directory / HEADS_FILE}: missing tensor {key!r}")
                getattr(head, part).data.copy_(heads[key])
        norm = meta.get("normalization") or {}
        if norm.get("mean") is not None:
            model.set_normalization(norm["mean"], norm["std"], norm.get("source") or "saved")
            model.norm_source = norm.get("source")
        model.eval()
        return model.to(device) if device is not None else model


def read_metadata(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``reward_model.json`` of an RM directory, checked."""
    path = Path(directory) / CONFIG_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path}: not found; expected a reward-model directory written by `feedalign rm train`"
        ) from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: field 'format' is {meta.get('format')!r}; expected {FORMAT!r}")
    for key in ("objectives", "hidden_size"):
        if key not in meta:
            raise ValueError(f"{path}: field {key!r} is missing")
    return meta


def load_reward_model(directory: str | os.PathLike[str], *, device: Any = None) -> tuple[MultiObjectiveRewardModel, Any]:
    """``(model, tokenizer)`` from an RM directory (the tokenizer saved next to it)."""
    from transformers import AutoTokenizer

    model = MultiObjectiveRewardModel.load(directory, device=device)
    tokenizer = AutoTokenizer.from_pretrained(os.fspath(directory))
    return model, tokenizer


def encode_texts(tokenizer: Any, prompts: Sequence[str], completions: Sequence[str], max_length: int) -> dict[str, Tensor]:
    """Right-padded ``input_ids`` / ``attention_mask`` for ``prompt + completion + eos``.

    The same layout as the policy's (``feedalign.data.collate``), so the pooled last token is
    the EOS that closes the completion.
    """
    from feedalign.data.collate import pad_batch, tokenize_example

    examples = [tokenize_example(tokenizer, p, c, max_length) for p, c in zip(prompts, completions)]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    return pad_batch(examples, pad_id)
