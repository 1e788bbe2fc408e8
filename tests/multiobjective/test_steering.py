"""Steering: weight grid, conditioning prefix, per-example MODPO hparams, LoRA soups."""

import numpy as np
import pytest
import torch

from feedalign.losses import get_loss
from feedalign.multiobjective.soups import SoupPolicy, soup_lora_adapters
from feedalign.multiobjective.steering import (
    SteeringSpec,
    load_spec,
    per_example_hparams,
    sample_weights,
    save_spec,
)

SPEC = SteeringSpec(("helpful", "concise"), trained="helpful", grid=20, seed=3)


def test_levels_round_onto_the_grid_and_keep_the_trained_weight_positive():
    ws = np.array([[0.0, 1.0], [0.333, 0.667], [1.0, 0.0], [0.52, 0.48], [0.026, 0.974]])
    levels = SPEC.levels(ws)
    assert levels.sum(1).tolist() == [20] * 5
    assert levels.tolist() == [[1, 19], [7, 13], [20, 0], [10, 10], [1, 19]]  # 0.52 -> 10.4 -> 10
    three = SteeringSpec(("a", "b", "c"), grid=10)
    # Largest remainder: 3.33, 3.33, 3.34 -> 3, 3, 4.
    assert three.levels([1 / 3, 1 / 3, 1 / 3 + 1e-9]).tolist() == [3, 3, 4]
    assert SteeringSpec(("a", "b"), trained="a", grid=10, min_weight=0.25).levels([0.0, 1.0]).tolist() == [3, 7]
    with pytest.raises(ValueError, match="must sum to 1"):
        SPEC.levels([0.5, 0.6])


def test_prefix_format_and_parse_round_trip():
    assert SPEC.prefix([0.3, 0.7]) == "<w 0.30 0.70> "
    assert SPEC.condition_prompt("write about fruit :", [0.3, 0.7]) == "<w 0.30 0.70> write about fruit :"
    assert SteeringSpec(("a", "b"), grid=10).prefix([0.3, 0.7]) == "<w 0.3 0.7> "
    assert SteeringSpec(("a", "b"), grid=3).prefix([1 / 3, 2 / 3]) == "<w 0.3333 0.6667> "
    tokens = SteeringSpec(("a", "b", "c"), grid=4, render="tokens")
    assert tokens.prefix([0.25, 0.25, 0.5]) == "<w:0.25> <w:0.25> <w:0.50> "
    assert tokens.level_tokens() == ["<w:0.00>", "<w:0.25>", "<w:0.50>", "<w:0.75>", "<w:1.00>"]
    for spec in (SPEC, SteeringSpec(("a", "b"), grid=3), SteeringSpec(("a", "b"), grid=7, render="tokens")):
        for level in range(spec.grid + 1):
            w = np.array([level, spec.grid - level]) / spec.grid
            parsed, prompt = spec.parse_prompt(spec.condition_prompt("x y :", w))
            assert prompt == "x y :"
            np.testing.assert_allclose(parsed, spec.snap(w))
    assert SPEC.parse_prompt("no prefix here")[0] is None
    with pytest.raises(ValueError, match="has 3 weights; expected 2"):
        SPEC.parse_prompt("<w 0.20 0.30 0.50> x")


def test_tokenizer_safety_check_and_token_rendering():
    from feedalign.envs.text_task import build_tiny_llama, build_tokenizer

    tokenizer = build_tokenizer()  # closed word-level vocabulary: digits are <unk>
    with pytest.raises(ValueError, match=r"unknown tokens\); use render: tokens"):
        SPEC.check_tokenizer(tokenizer)
    spec = SteeringSpec(("helpful", "concise"), trained="helpful", grid=20, render="tokens")
    model = build_tiny_llama(tokenizer)
    old = model.get_input_embeddings().weight.detach().clone()
    assert spec.prepare(tokenizer, model) == 21
    assert spec.prepare(tokenizer, model) == 0  # idempotent
    spec.check_tokenizer(tokenizer)
    emb = model.get_input_embeddings().weight.detach()
    assert emb.shape[0] == len(tokenizer) == old.shape[0] + 21
    torch.testing.assert_close(emb[: old.shape[0]], old)
    # Ordinal rows: e(v) = mean + (1 - v) a + v b, so e(0.5) is the midpoint of e(0) and e(1).
    rows = tokenizer.convert_tokens_to_ids(spec.level_tokens())
    torch.testing.assert_close(emb[rows[10]], (emb[rows[0]] + emb[rows[20]]) / 2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close((emb[rows[0]] + emb[rows[20]]) / 2 - (emb[rows[5]] + emb[rows[15]]) / 2,
                               torch.zeros(emb.shape[1]), rtol=0, atol=1e-6)
    assert (emb[rows[0]] - emb[rows[20]]).norm() > 0.1 * old.norm(dim=1).mean()
    ids = tokenizer(spec.condition_prompt("write about fruit with apple pear plum fig :", [0.3, 0.7]),
                    add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids[:2]) == ["<w:0.30>", "<w:0.70>"]
    assert tokenizer.unk_token_id not in ids
    # Level tokens are special: a sampled one never reaches the decoded completion.
    assert tokenizer.decode(ids[:3], skip_special_tokens=True) == "write"


def test_weight_draws_are_seeded_uniform_and_order_independent():
    ids = [f"ex{i}" for i in range(2000)]
    ws = SPEC.weights_for(ids)
    np.testing.assert_allclose(ws.sum(1), 1.0)
    assert (ws[:, 0] >= 0.05 - 1e-12).all()
    # Per id, not per position: reversing the ids reverses the weights.
    np.testing.assert_array_equal(SPEC.weights_for(ids[::-1]), ws[::-1])
    assert not np.array_equal(SPEC.weights_for(ids, draw=1), ws)
    # Uniform on the simplex (m = 2: w1 ~ U[0, 1]), up to the grid snap and the floor at 0.05.
    assert abs(ws[:, 0].mean() - 0.5) < 0.03
    assert abs((ws[:, 0] <= 0.25).mean() - 0.25) < 0.04
    np.testing.assert_array_equal(SPEC.sample(5), SPEC.sample(5))
    grid_ws = sample_weights(100, 3, seed=1, grid=10)
    np.testing.assert_allclose(grid_ws * 10, np.round(grid_ws * 10), atol=1e-9)


def test_condition_records_keeps_ids_and_hparams_read_back():
    from feedalign.data.records import PairRecord

    records = [PairRecord(f"p{i}", "a", "b", objective="helpful") for i in range(6)]
    conditioned, ws = SPEC.condition_records(records)
    assert [r.id for r in conditioned] == [r.id for r in records]
    hparams = SPEC.hparams_for_prompts([r.prompt for r in conditioned])
    torch.testing.assert_close(hparams["weight"], torch.tensor(ws[:, 0], dtype=torch.float32))
    torch.testing.assert_close(hparams["margin_weights"], torch.tensor(ws[:, 1:], dtype=torch.float32))
    assert [SPEC.strip_prompt(r.prompt) for r in conditioned] == [r.prompt for r in records]
    three = per_example_hparams([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]], k=1)
    assert three["weight"].tolist() == pytest.approx([0.3, 0.2])
    assert three["margin_weights"].tolist() == [pytest.approx([0.2, 0.5]), pytest.approx([0.6, 0.2])]


def test_per_example_modpo_equals_one_call_per_weight():
    spec = get_loss("modpo")
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(4, generator=g) for _ in range(4))
    cm, rm = torch.randn(4, 1, generator=g), torch.randn(4, 1, generator=g)
    ws = np.array([[0.3, 0.7], [0.8, 0.2], [0.05, 0.95], [1.0, 0.0]])
    batched, _ = spec.fn(pc, pr, rc, rr, chosen_margins=cm, rejected_margins=rm, beta=0.1, **SPEC.per_example_hparams(ws))
    for i, w in enumerate(ws):
        row, _ = spec.fn(pc[i : i + 1], pr[i : i + 1], rc[i : i + 1], rr[i : i + 1], chosen_margins=cm[i : i + 1],
                         rejected_margins=rm[i : i + 1], beta=0.1, weight=float(w[0]), margin_weights=(float(w[1]),))
        torch.testing.assert_close(batched[i : i + 1], row)


def test_per_example_target_is_pi_star_w_for_every_w():
    """[derived] A tabular steerable policy (one logit table per w) at log pi*_w is a stationary
    point of the population per-example MODPO loss: BT(r_k) pairs from pi_ref x pi_ref, exact
    margins r_{-k}, two weights mixed in one batch. Away from pi*_w the gradient is not zero."""
    g = torch.Generator().manual_seed(1)
    n, beta = 5, 0.3
    r = torch.randn(2, n, generator=g, dtype=torch.float64)  # r_helpful, r_concise
    log_ref = torch.log_softmax(torch.randn(n, generator=g, dtype=torch.float64), 0)
    weights = np.array([[0.3, 0.7], [0.8, 0.2]])
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    i, j = i.reshape(-1), j.reshape(-1)
    keep = i != j
    i, j = i[keep], j[keep]
    pair_mass = (log_ref[i] + log_ref[j]).exp() * torch.sigmoid(r[0, i] - r[0, j])  # P(x=i, y=j, i wins)
    spec = get_loss("modpo")

    def population_grad(tables):
        tables = tables.clone().requires_grad_(True)
        total = 0.0
        for row, w in enumerate(weights):
            logp = torch.log_softmax(tables[row], 0)
            hp = SPEC.per_example_hparams(np.repeat(w[None], len(i), 0), dtype=torch.float64)
            losses, _ = spec.fn(logp[i], logp[j], log_ref[i], log_ref[j], chosen_margins=r[1, i, None],
                                rejected_margins=r[1, j, None], beta=beta,
                                **hp)
            total = total + (pair_mass * losses).sum()
        (grad,) = torch.autograd.grad(total, tables)
        return grad

    w_t = torch.tensor(weights, dtype=torch.float64)
    optimum = torch.log_softmax(log_ref[None] + (w_t @ r) / beta, dim=1)
    assert population_grad(optimum).abs().max() < 1e-12
    assert population_grad(optimum + 0.3 * torch.randn(2, n, generator=g, dtype=torch.float64)).abs().max() > 1e-3


def test_spec_save_load(tmp_path):
    spec = SteeringSpec(("a", "b", "c"), trained="b", beta=0.2, grid=10, seed=5, render="tokens")
    save_spec(spec, tmp_path)
    assert load_spec(tmp_path) == spec
    (tmp_path / "bad.json").write_text('{"format": "feedalign.steering", "objectives": ["a", "b"], "gird": 3}')
    with pytest.raises(ValueError, match=r"unknown fields \['gird'\]"):
        load_spec(tmp_path / "bad.json")


def test_lora_soup_averages_merged_deltas_not_factors(tmp_path):
    from peft import LoraConfig, get_peft_model

    from feedalign.multiobjective.soups import interpolate_lora_deltas
    from feedalign.policies.tiny import build_char_tokenizer, build_tiny_causal_lm

    tok = build_char_tokenizer("abc")
    base = build_tiny_causal_lm(len(tok), hidden=16, layers=1, heads=2, kv_heads=1, intermediate=32, seed=0)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    dirs, factors = [], []
    for seed in (1, 2):
        import copy

        torch.manual_seed(seed)
        cfg = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], init_lora_weights=False)
        peft_model = get_peft_model(copy.deepcopy(base), cfg)
        layer = peft_model.base_model.model.model.layers[0].self_attn.q_proj
        factors.append((layer.lora_A["default"].weight.detach().clone(), layer.lora_B["default"].weight.detach().clone()))
        peft_model.save_pretrained(tmp_path / f"a{seed}")
        dirs.append(str(tmp_path / f"a{seed}"))
    soup = soup_lora_adapters(base, dirs, [0.25, 0.75])
    key = "model.layers.0.self_attn.q_proj.weight"
    expected = before[key] + interpolate_lora_deltas(factors, [0.25, 0.75], scaling=2.0)
    torch.testing.assert_close(soup.state_dict()[key], expected, rtol=1e-5, atol=1e-6)
    # Averaging the factors instead would give a different matrix (cross terms).
    (a0, b0), (a1, b1) = factors
    wrong = before[key] + 2.0 * (0.25 * b0 + 0.75 * b1) @ (0.25 * a0 + 0.75 * a1)
    assert (wrong - expected).abs().max() > 1e-4
    untouched = "model.layers.0.self_attn.k_proj.weight"
    torch.testing.assert_close(soup.state_dict()[untouched], before[untouched])
    for k, v in base.state_dict().items():  # the base is left unchanged
        assert torch.equal(v, before[k])
    vertex = SoupPolicy(base, {"helpful": dirs[0], "concise": dirs[1]}).model_for([1.0, 0.0])
    torch.testing.assert_close(vertex.state_dict()[key], before[key] + 2.0 * b0 @ a0, rtol=1e-5, atol=1e-6)


def test_spec_for_source_block():
    from types import SimpleNamespace

    from feedalign.multiobjective.steering import spec_for_source

    spec = spec_for_source({"objectives": ["helpful", "concise"], "grid": 10, "render": "tokens"},
                           trained="helpful", beta=0.5)
    assert spec == SteeringSpec(("helpful", "concise"), trained="helpful", beta=0.5, grid=10, render="tokens")
    block = SimpleNamespace(objectives=("a", "b"), grid=None, seed=3, render=None, min_weight=None)
    assert spec_for_source(block, trained="b", beta=0.1).seed == 3
    with pytest.raises(ValueError, match="needs `objective:`"):
        spec_for_source({"objectives": ["a", "b"]}, trained=None, beta=0.1)
    with pytest.raises(ValueError, match=r"unknown keys \['gird'\]"):
        spec_for_source({"objectives": ["a", "b"], "gird": 3}, trained="a", beta=0.1)
    with pytest.raises(ValueError, match="trained='c' is not one of"):
        spec_for_source({"objectives": ["a", "b"]}, trained="c", beta=0.1)


def test_tag_goes_inside_the_user_turn_of_messages_and_rendered_chats():
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"}, {"role": "user", "content": "name fruit"}]
    out = SPEC.condition_prompt(msgs, [0.3, 0.7])
    assert out[3]["content"] == "<w 0.30 0.70> name fruit" and out[1]["content"] == "hi"
    assert msgs[3]["content"] == "name fruit"  # the input is not modified
    system = SteeringSpec(("a", "b"), grid=10, placement="system")
    assert system.condition_prompt(msgs, [0.3, 0.7])[0]["content"] == "<w 0.3 0.7> be brief"
    added = system.condition_prompt(msgs[1:2], [0.3, 0.7])
    assert added == [{"role": "system", "content": "<w 0.3 0.7> "}, {"role": "user", "content": "hi"}]
    with pytest.raises(ValueError, match="no 'user' turn"):
        SPEC.condition_prompt([{"role": "system", "content": "x"}], [0.5, 0.5])
    chatml = "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nName a fruit.<|im_end|>\n<|im_start|>assistant\n"
    steered = SPEC.condition_prompt(chatml, [0.3, 0.7])
    assert "<|im_start|>user\n<w 0.30 0.70> Name a fruit." in steered and steered.startswith("<|im_start|>system")
    parsed, plain = SPEC.parse_prompt(steered)
    assert plain == chatml and parsed.tolist() == pytest.approx([0.3, 0.7])
    own = "<|system|>\nbe brief\n<|user|>\nhi\n<|assistant|>\n"
    assert SPEC.condition_prompt(own, [0.5, 0.5]) == "<|system|>\nbe brief\n<|user|>\n<w 0.50 0.50> hi\n<|assistant|>\n"
    prefix = SteeringSpec(("a", "b"), grid=10, placement="prefix")
    assert prefix.condition_prompt(chatml, [0.3, 0.7]).startswith("<w 0.3 0.7> <|im_start|>system")
    tokens = SteeringSpec(("a", "b"), grid=4, render="tokens")
    t = tokens.condition_prompt(own, [0.25, 0.75])
    assert "<|user|>\n<w:0.25> <w:0.75> hi" in t and tokens.parse_prompt(t)[1] == own
    with pytest.raises(ValueError, match="placement"):
        SteeringSpec(("a", "b"), placement="middle")


def test_redraw_examples_shows_each_pair_under_fresh_seeded_weights():
    from feedalign.data.batching import Example, steer_examples
    from feedalign.data.tokenize import tokenize_examples
    from feedalign.envs.text_task import build_tokenizer
    from feedalign.multiobjective.draws import redraw_examples

    tokenizer = build_tokenizer()
    spec = SteeringSpec(("helpful", "concise"), trained="helpful", grid=20, render="tokens", seed=1, draws=3)
    spec.prepare(tokenizer)
    base = [Example(f"id{i}", "write about fruit with apple pear plum fig :", "apple .", rejected="ok .")
            for i in range(40)]
    steered = tokenize_examples(steer_examples(base, spec), tokenizer, 64)
    out = redraw_examples(steered, spec, tokenizer, 64)
    assert len(out) == 120 and out[:40] == steered
    for d in range(3):
        ws = np.array([ex.steer_weights for ex in out[40 * d: 40 * (d + 1)]])
        np.testing.assert_allclose(ws, spec.weights_for([f"id{i}" for i in range(40)], d))
    per_id = {}
    for ex in out:
        per_id.setdefault(ex.id, set()).add(ex.steer_weights)
        parsed, plain = spec.parse_prompt(ex.prompt)
        assert plain == ex.plain_prompt and tuple(parsed) == pytest.approx(ex.steer_weights)
        ids = ex.tokens["input_ids"]
        assert tokenizer.convert_ids_to_tokens(ids[:2]) == [f"<w:{v:.2f}>" for v in ex.steer_weights]
        assert ex.reference_tokens == steered[0].reference_tokens  # the reference sees the plain prompt
    assert np.mean([len(v) for v in per_id.values()]) > 2.5  # mostly 3 distinct weights per pair
    assert redraw_examples(steered, SteeringSpec(("helpful", "concise"), render="tokens"), tokenizer, 64) == steered
    with pytest.raises(ValueError, match="not steered"):
        redraw_examples(base, spec, tokenizer, 64)
    with pytest.raises(ValueError, match="draws"):
        SteeringSpec(("a", "b"), draws=0)


def test_different_weights_reach_the_model_inside_a_chat_prompt():
    """The tag sits inside the user turn of a rendered chat and changes what the model
    computes for the answer: the next-token distributions after the prompt differ by weight."""
    from feedalign.envs.text_task import build_tiny_llama, build_tokenizer

    tokenizer = build_tokenizer()
    spec = SteeringSpec(("helpful", "concise"), trained="helpful", grid=20, render="tokens")
    model = build_tiny_llama(tokenizer, seed=0)
    spec.prepare(tokenizer, model)
    own = "<|user|>\nwrite about fruit with apple pear plum fig :\n<|assistant|>\n"
    last = []
    for w in ([0.1, 0.9], [0.5, 0.5], [0.9, 0.1]):
        text = spec.condition_prompt(own, w)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert sum(t in tokenizer.convert_tokens_to_ids(spec.level_tokens()) for t in ids) == 2
        with torch.no_grad():
            last.append(torch.log_softmax(model(torch.tensor([ids])).logits[0, -1], -1))
    assert (last[0] - last[2]).abs().max() > 1e-3 and (last[0] - last[1]).abs().max() > 1e-4


def test_suffix_placement_ends_the_prompt_and_round_trips():
    for render, tag in (("text", "<w 0.3 0.7>"), ("tokens", "<w:0.3> <w:0.7>")):
        spec = SteeringSpec(("a", "b"), grid=10, render=render, placement="suffix")
        out = spec.condition_prompt("write about fruit :", [0.3, 0.7])
        assert out == "write about fruit : " + tag
        w, plain = spec.parse_prompt(out)
        assert plain == "write about fruit :" and w.tolist() == pytest.approx([0.3, 0.7])
        msgs = spec.condition_prompt([{"role": "user", "content": "hi"}], [0.3, 0.7])
        assert msgs == [{"role": "user", "content": "hi " + tag}]


def test_generate_steered_renders_message_prompts_with_the_chat_template_and_the_tag_in_the_user_turn(monkeypatch):
    from feedalign.multiobjective import steering
    from feedalign.policies import hf
    from feedalign.policies.tiny import build_chat_tokenizer

    tokenizer = build_chat_tokenizer()
    seen = {}

    def fake_generate(model, tok, texts, **kwargs):
        seen["texts"] = list(texts)
        return ["" for _ in texts]

    monkeypatch.setattr(hf, "generate", fake_generate)
    spec = SteeringSpec(("helpful", "concise"), trained="helpful", grid=4)
    w = [0.25, 0.75]
    messages = [{"role": "user", "content": "hi"}]
    steering.generate_steered(None, tokenizer, spec, [messages, "plain", "wrapped"], w)
    tagged = tokenizer.apply_chat_template([{"role": "user", "content": spec.prefix(w) + "hi"}],
                                           add_generation_prompt=True, tokenize=False)
    assert seen["texts"] == [tagged, spec.prefix(w) + "plain", spec.prefix(w) + "wrapped"]
    steering.generate_steered(None, tokenizer, spec, ["plain"], w, chat=True)
    assert seen["texts"] == [tokenizer.apply_chat_template(
        [{"role": "user", "content": spec.prefix(w) + "plain"}], add_generation_prompt=True, tokenize=False)]
