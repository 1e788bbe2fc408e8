"""Models given as a GGUF file (llama.cpp's format), loaded through transformers.

``model.path: path/to/Model.Q4_1.gguf`` loads the file with transformers' GGUF support
(``from_pretrained(directory, gguf_file=name)``, which needs the ``gguf`` package): the
quantised tensors are dequantised to ``dtype`` and the tokenizer, with its chat template,
is rebuilt from the file's metadata. The trainer then works on ordinary float weights;
``final/`` is a normal Hugging Face directory (or an adapter whose base is the .gguf file).

``dequantize_to_dir`` writes the same model once as a Hugging Face directory, so later
loads skip the (slow) dequantisation.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

GGUF_SUFFIX = ".gguf"


def is_gguf(path: str | os.PathLike[str]) -> bool:
    """A path naming a GGUF file (by its suffix; existence is checked by the loaders)."""
    return os.fspath(path).lower().endswith(GGUF_SUFFIX)


def _split(path: str | os.PathLike[str]) -> tuple[str, str]:
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"GGUF file '{file}' does not exist")
    return str(file.parent), file.name


def _forget_quantization(model: Any) -> Any:
    """The weights are dequantised floats, but transformers still marks the model as
    GGUF-quantised, which blocks ``save_pretrained`` and makes peft treat it as quantised."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    for attr in ("is_quantized", "quantization_method"):
        if attr in vars(model):
            delattr(model, attr)
    return model


def load_gguf_model(path: str | os.PathLike[str], **kwargs: Any) -> Any:
    """A causal LM with the GGUF file's weights dequantised (``kwargs`` go to
    ``AutoModelForCausalLM.from_pretrained``, e.g. ``dtype``)."""
    from transformers import AutoModelForCausalLM

    directory, name = _split(path)
    return _forget_quantization(AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, **kwargs))


def load_gguf_tokenizer(path: str | os.PathLike[str]) -> Any:
    """The tokenizer stored in a GGUF file (vocabulary, special tokens, chat template)."""
    from transformers import AutoTokenizer

    directory, name = _split(path)
    return AutoTokenizer.from_pretrained(directory, gguf_file=name)


def dequantize_to_dir(path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, dtype: Any = None) -> Path:
    """Write the GGUF model as a Hugging Face directory (weights + tokenizer), atomically:
    into a temporary sibling directory that is renamed into place. An existing ``out_dir``
    is left untouched and returned."""
    import torch

    out = Path(out_dir).expanduser()
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        load_gguf_tokenizer(path).save_pretrained(str(tmp))
        load_gguf_model(path, dtype=dtype or torch.float32).save_pretrained(str(tmp))
        tmp.chmod(0o755)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
