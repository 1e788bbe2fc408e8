"""Log-probs (and reward-model pooled states) of a prompt-shared pair batch.

The batch comes from ``data.shared_prompt.pack_shared_pairs``: B pairs in one row, each
prompt once. The transformer body runs once over the row; with the ``feedalign_varlen``
attention the segments are described by keyword arguments (``policies.varlen``), with
``eager`` / ``sdpa`` by an explicit ``[S, S]`` mask (correct, ``S^2`` memory). The scored
tokens are listed by the layout (the first chosen and the first rejected token are both
predicted from the last prompt position), go through the LM head in chunks
(``chunked_logps``) and are summed per row: chosen rows 0..B-1, then rejected rows B..2B-1,
the same values as ``policies.hf.sequence_logps`` of the unshared pair batch.
"""

from __future__ import annotations

from typing import Any

import torch

from feedalign.data.shared_prompt import num_rows, shared_block_mask


def _body_hidden(backbone: Any, batch: dict[str, Any], config: Any) -> torch.Tensor:
    """``[1, S, H]`` last hidden states of the shared row."""
    from feedalign.policies.varlen import VARLEN_ATTENTION, shared_attention_kwargs

    impl = getattr(config, "_attn_implementation", None)
    kwargs: dict[str, Any] = {}
    if impl == VARLEN_ATTENTION:
        kwargs.update(shared_attention_kwargs(batch))
        mask = None
    elif impl in ("eager", "sdpa"):
        dtype = torch.bool if impl == "sdpa" else next(backbone.parameters()).dtype
        mask = shared_block_mask(batch, dtype=dtype)
    else:
        raise ValueError(
            f"prompt-shared batches need the {VARLEN_ATTENTION!r}, 'sdpa' or 'eager' attention "
            f"implementation, not {impl!r} (set train.share_prompt: false)"
        )
    out = backbone(input_ids=batch["input_ids"], attention_mask=mask, position_ids=batch["position_ids"],
                   use_cache=False, **kwargs)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def shared_pair_logps(
    model: Any, batch: dict[str, Any], *, chunk_size: int = 1024, head_as_module: bool = False
) -> torch.Tensor:
    """``[2B]`` fp32 completion log-prob sums of a shared batch (chosen rows, then rejected
    rows), differentiable; ``head_as_module`` as in ``policies.hf.sequence_logps``."""
    from feedalign.policies.chunked_logps import linear_target_logps, module_target_logps
    from feedalign.policies.hf import _backbone, _check_head, _head_transform, unwrap_model

    base = unwrap_model(model)
    _check_head(base)
    hidden = _body_hidden(_backbone(base), batch, base.config)
    picked = hidden[0].index_select(0, batch["score_positions"])
    targets = batch["score_targets"]
    scale, softcap = _head_transform(base.config)
    head = base.get_output_embeddings()
    if not head_as_module and type(head) in (torch.nn.Linear, torch.nn.Embedding):
        logps = linear_target_logps(picked, head.weight, getattr(head, "bias", None), targets,
                                    chunk_size=chunk_size, scale=scale, softcap=softcap)
    else:  # e.g. a LoRA-wrapped lm_head, or DeepSpeed ZeRO-3
        logps = module_target_logps(picked, head, targets, chunk_size=chunk_size, scale=scale, softcap=softcap)
    out = torch.zeros(num_rows(batch), dtype=torch.float32, device=logps.device)
    return out.index_add(0, batch["score_rows"], logps)


def shared_pair_scores(reward_model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """Raw scores ``[2B, m]`` of a ``policies.reward_model.MultiObjectiveRewardModel`` for
    the rows of a shared batch (chosen rows, then rejected rows): every head reads the
    hidden state of each row's last token, as ``MultiObjectiveRewardModel.forward`` does on
    the unshared, padded rows."""
    from feedalign.data.shared_prompt import last_token_positions

    backbone = reward_model.backbone
    hidden = _body_hidden(backbone, batch, backbone.config)
    pooled = hidden[0].index_select(0, last_token_positions(batch)).float()
    return torch.cat([reward_model.heads[name](pooled) for name in reward_model.objectives], dim=-1)
