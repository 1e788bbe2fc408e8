"""Parity with TRL 1.16: on string prompts, feedalign's DPO and KTO score the same tokens and
give the same per-sequence log-probs, losses and gradients as TRL's own trainers, padded and
packed (``train.packing``).

TRL's side runs through ``DPOTrainer`` / ``KTOTrainer`` themselves: their dataset preparation
(EOS appended to the completion text, tokenisation, KTO's mismatched KL completions), their
collators and their ``compute_loss`` / ``compute_ref_log_probs`` (fused LM head). TRL 1.16 has
no padding-free DPO/KTO (``padding_free`` falls back to padding), so the packed feedalign
batch is compared with TRL's padded one. Each library gets its own copy of the same seeded
random model (TRL patches the forward of the models it is given).

KTO's reference point: TRL pairs prompt i with completion i-1 of the batch, feedalign's
``KLReferencePoint`` with completion i+1 (docs/ALGORITHMS.md §7); the two estimates differ
for batches of more than 2. The loss is compared at the same ``kl_ref``: TRL's mismatched
rows scored by feedalign.
"""

from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("trl")

from feedalign.data.batching import Example, collate  # noqa: E402
from feedalign.data.tokenize import tokenize_examples  # noqa: E402
from feedalign.losses import call_loss, get_loss  # noqa: E402
from feedalign.losses._state import KLReferencePoint  # noqa: E402
from feedalign.policies.hf import batch_logps  # noqa: E402
from feedalign.policies.tiny import PAD_ID, build_char_tokenizer, build_tiny_causal_lm  # noqa: E402
from feedalign.policies.varlen import VARLEN_ATTENTION, register  # noqa: E402

BETA = 0.1
PAIRS = [  # (prompt, chosen, rejected): different lengths, so padding and packing both matter
    ("what is the sky?", " blue, mostly.", " no idea"),
    ("hi", " hello there, friend!", " go away now."),
    ("name a fruit.", " a pear", " a very large rock, i think."),
]
ROWS = [  # (prompt, completion, desirable)
    ("what is the sky?", " blue, mostly.", True),
    ("hi", " go away now.", False),
    ("name a fruit.", " a pear", True),
    ("count to three.", " one two seven", False),
]
# Per-sequence log-probs are fp32 sums of ~10-30 token log-probs (|log p| up to ~150 here):
# the two libraries add them in a different order (chunked gather vs fused tiles), so they
# agree to a few units in the last place of the sum, not to an absolute 1e-7.
LOGPS_ULPS = 4
LOSS_ATOL = 2e-6  # measured <= 4.2e-7: the log-prob rounding above, through beta and the sigmoid
GRAD_RTOL = 1e-5  # of the largest gradient entry (measured <= 1.4e-6)


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer("abcdefghijklmnopqrstuvwxyz .,?!")


def _model(tokenizer, seed: int, attn: str = "sdpa"):
    # init_std 0.2: peaky next-token distributions, so log-probs are far from uniform
    return build_tiny_causal_lm(len(tokenizer), seed=seed, init_std=0.2, attn_implementation=attn).eval()


def _models(tokenizer, packing: bool):
    """(TRL policy, TRL reference, feedalign policy, feedalign reference): same weights."""
    if packing:
        register()
    attn = VARLEN_ATTENTION if packing else "sdpa"
    # seeds 0 / 2: the mismatched-pair KL estimate of ROWS is positive (not clamped to 0)
    return _model(tokenizer, 0), _model(tokenizer, 2), _model(tokenizer, 0, attn), _model(tokenizer, 2, attn)


def _trl_trainer(trainer_cls, config_cls, policy, reference, tokenizer, rows, tmp_path, **config):
    from datasets import Dataset

    args = config_cls(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=len(rows), report_to=[],
                      beta=BETA, max_length=None, use_cpu=True, bf16=False, fp16=False, disable_tqdm=True, **config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return trainer_cls(model=policy, ref_model=reference, args=args, train_dataset=Dataset.from_list(rows),
                           processing_class=tokenizer)


def _logps_diff(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """max |ours - theirs| in units in the last place of fp32 at the largest |log-prob|."""
    ulp = torch.finfo(torch.float32).eps * theirs.abs().max().item()
    return (ours.detach() - theirs).abs().max().item() / ulp


def _grads(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def _max_grad_diff(ours, theirs) -> tuple[float, float]:
    """(max |grad ours - grad theirs|, max |grad theirs|) over every parameter."""
    c, d = _grads(ours), _grads(theirs)
    assert c.keys() == d.keys() and len(c) == len(list(theirs.parameters()))
    return max((c[k] - d[k]).abs().max().item() for k in c), max(g.abs().max().item() for g in d.values())


def _row_ids(tensors, row: int, packing: bool) -> tuple[list[int], list[int]]:
    """(input ids, completion mask) of one row of a feedalign batch, padding removed."""
    if packing:
        lo, hi = tensors["cu_seqlens"][row].item(), tensors["cu_seqlens"][row + 1].item()
        return tensors["input_ids"][0, lo:hi].tolist(), tensors["completion_mask"][0, lo:hi].tolist()
    keep = tensors["attention_mask"][row].bool()
    return tensors["input_ids"][row][keep].tolist(), tensors["completion_mask"][row][keep].tolist()


def _trl_row_ids(batch, row: int, prefix: str = "") -> tuple[list[int], list[int]]:
    keep = batch[f"{prefix}attention_mask"][row].bool()
    return batch[f"{prefix}input_ids"][row][keep].tolist(), batch[f"{prefix}completion_mask"][row][keep].tolist()


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
def test_dpo_matches_trl(tokenizer, tmp_path, packing: bool) -> None:
    from trl import DPOConfig, DPOTrainer

    trl_policy, trl_reference, policy, reference = _models(tokenizer, packing)
    rows = [dict(prompt=p, chosen=c, rejected=r) for p, c, r in PAIRS]
    trainer = _trl_trainer(DPOTrainer, DPOConfig, trl_policy, trl_reference, tokenizer, rows, tmp_path)
    trl_batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])

    examples = [Example(id=f"pair{i}", prompt=p, completion=c, rejected=r) for i, (p, c, r) in enumerate(PAIRS)]
    batch = collate(tokenize_examples(examples, tokenizer, 512), "pair", PAD_ID, packing=packing)
    assert ("cu_seqlens" in batch.tensors) == packing

    # The same tokens are scored: [bos] prompt completion eos, chosen rows then rejected rows.
    for row in range(2 * len(PAIRS)):
        assert _row_ids(batch.tensors, row, packing) == _trl_row_ids(trl_batch, row)

    with torch.no_grad():
        trl_logps = torch.cat(trainer.compute_ref_log_probs(trl_policy, trl_batch))
        trl_ref_logps = torch.cat(trainer.compute_ref_log_probs(trl_reference, trl_batch))
        ref_logps = batch_logps(reference, batch.tensors)
    logps = batch_logps(policy, batch.tensors)
    logps_diff, ref_diff = _logps_diff(logps, trl_logps), _logps_diff(ref_logps, trl_ref_logps)
    assert logps_diff <= LOGPS_ULPS and ref_diff <= LOGPS_ULPS
    assert (logps.detach() - ref_logps).abs().min() > 1e-2  # policy and reference differ: a real loss

    out = call_loss(get_loss("dpo"), policy=logps, reference=ref_logps, lengths=batch.lengths,
                    hparams=get_loss("dpo").resolve_hparams({"beta": BETA}))
    loss = out.losses.mean()
    trl_loss = trainer.compute_loss(trl_policy, trl_batch)
    loss_diff = abs(loss.item() - trl_loss.item())
    assert loss_diff <= LOSS_ATOL
    loss.backward()
    trl_loss.backward()
    grad_diff, grad_max = _max_grad_diff(policy, trl_policy)
    print(f"dpo {'packed' if packing else 'padded'}: max |dlogp| {logps_diff:.2f} ulp (ref {ref_diff:.2f} ulp; "
          f"max |logp| {trl_logps.abs().max().item():.1f}), "
          f"|dloss| {loss_diff:.2e} (loss {trl_loss.item():.4f}), max |dgrad| {grad_diff:.2e} (max |grad| {grad_max:.2e})")
    assert grad_diff <= GRAD_RTOL * grad_max


@pytest.mark.parametrize("packing", [False, True], ids=["padded", "packed"])
def test_kto_matches_trl_at_the_same_reference_point(tokenizer, tmp_path, packing: bool) -> None:
    from trl import KTOConfig, KTOTrainer

    trl_policy, trl_reference, policy, reference = _models(tokenizer, packing)
    rows = [dict(prompt=p, completion=c, label=u) for p, c, u in ROWS]
    trainer = _trl_trainer(KTOTrainer, KTOConfig, trl_policy, trl_reference, tokenizer, rows, tmp_path)
    trl_batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(rows))])

    examples = [Example(id=f"row{i}", prompt=p, completion=c, label=u) for i, (p, c, u) in enumerate(ROWS)]
    batch = collate(tokenize_examples(examples, tokenizer, 512), "unpaired", PAD_ID, packing=packing)
    # TRL's mismatched KL rows: prompt i with completion i-1 (scored by feedalign, padded or packed)
    n = len(ROWS)
    # The known difference, pinned: the two libraries rotate the completions opposite ways.
    trl_rows = [trainer.train_dataset[i] for i in range(n)]
    assert [r["KL_completion_ids"] for r in trl_rows] == [trl_rows[(i - 1) % n]["completion_ids"] for i in range(n)]
    assert KLReferencePoint({}).partners(n) == [(i + 1) % n for i in range(n)]
    kl_examples = [Example(id=f"kl{i}", prompt=ROWS[i][0], completion=ROWS[(i - 1) % n][1]) for i in range(n)]
    kl_batch = collate(tokenize_examples(kl_examples, tokenizer, 512), "sequence", PAD_ID, packing=packing)
    for row in range(n):
        assert _row_ids(batch.tensors, row, packing) == _trl_row_ids(trl_batch, row)
        assert _row_ids(kl_batch.tensors, row, packing) == _trl_row_ids(trl_batch, row, "KL_")

    with torch.no_grad():
        trl_logps, trl_kl_logps = trainer.compute_ref_log_probs(trl_policy, trl_batch)
        trl_ref_logps, trl_ref_kl_logps = trainer.compute_ref_log_probs(trl_reference, trl_batch)
        ref_logps = batch_logps(reference, batch.tensors)
        kl_ref = (batch_logps(policy, kl_batch.tensors) - batch_logps(reference, kl_batch.tensors)).mean()
    logps = batch_logps(policy, batch.tensors)
    logps_diff = max(_logps_diff(logps, trl_logps), _logps_diff(ref_logps, trl_ref_logps))
    trl_kl = (trl_kl_logps - trl_ref_kl_logps).mean()
    kl_diff = abs(kl_ref.item() - trl_kl.item())
    kl_atol = LOGPS_ULPS * torch.finfo(torch.float32).eps * trl_logps.abs().max().item()
    assert logps_diff <= LOGPS_ULPS and kl_diff <= kl_atol
    assert kl_ref > 0  # the clamp at 0 does not hide a difference

    spec = get_loss("kto")
    out = call_loss(spec, policy=logps, reference=ref_logps, labels=batch.labels, lengths=batch.lengths,
                    hparams=spec.resolve_hparams({"beta": BETA}), state={"kl_ref": kl_ref})
    loss = out.losses.mean()
    trl_loss = trainer.compute_loss(trl_policy, trl_batch)
    assert trainer._metrics["eval"]["kl"][-1] == pytest.approx(kl_ref.item(), abs=kl_atol)  # TRL's own
    loss_diff = abs(loss.item() - trl_loss.item())
    assert loss_diff <= LOSS_ATOL
    loss.backward()
    trl_loss.backward()
    grad_diff, grad_max = _max_grad_diff(policy, trl_policy)
    print(f"kto {'packed' if packing else 'padded'}: max |dlogp| {logps_diff:.2f} ulp "
          f"(max |logp| {trl_logps.abs().max().item():.1f}), |dkl| {kl_diff:.2e}, "
          f"|dloss| {loss_diff:.2e} (loss {trl_loss.item():.4f}), max |dgrad| {grad_diff:.2e} (max |grad| {grad_max:.2e})")
    assert grad_diff <= GRAD_RTOL * grad_max
