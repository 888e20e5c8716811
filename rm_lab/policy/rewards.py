"""Rewards for policy training: reward-model heads combined, penalised and logged component by component.

The paper's RL reward is the pointwise preference model; user-signal heads were noisy and went only
into data selection, and the policy climbed past where the reward model was reliable. So the reward
here is an explicit, inspectable sum

    total = Σ_h w_h·z_h  −  λ·Σ_h |w_h|·σ_h / s_h  −  a·length_excess  −  b·n_emoji  +  c·steer  −  d·cut

* z_h: head h's output (`RewardModel.score`), normalised per group (the replies of one context, as
  GRPO compares them) or per batch (`normalize`), or raw (`none`); weights may be negative
  (`regenerate: -0.5`). Heads are named by head (`preference`) or output (`score`).
* σ_h: the ensemble's spread on head h for that reply, in units of the head's batch std s_h, so λ
  is "how many standard errors to subtract" — a lower confidence bound that keeps the policy where
  the reward model agrees with itself. Needs an ensemble.
* length_excess = max(0, words − target) / target; n_emoji: emoji a reader sees (`features.style`);
  the two artifacts the paper watched spike.
* steer: the share of the character's verifiable instructions the reply follows (the steerability
  checkers of `evaluate.instructions`): a verifiable reward no reward model can be fooled on.
  Characters without verifiable instructions contribute 0.
* cut: 1 for a reply the token cap cut off (it did not end by EOS), DAPO's overlong punishment: a
  reward model scores a cut reply by its words, a reader sees a sentence that stops.

Every component is returned and logged on its own, in TRL's namespaces: `rewards/<name>/mean`,
`rewards/<name>/std`, `rewards/<name>/frac_zero_std` (share of groups where it cannot rank
replies), and for the total `reward`, `reward_std`, `frac_reward_zero_std`. The combination and each
component are plain callables `(contexts, replies, characters) -> scores`, as TRL's reward functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd

from rm_lab.config import ConfigError, check_fields, param
from rm_lab.features.style import WORD_RE, count_emoji

NORMALIZE = ("group", "batch", "none")
STD_EPS = 1e-4  # as GRPO's advantages: a zero-std group normalises to 0, not to inf


@dataclass(frozen=True)
class RewardConfig:
    """What the policy is rewarded for; the defaults are the paper's: the pointwise preference model."""

    heads: dict[str, float] = param({"preference": 1.0},
                                    doc="reward-model head (or output) -> weight; negative weights penalise")
    normalize: Literal["group", "batch", "none"] = param(
        "group", doc="normalise each head per group (replies of one context), per batch, or not", choices=NORMALIZE)
    uncertainty: float = param(0.0, doc="lambda: subtract this many ensemble standard deviations (needs an ensemble)",
                               ge=0)
    length_penalty: float = param(0.0, doc="per unit of (words - target) / target beyond the target", ge=0)
    length_target: int = param(60, doc="reply length in words beyond which the length penalty starts", ge=1)
    emoji_penalty: float = param(0.0, doc="per emoji in the reply", ge=0)
    steer_weight: float = param(0.0, doc="weight of the share of the character's verifiable instructions followed",
                                ge=0)
    steer_loose: bool = param(False, doc="steer: judge instructions in IFEval's loose mode")
    truncation_penalty: float = param(0.0, doc="subtracted from a reply the token cap cut (DAPO's overlong "
                                               "punishment; needs each reply's `finished`)", ge=0)

    def __post_init__(self):
        check_fields(self)
        if not self.heads and not (self.length_penalty or self.emoji_penalty or self.steer_weight
                                   or self.truncation_penalty):
            raise ConfigError("RewardConfig.heads: no reward component (no head weight and no length, emoji, "
                              "steer or truncation term)")
        if self.uncertainty and not self.heads:
            raise ConfigError("RewardConfig.uncertainty: an ensemble penalty needs at least one head in `heads`")


@dataclass
class RewardScores:
    """One batch's rewards: the total, each component's raw values, and the logged metrics."""

    total: np.ndarray
    components: dict[str, np.ndarray]
    metrics: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- groups

def group_ids(contexts: pd.DataFrame) -> np.ndarray:
    """Group index per row: rows with one `context_id` are samples of one prompt (GRPO's group)."""
    if "context_id" not in contexts.columns:
        raise ConfigError("rewards: contexts need a context_id column (one row per reply)")
    return pd.factorize(contexts["context_id"].astype(str))[0]


def _group_stats(x: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row mean and unbiased std of the row's group (std 0 for a group of one)."""
    s = pd.Series(x).groupby(groups)
    mean = s.transform("mean").to_numpy()
    std = s.transform(lambda v: v.std(ddof=1) if len(v) > 1 else 0.0).to_numpy()
    return mean, np.nan_to_num(std)


def normalise(x: np.ndarray, groups: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray]:
    """(x - mean) / (std + eps) per group or over the batch; `none`: x. Returns (z, scale used)."""
    x = np.asarray(x, float)
    if how == "none":
        return x, np.ones_like(x)
    if how == "group":
        mean, std = _group_stats(x, groups)
    elif how == "batch":
        mean = np.full_like(x, x.mean())
        std = np.full_like(x, x.std(ddof=1) if len(x) > 1 else 0.0)
    else:
        raise ConfigError(f"rewards: normalize must be one of {list(NORMALIZE)}, got {how!r}")
    return (x - mean) / (std + STD_EPS), std + STD_EPS


def frac_zero_std(x: np.ndarray, groups: np.ndarray) -> float:
    """Share of groups whose values are all equal (NaN rows ignored): where a component cannot rank."""
    s = pd.Series(np.asarray(x, float)).groupby(groups)
    spread = s.max() - s.min()
    spread = spread[s.count() > 0]
    return float((spread.abs() <= 1e-8).mean()) if len(spread) else 0.0


def component_metrics(name: str, values: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    v = np.asarray(values, float)
    ok = v[~np.isnan(v)]
    return {f"rewards/{name}/mean": float(ok.mean()) if len(ok) else float("nan"),
            f"rewards/{name}/std": float(ok.std(ddof=1)) if len(ok) > 1 else 0.0,
            f"rewards/{name}/frac_zero_std": frac_zero_std(v, groups)}


# ---------------------------------------------------------------------------------------------- components

def length_excess(replies: Sequence[str], target: int) -> np.ndarray:
    """max(0, words - target) / target per reply: 0 up to the target, 1 at twice the target."""
    words = np.array([len(WORD_RE.findall(str(r))) for r in replies], float)
    return np.maximum(0.0, words - target) / target


def emoji_counts(replies: Sequence[str]) -> np.ndarray:
    return np.array([count_emoji(str(r)) for r in replies], float)


def _last_user_turn(history: Any) -> str:
    turns = list(history) if history is not None else []
    for t in reversed(turns):
        if isinstance(t, dict) and t.get("role") == "user":
            return str(t.get("content", ""))
    return str(turns[-1].get("content", "")) if turns and isinstance(turns[-1], dict) else ""


def steer_shares(contexts: pd.DataFrame, replies: Sequence[str], characters: pd.DataFrame,
                 loose: bool = False) -> np.ndarray:
    """Per reply, the share of its character's verifiable instructions it follows; NaN where the
    character has none (free-text instructions cannot be checked)."""
    from rm_lab.evaluate.instructions import check_many

    chars = {str(r["character_id"]): r for _, r in characters.iterrows()}
    out = np.full(len(replies), np.nan)
    for i, (cid, hist, reply) in enumerate(zip(contexts["character_id"].astype(str), contexts["history"], replies)):
        if cid not in chars:
            raise ConfigError(f"rewards: context row {i + 1} names character_id {cid!r}, which is not among the "
                              f"{len(chars)} characters given")
        instr = [x for x in (chars[cid]["instructions"] if chars[cid]["instructions"] is not None else [])
                 if isinstance(x, dict) and x.get("instruction_id")]
        if not instr:
            continue
        verdicts = check_many([x["instruction_id"] for x in instr], [x.get("kwargs") or {} for x in instr],
                              str(reply), prompt=_last_user_turn(hist), loose=loose)
        out[i] = float(np.mean(verdicts))
    return out


def resolve_heads(model, names: Sequence[str], where: str = "the reward model") -> dict[str, str]:
    """Head (or output) name -> the `RewardModel.score` key it reads; an unknown name is a ConfigError
    naming it and listing what the model has."""
    specs = model.specs
    outputs = {o for s in specs.values() for o in s.outputs()}
    resolved = {}
    for name in names:
        if name in specs:
            resolved[name] = specs[name].out
        elif name in outputs:
            resolved[name] = name
        else:
            raise ConfigError(f"reward heads: {name!r} is not a head of {where}; its heads are "
                              f"{sorted(specs)} (outputs {sorted(outputs)})")
    return resolved


class HeadReward:
    """One reward-model output as a TRL-style reward function."""

    def __init__(self, model, head: str, where: str = "the reward model"):
        self.model, self.head = model, head
        self.key = resolve_heads(model, [head], where)[head]
        self.__name__ = head

    def __call__(self, contexts: pd.DataFrame, replies: Sequence[str], characters: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.model.score(contexts, list(replies), characters)[self.key], float)


class StyleReward:
    """The steerability share (`steer`), negative length excess (`length`) or negative emoji count
    (`emoji`) as a TRL-style reward function (higher is better)."""

    def __init__(self, kind: Literal["steer", "length", "emoji"], length_target: int = 60, loose: bool = False):
        if kind not in ("steer", "length", "emoji"):
            raise ConfigError(f"StyleReward: kind must be steer, length or emoji, got {kind!r}")
        self.kind, self.length_target, self.loose = kind, length_target, loose
        self.__name__ = kind

    def __call__(self, contexts: pd.DataFrame, replies: Sequence[str], characters: pd.DataFrame) -> np.ndarray:
        if self.kind == "steer":
            return steer_shares(contexts, replies, characters, self.loose)
        if self.kind == "length":
            return -length_excess(replies, self.length_target)
        return -emoji_counts(replies)


# ---------------------------------------------------------------------------------------------- combination

class CombinedReward:
    """`RewardConfig` over a reward model: call it as a reward function, or `score` it for the parts.

    The model needs `specs` (head name -> HeadSpec) and `score(contexts, replies, characters)` ->
    {output: array, output_std: array for an ensemble}, as `rm_lab.reward.model.RewardModel`.
    """

    def __init__(self, cfg: RewardConfig, model=None, where: str = "the reward model"):
        self.cfg, self.model = cfg, model
        self.__name__ = "reward"
        if cfg.heads and model is None:
            raise ConfigError(f"RewardConfig.heads: {sorted(cfg.heads)} need a reward model, none was given")
        self.keys = resolve_heads(model, list(cfg.heads), where) if cfg.heads else {}
        if cfg.uncertainty and len(getattr(model, "members", ())) == 1:
            raise ConfigError(f"RewardConfig.uncertainty: {cfg.uncertainty:g} needs an ensemble reward model "
                              f"(n_ensemble >= 2); {where} has {len(model.members)} member")

    def score(self, contexts: pd.DataFrame, replies: Sequence[str], characters: pd.DataFrame,
              finished: Sequence[bool] | None = None) -> RewardScores:
        """`finished`: per reply, whether it ended by EOS (needed by the truncation penalty)."""
        replies = [str(r) for r in replies]
        if len(replies) != len(contexts):
            raise ValueError(f"rewards: {len(replies)} replies for {len(contexts)} context rows")
        if self.cfg.truncation_penalty and (finished is None or len(finished) != len(replies)):
            raise ConfigError("RewardConfig.truncation_penalty: needs whether each reply ended by EOS (`finished`, "
                              f"one per reply); got {'none' if finished is None else len(finished)} for "
                              f"{len(replies)} replies")
        if not replies:
            raise ConfigError("rewards: no replies to score (an empty batch)")
        cfg, groups = self.cfg, group_ids(contexts)
        comps: dict[str, np.ndarray] = {}
        total = np.zeros(len(replies))
        raw = np.zeros(len(replies))  # the same weights on unnormalised components: progress across steps
        if self.keys:
            out = self.model.score(contexts, replies, characters)
            unc, raw_unc = np.zeros(len(replies)), np.zeros(len(replies))
            for name, key in self.keys.items():
                x = np.asarray(out[key], float)
                comps[name] = x
                z, _ = normalise(x, groups, cfg.normalize)
                total += cfg.heads[name] * z
                raw += cfg.heads[name] * x
                if cfg.uncertainty:
                    if f"{key}_std" not in out:
                        raise ConfigError(f"RewardConfig.uncertainty: the reward model gives no ensemble std for "
                                          f"{key!r} (it needs n_ensemble >= 2)")
                    scale = 1.0 if cfg.normalize == "none" else (x.std(ddof=1) if len(x) > 1 else 0.0) + STD_EPS
                    unc += abs(cfg.heads[name]) * np.asarray(out[f"{key}_std"], float) / scale
                    raw_unc += abs(cfg.heads[name]) * np.asarray(out[f"{key}_std"], float)
            if cfg.uncertainty:
                comps["uncertainty"] = unc
                total -= cfg.uncertainty * unc
                raw -= cfg.uncertainty * raw_unc
        if cfg.length_penalty:
            comps["length"] = length_excess(replies, cfg.length_target)
            total -= cfg.length_penalty * comps["length"]
            raw -= cfg.length_penalty * comps["length"]
        if cfg.emoji_penalty:
            comps["emoji"] = emoji_counts(replies)
            total -= cfg.emoji_penalty * comps["emoji"]
            raw -= cfg.emoji_penalty * comps["emoji"]
        if cfg.steer_weight:
            comps["steer"] = steer_shares(contexts, replies, characters, cfg.steer_loose)
            total += cfg.steer_weight * np.nan_to_num(comps["steer"], nan=0.0)
            raw += cfg.steer_weight * np.nan_to_num(comps["steer"], nan=0.0)
        if cfg.truncation_penalty:
            comps["truncated"] = 1.0 - np.asarray(finished, float)
            total -= cfg.truncation_penalty * comps["truncated"]
            raw -= cfg.truncation_penalty * comps["truncated"]
        metrics: dict[str, float] = {}
        for name, v in comps.items():
            metrics.update(component_metrics(name, v, groups))
        metrics.update({"reward": float(total.mean()), "reward_std": float(total.std(ddof=1)) if len(total) > 1
                        else 0.0, "frac_reward_zero_std": frac_zero_std(total, groups),
                        # with per-group normalisation `reward` is 0 by construction; this one moves
                        "reward_raw": float(raw.mean())})
        return RewardScores(total, comps, metrics)

    def __call__(self, contexts: pd.DataFrame, replies: Sequence[str], characters: pd.DataFrame) -> np.ndarray:
        return self.score(contexts, replies, characters).total


def as_trl_reward(fn, contexts: pd.DataFrame, characters: pd.DataFrame):
    """One of our reward functions as a `trl.GRPOTrainer` reward function.

    TRL calls `reward(prompts, completions, **columns)` with the dataset's other columns as lists, so
    the dataset must carry `context_id`; completions may be strings or chat messages.
    """
    by_id = contexts.assign(context_id=contexts["context_id"].astype(str)).set_index("context_id", drop=False)

    def reward(prompts, completions, context_id=None, **_):
        if context_id is None:
            raise ConfigError("as_trl_reward: the training dataset needs a context_id column")
        unknown = sorted(set(map(str, context_id)) - set(by_id.index))
        if unknown:
            raise ConfigError(f"as_trl_reward: context_id {unknown[0]!r} is not among the {len(by_id)} contexts")
        rows = by_id.loc[list(map(str, context_id))].reset_index(drop=True)
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        return [float(x) for x in fn(rows, texts, characters)]

    reward.__name__ = getattr(fn, "__name__", "reward")
    return reward
