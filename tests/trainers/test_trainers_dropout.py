"""Model dropout is off while training (model.dropout), so the first DPO step with
reference = policy sees identical log-probs: loss = log 2."""

import math

import pytest
import torch

from feedalign.trainers.logging import read_metrics
from trainer_fixtures import ALPHABET, base_config, pair_rows, write_jsonl


def _gpt2_with_dropout(directory):
    from transformers import GPT2Config, GPT2LMHeadModel

    from feedalign.policies.tiny import BOS_ID, EOS_ID, PAD_ID, build_char_tokenizer

    tokenizer = build_char_tokenizer(ALPHABET)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64,
                        resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1,
                        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.mark.parametrize("dropout", [False, True])
def test_first_dpo_step_is_log2_with_dropout_off(tmp_path, dropout):
    from feedalign.trainers.loop import train

    model_dir = _gpt2_with_dropout(tmp_path / "gpt2")
    data = [{"path": str(write_jsonl(tmp_path / "pairs.jsonl", pair_rows(8, seed=1))), "loss": "dpo"}]
    cfg = base_config(model_dir, tmp_path / "out", data, max_steps=1, micro_batch_size=8, seed=3)
    cfg["model"]["dropout"] = dropout
    result = train(cfg)
    first = [r for r in read_metrics(tmp_path / "out") if "loss" in r][0]
    if dropout:  # dropout noise makes policy and reference log-probs differ
        assert abs(first["loss"] - math.log(2)) > 1e-5
        assert any(m.p > 0 for m in result.model.modules() if isinstance(m, torch.nn.Dropout))
    else:
        assert first["loss"] == pytest.approx(math.log(2), abs=1e-5)
        assert all(m.p == 0 for m in result.model.modules() if isinstance(m, torch.nn.Dropout))
