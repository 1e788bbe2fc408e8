import itertools

import numpy as np
import pytest
import torch

from feedalign.envs.text_task import (
    CATEGORIES,
    CLOSERS,
    MODEL_SIZES,
    NO_ITEM,
    OPENERS,
    PROMPT_WORDS,
    TextTask,
    build_tiny_llama,
    build_tokenizer,
    count_words,
    vocabulary,
)

PROMPT = "write about fruit with apple kiwi plum fig :"


@pytest.fixture(scope="module")
def task():
    return TextTask(seed=0)


@pytest.fixture(scope="module")
def sft(task):
    return task.sft_samples(1500, seed=3)


def test_scores_by_hand(task):
    # words: i like apple fig and dog too -> 7 of max 12; fruit: apple, fig -> 2/4
    assert task.score(PROMPT, "i like apple , fig and dog too .") == pytest.approx(
        {"helpful": 0.5, "concise": 5 / 12})
    # any fruit counts, not only the listed examples; helpful is capped at four items
    assert task.score(PROMPT, "mango , pear , plum , fig and apple .") == pytest.approx(
        {"helpful": 1.0, "concise": 0.5})
    # a repeated item counts once for helpful, every time for length
    assert task.score(PROMPT, "apple apple apple .") == pytest.approx(
        {"helpful": 0.25, "concise": 0.75})
    assert task.score(PROMPT, ".") == {"helpful": 0.0, "concise": 1.0}
    assert task.score(PROMPT, "kiwi , plum , fig and apple .") == pytest.approx(
        {"helpful": 1.0, "concise": 7 / 12})
    assert task.score(PROMPT, " ".join(["ok"] * 20) + " .")["concise"] == 0.0
    # scoring does not depend on spacing around punctuation
    assert task.score(PROMPT, "apple,fig.") == task.score(PROMPT, "apple , fig .")
    assert count_words("well , apple and fig .") == 4
    assert TextTask(max_words=20).score(PROMPT, "apple .")["concise"] == pytest.approx(0.95)


def test_requested_mode_counts_only_listed_items():
    task = TextTask(helpful="requested")
    # pear and mango are fruit but not listed; dog is off-topic
    assert task.score(PROMPT, "i like apple , pear , mango and dog .") == pytest.approx(
        {"helpful": 0.25, "concise": 5 / 12})
    assert task.score(PROMPT, "fig , kiwi , plum and apple .")["helpful"] == 1.0
    unlisted = set(CATEGORIES["fruit"]) - {"apple", "kiwi", "plum", "fig"}
    other_topics = {w for t, items in CATEGORIES.items() if t != "fruit" for w in items}
    rng = np.random.default_rng(0)
    for _ in range(200):  # demonstrations: listed items plus at most one unlisted fruit
        words = task.sample_sft_completion(PROMPT, rng).split()
        assert sum(w in unlisted for w in words) <= 1 and not set(words) & other_topics
    with pytest.raises(ValueError, match="helpful='listed'"):
        TextTask(helpful="listed")


def test_score_many_and_errors(task):
    out = task.score_many([PROMPT, PROMPT], ["apple .", "ok ."])
    assert set(out) == set(task.OBJECTIVES)
    np.testing.assert_allclose(out["helpful"], [0.25, 0.0])
    with pytest.raises(ValueError, match="2 prompts but 1"):
        task.score_many([PROMPT, PROMPT], ["x"])
    with pytest.raises(ValueError, match="write about <topic> with"):
        task.score("tell me about apples", "apple .")
    with pytest.raises(ValueError, match="topic in"):
        task.score("write about cars with a b c d :", "apple .")
    with pytest.raises(ValueError, match="max_words"):
        TextTask(max_words=3)


def test_prompts_deterministic_distinct_and_parsable(task):
    a = task.prompts(300, "train", seed=1)
    assert a == task.prompts(300, "train", seed=1)
    assert a != task.prompts(300, "train", seed=2)
    assert len(set(a)) == 300
    for prompt in a[:50]:
        category, items = task.parse_prompt(prompt)
        assert len(items) == 4 and set(items) <= set(CATEGORIES[category])
    with pytest.raises(ValueError, match="split"):
        task.prompts(3, "valid")


def test_train_and_test_prompts_are_disjoint_item_sets(task):
    def item_sets(split, n):
        return {frozenset(task.parse_prompt(p)[1]) for p in task.prompts(n, split, seed=0)}

    train, test = item_sets("train", 8000), item_sets("test", 2000)
    assert train and test and not train & test
    total = sum(len(list(itertools.combinations(v, 4))) for v in CATEGORIES.values())
    assert len(train) + len(test) <= total
    # a different task seed gives a different split
    other = TextTask(seed=1)
    assert {frozenset(other.parse_prompt(p)[1]) for p in other.prompts(2000, "test")} != test


def test_sft_data_spans_both_objectives_and_they_conflict(task, sft):
    scores = task.score_many([p for p, _ in sft], [c for _, c in sft])
    helpful, concise = scores["helpful"], scores["concise"]
    assert set(np.round(helpful * 4)) == {0, 1, 2, 3, 4}
    assert helpful.std() > 0.25 and concise.std() > 0.15
    assert concise.min() < 0.2 and concise.max() > 0.8
    assert np.corrcoef(helpful, concise)[0, 1] < -0.4
    # the maximiser of one objective is poor on the other
    best_helpful = np.flatnonzero(helpful == helpful.max())
    best_concise = np.flatnonzero(concise == concise.max())
    assert concise[best_helpful].max() <= 1 - 4 / task.max_words + 1e-12
    assert helpful[best_concise].max() <= 0.25  # one word: at most one item
    assert task.sft_samples(5, seed=3) == task.sft_samples(5, seed=3)


def test_best_completion_per_objective_differs_within_a_prompt(task):
    rng = np.random.default_rng(0)
    completions = sorted({task.sample_sft_completion(PROMPT, rng) for _ in range(200)})
    scores = task.score_many([PROMPT] * len(completions), completions)
    top_helpful = completions[int(np.argmax(scores["helpful"]))]
    top_concise = completions[int(np.argmax(scores["concise"]))]
    assert top_helpful != top_concise
    assert task.score(PROMPT, top_helpful)["concise"] < task.score(PROMPT, top_concise)["concise"]
    assert task.score(PROMPT, top_concise)["helpful"] < task.score(PROMPT, top_helpful)["helpful"]


def test_sft_records(task):
    records = task.sft_records(20, seed=1)
    assert len(records) == 20 and len({r.prompt for r in records}) == 20
    assert all(r.label and task.is_well_formed(r.completion) for r in records)
    assert records[0].source == "text_task:sft[0]"


def test_tokenizer_covers_and_round_trips_all_text(task, sft):
    tok = build_tokenizer()
    assert len(tok) == len(vocabulary()) < 300
    unk = tok.unk_token_id
    for prompt, completion in sft + [(p, ".") for p in task.prompts(50, "test")]:
        text = f"{prompt} {completion}"
        ids = tok(text)["input_ids"]
        assert unk not in ids
        assert tok.decode(ids) == text
        # no special tokens are added; gluing prompt and completion changes nothing
        assert ids == tok(prompt)["input_ids"] + tok(completion)["input_ids"]
        assert tok(prompt + completion)["input_ids"] == ids
    assert tok.decode(tok("apple zebra .")["input_ids"]) == "apple <unk> ."
    assert tok.padding_side == "left"


def test_filler_and_item_words_are_disjoint():
    items = [w for words in CATEGORIES.values() for w in words]
    assert len(set(items)) == len(items)
    other = {w for phrase in (*OPENERS, *CLOSERS, *NO_ITEM, *PROMPT_WORDS, *CATEGORIES, "and")
             for w in phrase.split()}
    assert not set(items) & other


def test_is_well_formed(task):
    assert task.is_well_formed("i like apple and fig .")
    assert not task.is_well_formed("i like apple")
    assert not task.is_well_formed("apple . fig .")
    assert not task.is_well_formed("zebra .")
    assert not task.is_well_formed("")


def test_build_tiny_llama_sizes_and_seed():
    tok = build_tokenizer()
    model = build_tiny_llama(tok, seed=0)
    n_params = sum(p.numel() for p in model.parameters())
    assert 50_000 < n_params < 500_000
    assert model.config.hidden_size == MODEL_SIZES["tiny"]["hidden_size"]
    assert model.config.vocab_size == len(tok)
    assert model.config.eos_token_id == tok.eos_token_id
    again = build_tiny_llama(tok, seed=0)
    other = build_tiny_llama(tok, seed=1)
    w = model.model.embed_tokens.weight
    assert torch.equal(w, again.model.embed_tokens.weight)
    assert not torch.equal(w, other.model.embed_tokens.weight)
    with pytest.raises(ValueError, match="tiny"):
        build_tiny_llama(tok, size="huge")


def _sft_batch(tok, samples):
    rows = []
    for prompt, completion in samples:
        p_ids = tok(prompt)["input_ids"]
        c_ids = tok(completion)["input_ids"] + [tok.eos_token_id]
        rows.append((p_ids + c_ids, [0] * len(p_ids) + [1] * len(c_ids)))
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), tok.pad_token_id)
    mask = torch.zeros(len(rows), width)
    for i, (ids, m) in enumerate(rows):  # right padding: positions stay 0..len-1
        input_ids[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = torch.tensor(m, dtype=torch.float)
    return input_ids, mask


def _completion_nll(model, input_ids, mask):
    attention = (input_ids != 0).long()
    logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1].float()
    logps = torch.log_softmax(logits, -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    return -(logps * mask[:, 1:]).sum() / mask[:, 1:].sum()


def test_a_few_sft_steps_reduce_loss_and_generation_runs(task):
    torch.manual_seed(0)
    tok = build_tokenizer()
    model = build_tiny_llama(tok, seed=0)
    input_ids, mask = _sft_batch(tok, task.sft_samples(64, seed=0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    with torch.no_grad():
        start = _completion_nll(model, input_ids, mask).item()
    for step in range(40):
        rows = torch.arange(16) + 16 * (step % 4)
        loss = _completion_nll(model, input_ids[rows], mask[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        end = _completion_nll(model, input_ids, mask).item()
    assert start > 4.0  # ~log(vocab) at initialisation
    assert end < 0.6 * start
    prompts = task.prompts(4, "test")
    batch = tok(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**batch, do_sample=False, max_new_tokens=8)
    texts = tok.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    assert len(texts) == 4
    for prompt, text in zip(prompts, texts):
        assert set(task.score(prompt, text)) == set(task.OBJECTIVES)


def test_polite_third_objective_conflicts_with_concise():
    from feedalign.envs.text_task import TextTask

    task = TextTask(polite=True)
    assert task.OBJECTIVES == ("helpful", "concise", "polite") and TextTask().OBJECTIVES == ("helpful", "concise")
    prompt = "write about fruit with apple pear plum fig :"
    plain = task.score(prompt, "apple , pear .")
    polite = task.score(prompt, "i like apple , pear for you .")
    half = task.score(prompt, "well , apple .")
    assert plain["polite"] == 0.0 and polite["polite"] == 1.0 and half["polite"] == 0.5
    assert polite["helpful"] == plain["helpful"] and polite["concise"] < plain["concise"]
    assert "polite" not in TextTask().score(prompt, "apple .")
    many = task.score_many([prompt] * 2, ["apple .", "here are apple too ."])
    assert many["polite"].tolist() == [0.0, 1.0]


def test_front_scorer_with_three_text_objectives():
    from feedalign.multiobjective.front import make_scorer

    score, objectives, defaults = make_scorer("builtin:text_task", options={"polite": True})
    assert objectives == ["helpful", "concise", "polite"] and defaults["ref"] == [0.0] * 3
    assert defaults["exact"] is None
