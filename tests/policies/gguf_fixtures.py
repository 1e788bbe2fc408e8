"""A tiny Llama written as a GGUF file with the ``gguf`` package's writer (no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from feedalign.policies.tiny import CHATML_TEMPLATE

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Byte-level BPE symbols (GPT-2 style: "Ġ" is a space, "Ċ" a newline).
SYMBOLS = list("abcdefghijklmnopqrstuvwxyz?.,!") + ["Ġ", "Ċ", "ab"]
MERGES = ["a b"]


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's rotary layout for q/k projections (transformers undoes it on load)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path: Path, *, seed: int = 0) -> tuple[Path, dict[str, torch.Tensor]]:
    """Write a 2-layer Llama (hidden 32) with a ChatML template; returns (path, the HF-layout
    float32 weights it holds)."""
    import gguf

    vocab = SPECIALS + SYMBOLS
    hidden, layers, heads, kv_heads, inter = 32, 2, 4, 2, 64
    head_dim = hidden // heads
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    hf: dict[str, np.ndarray] = {"model.embed_tokens.weight": w(len(vocab), hidden),
                                 "model.norm.weight": np.ones(hidden, np.float32), "lm_head.weight": w(len(vocab), hidden)}
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(128)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(inter)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(len(vocab))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(vocab)
    writer.add_token_types([3] * len(SPECIALS) + [1] * len(SYMBOLS))
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(2)
    writer.add_chat_template(CHATML_TEMPLATE)
    writer.add_tensor("token_embd.weight", hf["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", hf["model.norm.weight"])
    writer.add_tensor("output.weight", hf["lm_head.weight"])
    for i in range(layers):
        p = f"model.layers.{i}."
        layer = {
            "self_attn.q_proj.weight": w(heads * head_dim, hidden), "self_attn.k_proj.weight": w(kv_heads * head_dim, hidden),
            "self_attn.v_proj.weight": w(kv_heads * head_dim, hidden), "self_attn.o_proj.weight": w(hidden, heads * head_dim),
            "mlp.gate_proj.weight": w(inter, hidden), "mlp.up_proj.weight": w(inter, hidden),
            "mlp.down_proj.weight": w(hidden, inter), "input_layernorm.weight": np.ones(hidden, np.float32),
            "post_attention_layernorm.weight": np.ones(hidden, np.float32),
        }
        hf.update({p + k: v for k, v in layer.items()})
        names = {"self_attn.q_proj.weight": "attn_q", "self_attn.k_proj.weight": "attn_k", "self_attn.v_proj.weight": "attn_v",
                 "self_attn.o_proj.weight": "attn_output", "mlp.gate_proj.weight": "ffn_gate", "mlp.up_proj.weight": "ffn_up",
                 "mlp.down_proj.weight": "ffn_down", "input_layernorm.weight": "attn_norm",
                 "post_attention_layernorm.weight": "ffn_norm"}
        for key, short in names.items():
            tensor = layer[key]
            if short == "attn_q":
                tensor = _permute(tensor, heads)
            elif short == "attn_k":
                tensor = _permute(tensor, kv_heads)
            writer.add_tensor(f"blk.{i}.{short}.weight", tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path, {k: torch.from_numpy(v) for k, v in hf.items()}
