"""Tiny, randomly initialised causal LMs and tokenizers built locally.

Everything here is constructed in code (no download): a ``transformers`` config with a few
thousand parameters and a real ``tokenizers``-backed fast tokenizer, so that tests, examples
and the quickstart exercise the same code paths (``save_pretrained`` / ``from_pretrained``,
``generate``, peft) as a full-size model would.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3

_ARCHS = ("llama", "qwen2")


def build_tiny_causal_lm(
    vocab_size: int,
    *,
    arch: str = "llama",
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int = 128,
    seed: int = 0,
    tie_word_embeddings: bool = False,
    max_position_embeddings: int = 512,
    init_std: float = 0.02,
    pad_token_id: int = PAD_ID,
    bos_token_id: int = BOS_ID,
    eos_token_id: int = EOS_ID,
    attn_implementation: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Any:
    """A randomly initialised Llama or Qwen2 causal LM.

    Initialisation is seeded without touching the global RNG state. The default special token
    ids match ``build_char_tokenizer``.

    Args:
        vocab_size: number of token ids (use ``len(tokenizer)``).
        arch: "llama" or "qwen2" (Qwen2 adds biases to the q/k/v projections).
        init_std: standard deviation of the normal weight initialisation; larger values give
            peakier next-token distributions, which makes numerical tests more discriminating.
        attn_implementation: "eager", "sdpa", ... (None: the transformers default).
    """
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    if arch not in _ARCHS:
        raise ValueError(f"build_tiny_causal_lm: arch={arch!r} is not supported; expected one of {_ARCHS}")
    if hidden % heads or heads % kv_heads:
        raise ValueError(
            f"build_tiny_causal_lm: hidden ({hidden}) must be divisible by heads ({heads}) and heads by "
            f"kv_heads ({kv_heads})"
        )
    common = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_position_embeddings,
        initializer_range=init_std,
        tie_word_embeddings=tie_word_embeddings,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        use_cache=True,
    )
    config_cls, model_cls = (LlamaConfig, LlamaForCausalLM) if arch == "llama" else (Qwen2Config, Qwen2ForCausalLM)
    config = config_cls(**common)
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    model.to(dtype)
    model.generation_config.pad_token_id = pad_token_id
    model.generation_config.bos_token_id = bos_token_id
    model.generation_config.eos_token_id = eos_token_id
    return model


def build_char_tokenizer(
    vocab: str | Sequence[str],
    save_dir: str | os.PathLike[str] | None = None,
    *,
    level: str | None = None,
    add_bos: bool = True,
) -> Any:
    """A real ``PreTrainedTokenizerFast`` over a fixed alphabet or word list.

    Ids 0..3 are ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``; the symbols follow in the order
    given (duplicates dropped). ``level="char"`` (the default for a ``str``) makes every
    character, including spaces, one token and decodes by concatenation; ``level="word"``
    (the default for a sequence) splits on whitespace and decodes with single spaces.
    Unknown symbols map to ``<unk>``. With ``add_bos`` the tokenizer prepends ``<bos>`` when
    called with ``add_special_tokens=True`` (like Llama tokenizers).

    Args:
        vocab: an alphabet string, or a sequence of symbols (characters or words).
        save_dir: if given, ``save_pretrained`` there (loadable with ``AutoTokenizer``).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    level = level or ("char" if isinstance(vocab, str) else "word")
    if level not in ("char", "word"):
        raise ValueError(f"build_char_tokenizer: level={level!r}; expected 'char' or 'word'")
    symbols = list(dict.fromkeys(vocab))
    if level == "char" and any(len(s) != 1 for s in symbols):
        raise ValueError("build_char_tokenizer: level='char' needs single-character symbols")
    if level == "word" and any(not s or any(c.isspace() for c in s) for s in symbols):
        raise ValueError("build_char_tokenizer: level='word' needs non-empty symbols without whitespace")
    clash = sorted(set(symbols) & set(SPECIAL_TOKENS))
    if clash:
        raise ValueError(f"build_char_tokenizer: symbols {clash} clash with special tokens {SPECIAL_TOKENS}")
    table = {tok: i for i, tok in enumerate(list(SPECIAL_TOKENS) + symbols)}
    backend = Tokenizer(models.WordLevel(table, unk_token="<unk>"))
    if level == "char":
        backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
        backend.decoder = decoders.Fuse()
    else:
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if add_bos:
        backend.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", BOS_ID)]
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        padding_side="right",
    )
    if save_dir is not None:
        tokenizer.save_pretrained(os.fspath(save_dir))
    return tokenizer


# A ChatML-style template (as SmolLM2 / Qwen use): a default system turn, ``<|im_end|>``
# ends every turn, and the generation header is ``<|im_start|>assistant\n``.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nbe brief<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHAT_ALPHABET = "abcdefghijklmnopqrstuvwxyz ?.,!\n"


def build_chat_tokenizer(alphabet: str = CHAT_ALPHABET, *, template: str | None = CHATML_TEMPLATE) -> Any:
    """``build_char_tokenizer`` plus the special tokens ``<|im_start|>`` / ``<|im_end|>`` and a
    ChatML-style ``chat_template`` (``template=None``: no template). No BOS is prepended
    (ChatML models start with the template's own tokens); EOS stays ``<eos>``, so the
    template's end-of-turn token is a different token, as in many chat models."""
    tokenizer = build_char_tokenizer(alphabet, add_bos=False)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    if template is not None:
        tokenizer.chat_template = template
    return tokenizer


def save_tiny(model: Any, tokenizer: Any, directory: str | os.PathLike[str]) -> str:
    """Save a model and its tokenizer side by side so ``load_causal_lm``/``load_tokenizer``
    (or ``from_pretrained``) can read the directory back. Returns the directory path."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
