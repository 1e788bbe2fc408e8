"""`feedalign front CONFIG --sweep 0,0.25,0.5,0.75,1` and `feedalign steer MODEL_DIR --weights 0.3,0.7`.

``front`` sweeps preference weights over a steerable model (or a rewarded soup of
per-objective adapters), scores the samples and writes front.json / front.png / front.md
(see :mod:`feedalign.multiobjective.front`). ``steer`` samples from a steerable model for one
weight vector (the conditioning prefix comes from the model's steering.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from feedalign.config.errors import ConfigError

POLICY_KINDS = ("steerable", "soups")


@dataclass(frozen=True)
class FrontPolicyConfig:
    """``steerable``: ``path`` holds model, tokenizer and steering.json. ``soups``: ``base``
    plus one LoRA adapter dir per objective (``adapters: {objective: dir}``, in weight order).
    ``reference`` (optional) enables KL(pi_w || pi_ref) estimates."""

    kind: str = "steerable"
    path: str | None = None
    base: str | None = None
    adapters: dict[str, Any] = field(default_factory=dict)
    tokenizer: str | None = None
    reference: str | None = None
    dtype: str = "auto"

    def __post_init__(self) -> None:
        if self.kind not in POLICY_KINDS:
            raise ConfigError(f"must be one of {list(POLICY_KINDS)}, got {self.kind!r}", key="kind")
        if self.kind == "steerable" and self.path is None:
            raise ConfigError("a steerable policy needs `path` (the trained model dir)", key="path")
        if self.kind == "soups" and (self.base is None or len(self.adapters) < 2):
            raise ConfigError("soups need `base` and at least two `adapters: {objective: dir}`", key="adapters")


@dataclass(frozen=True)
class FrontPromptsConfig:
    """``builtin:text_task`` (``n`` prompts of ``split``) or a JSONL file of ``{"prompt": ...}``
    rows / a text file with one prompt per line (first ``n``)."""

    source: str = "builtin:text_task"
    n: int = 64
    split: str = "test"
    seed: int = 0


@dataclass(frozen=True)
class FrontConfig:
    output_dir: str
    policy: FrontPolicyConfig
    objectives: tuple[str, ...] | None = None
    scorer: str = "builtin:text_task"
    scorer_options: dict[str, Any] = field(default_factory=dict)
    prompts: FrontPromptsConfig = field(default_factory=FrontPromptsConfig)
    weights: str = "0,0.25,0.5,0.75,1"
    samples_per_prompt: int = 1
    max_new_tokens: int = 24
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    batch_size: int = 32
    ref: tuple[float, ...] | None = None
    lower: tuple[float, ...] | None = None
    upper: tuple[float, ...] | None = None
    exact: str | None = None
    eu_grid: int = 11
    device: str = "auto"


def load_front_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> FrontConfig:
    from feedalign.trainers.reward_model import load_dataclass_yaml

    return load_dataclass_yaml(FrontConfig, path, overrides)


def _prompts(cfg: FrontPromptsConfig) -> list[str]:
    if cfg.source == "builtin:text_task":
        from feedalign.envs.text_task import TextTask

        return TextTask().prompts(cfg.n, cfg.split, cfg.seed)
    path = Path(cfg.source)
    if path.suffix in (".jsonl", ".json"):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        prompts = [r["prompt"] for r in rows if isinstance(r, dict) and isinstance(r.get("prompt"), str)]
    else:
        prompts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ConfigError(f"no prompts found in {path}", key="prompts.source")
    return prompts[: cfg.n]


def _exact(cfg: FrontConfig, defaults: dict[str, Any]) -> Any:
    if cfg.exact is None:
        return defaults.get("exact")
    if cfg.exact == "builtin:text_task":
        from feedalign.multiobjective.front import text_task_ideal_front

        return text_task_ideal_front()
    return json.loads(Path(cfg.exact).read_text(encoding="utf-8"))


class _SweepPolicy:
    """Generation and (optionally) log-ratios for the policy of each weight vector."""

    def __init__(self, cfg: FrontConfig, device: Any, objectives: list[str] | None = None) -> None:
        from feedalign.policies.hf import load_causal_lm, load_tokenizer

        pol = cfg.policy
        self.cfg, self.spec, self._w, self._model = cfg, None, None, None
        if pol.kind == "steerable":
            from feedalign.multiobjective.steering import load_spec

            self.spec = load_spec(pol.path)
            self.objectives = list(self.spec.objectives)
            from feedalign.multiobjective.weight_adapters import load_saved

            self.tokenizer = load_tokenizer(pol.tokenizer or pol.path)
            self._model = load_saved(load_causal_lm(pol.path, dtype=pol.dtype), self.tokenizer, pol.path).to(device)
        else:
            from feedalign.multiobjective.soups import SoupPolicy

            self.objectives = list(objectives or pol.adapters)
            self.soup = SoupPolicy(load_causal_lm(pol.base, dtype=pol.dtype).to(device), dict(pol.adapters), self.objectives)
            self.tokenizer = load_tokenizer(pol.tokenizer or pol.base)
        self.reference = load_causal_lm(pol.reference, dtype=pol.dtype).to(device) if pol.reference else None

    def model_for(self, w: Any) -> Any:
        if self.spec is not None:
            return self._model
        key = tuple(float(v) for v in w)
        if key != self._w:
            self._w, self._model = key, self.soup.model_for(w)
        return self._model

    def _condition(self, prompts: list[str], w: Any) -> list[str]:
        return prompts if self.spec is None else [self.spec.condition_prompt(p, w) for p in prompts]

    def generate(self, w: Any, prompts: list[str]) -> list[str]:
        from feedalign.policies.hf import generate

        c = self.cfg
        return generate(self.model_for(w), self.tokenizer, self._condition(prompts, w), max_new_tokens=c.max_new_tokens,
                        temperature=c.temperature, top_p=c.top_p, seed=c.seed, batch_size=c.batch_size)

    def log_ratio(self, w: Any, prompts: list[str], completions: list[str]) -> Any:
        """log pi_w(y | conditioned x) - log pi_ref(y | x) per sample."""
        import torch

        from feedalign.policies.hf import sequence_logps
        from feedalign.policies.reward_model import encode_texts

        model, out = self.model_for(w), []
        conditioned = self._condition(prompts, w)
        with torch.no_grad():
            for s in range(0, len(prompts), self.cfg.batch_size):
                sl = slice(s, s + self.cfg.batch_size)
                values = []
                for m, ps in ((model, conditioned[sl]), (self.reference, prompts[sl])):
                    b = encode_texts(self.tokenizer, ps, completions[sl], 1024)
                    dev = next(m.parameters()).device
                    values.append(sequence_logps(m.eval(), *(b[k].to(dev) for k in ("input_ids", "attention_mask", "completion_mask"))))
                out.append((values[0] - values[1]).float().cpu())
        return torch.cat(out).numpy()


def run_front_config(cfg: FrontConfig, *, weights: str | None = None) -> Any:
    """Run a front sweep from a :class:`FrontConfig` (``weights`` overrides ``cfg.weights``)."""
    import torch

    from feedalign.multiobjective.front import make_scorer, parse_weight_list, run_front

    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if cfg.device == "auto" else cfg.device))
    score, scorer_objectives, defaults = make_scorer(cfg.scorer, options=cfg.scorer_options, device=device)
    order = None
    if cfg.policy.kind == "soups":  # weight order: the config's, else the scorer's, else the adapters'
        known = [o for o in scorer_objectives if o in cfg.policy.adapters]
        order = list(cfg.objectives or (known if len(known) == len(cfg.policy.adapters) else cfg.policy.adapters))
    # The weights are checked before any model is loaded: a typo fails in a second.
    from feedalign.multiobjective.steering import load_spec

    count = len(order) if order is not None else load_spec(cfg.policy.path).m
    ws = parse_weight_list(weights or cfg.weights, count)
    policy = _SweepPolicy(cfg, device, order)
    missing = [o for o in policy.objectives if o not in scorer_objectives]
    if missing:
        raise ConfigError(f"the scorer gives {scorer_objectives} but the policy steers {policy.objectives}", key="scorer")
    if policy.objectives != scorer_objectives[: len(policy.objectives)]:
        defaults = {}  # bounds/ideal front of the built-in scorer are in its own objective order
    from tqdm.auto import tqdm

    bar = tqdm(total=len(ws), desc="front: weights sampled", unit="weight")

    def generate_one(w: Any, prompts: list[str]) -> list[str]:
        out = policy.generate(w, prompts)
        bar.update(1)
        return out

    try:
        return _run(run_front, cfg, policy, generate_one, score, ws, defaults)
    finally:
        bar.close()


def _run(run_front: Any, cfg: FrontConfig, policy: Any, generate: Any, score: Any, ws: Any,
         defaults: dict[str, Any]) -> Any:
    return run_front(
        generate, score, weights=ws, prompts=_prompts(cfg.prompts), objectives=policy.objectives,
        output_dir=cfg.output_dir, samples_per_prompt=cfg.samples_per_prompt,
        ref=cfg.ref if cfg.ref is not None else defaults.get("ref"),
        lower=cfg.lower if cfg.lower is not None else defaults.get("lower"),
        upper=cfg.upper if cfg.upper is not None else defaults.get("upper"),
        exact=_exact(cfg, defaults), log_ratio=policy.log_ratio if policy.reference is not None else None,
        eu_grid=cfg.eu_grid, label=cfg.policy.kind, title=f"{cfg.policy.kind} front",
    )


# --------------------------------------------------------------------------- CLI


def register(subparsers: argparse._SubParsersAction) -> None:
    front = subparsers.add_parser(
        "front",
        help="sweep preference weights, score every objective and report the front",
        description="Sample a steerable model (or a soup of adapters) for each weight vector, score, "
        "and write front.json, front.png and front.md; see examples/front_text_task.yaml.",
    )
    front.add_argument("config", help="YAML config file")
    front.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    front.add_argument("--sweep", help="the weight vectors to sweep: w1 values for 2 objectives "
                       "('0,0.25,0.5,0.75,1') or full rows 'a,b,c;d,e,f' (default: the config's `weights`)")
    front.add_argument("--weights", dest="old_weights", help=argparse.SUPPRESS)  # deprecated spelling of --sweep
    front.add_argument("--output-dir", help="overrides output_dir")
    front.set_defaults(func=_front)
    steer = subparsers.add_parser("steer", help="sample a steerable model for one weight vector")
    steer.add_argument("model_dir", help="a steerable model directory (with steering.json)")
    steer.add_argument("--weights", required=True, help="one weight per objective, e.g. 0.3,0.7")
    steer.add_argument("--prompt", action="append", required=True, help="a prompt (repeatable)")
    steer.add_argument("--max-new-tokens", type=int, default=64)
    steer.add_argument("--temperature", type=float, default=1.0)
    steer.add_argument("--seed", type=int, default=0)
    steer.add_argument("--chat", action="store_true",
                       help="render each prompt as one user turn of the tokenizer's chat template (as a source "
                            "with chat_template: true was trained)")
    steer.set_defaults(func=_steer)


def _front(args: argparse.Namespace) -> int:
    overrides = list(args.overrides) + ([f"output_dir={args.output_dir}"] if args.output_dir else [])
    sweep = args.sweep
    if args.old_weights is not None:
        print("warning: `front --weights` is deprecated (in `steer`, --weights is ONE vector); use --sweep",
              file=sys.stderr)
        sweep = sweep or args.old_weights
    try:
        cfg = load_front_config(args.config, overrides)
        result = run_front_config(cfg, weights=sweep)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = result.metrics
    print(f"hypervolume {m['hypervolume']:.4f}  EU_front {m['eu_front']:.4f}  EU_cond {m['eu_cond']:.4f}  "
          f"sparsity {m['sparsity']:.4f}  monotonicity violations {len(result.violations)}")
    print(f"wrote {result.paths['json']}, {result.paths['png']}, {result.paths['md']}")
    return 0


def _steer(args: argparse.Namespace) -> int:
    from feedalign.multiobjective.steering import generate_steered, load_spec
    from feedalign.multiobjective.weights import parse_weights

    try:
        spec = load_spec(args.model_dir)
        w = parse_weights(args.weights, spec.m, name="--weights")
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from feedalign.cli.train_cmd import load_for_generation

    model, tokenizer = load_for_generation(args.model_dir)
    served = spec.snap(w)
    if not (abs(served - w) < 1e-9).all():
        print(f"note: weights {w.tolist()} served as {served.tolist()} (grid 1/{spec.grid})", file=sys.stderr)
    outs = generate_steered(model, tokenizer, spec, args.prompt, w, max_new_tokens=args.max_new_tokens,
                            temperature=args.temperature, seed=args.seed, chat=args.chat)
    for prompt, out in zip(args.prompt, outs):
        print(json.dumps({"prompt": prompt, "conditioned_prompt": spec.condition_prompt(prompt, w), "completion": out}))
    return 0
