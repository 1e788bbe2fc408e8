"""GGUF files as models: a tiny Llama written with the gguf writer, loaded, trained one
LoRA step, saved as a normal directory, merged and sampled with its chat template."""

import json
import os
import subprocess
import sys

import pytest
import torch

from feedalign.policies.gguf import dequantize_to_dir, is_gguf
from feedalign.policies.hf import load_causal_lm, load_tokenizer
from gguf_fixtures import write_tiny_gguf

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "Tiny.F32.gguf")


def test_load_gguf_weights_and_tokenizer(tiny_gguf, tmp_path):
    path, weights = tiny_gguf
    assert is_gguf(path) and not is_gguf(path.parent)
    model = load_causal_lm(str(path), dtype="float32")
    state = model.state_dict()
    for name, tensor in weights.items():  # q/k permutation undone, values exact
        assert torch.equal(state[name], tensor), name
    tok = load_tokenizer(str(path))
    assert tok.eos_token == "<|im_end|>" and tok.chat_template
    hf_dir = dequantize_to_dir(path, tmp_path / "hf")
    again = load_causal_lm(str(hf_dir), dtype="float32")
    ids = torch.tensor([[5, 6, 7, 8]])
    assert torch.allclose(again(ids).logits, model(ids).logits)
    assert load_tokenizer(str(hf_dir)).chat_template == tok.chat_template


def test_train_lora_from_gguf_then_generate_and_merge(tiny_gguf, tmp_path, monkeypatch):
    from feedalign.policies.export import merge_adapter
    from feedalign.trainers.loop import train

    path, _ = tiny_gguf
    rows = [{"prompt": [{"role": "user", "content": f"q{c}?"}],
             "chosen": [{"role": "assistant", "content": "ab."}],
             "rejected": [{"role": "assistant", "content": f"{c}{c}{c}"}]} for c in "cdefgh"]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"model": {"path": str(path), "lora": {"r": 4, "alpha": 8}},
           "reference": {"strategy": "adapter"},
           "data": [{"path": str(data), "loss": "dpo"}],
           "train": {"output_dir": str(tmp_path / "run"), "max_steps": 1, "micro_batch_size": 2, "lr": 1e-3}}
    result = train(cfg)
    final = result.final_dir
    adapter = json.loads((final / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(path.resolve())
    card = (final / "README.md").read_text()
    assert str(path) in card and "dpo" in card and "optimizer steps: 1" in card
    # generate from another working directory: the base path is absolute
    monkeypatch.chdir(tmp_path.parent)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "feedalign", "generate", str(final), "--prompt", "qc?",
                          "--max-new-tokens", "4", "--temperature", "0", "--json", "--threads", "1"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout.splitlines()[-1])
    assert row["prompt"] == "qc?" and row["rendered_prompt"].endswith("<|im_start|>assistant\n")
    assert row["truncated"] in (True, False)
    merged = merge_adapter(final, tmp_path / "merged")
    full = load_causal_lm(str(merged), dtype="float32")
    ids = torch.tensor([[5, 6, 7, 8]])
    peft_logits = result.model(input_ids=ids).logits
    assert torch.allclose(full(input_ids=ids).logits, peft_logits, atol=1e-5)
    assert (merged / "README.md").is_file() and not (merged / "adapter_config.json").exists()


def test_export_cli_errors_are_one_line(tmp_path, capsys):
    from feedalign.cli.main import main

    (tmp_path / "full").mkdir()
    assert main(["export", str(tmp_path / "full"), "--merge", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "no adapter_config.json" in err and err.count("\n") == 1
