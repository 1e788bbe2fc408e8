"""One steerable model from one run: weight-conditioned MODPO, plus rewarded soups of adapters.

Steering by conditioning. Every training example gets its own weight vector ``w`` (drawn
uniformly from the simplex, seeded, rounded to a grid); ``w`` is written in front of the
prompt and the example's MODPO loss uses that same ``w``: per-example ``weight = w_k`` [B] and
``margin_weights = w_{-k}`` [B, m-1]. For every conditioning value the population minimiser is
then MODPO's target for that ``w``,
``pi*_w(y | x) ∝ pi_ref(y | x) * exp(w . r(x, y) / beta)`` (docs/ALGORITHMS.md 1, 10), so one
model learns the whole family and is steered at inference by choosing the prefix.

Two modes. ``mode="modpo"`` (above): one pair source per steered run suffices, but at a
small ``w_k`` the margin term ``w_{-k} . (m_w - m_l) / w_k`` saturates the logistic, so only
the rare pairs whose label disagrees with the margins carry gradient and the far end of the
front learns slowly. ``mode="scalarize"``: each objective has its own source and loss (any
loss: DPO on helpful pairs, BCO on concise thumbs, ...); the examples of the source of
objective k draw ``w ~ Dirichlet(1 + e_k)``, whose density is ``m * w_k`` times the uniform
one, so the run minimises ``E_{w ~ U(simplex)} [sum_k w_k L_k(pi(. | w))]`` up to the factor
``1 / m`` with every example carrying weight 1 (no example is wasted on ``w_k ~ 0``). Its
optimum per ``w`` is the minimiser of the weighted sum of the losses, which has no closed form
in general (for DPO-style losses on BT data it is not ``pi*_w``): measure the front.

Where the tag goes (``placement``). The model must read the weight where it reads the request:
  * a list of chat messages: the tag starts the content of the last ``user`` message
    (``placement="user"``, the default) or of the system message (``"system"``; one is
    inserted first when there is none); the chat template then renders the conversation;
  * a rendered conversation (a string with a known user-turn header, e.g. ChatML's
    ``<|im_start|>user\n``): the tag goes right after the last such header, inside the turn;
  * a plain prompt, or ``placement="prefix"``: the tag is put in front of the prompt;
  * ``placement="suffix"``: the tag ends the prompt (a plain string, or the last user
    message), right before the completion, where a small model attends to it most directly.
:meth:`SteeringSpec.parse_prompt` finds the tag wherever it is and returns the original.

Fresh weights per pass (``draws``). A training example's weight is a function of (seed, draw,
id). With ``draws = R`` every training pair is shown under R independently drawn weights
(:func:`redraw_examples`), so over R epochs each pair meets R weights instead of one (with a
69-pair set and one fixed weight per pair, each weight level sees about 17 pairs).

Tag format (documented, parseable, one per weight vector on the grid):
  * ``render="text"``:   ``<w 0.30 0.70> `` + prompt: weights in objective order with the
    fewest decimals that write every grid value exactly. For tokenizers that can spell digits
    (BPE, byte-level).
  * ``render="tokens"``: ``<w:0.30> <w:0.70> `` + prompt, where each ``<w:v>`` is ONE added token
    (``grid + 1`` tokens, see :meth:`SteeringSpec.prepare`). For closed-vocabulary tokenizers
    (e.g. the synthetic task's word-level one), where digits would become ``<unk>``.
:meth:`SteeringSpec.check_tokenizer` verifies that every grid value survives tokenisation
(no unknown tokens, all prefixes encode differently).

With ``trained`` set (MODPO's objective k, whose pairs are trained), weights keep
``w_k >= min_weight`` (default one grid step): MODPO divides by ``w_k``. At inference a
request such as ``w = (0, 1)`` is served with the nearest trainable weight, ``(0.05, 0.95)``
for ``grid = 20``; :meth:`SteeringSpec.snap` says which.

Rewarded soups of per-objective adapters live in :mod:`feedalign.multiobjective.soups`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from feedalign.multiobjective.placement import PLACEMENTS, USER_HEADERS, place_tag  # noqa: F401 (re-exported)
from feedalign.multiobjective.weights import sample_simplex, validate_weights

__all__ = [
    "SteeringSpec",
    "load_spec",
    "save_spec",
    "sample_weights",
    "condition_prompt",
    "per_example_hparams",
    "generate_steered",
    "SPEC_FILE",
    "spec_for_source",
    "USER_HEADERS",
]

SPEC_FILE = "steering.json"
RENDERS = ("text", "tokens")
MODES = ("modpo", "scalarize")
_TEXT_PREFIX = re.compile(r"<w((?: [0-9.]+)+)>(?: |$)")
_TOKEN_PREFIX = re.compile(r"((?:<w:[0-9.]+>(?: |$))+)")


def _decimals(grid: int) -> int:
    for d in range(7):
        if all(round(round(level / grid, d) * grid) == level and abs(round(level / grid, d) * grid - level) < 1e-9
               for level in range(grid + 1)):
            return d
    return 4


@dataclass(frozen=True)
class SteeringSpec:
    """How weights are drawn, rounded, rendered and turned into loss hyperparameters.

    Args:
        objectives: objective names; ``w[j]`` weighs ``objectives[j]``.
        trained: the objective whose pairs MODPO trains (k); None leaves weights unrestricted.
        beta: the MODPO beta (recorded for evaluation and inference).
        grid: weights are multiples of ``1 / grid``.
        seed: seeds the per-example weight draws.
        render: ``"text"`` or ``"tokens"`` (see the module docstring).
        min_weight: lower bound on ``w_k`` for the trained objective (default ``1 / grid``).
        placement: ``"user"``, ``"system"``, ``"prefix"`` or ``"suffix"`` (module docstring).
        draws: weights drawn per training example (>= 1, see :func:`redraw_examples`).
        concentration: the draws' Dirichlet parameter alpha (default 1: uniform on the
            simplex); alpha < 1 puts most draws near the vertices (module docstring).
        mode: ``"modpo"`` (the loss takes per-example ``weight`` / ``margin_weights``) or
            ``"scalarize"`` (any loss; the source's examples draw ``w ~ Dirichlet(1 + e_k)``,
            density proportional to ``w_k``, see the module docstring).
        adapter_rank: 0 (the model reads the tag as text or tokens), or r >= 1: the model
            also mixes per-objective rank-r deltas of its linear layers by the tag's weights
            (:mod:`feedalign.multiobjective.weight_adapters`; needs ``render: tokens``).
    """

    objectives: tuple[str, ...]
    trained: str | None = None
    beta: float = 0.1
    grid: int = 20
    seed: int = 0
    render: str = "text"
    min_weight: float | None = None
    placement: str = "user"
    draws: int = 1
    mode: str = "modpo"
    concentration: float = 1.0
    adapter_rank: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "objectives", tuple(self.objectives))
        if len(self.objectives) < 2 or len(set(self.objectives)) != len(self.objectives):
            raise ValueError(f"SteeringSpec: needs >= 2 distinct objectives, got {list(self.objectives)}")
        if self.trained is not None and self.trained not in self.objectives:
            raise ValueError(f"SteeringSpec: trained={self.trained!r} is not one of {list(self.objectives)}")
        if not isinstance(self.grid, int) or self.grid < 1:
            raise ValueError(f"SteeringSpec: grid must be an int >= 1, got {self.grid!r}")
        if self.render not in RENDERS:
            raise ValueError(f"SteeringSpec: render={self.render!r}; expected one of {RENDERS}")
        if self.beta <= 0:
            raise ValueError(f"SteeringSpec: beta must be > 0, got {self.beta}")
        if self.min_weight is not None and not 0 <= self.min_weight <= 1:
            raise ValueError(f"SteeringSpec: min_weight must be in [0, 1], got {self.min_weight}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"SteeringSpec: placement={self.placement!r}; expected one of {PLACEMENTS}")
        if not isinstance(self.concentration, (int, float)) or not 0 < self.concentration < float("inf"):
            raise ValueError(f"SteeringSpec: concentration must be a number > 0, got {self.concentration!r}")
        if self.mode not in MODES:
            raise ValueError(f"SteeringSpec: mode={self.mode!r}; expected one of {MODES}")
        if not isinstance(self.draws, int) or self.draws < 1:
            raise ValueError(f"SteeringSpec: draws must be an int >= 1, got {self.draws!r}")
        if isinstance(self.adapter_rank, bool) or not isinstance(self.adapter_rank, int) or self.adapter_rank < 0:
            raise ValueError(f"SteeringSpec: adapter_rank must be an int >= 0, got {self.adapter_rank!r}")
        if self.adapter_rank and self.render != "tokens":
            raise ValueError("SteeringSpec: adapter_rank needs render: tokens (the adapters read the level tokens)")

    # ----------------------------------------------------------------- weights
    @property
    def m(self) -> int:
        return len(self.objectives)

    @property
    def k(self) -> int | None:
        return None if self.trained is None else self.objectives.index(self.trained)

    @property
    def min_level(self) -> int:
        if self.k is None or self.mode == "scalarize":
            return 0
        bound = 1.0 / self.grid if self.min_weight is None else self.min_weight
        return min(self.grid, int(np.ceil(bound * self.grid - 1e-9)))

    def levels(self, w: Any) -> np.ndarray:
        """Integer grid levels ``[..., m]`` summing to ``grid``: largest-remainder rounding,
        then ``w_k`` raised to ``min_weight`` by taking from the largest other weights."""
        arr = validate_weights(w, self.m, name="steering weights", atol=1e-4)
        rows = np.atleast_2d(arr) * self.grid
        out = np.floor(rows + 1e-9).astype(np.int64)
        for row, scaled in zip(out, rows):
            short = self.grid - int(row.sum())
            order = np.argsort(-(scaled - row), kind="stable")
            row[order[:short]] += 1
            if self.k is not None and row[self.k] < self.min_level:
                for _ in range(self.min_level - row[self.k]):
                    others = [j for j in range(self.m) if j != self.k]
                    donor = max(others, key=lambda j: row[j])
                    row[donor] -= 1
                    row[self.k] += 1
        return out if arr.ndim == 2 else out[0]

    def snap(self, w: Any) -> np.ndarray:
        """The trainable grid weight nearest to ``w`` (same shape)."""
        return self.levels(w) / self.grid

    def sample(self, n: int, seed: int | None = None) -> np.ndarray:
        """``n`` weights ``[n, m]``: uniform on the trainable region (:meth:`_region`), snapped."""
        if n == 0:
            return np.zeros((0, self.m))
        return self.snap(self._region(self._draw(n, self.seed if seed is None else seed)))

    def _draw(self, n: int, generator: Any) -> np.ndarray:
        """``n`` raw draws from Dirichlet(alpha * 1), alpha = ``concentration`` (alpha = 1 is
        :func:`sample_simplex`); in ``scalarize`` mode with a trained objective from
        Dirichlet(alpha * 1 + e_k), whose density is the former's times ``w_k / E[w_k]``."""
        scalarize = self.mode == "scalarize" and self.k is not None
        if self.concentration == 1.0 and not scalarize:
            return sample_simplex(self.m, n, generator)
        rng = generator if isinstance(generator, np.random.Generator) else np.random.default_rng(generator)
        shape = np.full(self.m, float(self.concentration))
        if scalarize:
            shape[self.k] += 1.0
        g = rng.gamma(shape, size=(int(n), self.m))
        g = np.maximum(g, np.finfo(np.float64).tiny)  # tiny alpha underflows to 0
        return g / g.sum(axis=1, keepdims=True)

    def _region(self, u: np.ndarray) -> np.ndarray:
        """Map uniform simplex draws ``u`` onto the trainable region ``{w : w_k >= bound}``,
        ``w = bound * e_k + (1 - bound) * u`` (uniform there too; ``bound`` = the grid level of
        ``min_weight``): a draw below the bound is not piled onto it by rounding."""
        if self.k is None or self.min_level == 0:
            return u
        bound = self.min_level / self.grid
        out = (1.0 - bound) * u
        out[..., self.k] += bound
        return out

    def weights_for(self, example_ids: Sequence[str], draw: int = 0) -> np.ndarray:
        """One weight per example id ``[n, m]``, a function of (seed, id, draw) only, so it
        does not depend on batch composition or order (resumable, shardable)."""
        out = np.zeros((len(example_ids), self.m))
        for i, ex_id in enumerate(example_ids):
            digest = hashlib.sha256(f"{self.seed}|{draw}|{ex_id}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
            out[i] = self.snap(self._region(self._draw(1, rng)[0]))
        return out

    # ---------------------------------------------------------------- rendering
    @property
    def decimals(self) -> int:
        return _decimals(self.grid)

    def _value(self, level: int) -> str:
        return f"{level / self.grid:.{self.decimals}f}"

    def level_tokens(self) -> list[str]:
        """The ``grid + 1`` added tokens of ``render="tokens"``."""
        return [f"<w:{self._value(level)}>" for level in range(self.grid + 1)]

    def prefix(self, w: Any) -> str:
        """The conditioning prefix for one weight vector (snapped), trailing space included."""
        levels = self.levels(np.asarray(w, dtype=np.float64).reshape(-1))
        if self.render == "text":
            return "<w " + " ".join(self._value(int(v)) for v in levels) + "> "
        return "".join(f"<w:{self._value(int(v))}> " for v in levels)

    def condition_prompt(self, prompt: Any, w: Any) -> Any:
        """``prompt`` (a string, or a list of ``{"role", "content"}`` messages) carrying the tag
        of ``w`` where the model reads the request (``placement``, module docstring)."""
        return place_tag(prompt, self.prefix(w), self.placement)

    def parse_prompt(self, prompt: str) -> tuple[np.ndarray | None, str]:
        """``(w, original prompt)``; ``w`` is None when the prompt carries no tag."""
        if self.render == "text":
            match = _TEXT_PREFIX.search(prompt)
            values = match.group(1).split() if match else []
        else:
            match = _TOKEN_PREFIX.search(prompt)
            values = re.findall(r"<w:([0-9.]+)>", match.group(1)) if match else []
        if not match:
            return None, prompt
        if len(values) != self.m:
            raise ValueError(f"steering prefix {match.group(0)!r} has {len(values)} weights; expected {self.m}")
        levels = np.array([round(float(v) * self.grid) for v in values])
        head, tail = prompt[:match.start()], prompt[match.end():]
        if not tail and head.endswith(" ") and not match.group(0).endswith(" "):  # a suffix tag
            head = head[:-1]
        return levels / self.grid, head + tail

    def strip_prompt(self, prompt: str) -> str:
        return self.parse_prompt(prompt)[1]

    # ----------------------------------------------------------------- training
    def per_example_hparams(self, ws: Any, k: int | None = None, *, device: Any = None,
                            dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """MODPO's per-example ``weight`` [B] (= w_k) and ``margin_weights`` [B, m-1] (= w_{-k},
        the other objectives in order, matching the margin columns)."""
        k = self.k if k is None else k
        if k is None:
            raise ValueError("per_example_hparams: set SteeringSpec.trained (or pass k)")
        arr = torch.as_tensor(np.atleast_2d(np.asarray(ws, dtype=np.float64)), dtype=dtype, device=device)
        others = [j for j in range(self.m) if j != k]
        return {"weight": arr[:, k].contiguous(), "margin_weights": arr[:, others].contiguous()}

    def hparams_for_prompts(self, prompts: Sequence[str], *, device: Any = None) -> dict[str, torch.Tensor]:
        """Per-example hparams read back from conditioned prompts (each must carry a prefix)."""
        ws = []
        for i, prompt in enumerate(prompts):
            w, _ = self.parse_prompt(prompt)
            if w is None:
                raise ValueError(f"hparams_for_prompts: prompt {i} carries no steering prefix: {prompt[:60]!r}")
            ws.append(w)
        return self.per_example_hparams(np.stack(ws) if ws else np.zeros((0, self.m)), device=device)

    def condition_records(self, records: Sequence[Any], draw: int = 0) -> tuple[list[Any], np.ndarray]:
        """Records with conditioned prompts (ids kept) and their weights ``[n, m]``."""
        ws = self.weights_for([r.id for r in records], draw)
        out = [dataclasses.replace(r, prompt=self.condition_prompt(r.prompt, w)) for r, w in zip(records, ws)]
        return out, ws

    def prepare(self, tokenizer: Any, model: Any = None) -> int:
        """For ``render="tokens"``: add the level tokens to ``tokenizer`` (idempotent) and, with
        a ``model``, grow its embeddings (:meth:`prepare_model`). Returns the tokens added."""
        # Special: generated level tokens are dropped when decoding with skip_special_tokens.
        added = tokenizer.add_tokens(self.level_tokens(), special_tokens=True) if self.render == "tokens" else 0
        if model is not None:
            self.prepare_model(model, tokenizer)
        return added

    def prepare_model(self, model: Any, tokenizer: Any) -> bool:
        """Grow ``model``'s embeddings to ``len(tokenizer)`` with ordinal level-token rows
        (:func:`feedalign.multiobjective.level_tokens.grow_embeddings`); whether it grew."""
        from feedalign.multiobjective.level_tokens import grow_embeddings

        return grow_embeddings(self, model, tokenizer)

    def check_tokenizer(self, tokenizer: Any) -> None:
        """Raise unless every grid value's prefix tokenises without ``<unk>`` and distinctly."""
        unk = getattr(tokenizer, "unk_token_id", None)
        seen: dict[tuple[int, ...], str] = {}
        for level in range(self.grid + 1):
            w = np.zeros(self.m)
            w[0], w[1] = level / self.grid, 1 - level / self.grid
            text = self.prefix(w)
            ids = tuple(tokenizer(text, add_special_tokens=False)["input_ids"])
            clash = seen.get(ids, text) != text
            if (unk is not None and unk in ids) or clash:
                hint = "use render: tokens (and SteeringSpec.prepare)" if self.render == "text" else "call SteeringSpec.prepare first"
                why = f"same ids as {seen[ids]!r}" if clash else "unknown tokens"
                raise ValueError(f"steering prefix {text!r} does not survive this tokenizer ({why}); {hint}")
            seen[ids] = text

    def to_dict(self) -> dict[str, Any]:
        return {"format": "feedalign.steering", "version": 1, **dataclasses.asdict(self)}


STEER_KEYS = ("objectives", "grid", "seed", "render", "min_weight", "placement", "draws", "mode", "concentration",
              "adapter_rank")


def spec_for_source(steer: Any, *, trained: str | None, beta: float) -> SteeringSpec:
    """The spec of a training source's ``steer:`` block (a mapping or an object with the
    attributes ``objectives`` and optionally ``grid``, ``seed``, ``render``, ``min_weight``);
    ``trained`` is the source's objective (MODPO's k), ``beta`` its loss's beta."""
    get = steer.get if isinstance(steer, Mapping) else (lambda key, default=None: getattr(steer, key, default))
    if isinstance(steer, Mapping):
        unknown = sorted(set(steer) - set(STEER_KEYS))
        if unknown:
            raise ValueError(f"steer: unknown keys {unknown}; valid: {list(STEER_KEYS)}")
    if not get("objectives"):
        raise ValueError("steer: `objectives` (the weight order, e.g. [helpful, concise]) is required")
    if trained is None:
        raise ValueError("steer: the source needs `objective:` (the objective whose pairs it trains)")
    options = {k: get(k) for k in STEER_KEYS[1:] if get(k) is not None}
    return SteeringSpec(objectives=tuple(get("objectives")), trained=trained, beta=float(beta), **options)


def sample_weights(n: int, m: int, seed: int = 0, *, grid: int | None = None) -> np.ndarray:
    """``n`` weights ``[n, m]`` uniform on the simplex (rounded to ``1/grid`` if given)."""
    ws = sample_simplex(m, n, seed)
    if grid is None or m < 2 or n == 0:
        return ws
    return SteeringSpec(objectives=tuple(f"o{j}" for j in range(m)), grid=grid).snap(ws)


def condition_prompt(prompt: Any, w: Any, spec: SteeringSpec) -> Any:
    return spec.condition_prompt(prompt, w)


def per_example_hparams(ws: Any, k: int, spec: SteeringSpec | None = None) -> dict[str, torch.Tensor]:
    """MODPO's per-example ``weight`` and ``margin_weights`` for weights ``ws [B, m]``."""
    arr = np.atleast_2d(np.asarray(ws, dtype=np.float64))
    spec = spec or SteeringSpec(objectives=tuple(f"o{j}" for j in range(arr.shape[1])))
    return spec.per_example_hparams(arr, k)


# Reading/writing the spec and sampling at a weight live in steer_io (re-exported here).
from feedalign.multiobjective.steer_io import generate_steered, load_spec, save_spec  # noqa: E402
