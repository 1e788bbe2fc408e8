"""Level tokens of ``render="tokens"`` steering: their embedding rows."""

from __future__ import annotations

from typing import Any

import torch


def grow_embeddings(spec: Any, model: Any, tokenizer: Any) -> bool:
    """Grow ``model``'s embeddings to ``len(tokenizer)``; returns whether it grew.

    The new level-token rows are ordinal: ``e(<w:v>) = mean + (1 - v) * a + v * b`` with
    ``a, b ~ N(0, std^2)`` per dimension (seeded by ``seed``; mean and std of the old
    rows), so the weights are told apart, and ordered, even when the embeddings stay frozen
    (e.g. LoRA). An untied output embedding gets the mean row for every new token.
    """
    emb = model.get_input_embeddings()
    old = emb.weight.shape[0]
    if len(tokenizer) <= old:
        return False
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    emb, out = model.get_input_embeddings(), model.get_output_embeddings()
    with torch.no_grad():
        base = emb.weight[:old].float()
        mean, std = base.mean(0), base.std(0)
        gen = torch.Generator().manual_seed(spec.seed)
        a, b = (torch.randn(base.shape[1], generator=gen) * std for _ in range(2))
        emb.weight[old:] = mean.to(emb.weight.dtype)
        for level, token in enumerate(spec.level_tokens()):
            row = tokenizer.convert_tokens_to_ids(token)
            if row is not None and row >= old:
                v = level / spec.grid
                emb.weight[row] = (mean + (1 - v) * a + v * b).to(emb.weight.dtype)
        if out is not None and out.weight is not emb.weight and out.weight.shape[0] > old:
            out.weight[old:] = out.weight[:old].mean(0, keepdim=True)
    return True
