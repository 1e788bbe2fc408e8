"""The shared workload of bench/throughput.py: model shape, synthetic data, FLOP counts,
device peak and memory probes.

Every framework sees the same thing: a randomly initialised Qwen2 model saved to one
directory (weights + a word-level tokenizer whose token ``t<i>`` has id ``i``), and the same
(prompt, chosen, rejected) token-id triples rendered as text in that vocabulary, so each
framework's own tokenisation path reproduces the ids exactly.
"""

from __future__ import annotations

import os
import random
import statistics
import threading
import time
from dataclasses import dataclass, field

import torch

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2  # ids of <pad> and <eos> in feedalign.policies.tiny.build_char_tokenizer
FIRST_WORD_ID = 4  # ids 0..3 are <pad> <bos> <eos> <unk>


@dataclass(frozen=True)
class Shape:
    """Model shape and sequence-length ranges (inclusive) of one benchmark size."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    prompt_len: tuple[int, int]
    completion_len: tuple[int, int]


# "full" is the Qwen2-0.5B shape (tied embeddings); "small" is for a CPU run of a few
# minutes, keeping full's proportions where they drive speed: the LM head is ~29% of the
# parameters (full: 27.5%) and the MLP is 5.5x the hidden size; "tiny" is for the smoke
# test. Lengths shrink with the model (1/4 and 1/16).
SIZES: dict[str, Shape] = {
    "full": Shape(896, 4864, 24, 14, 2, 151_936, (64, 192), (128, 384)),
    "small": Shape(128, 704, 4, 4, 2, 4096, (16, 48), (32, 96)),
    "tiny": Shape(32, 64, 2, 4, 2, 256, (4, 12), (8, 24)),
}


def build_tokenizer(vocab: int):
    """Word-level tokenizer: ``t<i>`` -> id ``i`` for i in [4, vocab), no BOS (Qwen2 style)."""
    from feedalign.policies.tiny import build_char_tokenizer

    words = [f"t{i}" for i in range(FIRST_WORD_ID, vocab)]
    return build_char_tokenizer(words, level="word", add_bos=False)


def build_model(shape: Shape, *, dtype: torch.dtype, seed: int = 0):
    """Randomly initialised Qwen2ForCausalLM with tied embeddings (seeded, global RNG kept)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=2 * (shape.prompt_len[1] + shape.completion_len[1]) + 64,
        tie_word_embeddings=True,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,  # declared by the tokenizer, never added to sequences
        eos_token_id=EOS_ID,
        use_cache=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    return model.to(dtype)


def save_workload_model(shape: Shape, directory: str, *, dtype: torch.dtype, seed: int = 0) -> tuple[str, str, int]:
    """Save the model to ``directory/model`` and the tokenizer to ``directory/tokenizer``.

    The tokenizer gets its own directory: next to a Qwen2 ``config.json`` ``AutoTokenizer``
    would pick the Qwen2 BPE class instead of the saved word-level one.

    Returns:
        (model_dir, tokenizer_dir, number of unique parameters).
    """
    model = build_model(shape, dtype=dtype, seed=seed)
    model_dir, tokenizer_dir = os.path.join(directory, "model"), os.path.join(directory, "tokenizer")
    model.save_pretrained(model_dir)
    build_tokenizer(shape.vocab).save_pretrained(tokenizer_dir)
    return model_dir, tokenizer_dir, sum(p.numel() for p in model.parameters())


def make_pairs(shape: Shape, n: int, *, seed: int = 0) -> list[dict[str, list[int]]]:
    """``n`` synthetic preference triples of token ids.

    Completion lengths count the EOS token that every framework appends, so the id lists
    here hold ``length - 1`` word tokens. Word ids are uniform in [4, vocab).
    """
    rng = random.Random(seed)

    def words(k: int) -> list[int]:
        return [rng.randrange(FIRST_WORD_ID, shape.vocab) for _ in range(k)]

    pairs = []
    for _ in range(n):
        prompt = words(rng.randint(*shape.prompt_len))
        chosen = words(rng.randint(*shape.completion_len) - 1)
        rejected = words(rng.randint(*shape.completion_len) - 1)
        pairs.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
    return pairs


def ids_to_text(ids: list[int], *, leading_space: bool = False) -> str:
    text = " ".join(f"t{i}" for i in ids)
    return " " + text if leading_space else text


def pair_texts(pairs: list[dict[str, list[int]]]) -> list[dict[str, str]]:
    """Text rows ``{prompt, chosen, rejected}``; completions start with a space so that
    tokenising ``prompt + completion`` splits exactly at the boundary. Pairs that carry
    their own text (the real workload) give it unchanged."""
    if pairs and "prompt" in pairs[0]:
        return [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs]
    return [
        {
            "prompt": ids_to_text(p["prompt_ids"]),
            "chosen": ids_to_text(p["chosen_ids"], leading_space=True),
            "rejected": ids_to_text(p["rejected_ids"], leading_space=True),
        }
        for p in pairs
    ]


def unpaired_texts(pairs: list[dict[str, list[int]]]) -> list[dict[str, object]]:
    """KTO rows: each pair becomes (prompt, chosen, True) then (prompt, rejected, False), so
    16 rows carry the tokens of 8 pairs."""
    rows: list[dict[str, object]] = []
    for text in pair_texts(pairs):
        rows.append({"prompt": text["prompt"], "completion": text["chosen"], "label": True})
        rows.append({"prompt": text["prompt"], "completion": text["rejected"], "label": False})
    return rows


def tokens_per_step(pairs: list[dict[str, list[int]]], pairs_per_step: int) -> list[int]:
    """Non-pad tokens (prompt + completion + EOS, both sides) of each consecutive step."""
    counts = []
    for start in range(0, len(pairs) - pairs_per_step + 1, pairs_per_step):
        chunk = pairs[start : start + pairs_per_step]
        counts.append(
            sum(2 * len(p["prompt_ids"]) + len(p["chosen_ids"]) + len(p["rejected_ids"]) + 2 for p in chunk)
        )
    return counts


def padded_tokens_per_step(pairs: list[dict[str, list[int]]], pairs_per_step: int) -> list[int]:
    """Tokens a right-padded [2B, T_max] chosen+rejected batch occupies (padding included)."""
    counts = []
    for start in range(0, len(pairs) - pairs_per_step + 1, pairs_per_step):
        chunk = pairs[start : start + pairs_per_step]
        longest = max(len(p["prompt_ids"]) + max(len(p["chosen_ids"]), len(p["rejected_ids"])) + 1 for p in chunk)
        counts.append(2 * len(chunk) * longest)
    return counts


def train_flops_per_token(n_params: int, *, reference_forward: bool, lora: bool = False) -> float:
    """6N per trained token (forward + backward), 4N with LoRA (no weight gradients of the
    frozen base; the adapters' FLOPs are left out), plus 2N when a reference forward runs in
    the step. Attention-score FLOPs are left out (small at these lengths)."""
    return (4.0 if lora else 6.0) * n_params + (2.0 * n_params if reference_forward else 0.0)


# ----------------------------------------------------------------------------- device probes


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).lower().replace("nvidia ", "nvidia-").replace(" ", "-")
    return f"cpu-{os.cpu_count()}core"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device, cpu_time: bool) -> float:
    """Seconds on the clock the benchmark uses: wall time after a device synchronize, or
    (``cpu_time``) this process's CPU time, which on a shared, oversubscribed CPU measures
    the work done rather than the time the scheduler gave the process."""
    synchronize(device)
    return time.process_time() if cpu_time else time.perf_counter()


def measure_matmul_peak(
    device: torch.device, dtype: torch.dtype, *, size: int | None = None, reps: int = 10, cpu_time: bool = False
) -> float:
    """Measured dense matmul rate in FLOP/s: median of ``reps`` timed products of random
    ``size x size`` matrices after warm-up (8192 on a GPU, 1024 on a CPU)."""
    size = size or (8192 if device.type == "cuda" else 1024)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=gen).to(device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        start = clock(device, cpu_time)
        a @ b
        times.append(clock(device, cpu_time) - start)
    return 2.0 * size**3 / statistics.median(times)


@dataclass
class RunResult:
    """Step-end stamps on both clocks, whole-run times, peak memory and early losses."""

    step_ends: list[float] = field(default_factory=list)
    step_cpu_ends: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_mem_gib: float | None = None
    mem_kind: str = ""
    losses: list[float] = field(default_factory=list)

    def mark_step(self, device: torch.device) -> None:
        synchronize(device)
        self.step_ends.append(time.perf_counter())
        self.step_cpu_ends.append(time.process_time())

    def start(self, device: torch.device) -> None:
        synchronize(device)
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def stop(self, device: torch.device, memory: "PeakMemory | None" = None) -> None:
        synchronize(device)
        self.wall_s, self.cpu_s = time.perf_counter() - self._t0, time.process_time() - self._c0


class PeakMemory:
    """Peak memory of a block: ``torch.cuda.max_memory_allocated`` on a GPU, otherwise the
    peak rise of this process's resident set size sampled every 50 ms (a thread)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_bytes: int | None = None
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "rss_delta"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = 0
        else:
            import psutil

            proc = psutil.Process()
            self._base = proc.memory_info().rss
            self._rss_peak = self._base

            def sample() -> None:
                while not self._stop.wait(0.05):
                    self._rss_peak = max(self._rss_peak, proc.memory_info().rss)

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            assert self._thread is not None
            self._thread.join()
            self.peak_bytes = max(0, self._rss_peak - self._base)

    @property
    def gib(self) -> float | None:
        return None if self.peak_bytes is None else self.peak_bytes / 2**30
