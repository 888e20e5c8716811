"""`rm_lab evaluate`: a candidate policy against the current one on the same fresh contexts.

The paper's offline gate, and the world's answer next to it:

* reward-model win rates of the candidate, pointwise (P(score_cand > score_cur), ties half) and pairwise
  (the pairwise model's mean P(cand better)), separately on internal and on user traffic, with 95%
  intervals — a large gap between the two is the generation-12 alarm;
* steerability (instruction following per instruction and per prompt, violations), false refusals
  (refusing a harmless prompt) and the style artifacts of each policy;
* in the simulated world, what no offline metric can see: the true engagement of each policy (and its
  style-only part, so a gain can be told apart as relevance or style) and a simulated A/B test whose
  breadth and depth lifts, with their intervals, sit next to the true lifts.

The A/B interval has two noises in it. The simulated users' noise is what the delta-method interval of
the test covers; but each arm's quality is itself estimated from a few fresh contexts, and with tens of
contexts that noise dominates. The reported interval adds the context-sampling variance of the lift,
from a paired bootstrap over contexts (one resample of the contexts for both policies), to the users'
variance, on the log-ratio scale log(1 + lift); the users-only interval stays beside it.

A policy is a scripted preset of the world, or an LLM on an engine, optionally best-of-N by the reward
model; each maps contexts to replies, so all are judged alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from rm_lab.config import MAX_SEED, check_fields, param
from rm_lab.policy.base import EngineConfig


def _presets() -> list[str]:
    from rm_lab.world.policies import PRESETS

    return sorted(PRESETS)


@dataclass
class PolicySpec:
    """One side of an evaluation: a scripted preset, or an LLM (engine.model) answering best-of-`best_of`."""

    scripted: str | None = param(None, doc="a scripted world policy (preset name); null: the LLM in `engine`",
                                 choices=_presets)
    engine: dict = param(default_factory=dict, doc="the LLM and its engine (engine.model: null = packaged SmolLM2)",
                         schema=EngineConfig)
    best_of: int = param(1, doc="answer with the reward model's pick of this many samples (1: one sample)",
                         ge=1, le=4096)
    name: str | None = param(None, doc="the name in reports (default: from the preset or the model folder)")
    diversity_weight: float = param(10.0, doc="best-of-N's set-level guard against one opening/phrase for all "
                                              "(see best_of_n.pick_diverse; 0: off)", ge=0, le=1000)

    def __post_init__(self):
        check_fields(self)


@dataclass
class EvaluateConfig:
    """Two policies on fresh contexts: win rates, steerability, refusals, artifacts; truth and A/B in the world."""

    model: str = param("", doc="the reward model: a train-rm run folder")
    candidate: dict = param(default_factory=lambda: {"scripted": "improved"}, doc="the new policy",
                            schema=PolicySpec)
    baseline: dict = param(default_factory=lambda: {"scripted": "baseline"}, doc="the current policy",
                           schema=PolicySpec)
    n_contexts: int = param(64, doc="fresh contexts per traffic source (internal and user)", ge=2, le=1_000_000)
    world_version: int = param(2, doc="the world the contexts and the truth come from", ge=1, le=2)
    world_seed: int = param(7, doc="seed of the fresh contexts (keep it apart from the training prompts' seed)",
                            ge=0, le=MAX_SEED)
    temperature: float = param(0.8, doc="LLM sampling temperature", ge=0, le=5)
    top_p: float = param(1.0, doc="LLM nucleus sampling mass", gt=0, le=1)
    max_new_tokens: int = param(48, doc="LLM token cap per reply", ge=1, le=8192)
    seed: int = param(0, doc="sampling seed of both policies", ge=0, le=MAX_SEED)
    eligible_users: int = param(2_000_000, doc="simulated A/B: eligible users", ge=10, le=1_000_000_000)
    arm_share: float = param(0.1, doc="simulated A/B: share of users per arm", gt=0, le=0.5)
    days: int = param(7, doc="simulated A/B: days", ge=1, le=3650)
    ab_seed: int = param(0, doc="simulated A/B: seed of the users", ge=0, le=MAX_SEED)
    ab_bootstrap: int = param(1000, doc="simulated A/B: bootstrap resamples of the contexts for the lift "
                                        "interval's context-sampling part (0: users' noise only)", ge=0, le=1_000_000)
    guardrails: bool = param(True, doc="check the win rates with rm_lab.calibrate.guardrails when it is installed")

    def __post_init__(self):
        check_fields(self)


Z95 = 1.959963984540054


def mean_ci(x) -> dict:
    x = np.asarray(x, float)
    n = len(x)
    m = float(x.mean()) if n else math.nan
    se = float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return {"rate": m, "low": m - Z95 * se, "high": m + Z95 * se, "n": int(n)}


def win_rates(s_cand: np.ndarray, s_cur: np.ndarray, traffic: np.ndarray, pair_p: np.ndarray | None = None) -> dict:
    """{point_user, point_internal[, pair_user, pair_internal]}: {rate, low, high, n} (the format of
    rm_lab.calibrate.guardrails). Pointwise wins count ties as half; intervals are normal over contexts."""
    s_cand, s_cur, traffic = np.asarray(s_cand, float), np.asarray(s_cur, float), np.asarray(traffic)
    win = (s_cand > s_cur) + 0.5 * (s_cand == s_cur)
    clip = lambda e: {**e, "low": max(0.0, e["low"]), "high": min(1.0, e["high"])}  # noqa: E731  (a rate)
    out = {}
    for src in ("user", "internal"):
        m = traffic == src
        if m.any():
            out[f"point_{src}"] = clip(mean_ci(win[m]))
            if pair_p is not None:
                out[f"pair_{src}"] = clip(mean_ci(np.asarray(pair_p, float)[m]))
    return out


def refusal_rates(replies, contexts: pd.DataFrame) -> dict:
    """False refusals (a refusal of a harmless prompt) and refusals of harmful ones, with Wilson intervals."""
    from rm_lab.evaluate.steerability import wilson
    from rm_lab.features.style import style_frame

    refused = style_frame(list(replies))["refusal"].to_numpy() > 0
    harmful = (contexts.get("prompt_type", pd.Series([""] * len(contexts))).to_numpy() == "adversarial")
    out = {}
    for key, m in (("false_refusal", ~harmful), ("refusal_of_harmful", harmful)):
        r, lo, hi = wilson(int(refused[m].sum()), int(m.sum()))
        out[key] = {"rate": r, "low": lo, "high": hi, "n": int(m.sum())}
    return out


def steer_rows(name: str, replies, contexts: pd.DataFrame, characters: pd.DataFrame) -> pd.DataFrame:
    from rm_lab.world.characters import HARD_INSTRUCTIONS
    from rm_lab.world.engagement import instruction_verdicts

    ids, followed = instruction_verdicts(list(replies), contexts, characters)
    rows = [{"policy": name, "context_id": cid, "instruction_id": iid, "followed": bool(ok),
             "violation": (not ok) and iid in HARD_INSTRUCTIONS}
            for cid, i, f in zip(contexts["context_id"], ids, followed) for iid, ok in zip(i, f)]
    return pd.DataFrame(rows, columns=["policy", "context_id", "instruction_id", "followed", "violation"])


# ----------------------------------------------------------------------------------------------
# the policies

def _name(spec: PolicySpec) -> str:
    if spec.name:
        return spec.name
    if spec.scripted:
        return spec.scripted
    from pathlib import Path

    model = (spec.engine or {}).get("model")
    base = Path(model).name if model else "smollm2"
    if base == "policy" and model:
        base = Path(model).parent.name  # a train-policy run's policy/ folder: the run id
    return base + (f"-best-of-{spec.best_of}" if spec.best_of > 1 else "")


def build_policy(spec: PolicySpec, cfg: EvaluateConfig, scorer, engines: list):
    """The Policy a spec names (an engine it starts is appended to `engines`, to be closed by the caller)."""
    from rm_lab.policy.base import GenerationConfig, LLMPolicy
    from rm_lab.policy.objectives.best_of_n import BestOfN, SamplingConfig, open_policy
    from rm_lab.world.policies import ScriptedPolicy

    name = _name(spec)
    if spec.scripted:
        pol = ScriptedPolicy.preset(spec.scripted)
        pol.name = name
        return pol
    scfg = SamplingConfig(model=cfg.model, engine=dict(spec.engine), temperature=cfg.temperature, top_p=cfg.top_p,
                          max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, n=1)
    engine, _ = open_policy(scfg)
    engines.append(engine)
    llm = LLMPolicy(engine, GenerationConfig(n=1, temperature=cfg.temperature, top_p=cfg.top_p,
                                             max_new_tokens=cfg.max_new_tokens, seed=cfg.seed), name=name)
    if spec.best_of > 1:
        return BestOfN(llm, scorer, spec.best_of, name=name, diversity_weight=spec.diversity_weight)
    return llm


# ----------------------------------------------------------------------------------------------
# the A/B interval with the contexts' noise

def context_lift_sd(z_candidate: np.ndarray, z_baseline: np.ndarray, population, n_boot: int = 1000,
                    seed: int = 0) -> dict:
    """{breadth, depth}: the sd of log(1 + true lift) over a paired bootstrap of the contexts (rows of the
    per-context engagement logits z, shape (contexts, segments), the same contexts for both policies).
    On the log scale, because a lift is a ratio: against a weak baseline it is skewed far to the right."""
    from rm_lab.world.ab import ArmQuality, true_lifts

    zc, zb = np.asarray(z_candidate, float), np.asarray(z_baseline, float)
    if zc.shape != zb.shape or zc.ndim != 2:
        raise ValueError(f"context_lift_sd: expected two (contexts, segments) arrays of one shape, got {zc.shape} "
                         f"and {zb.shape}")
    m = len(zc)
    if n_boot < 2 or m < 2:
        return {"breadth": 0.0, "depth": 0.0}
    rng = np.random.default_rng(seed)
    logs = np.empty((n_boot, 2))
    for b in range(n_boot):
        idx = rng.integers(0, m, m)
        tl = true_lifts(ArmQuality("b", zb[idx].mean(0)), ArmQuality("c", zc[idx].mean(0)), population)
        logs[b] = math.log1p(tl["breadth_lift"]), math.log1p(tl["depth_lift"])
    sd = logs.std(0, ddof=1) * math.sqrt(m / (m - 1))  # the bootstrap's variance is (m-1)/m of the mean's
    return {"breadth": float(sd[0]), "depth": float(sd[1])}


def ab_interval(lift: float, users_low: float, users_high: float, context_log_sd: float) -> dict:
    """The lift's 95% interval with both noises, on the log-ratio scale: the users' (from the test's own
    interval) and the contexts' (`context_log_sd`, see context_lift_sd), added as variances."""
    def log1p(x: float) -> float:
        return math.log1p(max(x, -0.999999))

    users_se = (log1p(users_high) - log1p(users_low)) / (2 * Z95)
    se = math.sqrt(users_se ** 2 + context_log_sd ** 2)
    centre = log1p(lift)
    p = math.erfc(abs(centre) / se / math.sqrt(2)) if se > 0 else (0.0 if lift else 1.0)
    return {"lift": lift, "low": math.expm1(centre - Z95 * se), "high": math.expm1(centre + Z95 * se),
            "p_value": p, "users_low": users_low, "users_high": users_high, "context_log_sd": context_log_sd,
            "log_se": se}


# ----------------------------------------------------------------------------------------------
# the evaluation

def evaluate_policies(cfg: EvaluateConfig, say: Callable[[str], None] = print) -> dict:
    """Every figure of the evaluation (see the module docstring) as one JSON-able dict."""
    from rm_lab import config as cfgmod
    from rm_lab.evaluate.ab import analyze
    from rm_lab.evaluate.steerability import steerability_report
    from rm_lab.policy.objectives.best_of_n import artifact_means, load_scorer, world_prompts
    from rm_lab.world.ab import ArmQuality, run_ab, true_lifts
    from rm_lab.world.engagement import Population, score_replies

    cand, base = (cfgmod.build(PolicySpec, dict(d), k) for k, d in (("candidate", cfg.candidate),
                                                                     ("baseline", cfg.baseline)))
    scorer = load_scorer(cfg.model)
    ctx_u, chars = world_prompts(cfg.n_contexts, "user", cfg.world_seed, cfg.world_version, prefix="eval-user")
    ctx_i, _ = world_prompts(cfg.n_contexts, "internal", cfg.world_seed, cfg.world_version, prefix="eval-int", draw=1)
    contexts = pd.concat([ctx_u, ctx_i], ignore_index=True)
    engines: list = []
    replies, names = {}, {}
    try:
        for side, spec in (("candidate", cand), ("baseline", base)):
            pol = build_policy(spec, cfg, scorer, engines)
            names[side] = pol.name
            say(f"{side} {pol.name}: replying to {len(contexts)} contexts")
            replies[side] = list(pol.respond(contexts, chars, seed=cfg.seed))
    finally:
        for e in engines:
            e.close()
    if names["candidate"] == names["baseline"]:
        names["candidate"] += " (candidate)"
    traffic = contexts["traffic"].to_numpy()
    sc = scorer.outputs(contexts, replies["candidate"], chars)
    sb = scorer.outputs(contexts, replies["baseline"], chars)
    pair = None
    if scorer.model.pairwise is not None:
        pair = scorer.model.compare(contexts, replies["candidate"], replies["baseline"], chars)
    rates = win_rates(sc["score"], sb["score"], traffic, pair)
    out: dict = {"candidate": names["candidate"], "baseline": names["baseline"], "n_contexts": len(contexts),
                 "win_rates": rates}
    # steerability, refusals, artifacts
    steer = pd.concat([steer_rows(names[s], replies[s], contexts, chars) for s in ("candidate", "baseline")])
    rep = steerability_report(steer)
    out["steerability"] = {r["policy"]: {k: r[k] for k in ("follow_rate", "follow_lo", "follow_hi", "prompt_rate",
                                                          "prompt_lo", "prompt_hi", "violation_rate", "violation_lo",
                                                          "violation_hi")}
                           for r in rep.overall.to_dict(orient="records")}
    kw = chars.set_index("character_id")["keywords"]
    kws = [kw.get(c) for c in contexts["character_id"]]
    out["refusals"] = {names[s]: refusal_rates(replies[s], contexts) for s in ("candidate", "baseline")}
    out["artifacts"] = {names[s]: artifact_means(replies[s], kws) for s in ("candidate", "baseline")}
    # the world's truth and a simulated A/B test on the user traffic
    pop = Population(world_version=cfg.world_version) if cfg.world_version != 1 else Population()
    truth, quality, zs, term_rows = {}, {}, {}, {}
    user = traffic == "user"
    for s in ("candidate", "baseline"):
        scored = score_replies(replies[s], contexts, chars, pop)
        style_only = score_replies(replies[s], contexts, chars, Population())  # world v1's style-only judge
        truth[s] = scored.true_engagement
        zs[s] = scored.z[user]
        quality[s] = ArmQuality(names[s], zs[s].mean(axis=0))
        entry = {"true_engagement": mean_ci(scored.true_engagement[user]),
                 "style_only_engagement": mean_ci(style_only.true_engagement[user]),
                 "true_engagement_internal": mean_ci(scored.true_engagement[~user])}
        terms = (scored.extra or {}).get("terms")
        if isinstance(terms, pd.DataFrame):  # world v2: the logit split by part, where a gain comes from
            term_rows[s] = terms[user].reset_index(drop=True)
            entry["terms"] = {c: float(term_rows[s][c].mean()) for c in term_rows[s].columns}
        sig = (scored.extra or {}).get("signals")
        if isinstance(sig, pd.DataFrame):
            entry["signals"] = {c: float(pd.to_numeric(sig[c], errors="coerce")[user].mean()) for c in sig.columns
                                if pd.api.types.is_numeric_dtype(sig[c])}
        out.setdefault("world", {})[names[s]] = entry
    out["world"]["true_difference"] = mean_ci(truth["candidate"][user] - truth["baseline"][user])
    if len(term_rows) == 2:  # per part of the judge: candidate - baseline logit, paired over contexts
        out["world"]["term_difference"] = {c: mean_ci(term_rows["candidate"][c] - term_rows["baseline"][c])
                                           for c in term_rows["candidate"].columns}
    arms = run_ab(quality["baseline"], quality["candidate"], pop, cfg.eligible_users, cfg.arm_share, cfg.days,
                  np.random.default_rng(cfg.ab_seed), experiment_id="evaluate")
    row = analyze(arms).iloc[0]
    tl = true_lifts(quality["baseline"], quality["candidate"], pop)
    csd = context_lift_sd(zs["candidate"], zs["baseline"], pop, cfg.ab_bootstrap, cfg.ab_seed)
    out["ab"] = {m: {**ab_interval(float(row[f"{m}_lift"]), float(row[f"{m}_ci_low"]), float(row[f"{m}_ci_high"]),
                                   csd[m]),
                     "p_value_users": float(row[f"{m}_p_value"]), "true_lift": float(tl[f"{m}_lift"])}
                 for m in ("breadth", "depth")}
    out["ab"]["users_per_arm"] = int(row["users_control"])
    out["ab"]["n_contexts"] = int(user.sum())
    out["guardrails"] = _guardrails(rates, replies, kws) if cfg.guardrails else None
    out["_replies"] = {"contexts": contexts, "candidate": replies["candidate"], "baseline": replies["baseline"],
                       "candidate_score": sc["score"], "baseline_score": sb["score"]}
    return out


def _guardrails(rates: dict, replies: dict, kws) -> dict | None:
    """The calibration issue's guardrail verdict on these win rates, when rm_lab.calibrate.guardrails exists."""
    try:
        from rm_lab.calibrate import guardrails as g
    except ImportError:
        return None
    drift = g.style_drift(replies["candidate"], replies["baseline"], kws) if hasattr(g, "style_drift") else None
    return g.check_guardrails(rates, drift).to_json()


def _f(v, d=3) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{d}f}"


def _ci(e: dict, d=3) -> str:
    return f"{_f(e['rate'], d)} [{_f(e['low'], d)}, {_f(e['high'], d)}] (n={e['n']})"


def render(rep: dict) -> str:
    c, b = rep["candidate"], rep["baseline"]
    lines = [f"# evaluate: {c} vs {b}", "", f"{rep['n_contexts']} fresh contexts (internal + user traffic)", "",
             "## Reward-model win rates of the candidate", "", "| win rate | rate [95% interval] |", "|---|---|"]
    lines += [f"| {k} | {_ci(v)} |" for k, v in rep["win_rates"].items()]
    lines += ["", "## Steerability, refusals", "", "| policy | instructions followed | prompts all followed | "
              "violations | false refusals | refusals of harmful |", "|---|---|---|---|---|---|"]
    for p in (c, b):
        s, r = rep["steerability"][p], rep["refusals"][p]
        lines.append(f"| {p} | {_f(s['follow_rate'])} [{_f(s['follow_lo'])}, {_f(s['follow_hi'])}] | "
                     f"{_f(s['prompt_rate'])} | {_f(s['violation_rate'])} | {_ci(r['false_refusal'])} | "
                     f"{_ci(r['refusal_of_harmful'])} |")
    arts = list(rep["artifacts"][c])
    lines += ["", "## Style artifacts", "", "| artifact | " + " | ".join((c, b)) + " |", "|---|---|---|"]
    lines += [f"| {a} | {_f(rep['artifacts'][c][a])} | {_f(rep['artifacts'][b][a])} |" for a in arts]
    w = rep["world"]
    lines += ["", "## The world (user traffic)", "", "| policy | true engagement | style-only part (v1 judge) |",
              "|---|---|---|"]
    lines += [f"| {p} | {_ci(w[p]['true_engagement'], 4)} | {_ci(w[p]['style_only_engagement'], 4)} |" for p in (c, b)]
    lines.append(f"| difference | {_ci(w['true_difference'], 4)} | |")
    if w.get("term_difference"):
        lines += ["", "Where the difference comes from (world v2's logit by part, candidate - baseline, paired over "
                  "user contexts):", "", "| part | difference [95% interval] |", "|---|---|"]
        lines += [f"| {k} | {_ci(v, 3)} |" for k, v in w["term_difference"].items()]
    ab = rep["ab"]
    lines += ["", f"## Simulated A/B test ({ab['users_per_arm']} users per arm)", "",
              f"The interval holds the users' noise and the noise of measuring each policy on "
              f"{ab.get('n_contexts', '?')} user contexts (paired bootstrap); the users-only interval is beside it. "
              "The true lift is the lift on these contexts.", "",
              "| metric | lift [95% interval] | users-only interval | true lift |", "|---|---|---|---|"]
    lines += [f"| {m} | {ab[m]['lift']:+.4f} [{ab[m]['low']:+.4f}, {ab[m]['high']:+.4f}] | "
              f"[{ab[m].get('users_low', math.nan):+.4f}, {ab[m].get('users_high', math.nan):+.4f}] | "
              f"{ab[m]['true_lift']:+.4f} |" for m in ("breadth", "depth")]
    if rep.get("guardrails"):
        g = rep["guardrails"]
        lines += ["", f"## Guardrails: {'ok' if g.get('ok') else 'ALARM'}", ""]
        lines += [f"- {a.get('name')}: {a.get('why', '')}" for a in g.get("alarms", [])]
    return "\n".join(lines) + "\n"
