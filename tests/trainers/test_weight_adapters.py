"""Weight adapters (``steer.adapter_rank``): per-objective low-rank deltas mixed by the weight
the prompt's level tokens carry (multiobjective/weight_adapters.py)."""

from __future__ import annotations

import copy

import pytest
import torch
from trainer_fixtures import base_config, pair_rows, save_tiny_model, write_jsonl

from feedalign.config.errors import ConfigError
from feedalign.multiobjective import weight_adapters
from feedalign.multiobjective.steering import SteeringSpec, load_spec
from feedalign.trainers.loop import train

SPEC = SteeringSpec(objectives=("helpful", "concise"), grid=4, render="tokens", seed=3, adapter_rank=2)


@pytest.fixture()
def tiny(tmp_path):
    from feedalign.policies.hf import load_causal_lm, load_tokenizer

    directory = save_tiny_model(tmp_path / "model")
    tok = load_tokenizer(directory)
    SPEC.prepare(tok)
    model = load_causal_lm(directory)
    SPEC.prepare_model(model, tok)
    return model, tok


def _ids(tok, w, text="abc cab"):
    prompt = text if w is None else SPEC.condition_prompt(text, w)
    return torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])


def _randomise(adapters, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapters.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)


def _merged(model, adapters, w):
    """A plain copy of the base with W0 + sum_k w_k B_k A_k written into its linear layers."""
    merged = copy.deepcopy(model)
    delattr(merged, weight_adapters.MODULE_NAME)
    decoder = merged.get_decoder()
    for name, module in decoder.named_modules():
        if isinstance(module, torch.nn.Linear):
            module._forward_hooks.clear()
            d = adapters.deltas[name.replace(".", "__")]
            gate = torch.tensor(w, dtype=torch.float32).repeat_interleave(d.rank)
            with torch.no_grad():
                module.weight += d.b @ (gate[:, None] * d.a)
    decoder._forward_pre_hooks.clear()
    decoder._forward_pre_hooks_with_kwargs.clear()
    return merged


def test_untrained_adapters_are_the_base_and_freeze_it(tiny):
    model, tok = tiny
    before = model(_ids(tok, [0.25, 0.75])).logits
    adapters = weight_adapters.attach(model, SPEC, tok)
    assert torch.equal(model(_ids(tok, [0.25, 0.75])).logits, before)  # B = 0
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(weight_adapters.MODULE_NAME + ".") for n in trainable)
    assert len(adapters.deltas) == sum(isinstance(m, torch.nn.Linear) for m in model.get_decoder().modules())


@pytest.mark.parametrize("w", [[1.0, 0.0], [0.0, 1.0], [0.25, 0.75]])
def test_the_tagged_model_is_the_soup_of_the_deltas(tiny, w):
    """For the weight its tag carries, the model equals the base with sum_k w_k B_k A_k merged
    into every linear layer (a weight soup of the per-objective deltas)."""
    model, tok = tiny
    adapters = weight_adapters.attach(model, SPEC, tok)
    _randomise(adapters)
    ids = _ids(tok, w)
    got = model(ids).logits
    want = _merged(model, adapters, w)(ids).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    other = model(_ids(tok, [1.0 - w[0], 1.0 - w[1]])).logits
    assert not torch.allclose(got, other, atol=1e-3)


def test_rows_carry_their_own_weights_and_untagged_rows_get_the_base(tiny):
    model, tok = tiny
    base = model(_ids(tok, None)).logits
    adapters = weight_adapters.attach(model, SPEC, tok)
    _randomise(adapters)
    a, b = _ids(tok, [1.0, 0.0]), _ids(tok, [0.0, 1.0])
    both = model(torch.cat([a, b])).logits
    torch.testing.assert_close(both[0:1], model(a).logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(both[1:2], model(b).logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model(_ids(tok, None)).logits, base, rtol=1e-5, atol=1e-5)


def test_cached_generation_keeps_the_prompts_weights(tiny):
    model, tok = tiny
    adapters = weight_adapters.attach(model, SPEC, tok)
    _randomise(adapters)
    ids = _ids(tok, [0.0, 1.0])
    kwargs = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": tok.pad_token_id}
    got = model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)
    want = _merged(model, adapters, [0.0, 1.0]).generate(ids, attention_mask=torch.ones_like(ids), **kwargs)
    assert torch.equal(got, want)


def test_a_deep_copy_has_its_own_adapters(tiny):
    model, tok = tiny
    adapters = weight_adapters.attach(model, SPEC, tok)
    ids = _ids(tok, [0.0, 1.0])
    frozen = copy.deepcopy(model)  # the copy reference
    before = frozen(ids).logits
    _randomise(adapters)
    assert torch.equal(frozen(ids).logits, before)
    assert not torch.allclose(model(ids).logits, before)


def test_a_row_with_part_of_a_tag_is_an_error(tiny):
    model, tok = tiny
    weight_adapters.attach(model, SPEC, tok)
    one = tok.convert_tokens_to_ids(SPEC.level_tokens()[1])
    with pytest.raises(ValueError, match="a weight tag has 2"):
        model(torch.tensor([[one, 5, 6]]))


def _source(pairs, **steer):
    return {"path": str(pairs), "loss": "modpo", "objective": "helpful",
            "hparams": {"beta": 0.1, "scale_by_weight": True},
            "margins": {"kind": "callable", "target": "trainer_fixtures:length_margins"},
            "steer": {"objectives": ["helpful", "concise"], "grid": 4, "render": "tokens", "draws": 2,
                      "adapter_rank": 2, **steer}}


def test_a_steered_run_trains_only_the_adapters_and_reloads_them(tmp_path):
    from feedalign.cli.train_cmd import load_for_generation
    from feedalign.policies.hf import load_causal_lm

    model_dir = save_tiny_model(tmp_path / "model")
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(16, seed=1, objective="helpful"))
    result = train(base_config(model_dir, tmp_path / "out", [_source(pairs)], max_steps=3, save_every=3, seed=3))
    final = result.final_dir
    assert (final / weight_adapters.ADAPTERS_FILE).is_file()
    assert load_spec(final).adapter_rank == 2
    base = load_causal_lm(model_dir).state_dict()
    saved = load_causal_lm(final).state_dict()
    for name, tensor in base.items():  # frozen base (the embeddings only grew by the level rows)
        torch.testing.assert_close(saved[name][: tensor.shape[0]], tensor, rtol=0, atol=0)
    trained = weight_adapters.find(result.model)
    assert any(bool(d.b.abs().sum() > 0) for d in trained.deltas.values())
    spec = load_spec(final)
    for path in (final, tmp_path / "out" / "step-00000003"):
        model, tok = load_for_generation(path)
        ids = torch.tensor([tok(spec.condition_prompt("abc", [0.0, 1.0]), add_special_tokens=False)["input_ids"]])
        result.model.eval()
        torch.testing.assert_close(model(ids).logits, result.model(ids).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("change, match", [
    ({"model": {"lora": {"r": 4}}}, "replaces model.lora"),
    ({"train": {"packing": True}}, "train.packing"),
    ({"steer": {"render": "text"}}, "render: tokens"),
    ({"reference": {"strategy": "adapter"}}, "with steer.adapter_rank use 'copy'"),
])
def test_configurations_the_adapters_cannot_serve_are_refused(tmp_path, change, match):
    model_dir = save_tiny_model(tmp_path / "model")
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(8, seed=1, objective="helpful"))
    cfg = base_config(model_dir, tmp_path / "out", [_source(pairs, **change.get("steer", {}))], max_steps=1)
    cfg["model"].update(change.get("model", {}))
    cfg["train"].update(change.get("train", {}))
    if "reference" in change:
        cfg["reference"] = change["reference"]
    with pytest.raises((ConfigError, ValueError), match=match):
        train(cfg)


def test_a_decoding_step_that_feeds_a_level_token_keeps_the_prompts_weights(tiny):
    model, tok = tiny
    adapters = weight_adapters.attach(model, SPEC, tok)
    _randomise(adapters)
    ids = _ids(tok, [0.0, 1.0])
    level = torch.tensor([[tok.convert_tokens_to_ids(SPEC.level_tokens()[2])]])
    first = model(ids, use_cache=True)
    step = model(level, past_key_values=first.past_key_values).logits
    want = _merged(model, adapters, [0.0, 1.0])(torch.cat([ids, level], dim=1)).logits[:, -1:]
    torch.testing.assert_close(step, want, rtol=1e-5, atol=1e-5)


def test_one_token_per_weight_vector_tags_mix_the_deltas_too(tiny):
    """``per_objective=False`` (the N-grams benchmark's tags): one token carries the whole
    vector; the first such token of a row sets its weight."""
    model, tok = tiny
    a, b = tok.convert_tokens_to_ids(SPEC.level_tokens()[0]), tok.convert_tokens_to_ids(SPEC.level_tokens()[1])
    adapters = weight_adapters.attach_tags(model, {a: [0.25, 0.75], b: [1.0, 0.0]}, 2, 2, per_objective=False)
    _randomise(adapters)
    ids = torch.cat([_ids(tok, None), torch.tensor([[a, b]])], dim=1)
    torch.testing.assert_close(model(ids).logits, _merged(model, adapters, [0.25, 0.75])(ids).logits,
                               rtol=1e-5, atol=1e-5)
