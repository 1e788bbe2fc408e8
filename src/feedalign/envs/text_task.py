"""A synthetic text task with two conflicting, exactly scorable objectives.

Prompts name a topic and four items of it::

    write about fruit with apple kiwi plum fig :

Completions are short word sequences such as ``i like apple , pear and kiwi too .``.
Two ground-truth objectives, both in [0, 1], are computed from the text alone:

  * ``helpful``  = min(4, distinct items of the prompt's topic mentioned) / 4
  * ``concise``  = max(0, 1 - n_words / max_words), where n_words counts every word of the
                   completion (punctuation is not a word)

Every item costs a word, so the most helpful completions (four topic items) have
concise <= 1 - 4/max_words, while the most concise one (no words) has helpful = 0: the
trade-off is real. Fillers, repeats and off-topic items lower ``concise`` without raising
``helpful``, so both objectives carry signal beyond length.

By default any item of the topic counts, the four listed in the prompt being examples.
``TextTask(helpful="requested")`` counts only the listed items (``helpful`` = share of them
mentioned): that variant is a copy-from-the-prompt problem which ~100k-parameter models learn
too slowly for a demo that must train in seconds (after 600 SFT steps such a model reaches
helpful ~0.25 where its demonstrations average 0.5). Either way the listed items vary the
prompts, and train and test prompts are disjoint by the set of listed items.

The text is canonical: words and punctuation marks are separated by single spaces, so the
word-level tokenizer from :func:`build_tokenizer` round-trips it exactly. Sequences are
``prompt ids + completion ids + eos``; the tokenizer adds no special tokens by itself.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from feedalign.data.records import LabeledRecord

CATEGORIES: dict[str, tuple[str, ...]] = {
    "fruit": ("apple", "pear", "plum", "fig", "kiwi", "lime", "mango", "grape"),
    "animal": ("cat", "dog", "fox", "owl", "bear", "wolf", "deer", "frog"),
    "tool": ("hammer", "saw", "drill", "wrench", "rope", "shovel", "axe", "nail"),
    "color": ("red", "blue", "green", "pink", "gold", "gray", "teal", "brown"),
    "city": ("paris", "rome", "oslo", "lima", "cairo", "tokyo", "delhi", "quito"),
    "sport": ("golf", "tennis", "rugby", "polo", "chess", "judo", "rowing", "hockey"),
}
OPENERS = ("", "", "i like", "we have", "well ,", "so i think of", "here are", "today i found")
CLOSERS = ("", "", "too", "for you", "that is all", "and more", "all very nice",
           "i hope this helps you today")
NO_ITEM = ("ok", "sure", "i do not know", "nothing comes to mind", "no idea")
PROMPT_WORDS = ("write", "about", "with")
PUNCTUATION = (",", ".", ":")
SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")
N_EXAMPLES = 4  # items listed in a prompt
N_REQUESTED = 4  # distinct items a completion needs for helpful = 1
HELPFUL_MODES = ("topic", "requested")

# Model sizes for build_tiny_llama; "tiny" is the quickstart default (~89k parameters).
MODEL_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4),
    "small": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                  num_attention_heads=4),
}


def vocabulary() -> list[str]:
    """Every token of the task: special tokens first (ids 0..3), then words, then punctuation."""
    words: list[str] = [*PROMPT_WORDS, *CATEGORIES]
    for items in CATEGORIES.values():
        words.extend(items)
    for phrase in (*OPENERS, *CLOSERS, *NO_ITEM, "and"):
        words.extend(w for w in phrase.split() if w not in PUNCTUATION)
    unique = list(dict.fromkeys(words))
    return [*SPECIAL_TOKENS, *unique, *PUNCTUATION]


def build_tokenizer() -> Any:
    """A word-level ``PreTrainedTokenizerFast`` covering the task vocabulary.

    Splits on whitespace and isolates each punctuation mark, so ``"fig :apple"`` and
    ``"fig : apple"`` tokenize alike; decoding joins tokens with single spaces. No special
    tokens are added on encode. ``padding_side`` is left, as generation needs.
    """
    from tokenizers import Tokenizer, models
    from tokenizers import pre_tokenizers as pre
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(vocabulary())}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre.Sequence(
        [pre.WhitespaceSplit(), pre.Punctuation(behavior="isolated")]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", unk_token="<unk>",
        bos_token="<bos>", eos_token="<eos>",
    )
    tokenizer.padding_side = "left"
    return tokenizer


def build_tiny_llama(tokenizer: Any, *, seed: int = 0, size: str = "tiny",
                     max_positions: int = 64) -> Any:
    """A randomly initialised Llama-style causal LM sized for ``tokenizer`` (fp32, CPU).

    Args:
        tokenizer: gives ``len(tokenizer)`` and the pad/bos/eos ids.
        seed: torch seed for the initial weights (same seed, same weights).
        size: a key of ``MODEL_SIZES``.
        max_positions: longest sequence (prompt + completion) the model will see.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if size not in MODEL_SIZES:
        raise ValueError(f"build_tiny_llama: size={size!r}; expected one of {sorted(MODEL_SIZES)}")
    dims = MODEL_SIZES[size]
    config = LlamaConfig(
        vocab_size=len(tokenizer), max_position_embeddings=max_positions,
        num_key_value_heads=dims["num_attention_heads"], tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, **dims,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def count_words(text: str) -> int:
    """Words of a completion: whitespace/punctuation-separated tokens that are not punctuation."""
    return len(_words(text))


def politeness(words: Sequence[str]) -> float:
    """0.5 for opening with a (non-empty) opener phrase, 0.5 for closing with a closer phrase."""
    def has(phrases: Sequence[str], at_start: bool) -> bool:
        for phrase in phrases:
            p = _words(phrase)
            if p and len(words) >= len(p) and list(words[: len(p)] if at_start else words[len(words) - len(p):]) == p:
                return True
        return False

    return 0.5 * has(OPENERS, True) + 0.5 * has(CLOSERS, False)


def _words(text: str) -> list[str]:
    for mark in PUNCTUATION:
        text = text.replace(mark, " ")
    return text.split()


def _join_items(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return " ".join(items)
    return " , ".join(items[:-1]) + " and " + items[-1]


class TextTask:
    """The synthetic "mention items of the topic, briefly" task.

    Args:
        seed: fixes the train/test split of item sets (prompt sets are disjoint by the
            unordered set of listed items, so no test prompt is a reordering of a
            train prompt).
        max_words: completion length at which ``concise`` reaches 0.
        test_fraction: share of item sets held out for ``split="test"``.
        helpful: ``"topic"`` (any item of the prompt's topic counts) or ``"requested"``
            (only the items listed in the prompt count; demonstrations then use listed
            items, and their off-request item comes from the same topic).
        polite: add a third objective ``polite`` = 0.5 * (the completion opens with one of
            the task's openers, e.g. "i like", "here are") + 0.5 * (it closes with one of its
            closers before the final mark, e.g. "for you", "i hope this helps you today").
            Politeness costs words, so it conflicts with ``concise`` and not with ``helpful``.
    """

    OBJECTIVES: tuple[str, ...] = ("helpful", "concise")

    def __init__(self, seed: int = 0, *, max_words: int = 12, test_fraction: float = 0.2,
                 helpful: str = "topic", polite: bool = False):
        if polite:
            self.OBJECTIVES = ("helpful", "concise", "polite")
        if helpful not in HELPFUL_MODES:
            raise ValueError(f"TextTask: helpful={helpful!r}; expected one of {HELPFUL_MODES}")
        if max_words < N_REQUESTED + 1:
            raise ValueError(f"TextTask: max_words={max_words}; expected >= {N_REQUESTED + 1}")
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"TextTask: test_fraction={test_fraction}; expected in (0, 1)")
        self.seed = seed
        self.max_words = max_words
        self.helpful = helpful
        sets = [
            (category, combo)
            for category, items in CATEGORIES.items()
            for combo in itertools.combinations(items, N_EXAMPLES)
        ]
        order = np.random.default_rng(seed).permutation(len(sets))
        n_test = int(round(test_fraction * len(sets)))
        self._splits = {
            "test": [sets[i] for i in order[:n_test]],
            "train": [sets[i] for i in order[n_test:]],
        }

    # ----------------------------------------------------------------- prompts
    def prompts(self, n: int, split: str = "train", seed: int = 0) -> list[str]:
        """``n`` prompts of ``split``; distinct while ``n`` <= the split's pool of
        (item set, order) combinations (train 8064, test 2016 with the defaults)."""
        if split not in self._splits:
            raise ValueError(f"TextTask.prompts: split={split!r}; expected 'train' or 'test'")
        sets = self._splits[split]
        orders = list(itertools.permutations(range(N_EXAMPLES)))
        pool = len(sets) * len(orders)
        rng = np.random.default_rng([self.seed, seed, 0 if split == "train" else 1])
        picks = rng.choice(pool, size=n, replace=n > pool)
        out = []
        for pick in picks:
            category, combo = sets[int(pick) // len(orders)]
            order = orders[int(pick) % len(orders)]
            out.append(self.make_prompt(category, [combo[i] for i in order]))
        return out

    @staticmethod
    def make_prompt(category: str, items: Sequence[str]) -> str:
        return f"write about {category} with {' '.join(items)} :"

    @staticmethod
    def parse_prompt(prompt: str) -> tuple[str, tuple[str, ...]]:
        """(topic, listed items) of a task prompt; ValueError names what is wrong."""
        words = prompt.replace(":", " ").split()
        if len(words) < 4 or words[:2] != ["write", "about"] or words[3] != "with" \
                or words[2] not in CATEGORIES:
            raise ValueError(
                f"TextTask: prompt {prompt!r} does not match 'write about <topic> with <items> :'"
                f" with a topic in {sorted(CATEGORIES)}"
            )
        return words[2], tuple(words[4:])

    # ------------------------------------------------------------- completions
    def sample_sft_completion(self, prompt: str, rng: np.random.Generator) -> str:
        """One demonstration: 0-4 distinct items that count for ``helpful``, with probability
        0.3 one item that does not (off-topic; off-request in ``"requested"`` mode), and
        optional filler before and after. Spans helpful 0..1 and concise ~0..1."""
        topic, listed = self.parse_prompt(prompt)
        pool = CATEGORIES[topic] if self.helpful == "topic" else listed
        k = int(rng.integers(0, N_REQUESTED + 1))
        items = [pool[i] for i in rng.permutation(len(pool))[:k]]
        if rng.random() < 0.3:
            if self.helpful == "topic":
                other_topics = [t for t in CATEGORIES if t != topic]
                others = CATEGORIES[other_topics[rng.integers(len(other_topics))]]
            else:
                others = tuple(w for w in CATEGORIES[topic] if w not in listed)
            if others:
                items.insert(int(rng.integers(0, len(items) + 1)), others[rng.integers(len(others))])
        if not items:
            parts = [NO_ITEM[rng.integers(len(NO_ITEM))],
                     CLOSERS[rng.integers(len(CLOSERS))] if rng.random() < 0.3 else ""]
        else:
            parts = [OPENERS[rng.integers(len(OPENERS))], _join_items(items),
                     CLOSERS[rng.integers(len(CLOSERS))]]
        return " ".join(p for p in parts if p) + " ."

    def sft_samples(self, n_prompts: int, per_prompt: int = 1, *, split: str = "train",
                    seed: int = 0) -> list[tuple[str, str]]:
        """``per_prompt`` demonstrations for each of ``n_prompts`` prompts, grouped by prompt."""
        rng = np.random.default_rng([self.seed, seed, 7])
        return [
            (prompt, self.sample_sft_completion(prompt, rng))
            for prompt in self.prompts(n_prompts, split, seed)
            for _ in range(per_prompt)
        ]

    def sft_records(self, n: int, seed: int = 0, *, split: str = "train") -> list[LabeledRecord]:
        """``n`` demonstrations (distinct prompts) as thumbs-up records for SFT."""
        return [
            LabeledRecord(prompt=p, completion=c, label=True, source=f"text_task:sft[{i}]")
            for i, (p, c) in enumerate(self.sft_samples(n, 1, split=split, seed=seed))
        ]

    # ----------------------------------------------------------------- scoring
    def score(self, prompt: str, completion: str) -> dict[str, float]:
        """Ground-truth scores, each in [0, 1]. A repeated item counts once for ``helpful``
        and every time for ``concise``."""
        topic, listed = self.parse_prompt(prompt)
        counted = CATEGORIES[topic] if self.helpful == "topic" else listed
        words = _words(completion)
        covered = len(set(words) & set(counted))
        out = {
            "helpful": min(N_REQUESTED, covered) / N_REQUESTED,
            "concise": max(0.0, 1.0 - len(words) / self.max_words),
        }
        if "polite" in self.OBJECTIVES:
            out["polite"] = politeness(words)
        return out

    def score_many(self, prompts: Sequence[str], completions: Sequence[str]) -> dict[str, np.ndarray]:
        """Scores of aligned lists, as one float array per objective."""
        if len(prompts) != len(completions):
            raise ValueError(
                f"TextTask.score_many: {len(prompts)} prompts but {len(completions)} completions"
            )
        rows = [self.score(p, c) for p, c in zip(prompts, completions)]
        return {k: np.array([r[k] for r in rows], dtype=np.float64) for k in self.OBJECTIVES}

    def is_well_formed(self, completion: str) -> bool:
        """On-format: only task words, ends with a single final '.'."""
        known = set(vocabulary()) - set(SPECIAL_TOKENS)
        tokens = completion.split()
        return (
            bool(tokens) and tokens[-1] == "." and "." not in tokens[:-1]
            and all(t in known for t in tokens)
        )

    def tokenizer(self) -> Any:
        """A fresh tokenizer (cheap to build; callers may change padding side freely)."""
        return build_tokenizer()


def objective_margins(objectives: Sequence[str] = ("concise",), scale: float = 1.0, **task_options: Any) -> Any:
    """A MODPO margin function ``(prompts, completions) -> [N, len(objectives)]`` of the task's
    exact scores times ``scale`` (for ``margins: {kind: callable, options: ...}``).

    Scale: a policy trained by DPO / MODPO on pairs labelled ``P(a > b) = sigma((u_a - u_b) / T)``
    learns the reward ``u / T``; the other objectives' margins must be on that same scale, so
    pass ``scale = 1 / T`` (the quickstart's pair temperature 0.1 gives 10). Unlike a word count
    of the token stream, ``concise`` here is exactly the task's (punctuation is no word)."""
    import torch

    task = TextTask(**task_options)
    unknown = [o for o in objectives if o not in task.OBJECTIVES]
    if unknown:
        raise ValueError(f"objective_margins: unknown objectives {unknown}; valid: {list(task.OBJECTIVES)}")

    def margins(prompts: Sequence[str], completions: Sequence[str]) -> Any:
        scores = task.score_many(list(prompts), list(completions))
        return torch.as_tensor(np.stack([scores[o] for o in objectives], axis=1) * scale, dtype=torch.float32)

    return margins
