"""The loop under `accelerate launch`: the LogpsModule wrapper, evaluation sharding, metric
merging, per-process checkpoint files, and two CPU processes (gloo) under DDP and FSDP
training exactly like one process with the same global batch."""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from timeouts import subprocess_timeout
import torch
import yaml
from trainer_fixtures import (
    assert_states_equal,
    base_config,
    final_state,
    labeled_rows,
    pair_rows,
    save_tiny_model,
    write_jsonl,
)

from feedalign.trainers import checkpoint as ckpt
from feedalign.trainers.logging import MetricsAverager, read_metrics
from feedalign.trainers.parallel import LogpsModule, eval_shards, merge_sums

# Two processes x micro-batch 2 against one process x micro-batch 4: the gradients differ
# only by fp32 summation order (observed <= 2e-7 on parameters of scale ~0.3).
ATOL = 1e-6
SINGLE_PROCESS = SimpleNamespace(num_processes=1)


# ----------------------------------------------------------------------------- units


def test_eval_shards_hand_worked():
    # One process: consecutive batches; a last batch below min_size joins the one before.
    assert eval_shards(5, 2, world=1, rank=0, min_size=2) == [[0, 1], [2, 3, 4]]
    assert eval_shards(5, 2, world=1, rank=0, min_size=1) == [[0, 1], [2, 3], [4]]
    # Two processes: global batches of 4 ([0..3], then [4] joins it since 1 < 1*2); each
    # rank takes 3 rows, rank 1 pads with row 0 (marked -1 - 0 = -1, run but not counted).
    assert eval_shards(5, 2, world=2, rank=0, min_size=1) == [[0, 1, 2]]
    assert eval_shards(5, 2, world=2, rank=1, min_size=1) == [[3, 4, -1]]
    assert eval_shards(0, 2, world=2, rank=1, min_size=1) == []


@pytest.mark.parametrize("world", [1, 2, 3])
@pytest.mark.parametrize("min_size", [1, 2])
def test_eval_shards_count_every_example_once_with_equal_batches(world, min_size):
    for n in range(min_size, 23):
        for batch_size in (min_size, 3, 4):
            shards = [eval_shards(n, batch_size, world=world, rank=r, min_size=min_size) for r in range(world)]
            sizes = [[len(b) for b in s] for s in shards]
            assert all(s == sizes[0] for s in sizes), (n, batch_size, sizes)  # same collectives
            assert all(size >= min_size for size in sizes[0])
            counted = sorted(i for s in shards for b in s for i in b if i >= 0)
            assert counted == list(range(n))
            padded = [-1 - i for s in shards for b in s for i in b if i < 0]
            assert all(0 <= i < n for i in padded)


def test_metrics_merge_sums_and_counts():
    averager = MetricsAverager()
    averager.add({"loss": torch.tensor(1.0), "kto/rewards/desirable": math.nan})
    averager.add({"loss": 3.0, "kto/rewards/desirable": 0.5})
    averager.add_sums({"rewards/accuracy/a": (1.0, 4.0)})  # 1 of 4 correct
    averager.add_sums({"rewards/accuracy/a": (2.0, 2.0)})  # 2 of 2 correct
    merged = merge_sums(SINGLE_PROCESS, averager.sums())
    assert merged == {"loss": 2.0, "kto/rewards/desirable": 0.5, "rewards/accuracy/a": 0.5}
    assert math.isnan(merge_sums(SINGLE_PROCESS, {"x": (0.0, 0.0)})["x"])


def _tiny_lm(seed=0):
    from feedalign.policies.tiny import build_char_tokenizer, build_tiny_causal_lm

    tokenizer = build_char_tokenizer("abcdefgh ")
    model = build_tiny_causal_lm(len(tokenizer), hidden=32, layers=1, heads=2, kv_heads=1, intermediate=64,
                                 seed=seed, init_std=0.1)
    return model, tokenizer


def _batch(tokenizer):
    from feedalign.data.collate import pad_batch, tokenize_example

    rows = [tokenize_example(tokenizer, p, c, 32) for p, c in [("abc", "hgf"), ("a", "bcdeh"), ("hh", "a")]]
    return pad_batch(rows, tokenizer.pad_token_id)


def test_logps_module_matches_sequence_logps_and_module_head_path():
    from feedalign.policies.hf import naive_sequence_logps, sequence_logps

    model, tokenizer = _tiny_lm()
    batch = _batch(tokenizer)
    args = (batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    expected = sequence_logps(model, *args, chunk_size=4)
    for head_as_module in (False, True):
        module = LogpsModule(model, 4, head_as_module=head_as_module)
        model.zero_grad()
        got = module(*args)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(got, naive_sequence_logps(model, *args), rtol=0, atol=1e-5)
        got.sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        if head_as_module:
            for name, grad in grads.items():  # the module head gives the same gradients
                torch.testing.assert_close(grad, linear_grads[name], rtol=0, atol=1e-5, msg=name)
        linear_grads = grads
    # accelerate's transformer-based FSDP wrapping reads the block class from the module.
    assert LogpsModule(model, 4)._no_split_modules == list(model._no_split_modules)


def test_adapter_disabled_forward_is_the_adapter_reference():
    from peft import LoraConfig, get_peft_model

    from feedalign.policies.reference import AdapterReference
    from feedalign.policies.reference import make_run_reference

    model, tokenizer = _tiny_lm()
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    batch = _batch(tokenizer)
    module = LogpsModule(peft, 8)
    reference = make_run_reference("adapter", peft, cache_dir=None, chunk_size=8)
    reference.bind(module)
    got = reference.logps(batch, ["a", "b", "c"])
    expected = AdapterReference(peft, chunk_size=8).logps(batch)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert not got.requires_grad
    # The adapter (random here) does change the policy, so the comparison is not vacuous,
    # and the reference forward leaves the adapter enabled and the module in train mode.
    peft.train()
    policy = module(batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    assert float((policy.detach() - got).abs().max()) > 1e-3
    assert peft.training and policy.requires_grad


def test_checkpoint_holds_every_process_rng_state(tmp_path):
    tmp = ckpt.begin_checkpoint(tmp_path, 5)
    ckpt.save_rank_rng(tmp, 0)
    torch.rand(3)
    ckpt.save_rank_rng(tmp, 1)  # another process, another state
    payload = ckpt.CheckpointPayload(
        step=5, weights={"w": torch.ones(2)}, optimizer={}, scheduler={}, state={"rng": ckpt.rng_state()},
        trainer_state={"step": 5}, config_yaml="train: {}\n",
    )
    path = ckpt.save_checkpoint(tmp_path, payload, keep=0, staged=True)
    manifest = json.loads((path / "manifest.json").read_text())
    assert {"rng_state_0.pt", "rng_state_1.pt"} <= set(manifest["files"])
    first, second = ckpt.load_rank_rng(path, 0), ckpt.load_rank_rng(path, 1)
    assert not torch.equal(first["torch"], second["torch"])
    assert ckpt.load_rank_rng(path, 2) is None
    ckpt.set_rng_state(second)
    a = torch.rand(4)
    ckpt.set_rng_state(second)
    assert torch.equal(a, torch.rand(4))
    (path / "rng_state_1.pt").write_bytes(b"cut short")
    assert "rng_state_1.pt" in ckpt.verify_checkpoint(path)


def test_cpu_is_used_when_launched_without_gpus(monkeypatch):
    from feedalign.config.schema import TrainConfig
    from feedalign.trainers.setup import use_cpu

    train = TrainConfig(output_dir="x")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert use_cpu(train)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not use_cpu(train) and use_cpu(TrainConfig(output_dir="x", cpu=True))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not use_cpu(train)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ACCELERATE_USE_FSDP": "true"}, "launched with FSDP"),
        ({"ACCELERATE_GRADIENT_ACCUMULATION_STEPS": "4"}, "gradient_accumulation_steps=4"),
    ],
)
def test_launch_settings_the_loop_cannot_honour_fail_clearly(monkeypatch, tmp_path, env, message):
    from feedalign.config import ConfigError
    from feedalign.config.schema import TrainConfig
    from feedalign.trainers.run import release_accelerator
    from feedalign.trainers.setup import make_accelerator

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        with pytest.raises(ConfigError, match=message):
            make_accelerator(TrainConfig(output_dir=str(tmp_path), cpu=True, grad_accum=2))
    finally:
        release_accelerator()


# ----------------------------------------------------------------------------- 2 processes

# accelerate only shards on GPUs: on CPU processes it silently runs DDP (the trainer refuses
# that, see above). To exercise the loop under accelerate's FSDP2 on this CPU-only test
# machine, this entry point makes accelerate see gloo processes as a GPU-type launch on the
# CPU device; everything else (fully_shard of the LogpsModule, state dicts) is accelerate's.
FSDP_ON_CPU = '''
import os, sys
os.environ["ACCELERATE_TORCH_DEVICE"] = "cpu"
from accelerate.state import PartialState
from accelerate.utils import DistributedType
import feedalign.trainers.setup as setup

PartialState._prepare_backend = lambda self, cpu=False, sagemaker_dp=False, backend=None: (
    "gloo", DistributedType.MULTI_GPU)
setup.use_cpu = lambda train: False
from feedalign.cli.main import main
sys.exit(main(sys.argv[1:]))
'''

FSDP_CONFIG = {
    "compute_environment": "LOCAL_MACHINE",
    "distributed_type": "FSDP",
    "num_machines": 1,
    "num_processes": 2,
    "use_cpu": False,
    "fsdp_config": {
        "fsdp_version": 2,
        "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "fsdp_reshard_after_forward": True,
        "fsdp_state_dict_type": "FULL_STATE_DICT",
        "fsdp_cpu_ram_efficient_loading": True,
        "fsdp_offload_params": False,
    },
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(root: Path, launch_args: list[str], target: list[str], train_args: list[str]) -> None:
    """``accelerate launch <launch_args> --num_processes 2 <target> train <cfg> <train_args>``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", *launch_args, "--num_processes", "2",
        "--main_process_port", str(_free_port()), *target, "train", str(root / "cfg.yaml"), *train_args, "--quiet",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=subprocess_timeout(240))
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.fixture(scope="module")
def setup_runs(tmp_path_factory):
    """Config (DPO + BCO with held-out sets; checkpoints at steps 2 and 3) and the
    one-process reference run with micro-batch 4."""
    from feedalign.trainers import train

    root = tmp_path_factory.mktemp("distributed")
    data = [
        {"path": str(write_jsonl(root / "pairs.jsonl", pair_rows(16, seed=1, objective="helpful"))), "loss": "dpo"},
        # BCO's shift gathers the rewards of every process.
        {"path": str(write_jsonl(root / "thumbs.jsonl", labeled_rows(16, seed=2))), "loss": "bco"},
    ]
    cfg = base_config(
        save_tiny_model(root / "model"), root / "unused", data, max_steps=3, micro_batch_size=2, save_every=2,
        eval_fraction=0.25, eval_every=2, precision="fp32",
    )
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    train({**cfg, "train": {**cfg["train"], "output_dir": str(root / "one"), "micro_batch_size": 4}})
    return root


# Metrics that are means over the whole batch: two processes must log the one-process
# value. (A loss's metrics over a subset of the batch, e.g. BCO's per-class reward means,
# are means of the per-process values instead.)
_MATCHING = (
    "loss", "loss/dpo", "loss/bco", "grad_norm", "lr", "epoch", "dpo/rewards/margins", "dpo/rewards/chosen",
    "bco/delta", "rewards/accuracy/helpful", "rewards/accuracy/default", "rewards/margins/helpful",
)


def _assert_runs_match(one: Path, two: Path) -> None:
    a, b = read_metrics(one), read_metrics(two)
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 2, 3, 3]
    for ra, rb in zip(a, b):
        keys = [k for k in ra if k.startswith("eval/")] or _MATCHING
        assert set(keys) <= set(rb)
        for key in keys:
            assert rb[key] == pytest.approx(ra[key], abs=ATOL), (ra["step"], key)
    assert any(k.startswith("eval/") for k in a[-1]) and "eval/rewards/margins/helpful" in a[-1]
    one_final, two_final = final_state(one), final_state(two)
    assert_states_equal(one_final, two_final, atol=ATOL)
    single = ckpt.load_checkpoint(one / "step-00000003")
    multi = ckpt.load_checkpoint(two / "step-00000003")
    assert multi.trainer_state["num_processes"] == 2
    assert multi.state["samplers"] == single.state["samplers"]
    delta_one, delta_two = single.state["providers"]["bco"]["delta"], multi.state["providers"]["bco"]["delta"]
    # per class: the steps whose global micro-batch held it (3 steps), and its moving average
    assert delta_two["counts"] == delta_one["counts"] and 3 <= sum(delta_one["counts"]) <= 2 * 3
    assert delta_two["means"] == pytest.approx(delta_one["means"], abs=ATOL)
    assert_states_equal(single.weights, multi.weights, atol=ATOL)
    assert {"rng_state_0.pt", "rng_state_1.pt"} <= {p.name for p in (two / "step-00000003").iterdir()}


def _assert_moved(root: Path) -> None:
    from safetensors.torch import load_file

    initial = load_file(str(root / "model" / "model.safetensors"))
    trained = final_state(root / "one")
    assert max(float((trained[k] - initial[k]).abs().max()) for k in initial) > 1e-4


@pytest.mark.slow
def test_accelerate_launch_ddp_two_cpu_processes_equal_one_process(setup_runs):
    root = setup_runs
    # --multi_gpu is accelerate's multi-process launcher (torchrun); `--cpu` would start one
    # process. train.cpu=true keeps the test on CPU on a machine with a GPU too.
    _launch(root, ["--multi_gpu"], ["-m", "feedalign"], [f"train.output_dir={root / 'ddp'}", "train.cpu=true"])
    _assert_moved(root)
    _assert_runs_match(root / "one", root / "ddp")


@pytest.fixture(scope="module")
def fsdp_run(setup_runs):
    root = setup_runs
    (root / "fsdp_on_cpu.py").write_text(FSDP_ON_CPU)
    (root / "fsdp.yaml").write_text(yaml.safe_dump(FSDP_CONFIG))
    launch = ["--config_file", str(root / "fsdp.yaml")]
    run = lambda out, *extra: _launch(  # noqa: E731
        root, launch, [str(root / "fsdp_on_cpu.py")], [f"train.output_dir={out}", *extra]
    )
    run(root / "fsdp")
    return root, run


@pytest.mark.slow
def test_fsdp_two_cpu_processes_equal_one_process(fsdp_run):
    root, _ = fsdp_run
    _assert_runs_match(root / "one", root / "fsdp")
    # The optimizer state was gathered from the shards: a full state keyed by parameter name.
    optimizer = ckpt.load_checkpoint(root / "fsdp" / "step-00000003").optimizer
    state = optimizer["fsdp_full"]["state"]
    assert "model.lm_head.weight" in state and state["model.lm_head.weight"]["exp_avg"].shape == (13, 32)


@pytest.mark.slow
def test_fsdp_resume_equals_uninterrupted(fsdp_run):
    root, run = fsdp_run
    cut = root / "fsdp_cut"
    shutil.copytree(root / "fsdp", cut)
    shutil.rmtree(cut / "step-00000003")
    shutil.rmtree(cut / "final")
    (cut / "latest").write_text("step-00000002\n")
    run(cut, "--resume")
    assert_states_equal(final_state(root / "fsdp"), final_state(cut))
    metrics = (cut / "metrics.jsonl").read_text()
    assert metrics == (root / "fsdp" / "metrics.jsonl").read_text() and '"step": 3' in metrics
