"""Atomic checkpoints: manifest verification, fallback, rotation, round trip."""

from __future__ import annotations

import torch

from feedalign.trainers import checkpoint as ckpt


def _payload(step: int) -> ckpt.CheckpointPayload:
    torch.manual_seed(step)
    return ckpt.CheckpointPayload(
        step=step,
        weights={"w": torch.randn(3, 4), "b": torch.randn(4)},
        optimizer={"state": {0: {"exp_avg": torch.randn(3)}}, "param_groups": [{"lr": 0.1}]},
        scheduler={"last_epoch": step},
        state={"rng": ckpt.rng_state(), "samplers": {"s": {"epoch": 1, "position": step}}},
        trainer_state={"step": step},
        config_yaml="train: {}\n",
    )


def test_round_trip_and_latest_pointer(tmp_path):
    path = ckpt.save_checkpoint(tmp_path, _payload(3), keep=0)
    assert path.name == "step-00000003"
    assert (tmp_path / "latest").read_text().strip() == "step-00000003"
    assert ckpt.verify_checkpoint(path) is None
    loaded = ckpt.load_checkpoint(path)
    assert loaded.step == 3
    assert torch.equal(loaded.weights["w"], _payload(3).weights["w"])
    assert torch.equal(loaded.optimizer["state"][0]["exp_avg"], _payload(3).optimizer["state"][0]["exp_avg"])
    assert loaded.state["samplers"] == {"s": {"epoch": 1, "position": 3}}
    assert not list(tmp_path.glob("*.tmp"))


def test_rng_state_round_trip():
    state = ckpt.rng_state()
    a = (torch.rand(3), torch.randint(0, 100, (2,)))
    ckpt.set_rng_state(state)
    b = (torch.rand(3), torch.randint(0, 100, (2,)))
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_rotation_keeps_the_newest(tmp_path):
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(tmp_path, _payload(step), keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-00000003", "step-00000004"]


def test_resume_falls_back_past_tmp_and_corrupt_checkpoints(tmp_path):
    for step in (1, 2):
        ckpt.save_checkpoint(tmp_path, _payload(step), keep=0)
    # An interrupted save of step 3 leaves only a *.tmp directory.
    (tmp_path / "ckpt-00000003.tmp").mkdir()
    (tmp_path / "ckpt-00000003.tmp" / "weights.safetensors").write_bytes(b"partial")
    assert ckpt.find_resume_checkpoint(tmp_path).name == "step-00000002"
    # The newest complete-looking checkpoint has a damaged file: checksum mismatch.
    optimizer = tmp_path / "step-00000002" / "optimizer.pt"
    optimizer.write_bytes(optimizer.read_bytes()[:-7])
    assert "checksum mismatch" in ckpt.verify_checkpoint(tmp_path / "step-00000002")
    assert ckpt.find_resume_checkpoint(tmp_path).name == "step-00000001"
    # A step directory without a manifest (renamed by hand, say) is not complete either.
    (tmp_path / "step-00000001" / "manifest.json").unlink()
    assert ckpt.find_resume_checkpoint(tmp_path) is None
    ckpt.remove_incomplete(tmp_path)
    assert not (tmp_path / "ckpt-00000003.tmp").exists()


def test_saving_a_step_again_replaces_it(tmp_path):
    ckpt.save_checkpoint(tmp_path, _payload(5), keep=0)
    payload = _payload(5)
    payload.weights["w"] = torch.zeros(3, 4)
    ckpt.save_checkpoint(tmp_path, payload, keep=0)
    assert torch.equal(ckpt.load_checkpoint(tmp_path / "step-00000005").weights["w"], torch.zeros(3, 4))


def test_trainable_state_round_trip():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Linear(3, 1))
    model[0].requires_grad_(False)
    state = {k: v.detach().clone() + 1 for k, v in ckpt.trainable_state(model).items()}
    assert set(state) == {"1.weight", "1.bias"}
    ckpt.load_trainable_state(model, state)
    assert torch.equal(model[1].weight, state["1.weight"])
    try:
        ckpt.load_trainable_state(model, {"1.weight": state["1.weight"]})
    except ValueError as exc:
        assert "missing ['1.bias']" in str(exc)
    else:
        raise AssertionError("expected a mismatch error")
