"""Best-of-N: sample N replies per context, score them with the pointwise reward model, keep the best.

The pointwise Bradley-Terry score is the judge (as in the paper and in Chai's best-of-N). Two things keep
the pick honest:

* with an ensemble, the value is `score - risk_lambda * score_std`: a reply the members disagree on lies
  where the reward model is off its map, and climbing there is how generation 12 fooled it;
* the user-signal heads are filters, never the objective (the paper used p(continue) and p(thumb up)
  only to select data): a reply below a `min_signal` (or above a `max_signal`) threshold is not a
  candidate. A filter naming a head the model lacks is an error, not a silent pass;
* a set-level guard (`diversity_weight`): one reply's score cannot see that a policy answers everyone with
  the same opening or phrase, which users tire of (world v2 judges exactly that, and the shipped reward
  model ranks a fixed template first). Contexts are answered in order, and a candidate loses
  `diversity_weight` x (the within-context sd of the values) x the share of the picks so far that share
  its opening (first 3 words) or one of its 5-word phrases, so a template stops winning once it fills a
  share of the picks.

`score_samples` is the pure part (scores in, picks out); `BestOfN` is the same choice as a `Policy`, so
the world and the A/B simulator judge "SmolLM2 best-of-8" exactly as they judge any policy.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from rm_lab.config import MAX_SEED, ConfigError, check_fields, param
from rm_lab.features.style import ARTIFACTS, style_frame
from rm_lab.policy.base import Completion, EngineConfig, GenerationConfig, LLMPolicy, repeat_rows

Z95 = 1.959963984540054
QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


# ----------------------------------------------------------------------------------------------
# filters and the selection value

@dataclass(frozen=True)
class Filter:
    """Keep a candidate only when the head's main output is >= (min) or <= (max) the threshold."""

    head: str
    output: str  # the key in RewardModel.score
    op: str  # ">=" | "<="
    threshold: float

    def passes(self, values: np.ndarray) -> np.ndarray:
        return values >= self.threshold if self.op == ">=" else values <= self.threshold

    def describe(self) -> str:
        return f"{self.output} {self.op} {self.threshold:g}"


def make_filters(specs: Mapping, min_signal: Mapping[str, float] | None, max_signal: Mapping[str, float] | None,
                 source: str = "reward model") -> list[Filter]:
    """Filters from `{head: threshold}` mappings, checked against the reward model's heads (`specs`:
    head name -> HeadSpec); an unknown head is a ConfigError naming it and the heads the model has."""
    out = []
    for key, mapping, op in (("min_signal", min_signal, ">="), ("max_signal", max_signal, "<=")):
        for head, thr in (mapping or {}).items():
            if head not in specs:
                raise ConfigError(f"{key}.{head}: the {source} has no head '{head}' (its heads: {sorted(specs)}); "
                                  f"filter on one of those, or train-rm with heads=[...,{head}]")
            if specs[head].is_pairwise:
                raise ConfigError(f"{key}.{head}: '{head}' is the preference score, the objective itself, not a "
                                  f"user-signal filter; use min_score for a floor on it")
            out.append(Filter(head, specs[head].out, op, float(thr)))
    return out


def selection_value(scores: Mapping[str, np.ndarray], risk_lambda: float = 0.0) -> np.ndarray:
    """The value best-of-N maximises: the pointwise score, minus `risk_lambda` ensemble standard deviations."""
    s = np.asarray(scores["score"], float)
    if risk_lambda == 0:
        return s
    if "score_std" not in scores:
        raise ConfigError(f"risk_lambda={risk_lambda:g} needs the ensemble's spread, but this reward model has one "
                          "member: train it with train-rm n_ensemble=3 (or more), or set risk_lambda=0")
    return s - risk_lambda * np.asarray(scores["score_std"], float)


def pick_best(n_groups: int, n: int, value: np.ndarray, passed: np.ndarray, fallback: bool) -> np.ndarray:
    """Index (into the flat rows, row i*n + j = sample j of group i) of each group's pick, -1 for none.

    The pick is the highest value among the samples that pass every filter (the first on ties); a group
    where none passes gets its best sample overall when `fallback` (a policy must answer), else none
    (rejection sampling drops it)."""
    v = np.asarray(value, float).reshape(n_groups, n)
    ok = np.asarray(passed, bool).reshape(n_groups, n)
    masked = np.where(ok, v, -np.inf)
    best = masked.argmax(1)
    none = ~ok.any(1)
    if fallback:
        best = np.where(none, v.argmax(1), best)
    idx = np.arange(n_groups) * n + best
    return np.where(none & (not fallback), -1, idx)


# ----------------------------------------------------------------------------------------------
# the set-level guard: repetition across the picks

OPENING_WORDS, PHRASE_WORDS = 3, 5
_WORD = re.compile(r"[a-z0-9']+")


def phrase_keys(text: str) -> set[tuple]:
    """The reply's opening (first OPENING_WORDS words) and its PHRASE_WORDS-word phrases, lower-cased."""
    ws = _WORD.findall(str(text).lower())
    keys: set[tuple] = {("<open>", *ws[:OPENING_WORDS])} if ws else set()
    keys.update(tuple(ws[i:i + PHRASE_WORDS]) for i in range(len(ws) - PHRASE_WORDS + 1))
    return keys


class RepetitionGuard:
    """The picks accepted so far; `share(text)` is the largest share of them that a candidate's opening or
    one of its phrases repeats (0: nothing repeated, 1: every earlier pick shares it)."""

    def __init__(self):
        self.counts: Counter = Counter()
        self.n = 0

    def share(self, text: str) -> float:
        if self.n == 0:
            return 0.0
        return max((self.counts[k] for k in phrase_keys(text)), default=0) / self.n

    def accept(self, text: str) -> None:
        self.counts.update(phrase_keys(text))
        self.n += 1


def pick_diverse(n_groups: int, n: int, value: np.ndarray, passed: np.ndarray, texts: Sequence[str],
                 weight: float, fallback: bool, scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`pick_best` with the set-level guard: groups are decided in order, each candidate's value lowered by
    `weight * scale * share` (its repetition of the picks so far). `scale` defaults to the mean sd of the
    values within a context, the spread a pick chooses from, so the weight is in those units: at weight 10 a
    candidate that repeats the opening of 10% of the picks loses one such sd, and a reply the reward model
    puts k sds above the rest keeps winning only while it is in under k/10 of the picks.
    Returns (pick index per group, -1 for none; the share per row)."""
    v = np.asarray(value, float)
    if scale is None:
        scale = within_sd(v, n_groups, n)
    guard, share = RepetitionGuard(), np.zeros(len(v))
    picks = np.full(n_groups, -1)
    for g in range(n_groups):
        rows = np.arange(g * n, (g + 1) * n)
        share[rows] = [guard.share(texts[r]) for r in rows]
        adj = v[rows] - weight * scale * share[rows]
        p = pick_best(1, n, adj, np.asarray(passed, bool)[rows], fallback)[0]
        if p >= 0:
            picks[g] = rows[p]
            guard.accept(texts[rows[p]])
    return picks, share


def within_sd(value: np.ndarray, n_groups: int, n: int) -> float:
    """The mean sd of the finite values within a group (1 when there is no spread to measure)."""
    v = np.where(np.isfinite(value), value, np.nan).reshape(n_groups, n)
    with np.errstate(all="ignore"):
        sd = np.nanstd(v, axis=1) if n > 1 else np.full(n_groups, np.nan)
    sd = sd[np.isfinite(sd) & (sd > 0)]
    return float(sd.mean()) if len(sd) else 1.0


def choose(samples: pd.DataFrame, n_groups: int, n: int, passed: np.ndarray, fallback: bool,
           diversity_weight: float = 0.0) -> np.ndarray:
    """The chosen mask over scored samples (rows i*n + j), with the set-level guard when its weight is > 0
    (then samples gets a `repetition` column: each candidate's share at the time its context was decided)."""
    value = samples["value"].to_numpy(float)
    if diversity_weight > 0:
        picks, share = pick_diverse(n_groups, n, value, passed, samples["response"].tolist(), diversity_weight,
                                    fallback)
        samples["repetition"] = share
    else:
        picks = pick_best(n_groups, n, value, passed, fallback)
    chosen = np.zeros(len(samples), bool)
    chosen[picks[picks >= 0]] = True
    return chosen


def score_samples(contexts: pd.DataFrame, groups: Sequence[Sequence[Completion]] | Sequence[Sequence[str]],
                  characters: pd.DataFrame, score_fn: Callable[..., Mapping[str, np.ndarray]],
                  filters: Sequence[Filter] = (), risk_lambda: float = 0.0, fallback: bool = True) -> pd.DataFrame:
    """One row per sample: context_id, sample, response, (n_tokens, finished), every reward output, the
    selection `value`, `passed` (all filters) and `chosen`. `score_fn(contexts, replies, characters)` returns
    the reward model's outputs (`RewardModel.score`)."""
    n_groups = len(contexts)
    if n_groups == 0:
        raise ConfigError("no contexts to sample for: the prompt set is empty")
    n = len(groups[0]) if len(groups) else 0
    if len(groups) != n_groups or n < 1 or any(len(g) != n for g in groups):
        raise ValueError(f"score_samples: expected {n_groups} groups of the same size >= 1")
    comps = [c for g in groups for c in g]
    texts = [c.text if isinstance(c, Completion) else str(c) for c in comps]
    reps = repeat_rows(contexts.reset_index(drop=True), n)
    scores = {k: np.asarray(v, float) for k, v in score_fn(reps, texts, characters).items()}
    value = selection_value(scores, risk_lambda)
    passed = np.ones(len(texts), bool)
    for f in filters:
        passed &= f.passes(scores[f.output])
    picks = pick_best(n_groups, n, value, passed, fallback)
    chosen = np.zeros(len(texts), bool)
    chosen[picks[picks >= 0]] = True
    df = pd.DataFrame({"context_id": reps["context_id"].astype(str).to_numpy(),
                       "sample": np.tile(np.arange(n), n_groups), "response": texts})
    if comps and isinstance(comps[0], Completion):
        df["n_tokens"] = [c.n_tokens for c in comps]
        df["finished"] = [c.finished for c in comps]
    for k, v in scores.items():
        df[k] = v
    df["value"], df["passed"], df["chosen"] = value, passed, chosen
    return df


# ----------------------------------------------------------------------------------------------
# the reward model as a scorer

@dataclass
class Scorer:
    """A reward model's outputs for (context, reply) rows; called as a RewardFn it returns the selection value."""

    model: object  # rm_lab.reward.model.RewardModel
    risk_lambda: float = 0.0
    batch_size: int = 64

    def outputs(self, contexts: pd.DataFrame, replies: Sequence[str], characters: pd.DataFrame) -> dict:
        return self.model.score(contexts, list(replies), characters, batch_size=self.batch_size)

    def __call__(self, contexts: pd.DataFrame, replies: Sequence[str], characters: pd.DataFrame) -> np.ndarray:
        return selection_value(self.outputs(contexts, replies, characters), self.risk_lambda)


def load_scorer(model_dir: str, risk_lambda: float = 0.0, cache_dir: str | None = None) -> Scorer:
    """The train-rm run folder as a Scorer (errors name the folder)."""
    if not model_dir:
        raise ConfigError("model: give a train-rm run folder, e.g. model=runs/train-rm/<id>")
    from rm_lab.reward.model import RewardModel

    model = RewardModel.load(model_dir, cache_dir=cache_dir)
    scorer = Scorer(model, risk_lambda)
    if risk_lambda and model.cfg.n_members < 2:
        selection_value({"score": np.zeros(1)}, risk_lambda)  # the one error message for this case
    return scorer


# ----------------------------------------------------------------------------------------------
# best-of-N as a policy

@dataclass
class BestOfN:
    """A policy that samples `n` replies and answers with the reward model's pick (`Policy` protocol)."""

    policy: LLMPolicy
    scorer: Scorer
    n: int
    filters: Sequence[Filter] = ()
    name: str = ""
    diversity_weight: float = 0.0  # the set-level guard over the contexts of one call (see pick_diverse)
    last: pd.DataFrame | None = field(default=None, repr=False)  # the scored samples of the last call

    def __post_init__(self):
        if self.n < 1:
            raise ConfigError(f"n: best-of-N needs n >= 1, got {self.n}")
        self.name = self.name or f"{self.policy.name}-best-of-{self.n}"

    def sample_scored(self, contexts: pd.DataFrame, characters: pd.DataFrame, seed: int = 0,
                      chunk: int = 16, say: Callable[[str], None] | None = None) -> pd.DataFrame:
        return sample_and_score(self.policy, self.scorer, contexts, characters, self.n, seed, self.filters,
                                fallback=True, chunk=chunk, say=say, diversity_weight=self.diversity_weight)

    def respond(self, contexts: pd.DataFrame, characters: pd.DataFrame, seed: int = 0) -> list[str]:
        self.last = self.sample_scored(contexts, characters, seed)
        return self.last[self.last["chosen"]]["response"].tolist()


def sample_and_score(policy: LLMPolicy, scorer: Scorer, contexts: pd.DataFrame, characters: pd.DataFrame, n: int,
                     seed: int = 0, filters: Sequence[Filter] = (), fallback: bool = True, chunk: int = 16,
                     say: Callable[[str], None] | None = None, diversity_weight: float = 0.0) -> pd.DataFrame:
    """Sample n replies per context (in chunks of contexts, each a safe point for SIGINT/SIGTERM) and score
    them (`score_samples`). Seeds are per chunk, so the same seed gives the same samples. With a
    `diversity_weight`, the picks are made again over all contexts with the set-level guard."""
    from rm_lab import jobs

    if n < 1:
        raise ConfigError(f"n: best-of-N needs n >= 1, got {n}")
    if len(contexts) == 0:
        raise ConfigError("no contexts to sample for: the prompt set is empty")
    contexts = contexts.reset_index(drop=True)
    parts = []
    for start in range(0, len(contexts), chunk):
        jobs.safe_point()
        part = contexts.iloc[start:start + chunk].reset_index(drop=True)
        groups = policy.sample(part, characters, seed=seed + start, n=n)
        parts.append(score_samples(part, groups, characters, scorer.outputs, filters, scorer.risk_lambda, fallback))
        if say:
            say(f"sampled and scored {min(start + chunk, len(contexts))}/{len(contexts)} contexts x {n}")
    out = pd.concat(parts, ignore_index=True)
    if diversity_weight > 0:
        out["chosen"] = choose(out, len(contexts), n, out["passed"].to_numpy(), fallback, diversity_weight)
    return out


# ----------------------------------------------------------------------------------------------
# reports: score distribution, style artifacts, truth

def distribution(values: np.ndarray) -> dict:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"n": 0}
    return {"n": int(len(v)), "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            **{f"q{int(q * 100):02d}": float(np.quantile(v, q)) for q in QUANTILES}}


def score_report(samples: pd.DataFrame) -> dict:
    """The score distribution of all samples, the picks and the rest; the spread within a context (a
    context whose samples all score alike gives best-of-N, and GRPO, nothing to choose from)."""
    within = samples.groupby("context_id", sort=False)["score"].std(ddof=0)
    return {"all": distribution(samples["score"]), "chosen": distribution(samples.loc[samples["chosen"], "score"]),
            "not_chosen": distribution(samples.loc[~samples["chosen"], "score"]),
            "value_chosen": distribution(samples.loc[samples["chosen"], "value"]),
            "within_context_sd": distribution(within), "pass_rate": float(samples["passed"].mean()),
            "finished_rate": float(samples["finished"].mean()) if "finished" in samples else math.nan}


def artifact_means(texts: Sequence[str], keywords: Sequence | None = None) -> dict:
    feats = style_frame(list(texts), keywords)
    return {a: (float(feats[a].mean()) if len(feats) else math.nan) for a in ARTIFACTS}


def keywords_of(samples: pd.DataFrame, contexts: pd.DataFrame, characters: pd.DataFrame) -> list:
    if "keywords" not in characters.columns:
        return [None] * len(samples)
    kw = characters.set_index("character_id")["keywords"]
    char_of = contexts.set_index("context_id")["character_id"]
    return [kw.get(char_of.get(c)) for c in samples["context_id"]]


def artifact_report(samples: pd.DataFrame, contexts: pd.DataFrame, characters: pd.DataFrame,
                    accepted: np.ndarray | None = None) -> dict:
    """Style-artifact means of accepted (chosen) vs rejected replies and their difference: a reward model
    that has learned an artifact shows it here first, as the emoji spike did in the paper."""
    acc = samples["chosen"].to_numpy() if accepted is None else np.asarray(accepted, bool)
    kws = keywords_of(samples, contexts, characters)
    a = artifact_means(samples.loc[acc, "response"], [k for k, m in zip(kws, acc) if m])
    r = artifact_means(samples.loc[~acc, "response"], [k for k, m in zip(kws, acc) if not m])
    return {"accepted": a, "rejected": r, "diff": {k: a[k] - r[k] for k in a},
            "n_accepted": int(acc.sum()), "n_rejected": int((~acc).sum())}


def repetition_of(texts: Sequence[str]) -> dict:
    """How templated a set of replies is: the mean and largest share of the *other* replies that share a
    reply's opening or one of its 5-word phrases (0: all fresh; 1: one template)."""
    keys = [phrase_keys(t) for t in texts]
    m = len(keys)
    if m < 2:
        return {"mean": 0.0, "max": 0.0, "n": m}
    counts = Counter(k for ks in keys for k in ks)
    shares = np.array([(max((counts[k] for k in ks), default=1) - 1) / (m - 1) for ks in keys])
    return {"mean": float(shares.mean()), "max": float(shares.max()), "n": m}


def mean_interval(x: np.ndarray) -> dict:
    """Mean with a normal 95% interval (x: one value per context, so contexts are the unit)."""
    x = np.asarray(x, float)
    n = len(x)
    m = float(x.mean()) if n else math.nan
    se = float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return {"mean": m, "low": m - Z95 * se, "high": m + Z95 * se, "se": se, "n": n}


def truth_report(samples: pd.DataFrame, truth: np.ndarray, n: int) -> dict:
    """True engagement of best-of-N vs best-of-1 on the same contexts.

    Best-of-1 is a random sample: its expected truth on a context is the mean over all n samples (the
    exact expectation given them, with less noise than sample 0 alone); the lift is the per-context
    difference, with a 95% interval over contexts."""
    t = np.asarray(truth, float).reshape(-1, n)
    chosen = samples["chosen"].to_numpy().reshape(-1, n)
    has = chosen.any(1)
    best = np.where(has, (t * chosen).sum(1), np.nan)
    one = t.mean(1)
    keep = has
    return {"best_of_n": mean_interval(best[keep]), "best_of_1": mean_interval(one[keep]),
            "lift": mean_interval(best[keep] - one[keep]), "oracle_best": mean_interval(t.max(1)[keep]), "n": n}


def picks_truth(samples: pd.DataFrame, contexts: pd.DataFrame, characters: pd.DataFrame, version: int) -> np.ndarray:
    """Each sample's truth, with the chosen ones re-judged as the set that one policy answers (templating is
    a property of the set)."""
    picked = samples[samples["chosen"]]
    truth = samples["truth_engagement"].to_numpy().copy()
    if len(picked):
        truth[samples["chosen"].to_numpy()] = world_truth(
            picked["response"], contexts.set_index("context_id", drop=False).loc[picked["context_id"]]
            .reset_index(drop=True), characters, version)
    return truth


def truth_terms(samples: pd.DataFrame, contexts: pd.DataFrame, characters: pd.DataFrame, n: int) -> dict:
    """Where best-of-N's gain over best-of-1 comes from in world v2: each part of the hidden logit (style,
    relevance, coherence, unfinished, templating) of the pick minus its mean over the n samples, paired per
    context with a 95% interval (picks judged as one policy's set, sample j of every context as another)."""
    from rm_lab.world.engagement import Population, score_replies

    pop = Population(world_version=2)
    contexts = contexts.reset_index(drop=True)
    every = score_replies(list(samples["response"]), repeat_rows(contexts, n), characters, pop,
                          policy=np.tile(np.arange(n), len(contexts))).extra["terms"]
    chosen = samples["chosen"].to_numpy().reshape(-1, n)
    has = chosen.any(1)
    picked = samples[samples["chosen"]]
    pick_ctx = contexts.set_index("context_id", drop=False).loc[picked["context_id"]].reset_index(drop=True)
    picks = score_replies(list(picked["response"]), pick_ctx, characters, pop).extra["terms"]
    mean_all = every.to_numpy().reshape(len(contexts), n, -1).mean(1)[has]
    diff = picks.to_numpy() - mean_all
    return {c: mean_interval(diff[:, k]) for k, c in enumerate(every.columns)}


# ----------------------------------------------------------------------------------------------
# the `best-of-n` stage (rejection-sample extends it)

def _default_world() -> int:
    """World v2 (a judge of relevance and coherence, not only style) when this version has it."""
    import importlib.util

    return 2 if importlib.util.find_spec("rm_lab.world.engagement_v2") else 1


@dataclass
class SamplingConfig:
    """A policy sampled N times per context and judged by a reward model (shared by best-of-n and
    rejection-sample)."""

    model: str = param("", doc="the reward model: a train-rm run folder")
    engine: dict = param(default_factory=dict, doc="the policy and its engine: engine.model is the policy (null: "
                                                   "packaged SmolLM2), engine.engine hf|vllm|vllm-server",
                         schema=EngineConfig)
    contexts: str | None = param(None, doc="a folder of context + character records to reply to; null: fresh "
                                           "contexts from the simulated world (then its truth is reported too)")
    n_contexts: int = param(64, doc="contexts to reply to (the first ones of `contexts`, or fresh ones)",
                            ge=1, le=10_000_000)
    traffic: str = param("user", doc="which traffic's contexts", choices=("user", "internal", "both"))
    world_version: int = param(default_factory=_default_world, doc="fresh contexts and truth from world v1 or v2",
                               ge=1, le=2)
    world_seed: int = param(0, doc="seed of the world's characters and of the fresh contexts", ge=0, le=MAX_SEED)
    n: int = param(8, doc="replies sampled per context (N)", ge=1, le=4096)
    temperature: float = param(0.8, doc="sampling temperature (0: greedy)", ge=0, le=5)
    top_p: float = param(1.0, doc="nucleus sampling mass", gt=0, le=1)
    max_new_tokens: int = param(48, doc="token cap per reply", ge=1, le=8192)
    seed: int = param(0, doc="sampling seed", ge=0, le=MAX_SEED)
    risk_lambda: float = param(0.0, doc="pick by score - risk_lambda x the ensemble's std (needs n_ensemble >= 2)",
                               ge=0, le=100)
    min_signal: dict[str, float] = param({}, doc="user-signal filters: {head: minimum of its output}, e.g. "
                                                 "{continue: 0.5, thumb_up: 0.2}")
    max_signal: dict[str, float] = param({}, doc="user-signal filters: {head: maximum}, e.g. {thumb_down: 0.3}")
    require_finished: bool = param(True, doc="only replies that ended by EOS are candidates (a reply cut by the "
                                             "token cap reads worse)")
    diversity_weight: float = param(10.0, doc="set-level guard: a candidate loses this many within-context sds of "
                                              "value times the share of the earlier picks that share its opening "
                                              "or a 5-word phrase (0: off)", ge=0, le=1000)
    label_name: str = param("rejection_pick", doc="name of the label rows that hold the picks (the SFT targets)",
                            min_len=1)
    chunk: int = param(16, doc="contexts per generation call (each call is a safe point for SIGINT/SIGTERM)",
                       ge=1, le=1_000_000)

    def __post_init__(self):
        check_fields(self)

    def generation(self) -> GenerationConfig:
        return GenerationConfig(n=self.n, temperature=self.temperature, top_p=self.top_p,
                                max_new_tokens=self.max_new_tokens, seed=self.seed)

    def engine_config(self) -> EngineConfig:
        from rm_lab import config as cfgmod

        return cfgmod.build(EngineConfig, dict(self.engine), "engine")


@dataclass
class BestOfNConfig(SamplingConfig):
    """`rm_lab best-of-n`: the reward model's pick of N samples per context, as a policy's answers."""

    label_name: str = param("best_of_n_pick", doc="name of the label rows that hold the picks", min_len=1)


def world_prompts(n: int, traffic: str, seed: int, version: int, prefix: str = "fresh", draw: int = 0):
    """Fresh contexts (and the characters of world `seed`) from the simulated world; `draw` gives another
    set of contexts with the same characters."""
    from rm_lab.world.characters import make_characters
    from rm_lab.world.contexts import make_contexts

    characters = make_characters(24, seed=seed)
    share = {"user": 1.0, "internal": 0.0, "both": 0.5}[traffic]
    kw = {"world_version": version} if version != 1 else {}
    contexts = make_contexts(characters, n, share, seed=seed + 77_777 + 1_009 * draw, prefix=prefix, **kw)
    return contexts, characters


def load_prompts(cfg: SamplingConfig, prefix: str = "fresh"):
    """(contexts, characters, from_world) to reply to; an empty prompt set is an error naming its source."""
    from rm_lab import io
    from rm_lab.schema import RecordError

    if not cfg.contexts:
        c, ch = world_prompts(cfg.n_contexts, cfg.traffic, cfg.world_seed, cfg.world_version, prefix)
        return c, ch, True
    recs = io.read_record_folder(cfg.contexts, kinds=("character", "context"))
    for need in ("context", "character"):
        if need not in recs:
            raise RecordError(str(cfg.contexts), None, None, f"no {need} records",
                              f"{need}.parquet beside the contexts to reply to")
    ctx = recs["context"]
    if cfg.traffic != "both":
        ctx = ctx[ctx["traffic"] == cfg.traffic]
    if len(ctx) == 0:
        raise RecordError(f"{cfg.contexts}/context", None, "traffic", f"0 contexts with traffic={cfg.traffic}",
                          "at least one context to reply to (an empty prompt set)")
    return ctx.head(cfg.n_contexts).reset_index(drop=True), recs["character"], False


def open_policy(cfg: SamplingConfig):
    """The engine (started once for the job) and the policy on it; a bad policy path is a ConfigError."""
    from rm_lab.policy.engines import load_engine

    ecfg = cfg.engine_config()
    try:
        engine = load_engine(ecfg)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:240] if str(e).strip() else type(e).__name__
        raise ConfigError(f"engine.model: cannot load '{ecfg.model or 'packaged SmolLM2'}' as a causal language "
                          f"model ({first})") from None
    name = Path(ecfg.model).name if ecfg.model else "smollm2"
    return engine, LLMPolicy(engine, cfg.generation(), name=name)


def world_truth(replies: Sequence[str], contexts: pd.DataFrame, characters: pd.DataFrame, version: int,
                policy=None) -> np.ndarray:
    """The hidden true engagement of replies in their contexts. `policy` labels which replies form one
    policy's set (world v2 judges templating within a set); None: all are one policy's answers."""
    from rm_lab.world.engagement import Population, score_replies

    pop = Population(world_version=version) if version != 1 else Population()
    return score_replies(list(replies), contexts.reset_index(drop=True), characters, pop,
                         policy=policy).true_engagement


def sft_records(samples: pd.DataFrame, contexts: pd.DataFrame, characters: pd.DataFrame, label_name: str,
                source: str):
    """The picks as canonical records: characters, contexts, `label` rows (name=label_name, value=the pick's
    score) and `preference` rows (the pick over the lowest-valued sample, source ai, margin = the value gap)."""
    from rm_lab.schema import Records, validate_frame

    picks = samples[samples["chosen"]]
    worst = samples.loc[samples.groupby("context_id", sort=False)["value"].idxmin()].set_index("context_id")
    labels = pd.DataFrame({"context_id": picks["context_id"].to_numpy(), "response": picks["response"].to_numpy(),
                           "name": label_name, "value": picks["score"].to_numpy(float), "source": source})
    w = worst.loc[picks["context_id"]]
    prefs = pd.DataFrame({"context_id": picks["context_id"].to_numpy(), "chosen": picks["response"].to_numpy(),
                          "rejected": w["response"].to_numpy(), "source": "ai",
                          "margin": picks["value"].to_numpy(float) - w["value"].to_numpy(float)})
    prefs = prefs[(prefs["chosen"] != prefs["rejected"]) & (prefs["rejected"].str.strip() != "")]
    keep = contexts[contexts["context_id"].astype(str).isin(set(picks["context_id"]))]
    chars = characters[characters["character_id"].isin(set(keep["character_id"]))]
    frames = {"character": validate_frame(chars.reset_index(drop=True), "character"),
              "context": validate_frame(keep.reset_index(drop=True), "context"),
              "label": validate_frame(labels, "label")}
    if len(prefs):  # every pick may equal its context's worst sample (or the worst be empty): then no pairs
        frames["preference"] = validate_frame(prefs.reset_index(drop=True), "preference")
    return Records(frames)


@dataclass
class Prepared:
    """What a sampling run needs, checked before its run folder exists (bad input then leaves none)."""

    scorer: Scorer
    filters: list
    contexts: pd.DataFrame
    characters: pd.DataFrame
    from_world: bool
    engine: object
    policy: LLMPolicy


def prepare_sampling(cfg: SamplingConfig) -> Prepared:
    """The reward model, the filters (checked against its heads), the prompts and the started engine."""
    scorer = load_scorer(cfg.model, cfg.risk_lambda)
    filters = make_filters(scorer.model.specs, cfg.min_signal, cfg.max_signal, f"reward model {cfg.model}")
    contexts, characters, from_world = load_prompts(cfg)
    engine, policy = open_policy(cfg)
    return Prepared(scorer, filters, contexts, characters, from_world, engine, policy)


def run_sampling(cfg: SamplingConfig, run_dir: Path, prepared: Prepared | None = None, *, fallback: bool,
                 min_score: float | None = None, say: Callable[[str], None] = print) -> dict:
    """Sample, score, pick, and write samples.parquet, the SFT set (canonical records) and report.json.

    `fallback`: best-of-N answers every context (its best sample when none passes the filters);
    rejection sampling (fallback False) drops such contexts, and those whose pick scores below `min_score`."""
    import time

    from rm_lab import io

    t0 = time.time()
    run_dir = Path(run_dir)
    p = prepared or prepare_sampling(cfg)
    scorer, filters, contexts, characters, from_world, policy = (p.scorer, p.filters, p.contexts, p.characters,
                                                                 p.from_world, p.policy)
    try:
        t_gen = time.time()
        samples = sample_and_score(policy, scorer, contexts, characters, cfg.n, cfg.seed, filters,
                                   fallback=True, chunk=cfg.chunk, say=say)
        seconds_sampling = time.time() - t_gen
    finally:
        p.engine.close()
    # the picks again, now with the finished and min-score rules (sample_and_score picked with the filters only)
    passed = samples["passed"].to_numpy().copy()
    if cfg.require_finished and "finished" in samples:
        passed &= samples["finished"].to_numpy(bool)
    passed &= samples["response"].str.strip().to_numpy() != ""
    chosen = choose(samples, len(contexts), cfg.n, passed, fallback, cfg.diversity_weight)
    if min_score is not None:
        chosen &= samples["value"].to_numpy() >= min_score
    samples["passed"], samples["chosen"] = passed, chosen
    if from_world:
        # sample j of every context is what a best-of-1 policy drawing its j-th sample answers: one set per j,
        # so the N candidates of one context are not judged as each other's templates
        samples["truth_engagement"] = world_truth(samples["response"], repeat_rows(contexts, cfg.n), characters,
                                                  cfg.world_version, policy=np.tile(np.arange(cfg.n), len(contexts)))
    with io.atomic_path(run_dir / "samples.parquet") as tmp:
        samples.to_parquet(tmp, index=False)
    report: dict = {"n_contexts": len(contexts), "n": cfg.n, "n_samples": len(samples),
                    "n_picked": int(chosen.sum()), "filters": [f.describe() for f in filters],
                    "risk_lambda": cfg.risk_lambda, "diversity_weight": cfg.diversity_weight,
                    "repetition_of_picks": repetition_of(samples.loc[chosen, "response"]),
                    "scores": score_report(samples),
                    "artifacts": artifact_report(samples, contexts, characters),
                    "seconds_sampling": round(seconds_sampling, 2),
                    "tokens": int(samples["n_tokens"].sum()) if "n_tokens" in samples else None}
    if report["tokens"]:
        report["tokens_per_s"] = round(report["tokens"] / max(seconds_sampling, 1e-9), 2)
    if from_world:
        report["world_version"] = cfg.world_version
        # best-of-N as a policy answers every context: where no candidate passed the rejection rules it falls
        # back to the best-scored sample, so its truth is judged over all contexts, not only the kept ones
        answered = samples.copy()
        if not fallback:
            answered["chosen"] = choose(answered, len(contexts), cfg.n, passed, True, cfg.diversity_weight)
        report["truth"] = truth_report(answered, picks_truth(answered, contexts, characters, cfg.world_version),
                                       cfg.n)
        if not fallback and chosen.any():  # the rejection set's own contexts, as before
            report["truth_kept"] = truth_report(samples, picks_truth(samples, contexts, characters, cfg.world_version),
                                                cfg.n)
        if cfg.world_version == 2:
            report["truth_terms"] = truth_terms(answered, contexts, characters, cfg.n)
    if chosen.any():
        recs = sft_records(samples, contexts, characters, cfg.label_name, f"{policy.name}:best-of-{cfg.n}")
        for name, df in recs.frames.items():
            io.write_records(df, run_dir / f"{name}.parquet", name)
    report["seconds"] = round(time.time() - t0, 2)
    io.write_json(run_dir / "report.json", report)
    io.write_text(run_dir / "report.md", render_report(report, "best-of-n" if fallback else "rejection-sample"))
    return report


def _f(v, d: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{d}f}"


def render_report(rep: dict, title: str) -> str:
    """Markdown: picks, score distribution, style artifacts accepted vs rejected, and the world's truth."""
    lines = [f"# {title}", "", f"{rep['n_contexts']} contexts x {rep['n']} samples; {rep['n_picked']} picked; "
             f"filters: {', '.join(rep['filters']) or 'none'}; risk_lambda {rep['risk_lambda']:g}; "
             f"diversity_weight {rep.get('diversity_weight', 0):g}; repetition across the picks (mean share of the "
             f"others sharing an opening or phrase): {_f(rep.get('repetition_of_picks', {}).get('mean'))}", "",
             "## Reward-model score distribution", "", "| set | n | mean | sd | q10 | median | q90 |",
             "|---|---|---|---|---|---|---|"]
    for k in ("all", "chosen", "not_chosen", "within_context_sd"):
        d = rep["scores"][k]
        lines.append(f"| {k} | {d.get('n', 0)} | {_f(d.get('mean'))} | {_f(d.get('sd'))} | {_f(d.get('q10'))} | "
                     f"{_f(d.get('q50'))} | {_f(d.get('q90'))} |")
    lines += ["", f"pass rate (filters): {_f(rep['scores']['pass_rate'])}; finished (ended by EOS): "
              f"{_f(rep['scores']['finished_rate'])}", "", "## Style artifacts: accepted vs rejected", "",
              "| artifact | accepted | rejected | diff |", "|---|---|---|---|"]
    a = rep["artifacts"]
    for k in a["accepted"]:
        lines.append(f"| {k} | {_f(a['accepted'][k])} | {_f(a['rejected'][k])} | {_f(a['diff'][k])} |")
    if "truth" in rep:
        t = rep["truth"]
        lines += ["", f"## True engagement (world v{rep.get('world_version', 1)})", "",
                  "| policy | mean | 95% interval |", "|---|---|---|"]
        for k, name in (("best_of_n", f"best-of-{t['n']}"), ("best_of_1", "best-of-1"), ("lift", "difference"),
                        ("oracle_best", f"oracle best of {t['n']}")):
            lines.append(f"| {name} | {_f(t[k]['mean'], 4)} | [{_f(t[k]['low'], 4)}, {_f(t[k]['high'], 4)}] |")
        lines += ["", f"Over all {t['lift']['n']} contexts: best-of-{t['n']} answers each one (the best-scored sample "
                  "where none passed the rules)."]
        if "truth_kept" in rep:
            k = rep["truth_kept"]["lift"]
            lines.append(f"On the {k['n']} contexts the rejection set kept, the difference is {_f(k['mean'], 4)} "
                         f"[{_f(k['low'], 4)}, {_f(k['high'], 4)}].")
    return "\n".join(lines) + "\n"
