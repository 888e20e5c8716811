"""The coupled trainer: policy updates alternating with reward-model refreshes, stopped by guardrails.

A reward model is a local map of the engagement landscape around the policies that wrote its data
(DESIGN.md, point 2). Optimising a policy against a frozen map walks it off the map: generation 12
reached a 70.7% win rate on user traffic and lost engagement. So within one generation this trainer
runs rounds of

1. a short policy update against the current reward model (`update`: the flywheel's are GRPO on fresh
   prompts and DPO on fresh best-vs-worst pairs, each through `rm_lab.policy.trainer.train_policy`);
2. replies of the updated policy on fixed held-out contexts of both traffic sources;
3. those replies shown to the world's users (`label`: their signals, logged as canonical records);
4. the guardrails, judged by the reward model the update optimised (the one that can be fooled): the win
   rate over the generation's starting policy on user and on internal traffic against the ceiling and
   the gap (`rm_lab.calibrate.guardrails`), the style-artifact drift (emoji, length, lists, ...), and the
   ensemble's uncertainty on the new replies relative to the starting policy's (a policy off the map
   is where the members disagree);
5. when no stopping alarm fired, a reward-model refresh on the old logs plus every round's new ones.

With few contexts per round a win rate's point estimate is noisy, so by default (`evidence: interval`) a
win-rate alarm counts only when its whole 95% interval lies past the threshold; the others are recorded
as not significant. It stops at the first round where an alarm in `stop_on` fires and records which and why; the
generation's policy is then the last round's policy that passed (the starting policy when round 1
fired). A round's `round.json` is written last, atomically: a killed run redoes only the round it was
in, and the training inside a round resumes from its own checkpoints.

The steps are injected (`Hooks`), so the round and stop logic is tested without an LLM; `LLMHooks`
wires them to the real engines, trainer and reward model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal, Protocol, Sequence

import numpy as np
import pandas as pd

from rm_lab import io, jobs
from rm_lab.calibrate.guardrails import Alarm, GuardrailConfig, check_guardrails, context_keywords, style_drift
from rm_lab.config import MAX_SEED, ConfigError, check_fields, param

ALARMS = ("ceiling", "floor", "gap", "style_drift", "uncertainty")


@dataclass
class CoupledConfig:
    """Rounds of (policy update, new replies, world labels, guardrails, reward-model refresh)."""

    rounds: int = param(3, doc="rounds per generation (each: an update, then the checks)", ge=1, le=10_000)
    contexts: int = param(16, doc="held-out contexts per traffic source (user and internal) the rounds are judged "
                                  "on and whose replies are logged", ge=2, le=1_000_000)
    refresh_rm: bool = param(True, doc="refit the reward model on the old logs plus the new ones after each round")
    stop_on: list[str] = param(["ceiling", "gap", "style_drift", "uncertainty"],
                               doc="alarms that stop training (floor: the policy is not better yet, so not a stop)",
                               choices=ALARMS)
    guardrail: GuardrailConfig = param(default_factory=GuardrailConfig,
                                       doc="win-rate ceiling, floor, internal-vs-user gap, style-drift threshold")
    evidence: Literal["point", "interval"] = param(
        "interval", doc="win-rate alarms (ceiling, floor, gap) fire on the point estimate, or only when the whole 95% "
                        "interval lies past the threshold (few contexts per round make point estimates noisy)")
    max_uncertainty_ratio: float = param(2.0, doc="alarm when the ensemble's mean score std on the new replies "
                                                  "exceeds this many times its std on the starting policy's", gt=1)
    seed: int = param(0, doc="seed of the held-out contexts' users and the sampling", ge=0, le=MAX_SEED)

    def __post_init__(self):
        check_fields(self)


class Hooks(Protocol):
    """The steps of a round. Paths are strings: a policy folder, a train-rm run folder."""

    def update(self, policy: str, reward_model: str, folder: Path, round_index: int) -> tuple[str, dict]: ...

    def respond(self, policy: str, contexts: pd.DataFrame, characters: pd.DataFrame, seed: int) -> list[str]: ...

    def label(self, contexts: pd.DataFrame, replies: Sequence[str], characters: pd.DataFrame, policy: str,
              seed: int, folder: Path) -> str: ...

    def refresh(self, reward_model: str, logs: list[str], folder: Path) -> str: ...

    def scorer(self, reward_model: str): ...  # a RewardModel: score(), compare(), pairwise

    # optional: `truth(contexts, replies, characters) -> per-reply true engagement`, where a world knows it. The
    # guardrails never read it (no deployed system has it); the round records it beside them, so a run shows
    # where the reward model's verdict and the truth diverge (reward hacking).


@dataclass(frozen=True)
class CoupledRun:
    """The layout of a coupled-trainer folder."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    start_replies = property(lambda self: self.root / "start_replies.parquet")
    result = property(lambda self: self.root / "result.json")

    def round_dir(self, r: int) -> Path:
        return self.root / f"round-{r:02d}"

    def round_file(self, r: int) -> Path:
        return self.round_dir(r) / "round.json"


# ----------------------------------------------------------------------------------------------
# the checks

def uncertainty(scores_new: dict, scores_start: dict, max_ratio: float) -> dict:
    """The ensemble's mean score std on the new replies vs on the starting policy's (None: one member)."""
    if "score_std" not in scores_new or "score_std" not in scores_start:
        return {"available": False, "why": "the reward model has one member, so no ensemble spread"}
    new, start = float(np.mean(scores_new["score_std"])), float(np.mean(scores_start["score_std"]))
    ratio = new / start if start > 0 else (math.inf if new > 0 else 1.0)
    return {"available": True, "new": new, "start": start, "ratio": ratio, "max_ratio": max_ratio,
            "fired": bool(ratio > max_ratio)}


def win_rates(score_new, score_start, traffic, pair_p=None, z: float = 1.959963984540054) -> dict:
    """{point_user, point_internal[, pair_user, pair_internal]}: {rate, low, high, n}, as the guardrails read."""
    from rm_lab.calibrate.offline import TRAFFICS, pointwise_wins, rate_interval

    point = pointwise_wins(score_new, score_start)
    out = {}
    for t in TRAFFICS:
        m = np.asarray(traffic) == t
        if m.any():
            out[f"point_{t}"] = rate_interval(point[m], z)
            if pair_p is not None:
                out[f"pair_{t}"] = rate_interval(np.asarray(pair_p, float)[m], z)
    return out


def significant(alarm: Alarm | dict, rates: dict, z: float = 1.959963984540054) -> bool:
    """Whether a win-rate alarm (ceiling, floor, gap) holds for the whole interval of its win rates (`rates`
    with intervals at normal quantile `z`); any other alarm: always."""
    a = alarm if isinstance(alarm, dict) else asdict(alarm)
    name, metric, thr = a["name"], a["metric"], a["threshold"]
    if name == "ceiling":
        return rates[metric]["low"] > thr
    if name == "floor":
        return rates[metric]["high"] < thr
    if name == "gap":
        kind = metric.split("_")[0]
        u, i = rates[f"{kind}_user"], rates[f"{kind}_internal"]
        se = math.hypot((u["high"] - u["low"]) / (2 * z), (i["high"] - i["low"]) / (2 * z))
        return abs(u["rate"] - i["rate"]) - z * se > thr
    return True


def check_round(model, contexts: pd.DataFrame, characters: pd.DataFrame, replies: Sequence[str],
                start_replies: Sequence[str], cfg: CoupledConfig) -> dict:
    """Guardrails of one round (see the module docstring) as JSON: {ok, alarms, win_rates, drift, uncertainty}."""
    g = cfg.guardrail
    replies, start_replies = [str(r) for r in replies], [str(r) for r in start_replies]
    s_new, s_start = model.score(contexts, replies, characters), model.score(contexts, start_replies, characters)
    pair = model.compare(contexts, replies, start_replies, characters) if model.pairwise is not None else None
    rates = win_rates(s_new["score"], s_start["score"], contexts["traffic"].to_numpy(), pair, g.z)
    keys = context_keywords(contexts, characters)
    verdict = check_guardrails(rates, style_drift(replies, start_replies, keys, keys), g)
    noted = []
    if cfg.evidence == "interval":
        noted = [a for a in verdict.alarms if not significant(a, rates, g.z)]
        verdict.alarms = [a for a in verdict.alarms if a not in noted]
        verdict.ok = not verdict.alarms
    unc = uncertainty(s_new, s_start, cfg.max_uncertainty_ratio)
    if unc.get("fired"):
        verdict.alarms.append(Alarm("uncertainty", "score_std", unc["ratio"], cfg.max_uncertainty_ratio,
                                    f"ensemble std on the new replies {unc['new']:.3g} is {unc['ratio']:.2f}x its "
                                    f"std on the starting policy's {unc['start']:.3g} "
                                    f"(> {cfg.max_uncertainty_ratio:g}x):"
                                    " the policy has left the region the reward model knows"))
        verdict.ok = False
    out = verdict.to_json()
    out["not_significant"] = [asdict(a) for a in noted]
    out["uncertainty"] = unc
    out["stopping"] = [a for a in out["alarms"] if a["name"] in cfg.stop_on]
    return out


def stop_reason(stopping: list[dict]) -> str:
    return "; ".join(f"{a['name']} ({a['metric']}): {a['why']}" for a in stopping)


# ----------------------------------------------------------------------------------------------
# the loop

def run_coupled(cfg: CoupledConfig, start_policy: str, reward_model: str, logs: Sequence[str], contexts: pd.DataFrame,
                characters: pd.DataFrame, run_dir: str | Path, hooks: Hooks,
                say: Callable[[str], None] = print) -> dict:
    """Rounds until `cfg.rounds` or a stopping alarm; returns (and writes to result.json) the generation's
    policy, the reward model, every round's record and the stop (None when every round passed)."""
    if len(contexts) == 0:
        raise ConfigError("coupled trainer: no held-out contexts to judge the rounds on (an empty prompt set)")
    run = CoupledRun(Path(run_dir))
    run.root.mkdir(parents=True, exist_ok=True)
    contexts = contexts.reset_index(drop=True)
    if run.start_replies.is_file():
        start_replies = pd.read_parquet(run.start_replies)["response"].tolist()
    else:
        say(f"coupled: the starting policy answers {len(contexts)} held-out contexts")
        start_replies = hooks.respond(start_policy, contexts, characters, cfg.seed)
        with io.atomic_path(run.start_replies) as tmp:
            pd.DataFrame({"context_id": contexts["context_id"], "response": start_replies}).to_parquet(tmp, index=False)
    policy, passed_policy, rm = start_policy, start_policy, reward_model
    all_logs = list(logs)
    rounds: list[dict] = []
    stop = None
    for r in range(1, cfg.rounds + 1):
        jobs.safe_point()
        if run.round_file(r).is_file():  # finished before a stop: not redone
            rec = io.read_json(run.round_file(r))
            say(f"coupled round {r}: done before, kept ({'stop' if rec['stopping'] else 'passed'})")
        else:
            rec = _round(cfg, r, policy, rm, all_logs, contexts, characters, start_replies, run, hooks, say,
                         last=r == cfg.rounds)
        rounds.append(rec)
        policy = rec["policy"]
        all_logs.append(rec["logs"])
        if rec["stopping"]:
            stop = {"round": r, "alarms": list(dict.fromkeys(a["name"] for a in rec["stopping"])),
                    "why": stop_reason(rec["stopping"])}
            say(f"coupled round {r}: STOP — {stop['why']}")
            break
        passed_policy, rm = policy, rec["reward_model"]
    result = {"policy": passed_policy, "reward_model": rm, "start_policy": start_policy, "rounds": rounds,
              "rounds_run": len(rounds), "rounds_passed": len(rounds) - (1 if stop else 0), "stopped": stop,
              "logs": all_logs[len(logs):]}
    io.write_json(run.result, result)
    return result


def _round(cfg: CoupledConfig, r: int, policy: str, rm: str, logs: list[str], contexts: pd.DataFrame,
           characters: pd.DataFrame, start_replies: list[str], run: CoupledRun, hooks: Hooks, say, last: bool) -> dict:
    folder = run.round_dir(r)
    say(f"coupled round {r}: policy update against {rm}")
    new_policy, update_metrics = hooks.update(policy, rm, folder / "update", r)
    jobs.safe_point()
    say(f"coupled round {r}: replies on {len(contexts)} held-out contexts")
    replies = hooks.respond(new_policy, contexts, characters, cfg.seed + r)
    log_dir = hooks.label(contexts, replies, characters, f"round-{r}", cfg.seed * 1000 + r, folder / "logs")
    checks = check_round(hooks.scorer(rm), contexts, characters, replies, start_replies, cfg)
    truth = true_change(hooks, contexts, characters, replies, start_replies)
    new_rm = rm
    if cfg.refresh_rm and not checks["stopping"] and not last:
        jobs.safe_point()
        say(f"coupled round {r}: reward-model refresh on {len(logs) + 1} log folders")
        new_rm = hooks.refresh(rm, logs + [log_dir], folder / "rm")
    rec = {"round": r, "policy": new_policy, "reward_model": new_rm, "trained_against": rm, "logs": log_dir,
           "update": update_metrics, "win_rates": checks["win_rates"], "drift": checks["drift"],
           "uncertainty": checks["uncertainty"], "alarms": checks["alarms"], "stopping": checks["stopping"],
           "not_significant": checks["not_significant"], "true": truth,
           "ok": checks["ok"]}
    io.write_json(run.round_file(r), rec)  # last: the round is finished
    return rec


def true_change(hooks, contexts: pd.DataFrame, characters: pd.DataFrame, replies: Sequence[str],
                start_replies: Sequence[str]) -> dict | None:
    """The round's true engagement vs the starting policy's on user traffic (None: the hooks know no truth):
    both means, the paired difference with its 95% interval, and the relative lift."""
    truth = getattr(hooks, "truth", None)
    if truth is None:
        return None
    from rm_lab.policy.evaluate import mean_ci

    user = contexts["traffic"].to_numpy() == "user"
    if not user.any():
        user = np.ones(len(contexts), bool)
    new = np.asarray(truth(contexts, list(replies), characters), float)[user]
    start = np.asarray(truth(contexts, list(start_replies), characters), float)[user]
    return {"new": float(new.mean()), "start": float(start.mean()), "difference": mean_ci(new - start),
            "lift": float(new.mean() / start.mean() - 1.0), "n": int(user.sum())}


# ----------------------------------------------------------------------------------------------
# the real steps

@dataclass
class LLMHooks:
    """Rounds with a real LLM: updates by `train_policy`, replies by an engine, labels by the world,
    refreshes by `train_reward_model` on the merged logs (train-rm cannot continue a fitted model, so a
    refresh refits the reward model from scratch, small: frozen encoder features come from the cache).

    update_config(policy, reward_model, folder, round) -> TrainPolicyConfig: what one update trains."""

    update_config: Callable[[str, str, Path, int], object]
    rm_config: object  # TrainRMConfig of a refresh (data comes from the logs)
    engine: dict = field(default_factory=dict)  # EngineConfig keys (engine.model is set per policy)
    temperature: float = 0.8
    max_new_tokens: int = 48
    world_version: int = 2
    spurious_emoji: bool = False
    cache_dir: str | None = None
    say: Callable[[str], None] = print

    def update(self, policy: str, reward_model: str, folder: Path, round_index: int) -> tuple[str, dict]:
        from rm_lab.policy.trainer import PolicyRun, train_policy

        cfg = self.update_config(policy, reward_model, folder, round_index)
        metrics = train_policy(cfg, folder, say=lambda m: self.say(f"  update: {m}"))
        return str(PolicyRun(folder).policy), {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}

    def respond(self, policy: str, contexts: pd.DataFrame, characters: pd.DataFrame, seed: int) -> list[str]:
        return respond_with(policy, contexts, characters, seed, self.engine, self.temperature, self.max_new_tokens)

    def label(self, contexts, replies, characters, policy: str, seed: int, folder: Path) -> str:
        from rm_lab.flywheel.world_logs import log_replies, write_records

        recs = log_replies(replies, contexts, characters, policy, seed, self.world_version, self.spurious_emoji)
        return str(write_records(recs, folder))

    def refresh(self, reward_model: str, logs: list[str], folder: Path) -> str:
        from rm_lab.flywheel.world_logs import merge_logs
        from rm_lab.reward.train import train_reward_model

        train_reward_model(self.rm_config, folder, records=merge_logs(logs), say=lambda m: None)
        return str(folder)

    def scorer(self, reward_model: str):
        from rm_lab.reward.model import RewardModel

        return RewardModel.load(reward_model, cache_dir=self.cache_dir)

    def truth(self, contexts: pd.DataFrame, replies: list[str], characters: pd.DataFrame) -> np.ndarray:
        """The world's exact true engagement of each reply, by the users who label the rounds."""
        from rm_lab.world.engagement import Population, score_replies

        pop = Population(world_version=self.world_version, spurious_emoji=self.spurious_emoji)
        return score_replies(replies, contexts, characters, pop).true_engagement


def respond_with(policy: str | None, contexts: pd.DataFrame, characters: pd.DataFrame, seed: int, engine: dict,
                 temperature: float, max_new_tokens: int) -> list[str]:
    """One sampled reply per context from the policy folder (an engine started and closed here)."""
    from rm_lab import config as cfgmod
    from rm_lab.policy.base import EngineConfig, GenerationConfig, LLMPolicy
    from rm_lab.policy.engines import load_engine

    ecfg = cfgmod.build(EngineConfig, {**dict(engine), "model": policy}, "engine")
    eng = load_engine(ecfg)
    try:
        pol = LLMPolicy(eng, GenerationConfig(n=1, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed),
                        name=str(policy))
        return [str(r) for r in pol.respond(contexts, characters, seed=seed)]
    finally:
        eng.close()
