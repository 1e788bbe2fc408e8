"""The trainer's side of loss state: the batch services providers use, config checks, and
providers built from a loss's declaration (no state or loss names in the trainer)."""

from __future__ import annotations

import pytest
import torch

from feedalign.config import ConfigError, DataSourceConfig, MarginsConfig, TrainConfig
from feedalign.data.batching import Batch, Example
from feedalign.losses import StateProvider, get_loss, register_loss, unregister_loss
from feedalign.losses import _hparams as hp
from feedalign.losses._state import MarginRewards, RewardShift
from feedalign.trainers.state import (
    TrainerStateContext,
    check_state,
    make_margin_source,
    make_providers,
    mismatched_rows,
    state_inputs,
)


def _batch(prompts, completions, ids=None, extras=None):
    ids = ids or [str(i) for i in range(len(prompts))]
    examples = [Example(i, p, c) for i, p, c in zip(ids, prompts, completions)]
    return Batch(examples, {}, ids, list(prompts), list(completions), torch.ones(len(prompts)), None, extras or {})


def test_kto_state_scores_rotated_texts_with_stable_row_ids():
    calls = []

    def scorer(prompts, completions, ids):
        calls.append((list(prompts), list(completions), list(ids)))
        return torch.tensor([-1.0, -2.0, -4.0]), torch.tensor([-1.5, -1.0, -4.5])

    spec = get_loss("kto")
    providers = spec.make_state(spec.resolve_hparams())
    batch = _batch(["x0", "x1", "x2"], ["y0", "y1", "y2"], ids=["a", "b", "c"])
    ctx = TrainerStateContext(batch, "unpaired", torch.zeros(3), torch.zeros(3), torch.ones(3, dtype=torch.bool),
                              True, scorer=scorer)
    out = state_inputs(providers, ctx)
    assert calls == [(["x0", "x1", "x2"], ["y1", "y2", "y0"], ["a|kl|b", "b|kl|c", "c|kl|a"])]
    assert out["kl_ref"].item() == pytest.approx((0.5 - 1.0 + 0.5) / 3)
    # the cache fill asks for exactly the rows the provider scores
    assert mismatched_rows(providers, ctx) == [tuple(calls[0])]


def test_totals_are_summed_over_processes():
    gathered = []

    def gather(tensor):
        gathered.append(tensor)
        return torch.cat([tensor, tensor + 1.0])  # a second process with one more per row

    ctx = TrainerStateContext(_batch(["x"], ["y"]), "unpaired", torch.zeros(1), None, None, True, gather=gather)
    assert ctx.total(torch.tensor([1.0, 2.0])).item() == 3.0 + 4.0


def test_margin_rewards_score_the_plain_prompts_of_steered_batches():
    seen = []

    def source(prompts, completions):
        seen.append(list(prompts))
        return torch.zeros(len(prompts), 1)

    batch = _batch(["<w> p", "<w> p"], ["a", "b"], extras={"plain_prompts": ["p", "p"]})
    batch.examples = batch.examples[:1]  # one pair, two rows
    ctx = TrainerStateContext(batch, "pair", torch.zeros(2), torch.zeros(2), None, True, margin_source=source)
    out = MarginRewards({}).compute(ctx)
    assert seen == [["p", "p"]] and out["chosen_margins"].shape == (1, 1)


def test_check_state_and_provider_construction():
    train = TrainConfig(output_dir="o", micro_batch_size=1)
    with pytest.raises(ConfigError, match="micro_batch_size >= 2"):
        check_state(get_loss("kto"), DataSourceConfig(loss="kto"), train, "data.0")
    with pytest.raises(ConfigError) as info:
        check_state(get_loss("modpo"), DataSourceConfig(loss="modpo"), train, "data.3")
    assert info.value.key == "data.3.margins"
    source = DataSourceConfig(loss="modpo", margins=MarginsConfig(target="trainer_fixtures:length_margins"))
    check_state(get_loss("modpo"), source, train, "data.0")
    assert make_margin_source(get_loss("modpo"), source) is not None
    assert make_margin_source(get_loss("dpo"), DataSourceConfig(loss="dpo")) is None
    bad = DataSourceConfig(loss="modpo", margins=MarginsConfig(target="no_such_module_xyz:fn"))
    with pytest.raises(ConfigError) as info:
        make_margin_source(get_loss("modpo"), bad, prefix="data.1")
    assert info.value.key == "data.1.margins"
    shift = make_providers(get_loss("bco"), DataSourceConfig(loss="bco"), get_loss("bco").resolve_hparams())["delta"]
    assert isinstance(shift, RewardShift) and shift.rule == "midpoint"


class _BatchCounter(StateProvider):
    """A test-only stateful provider: the number of training rows seen so far."""

    outputs = ("seen",)
    hparams = {"count_scale": (1.0, hp.positive)}

    def __init__(self, hparams):
        self.scale, self.rows = float(hparams["count_scale"]), torch.zeros((), dtype=torch.float64)

    def compute(self, ctx):
        return {"seen": (self.scale * self.rows).to(torch.float32)}

    def update(self, ctx):
        self.rows = self.rows.to(ctx.policy_logps.device) + ctx.total(torch.ones_like(ctx.policy_logps)).double()

    def state_dict(self):
        return {"rows": float(self.rows)}

    def load_state_dict(self, state):
        self.rows = torch.tensor(state["rows"], dtype=torch.float64)


def _counting_sft(policy_logps, *, seen, count_scale: float = 1.0):
    """Test-only loss: SFT whose metric reports the state it was given."""
    return -policy_logps, {"seen": torch.as_tensor(seen).detach()}


def test_a_new_stateful_loss_needs_no_trainer_change(tmp_path):
    """A loss with its own state provider, registered from outside the package, trains
    through the trainer and is checkpointed under its state name."""
    from trainer_fixtures import base_config, labeled_rows, save_tiny_model, write_jsonl

    from feedalign.trainers import checkpoint as ckpt
    from feedalign.trainers import train

    register_loss("_t_counting_sft", feedback="sequence", needs_reference=False,
                  state={"rows_seen": _BatchCounter})(_counting_sft)
    try:
        model = save_tiny_model(tmp_path / "model")
        data = write_jsonl(tmp_path / "pos.jsonl", labeled_rows(12, seed=3, labels="up"))
        cfg = base_config(model, tmp_path / "out", [{"path": str(data), "loss": "_t_counting_sft"}],
                          max_steps=3, save_every=3, eval_fraction=0.0)
        result = train(cfg)
        saved = ckpt.load_checkpoint(result.checkpoint)
        assert saved.state["providers"]["_t_counting_sft"]["rows_seen"] == {"rows": 3 * 4}
        assert result.metrics["_t_counting_sft/seen"] == pytest.approx(2 * 4)  # before the 3rd update
    finally:
        unregister_loss("_t_counting_sft")
