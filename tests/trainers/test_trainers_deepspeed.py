"""DeepSpeed ZeRO-2 and ZeRO-3 with two CPU processes (gloo) train like one process with the
same global batch, and a ZeRO-3 checkpoint resumes to the uninterrupted run.

The two-process runs go through the shipped launcher files,

    accelerate launch --config_file examples/accelerate/deepspeed_zero{2,3}.yaml --num_processes 2 \
        -m feedalign train CONFIG ...

and the one-process run through ``feedalign.trainers.train`` with ``micro_batch_size=8``
(ZeRO-2: 2 processes x 4; ZeRO-3: 2 processes x 2 x ``grad_accum=2``; ZeRO-3 built
partitioned with LoRA: 2 x 4). DeepSpeed's CPU accelerator runs its collectives over gloo.
The loss curve, the gradient norms (DeepSpeed's own, clipped at 1.0 like the one-process
run), the held-out metrics and the final parameters must agree up to fp32 summation order:
stated tolerance 1e-5 relative (observed: parameters <= 1.1e-6 of each tensor's largest
value, LoRA weights <= 3.2e-6, loss and gradient norm <= 1.2e-7 relative, held-out metrics
<= 2.6e-7). Resume is checked bit for bit.

Skipped without the ``deepspeed`` package. The first launch on a machine JIT-compiles
DeepSpeed's shared-memory communication op (~20 s with g++; cached afterwards in
~/.cache/torch_extensions).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
from timeouts import subprocess_timeout
import torch
import yaml
from trainer_fixtures import assert_states_equal, final_state, pair_rows, save_tiny_model, write_jsonl

pytest.importorskip("deepspeed", reason="DeepSpeed is not installed (pip install deepspeed)")
if shutil.which(os.environ.get("CXX", "c++")) is None:
    pytest.skip("DeepSpeed's CPU communication op needs a C++ compiler (c++ not found)", allow_module_level=True)

from feedalign.trainers import checkpoint as ckpt  # noqa: E402
from feedalign.trainers.logging import read_metrics  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ZERO2 = REPO / "examples" / "accelerate" / "deepspeed_zero2.yaml"
ZERO3 = REPO / "examples" / "accelerate" / "deepspeed_zero3.yaml"
STEPS = 3
RTOL = 1e-5

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(root: Path, launch_config: Path, output_dir: Path, *extra: str) -> None:
    env = {
        **os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
        # The same CPU path on a machine with GPUs.
        "CUDA_VISIBLE_DEVICES": "", "DS_ACCELERATOR": "cpu",
    }
    def run() -> subprocess.CompletedProcess:
        command = [
            sys.executable, "-m", "accelerate.commands.launch",
            "--config_file", str(launch_config), "--num_processes", "2",
            "--main_process_port", str(_free_port()), "-m", "feedalign",
            "train", str(root / "cfg.yaml"), f"train.output_dir={output_dir}", "train.overwrite_output_dir=true",
            *extra, "--quiet",
        ]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=subprocess_timeout(240))

    done = run()
    if done.returncode != 0 and "SIGABRT" in done.stderr:
        # A worker was once seen aborting (SIGABRT, no Python traceback) in one full-suite run
        # on a busy 2-core machine and never in dozens of repeats alone: retry that case once,
        # from scratch. Any other failure, or a second abort, fails the test.
        warnings.warn("DeepSpeed CPU launch aborted (SIGABRT); retrying once", stacklevel=2)
        done = run()
    # The launcher's summary ends stderr; the failing process's own error comes first.
    errors = [line for line in done.stderr.splitlines() if "Error" in line or line.startswith("error:")]
    assert done.returncode == 0, "\n".join(errors[:20]) + "\n...\n" + done.stderr[-6000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One process (micro-batch 8), ZeRO-2 (2 x 4) and ZeRO-3 (2 x 2 x grad_accum 2): DPO
    with a `copy` reference, a held-out set evaluated at the last step, checkpoints at steps
    2 and 3."""
    from feedalign.trainers import train

    root = tmp_path_factory.mktemp("deepspeed")
    config = {
        "model": {"path": str(save_tiny_model(root / "model")), "dtype": "float32"},
        "reference": {"strategy": "copy"},
        "data": [{"loss": "dpo", "path": str(write_jsonl(root / "pairs.jsonl", pair_rows(32, seed=1)))}],
        "train": {
            "output_dir": str(root / "unused"), "seed": 0, "lr": 1e-3, "max_steps": STEPS, "log_every": 1,
            "cpu": True, "precision": "fp32", "max_grad_norm": 1.0, "eval_fraction": 0.25, "eval_every": STEPS,
            "save_every": 2,
        },
    }
    (root / "cfg.yaml").write_text(yaml.safe_dump(config))
    train({**config, "train": {**config["train"], "output_dir": str(root / "one"), "micro_batch_size": 8}})
    _launch(root, ZERO2, root / "zero2", "train.micro_batch_size=4")
    _launch(root, ZERO3, root / "zero3", "train.micro_batch_size=2", "train.grad_accum=2")
    return root


def _assert_matches_one_process(root: Path, name: str) -> None:
    one, two = read_metrics(root / "one"), read_metrics(root / name)
    train_one = [m for m in one if "loss" in m]
    train_two = [m for m in two if "loss" in m]
    assert [m["step"] for m in train_one] == [m["step"] for m in train_two] == list(range(1, STEPS + 1))
    assert len({round(m["loss"], 6) for m in train_one}) == STEPS  # the curve moves
    # 24 training pairs at a global batch of 8: 3 steps per epoch in both runs (a silent
    # single-process fallback would count 6).
    assert [m["epoch"] for m in train_two] == pytest.approx([s / 3 for s in range(1, STEPS + 1)])
    assert train_one[0]["grad_norm"] > 1.0  # clipping is exercised
    for a, b in zip(train_one, train_two):
        for key in ("loss", "grad_norm", "dpo/rewards/margins", "lr"):
            assert b[key] == pytest.approx(a[key], rel=RTOL, abs=1e-7), (a["step"], key)
    eval_one = [m for m in one if any(k.startswith("eval/") for k in m)]
    eval_two = [m for m in two if any(k.startswith("eval/") for k in m)]
    assert len(eval_one) == len(eval_two) == 1
    for key in (k for k in eval_one[0] if k.startswith("eval/")):
        assert eval_two[0][key] == pytest.approx(eval_one[0][key], rel=RTOL, abs=1e-7), key

    from safetensors.torch import load_file

    initial = load_file(str(root / "model" / "model.safetensors"))
    a, b = final_state(root / "one"), final_state(root / name)
    assert a.keys() == b.keys() == initial.keys()
    assert max(float((a[k] - initial[k]).abs().max()) for k in a) > 1e-3  # training moved them
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=RTOL * float(a[key].abs().max()), msg=key)


def _zero_files(root: Path, name: str) -> set[str]:
    saved = root / name / "step-00000003"
    assert ckpt.load_checkpoint(saved).trainer_state["num_processes"] == 2
    return {p.name for p in (saved / "deepspeed" / "pytorch_model").iterdir()}


@pytest.mark.slow
def test_zero2_two_cpu_processes_equal_one_process(runs: Path) -> None:
    _assert_matches_one_process(runs, "zero2")
    # ZeRO-2: one optimizer-state partition per process, one replicated model state.
    files = _zero_files(runs, "zero2")
    assert {"zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"} <= files
    assert "mp_rank_00_model_states.pt" in files


@pytest.mark.slow
def test_zero3_two_cpu_processes_with_grad_accum_equal_one_process(runs: Path) -> None:
    # ZeRO-3 with zero3_init_flag: false and a `copy` reference (the shipped file's setting):
    # the policy is built whole, copied, then partitioned by the engine; the LM head runs as
    # a module so that ZeRO-3 gathers it.
    _assert_matches_one_process(runs, "zero3")
    files = _zero_files(runs, "zero3")
    assert {f"zero_pp_rank_{r}_mp_rank_00_{kind}_states.pt" for r in (0, 1) for kind in ("model", "optim")} <= files


@pytest.mark.slow
def test_zero3_resume_equals_uninterrupted(runs: Path) -> None:
    cut = runs / "zero3_cut"
    shutil.copytree(runs / "zero3", cut)
    shutil.rmtree(cut / "step-00000003")
    shutil.rmtree(cut / "final")
    (cut / "latest").write_text("step-00000002\n")
    _launch(runs, ZERO3, cut, "train.micro_batch_size=2", "train.grad_accum=2", "--resume")
    assert_states_equal(final_state(runs / "zero3"), final_state(cut))
    metrics = (cut / "metrics.jsonl").read_text()
    assert metrics == (runs / "zero3" / "metrics.jsonl").read_text() and '"step": 3' in metrics


@pytest.mark.slow
def test_zero3_partitioned_build_with_lora_adapter_reference_equals_one_process(runs: Path) -> None:
    # The large-model setting the ZeRO-3 file describes: zero3_init_flag: true builds the
    # policy already partitioned, LoRA trains on it and the reference is the policy with its
    # adapter disabled, run through the engine.
    from feedalign.trainers import train

    launch = yaml.safe_load(ZERO3.read_text())
    launch["deepspeed_config"]["zero3_init_flag"] = True
    (runs / "zero3_init.yaml").write_text(yaml.safe_dump(launch))
    lora = ["reference.strategy=adapter", "model.lora.r=4", "train.eval_fraction=0", "train.save_every=0"]
    train(runs / "cfg.yaml", overrides=[f"train.output_dir={runs / 'one_lora'}", "train.micro_batch_size=8", *lora])
    _launch(runs, runs / "zero3_init.yaml", runs / "zero3_lora", "train.micro_batch_size=4", *lora)

    from safetensors.torch import load_file

    one, two = read_metrics(runs / "one_lora"), read_metrics(runs / "zero3_lora")
    assert len(one) == len(two) == STEPS
    for a, b in zip(one, two):
        for key in ("loss", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=RTOL), (a["step"], key)
    a = load_file(str(runs / "one_lora" / "final" / "adapter_model.safetensors"))
    b = load_file(str(runs / "zero3_lora" / "final" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and any("lora_B" in k for k in a)
    assert max(float(a[k].abs().max()) for k in a if "lora_B" in k) > 1e-4  # B starts at 0: it trained
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=RTOL * float(a[key].abs().max()), msg=key)


# ----------------------------------------------------------------------------- units


def _zero3_accelerator(zero3_init_flag: bool) -> SimpleNamespace:
    from accelerate.utils import DistributedType

    plugin = SimpleNamespace(deepspeed_config={"zero_optimization": {"stage": 3}}, zero3_init_flag=zero3_init_flag)
    return SimpleNamespace(distributed_type=DistributedType.DEEPSPEED, state=SimpleNamespace(deepspeed_plugin=plugin))


@pytest.mark.parametrize("zero3_init_flag", [False, True])
def test_zero3_init_flag_decides_whether_the_policy_is_built_partitioned(zero3_init_flag):
    from transformers.integrations import HfDeepSpeedConfig, is_deepspeed_zero3_enabled, unset_hf_deepspeed_config

    from feedalign.trainers.parallel import honour_zero3_init_flag

    # What accelerate registers for every ZeRO-3 launch, whatever the flag says.
    registered = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1})
    try:
        assert is_deepspeed_zero3_enabled()
        honour_zero3_init_flag(_zero3_accelerator(zero3_init_flag))
        assert is_deepspeed_zero3_enabled() == zero3_init_flag
    finally:
        del registered
        unset_hf_deepspeed_config()


def test_copy_reference_of_a_partitioned_policy_fails_clearly():
    from feedalign.config import ConfigError
    from feedalign.trainers.parallel import check_reference_strategy

    model = torch.nn.Linear(2, 2)
    accelerator = _zero3_accelerator(True)
    check_reference_strategy(accelerator, "copy", model)  # built whole: a copy can run
    model.weight.ds_id = 0  # how deepspeed.zero.Init marks a partitioned parameter
    with pytest.raises(ConfigError, match="zero3_init_flag"):
        check_reference_strategy(accelerator, "copy", model)
    check_reference_strategy(accelerator, "adapter", model)
