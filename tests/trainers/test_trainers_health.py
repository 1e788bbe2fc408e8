"""Health checks (trainers/health.py) and KTO class weights from the counts."""

import json
import math

import pytest

from feedalign.losses.unpaired import class_weight_hparams, kto_class_weights
from feedalign.trainers.health import (
    distinct_n,
    repetition_rate,
    sample_warnings,
    sequence_kl,
    trend_warnings,
)
from trainer_fixtures import base_config, labeled_rows, save_tiny_model, write_jsonl


def test_text_metrics_by_hand():
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)  # (a b) twice
    assert math.isnan(distinct_n(["a"], 2))
    assert repetition_rate(["x y z x y z", "a b c d"], 3) == pytest.approx((1 - 3 / 4) / 2)
    assert sequence_kl([-1.0, -2.0], [-3.0, -2.0]) == pytest.approx(1.0)
    assert sample_warnings({"health/repetition_rate": 0.9, "health/kl": 1.0})[0].startswith("repetition rate 0.90")
    assert sample_warnings({"health/repetition_rate": 0.1, "health/kl": 50.0})[0].startswith("sequence KL")


def test_both_class_rewards_falling_is_warned():
    falling = [{"step": 1, "kto/rewards/desirable": 0.0, "kto/rewards/undesirable": 0.0},
               {"step": 2, "kto/rewards/desirable": -0.3, "kto/rewards/undesirable": -0.6}]
    (warning,) = trend_warnings(falling)
    assert "kto/rewards/desirable" in warning and "both fell" in warning
    diverging = [dict(falling[0]), {"step": 2, "kto/rewards/desirable": 0.3, "kto/rewards/undesirable": -0.6}]
    assert trend_warnings(diverging) == []


def test_kto_class_weights_follow_the_paper_ratio():
    w = kto_class_weights(51, 195)
    assert w["undesirable_weight"] == 1.0
    assert w["desirable_weight"] * 51 / 195 == pytest.approx(1.0)
    w = kto_class_weights(300, 100)
    assert w["desirable_weight"] * 300 / (w["undesirable_weight"] * 100) == pytest.approx(4 / 3)
    assert kto_class_weights(110, 100) == {"desirable_weight": 1.0, "undesirable_weight": 1.0}
    assert kto_class_weights(0, 10) == {} and class_weight_hparams("dpo", 1, 5) == {}


def test_imbalanced_kto_gets_class_weights_and_eval_generation_logs_health(tmp_path):
    from feedalign.trainers.loop import train

    model = save_tiny_model(tmp_path / "model")
    rows = labeled_rows(4, seed=1, labels="up") + labeled_rows(16, seed=2, labels="down", prefix="d")
    data = [{"path": str(write_jsonl(tmp_path / "thumbs.jsonl", rows)), "loss": "kto"}]
    cfg = base_config(model, tmp_path / "out", data, max_steps=2, eval_fraction=0.2, eval_every=2,
                      eval_generate=3, eval_max_new_tokens=4, eval_judge="trainer_fixtures:length_judge")
    with pytest.warns(UserWarning, match="imbalanced classes"):
        result = train(cfg)
    assert {"health/distinct_2", "health/repetition_rate", "health/kl", "health/judge"} <= set(result.eval_metrics)
    assert result.eval_metrics["health/kl"] == pytest.approx(result.eval_metrics["health/kl"])  # finite
    samples = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 and all("completion" in s for s in samples)
    card = (result.final_dir / "README.md").read_text()
    n_up = sum(1 for r in rows if r["label"])
    assert '"desirable_weight":' in card and "Health warnings" in card
    assert n_up == 4 and isinstance(result.health_warnings, tuple)
