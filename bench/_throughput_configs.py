"""The configurations bench/throughput.py runs: TRL's and feedalign's, the lever experiments
on the synthetic workload, and the realistic workload's set (``--workload real``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BenchConfig:
    framework: str  # "trl" | "feedalign"
    loss: str  # "dpo" | "kto"
    name: str
    options: dict[str, Any]
    reference_in_step: bool
    notes: str
    pairs_per_step: int = 8  # synthetic workload; the real one takes --pairs-per-step
    tuning: str = "full"  # "full" | "lora"


CONFIGS: tuple[BenchConfig, ...] = (
    BenchConfig(
        "trl", "dpo", "default", {"precompute_reference": False, "gradient_checkpointing": True}, True,
        "TRL defaults: gradient checkpointing on, reference model forward every step, chunked "
        "fused-LM-head log-probs, chosen+rejected concatenated and padded to the longest row",
    ),
    BenchConfig(
        "trl", "dpo", "precomputed-ref", {"precompute_reference": True, "gradient_checkpointing": False}, False,
        "precompute_ref_log_probs=True (reference pass before training, then freed), "
        "gradient_checkpointing=False",
    ),
    BenchConfig(
        "trl", "kto", "default", {"precompute_reference": False, "gradient_checkpointing": True}, True,
        "TRL defaults: gradient checkpointing on, reference forward every step, KL rows "
        "(policy no-grad + reference forward) every step",
    ),
    BenchConfig(
        "feedalign", "dpo", "copy-ref", {"reference": "copy"}, True,
        "trainer defaults: frozen reference copy run every step, chunked fp32 log-probs over "
        "completion rows only, chosen+rejected in one padded forward, no checkpointing",
    ),
    BenchConfig(
        "feedalign", "dpo", "cached-ref", {"reference": "cached"}, False,
        "reference.strategy cached: the trainer fills the on-disk cache before training (every "
        "row the run will ask for) and frees the copy; otherwise as copy-ref",
    ),
    BenchConfig(
        "feedalign", "dpo", "packed", {"reference": "cached", "extra": {"packing": True}}, False,
        "best config: cached reference + train.packing (all 16 rows of a step in one padding-free "
        "row, per-sequence feedalign_varlen attention), no checkpointing",
    ),
    BenchConfig(
        "feedalign", "kto", "copy-ref", {"reference": "copy"}, True,
        "trainer defaults: reference copy every step, KL rows (policy no-grad + reference) "
        "every step, completion-only chunked log-probs, no checkpointing",
    ),
    BenchConfig(
        "feedalign", "kto", "cached-ref", {"reference": "cached"}, False,
        "reference log-probs (incl. KL rows) filled into the cache before training; KL policy "
        "forward still every step",
    ),
    BenchConfig(
        "feedalign", "kto", "packed", {"reference": "cached", "extra": {"packing": True}}, False,
        "best config: cached reference + train.packing for the 16 rows (the KL rows stay padded)",
    ),
)


LEVER_NOTES = {
    "padded": "bare step from feedalign pieces: padded chosen+rejected, chunked completion-only "
    "log-probs, reference precomputed, no host reads in the step",
    "packed-sdpa": "as padded but one padding-free row; SDPA over the row with a block-diagonal mask",
    "packed-varlen": "as padded but one padding-free row with per-sequence (variable-length) attention",
    "naive-logps": "as padded but full [2B,T,V] logits + log_softmax instead of chunked log-probs",
    "mb16": "as padded with 16 pairs per optimizer step",
    "padded+compile": "padded, decoder under torch.compile(dynamic=True)",
    "packed-varlen+compile": "packed-varlen, decoder under torch.compile(dynamic=True)",
}
LEVER_CONFIGS = tuple(
    BenchConfig("lab", "dpo", name, {"lever": name}, False, LEVER_NOTES[name], 16 if name == "mb16" else 8)
    for name in LEVER_NOTES
)


# ----------------------------------------------------------------------------- real workload
# SmolLM2-135M-Instruct, LoRA and full fine-tuning (bench/_throughput_real.py). TRL's best DPO
# is precomputed reference log-probs without checkpointing, plus use_liger_kernel where
# liger-kernel runs on the device (throughput.py adds it then). feedalign's best is the
# cached reference + packing + prompt sharing; "packed" (sharing off) and "cached-ref"
# (padded) price the levers.
_TRL_DEFAULT = {"precompute_reference": False, "gradient_checkpointing": True}
_TRL_BEST = {"precompute_reference": True, "gradient_checkpointing": False}
_FA_BEST = {"reference": "cached", "extra": {"packing": True, "share_prompt": True}}
_NOTES = {
    ("trl", "default"): "TRL defaults: gradient checkpointing, reference forward every step (LoRA: adapter disabled)",
    ("trl", "precomputed-ref"): "TRL best: precompute_ref_log_probs=True, gradient_checkpointing=False",
    ("feedalign", "cached-ref"): "cached reference filled before training; padded chosen+rejected rows",
    ("feedalign", "packed"): "cached reference + train.packing, prompt sharing off (share_prompt: false)",
    ("feedalign", "shared"): "best config: cached reference + train.packing + prompt sharing (each pair's "
                             "prompt once per packed row)",
}


def _real(framework: str, loss: str, name: str, tuning: str, options: dict[str, Any], ref_in_step: bool,
          notes: str | None = None) -> BenchConfig:
    return BenchConfig(framework, loss, name, options, ref_in_step, notes or _NOTES[(framework, name)], tuning=tuning)


# The lever configurations (cached-ref, packed) and TRL's default run for full fine-tuning
# only, to keep a CPU run of the whole set within an hour on a shared 2-core machine.
REAL_CONFIGS: tuple[BenchConfig, ...] = (
    # the acceptance pairs first, then the lever rows and TRL's default
    _real("trl", "dpo", "precomputed-ref", "full", _TRL_BEST, False),
    _real("feedalign", "dpo", "shared", "full", _FA_BEST, False),
    _real("trl", "dpo", "precomputed-ref", "lora", _TRL_BEST, False),
    _real("feedalign", "dpo", "shared", "lora", _FA_BEST, False),
    _real("trl", "kto", "default", "full", _TRL_DEFAULT, True),
    _real("trl", "kto", "precomputed-ref", "full", _TRL_BEST, False),
    _real("feedalign", "kto", "packed", "full", {"reference": "cached", "extra": {"packing": True}}, False,
          "best config: cached reference (incl. KL rows) + train.packing of the unpaired rows"),
    _real("feedalign", "dpo", "packed", "full",
          {"reference": "cached", "extra": {"packing": True, "share_prompt": False}}, False),
    _real("feedalign", "dpo", "cached-ref", "full", {"reference": "cached"}, False),
    _real("trl", "dpo", "default", "full", _TRL_DEFAULT, True),
)
