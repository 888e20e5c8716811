"""The A/B simulator: two policies, a 7-day test, engagement breadth and depth, and the true lift.

A policy enters the test through its reply quality per user segment, q_s = mean hidden engagement
logit of its replies on fresh user traffic. Each arm user (segment s, latent u) is active on a day
with probability p = sigmoid(alpha + a_s + u + beta*q_s) and, when active, sends 1 + Poisson(lambda)
messages with lambda = exp(d_s + gamma_u*u + delta*q_s). Users are drawn independently, so the
expected breadth and depth of an arm follow exactly from the same formulas (Gauss-Hermite over u),
which gives the true lift that the estimated intervals must cover.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from rm_lab.config import MAX_SEED, check_fields, param
from rm_lab.world.characters import make_characters
from rm_lab.world.contexts import make_contexts
from rm_lab.world.engagement import GH_NODES, GH_WEIGHTS, Population, score_replies, sigmoid


@dataclass(frozen=True)
class ActivityModel:
    alpha: float = -1.2  # day-level base logit
    beta: float = 0.8  # effect of reply quality on daily activity
    gamma_u: float = 0.3  # latent propensity on messages
    delta: float = 0.5  # effect of reply quality on messages per active day


@dataclass
class ArmQuality:
    """What the A/B simulator needs of a policy: mean engagement logit per segment."""

    name: str
    q: np.ndarray  # (n_segments,)


def policy_quality(policy, population: Population, n_contexts: int = 2000, seed: int = 0,
                   n_characters: int = 24) -> ArmQuality:
    """Mean hidden engagement logit per segment of `policy` on fresh user-traffic contexts."""
    characters = make_characters(n_characters, seed=seed)
    contexts = make_contexts(characters, n_contexts, traffic_share_user=1.0, seed=seed + 55_555, prefix="ab")
    replies = policy.respond(contexts, characters, seed=seed + 1)
    z = score_replies(replies, contexts, characters, population).z
    return ArmQuality(getattr(policy, "name", "policy"), z.mean(axis=0))


def expected_metrics(q: np.ndarray, population: Population, model: ActivityModel = ActivityModel()) -> dict:
    """Exact expected breadth (per-day active share) and depth (messages per active user-day)."""
    shares = np.array(population.shares)
    base, dbase = population.segment_base(), population.segment_depth()
    u = population.latent_sd * GH_NODES  # (K,)
    p = sigmoid(model.alpha + base[:, None] + u[None, :] + model.beta * q[:, None])  # (S,K)
    lam = np.exp(dbase[:, None] + model.gamma_u * u[None, :] + model.delta * q[:, None])
    e_p = (p * GH_WEIGHTS).sum(1) @ shares
    e_pm = (p * (1 + lam) * GH_WEIGHTS).sum(1) @ shares
    return {"breadth": float(e_p), "depth": float(e_pm / e_p)}


def simulate_arm(q: np.ndarray, n_users: int, days: int, population: Population, rng: np.random.Generator,
                 model: ActivityModel = ActivityModel(), per_day: bool = True) -> dict:
    """Sufficient statistics of one arm (totals, user-level second moments, optional per-day counts)."""
    shares = np.array(population.shares)
    seg = rng.choice(len(shares), size=n_users, p=shares)
    u = rng.normal(0.0, population.latent_sd, n_users)
    p = sigmoid(model.alpha + population.segment_base()[seg] + u + model.beta * q[seg])
    lam = np.exp(population.segment_depth()[seg] + model.gamma_u * u + model.delta * q[seg])
    out: dict = {}
    if per_day:
        active = rng.random((days, n_users)) < p  # (days, n)
        msgs_day = np.zeros((days, n_users))
        for d in range(days):
            idx = np.flatnonzero(active[d])
            msgs_day[d, idx] = 1 + rng.poisson(lam[idx])
        a = active.sum(0)
        m = msgs_day.sum(0)
        out["engaged_per_day"] = active.sum(1)
        out["messages_per_day"] = msgs_day.sum(1)
    else:
        a = rng.binomial(days, p)
        m = a + rng.poisson(lam * a)
    out.update(users=n_users, engaged_users=int((a > 0).sum()), engaged_user_days=float(a.sum()),
               messages=float(m.sum()), active_days_sq=float((a.astype(float) ** 2).sum()),
               messages_sq=float((m ** 2).sum()), active_messages=float((a * m).sum()))
    return out


def _presets() -> list[str]:
    from rm_lab.world.policies import PRESETS

    return sorted(PRESETS)


@dataclass
class ABConfig:
    """A simulated A/B test between two scripted policies (the `ab-test` command's config)."""

    control: str = param("baseline", doc="scripted policy of the control arm", choices=_presets)
    treatment: str = param("improved", doc="scripted policy of the treatment arm", choices=_presets)
    eligible_users: int = param(400_000, doc="users eligible for the test", ge=1, le=1_000_000_000)
    arm_share: float = param(0.1, doc="share of eligible users per arm (paper: usually 10%; two disjoint arms)",
                             gt=0, le=0.5)
    days: int = param(7, doc="length of the test in days", ge=1, le=3650)
    seed: int = param(0, doc="seed of the arms' users and of the policies' replies", ge=0, le=MAX_SEED)
    quality_contexts: int = param(2000, doc="fresh user contexts on which each policy's reply quality is measured",
                                  ge=1, le=1_000_000)
    spurious_emoji: bool = param(False, doc="the world with the emoji-lover confound planted")
    per_day: bool = param(True, doc="also write a row per arm and day")
    experiment_id: str = param("sim-ab", doc="experiment_id of the written ab_arm rows", min_len=1)
    records: str | None = param(None, doc="analyse stored ab_arm records (e.g. an ingested Upworthy run) instead")

    def __post_init__(self):
        check_fields(self)
        if self.eligible_users * self.arm_share < 1:
            raise ValueError(f"eligible_users x arm_share = {self.eligible_users * self.arm_share:g} expected users "
                             "per arm; each arm needs at least 1")


def simulate_ab(cfg: ABConfig) -> tuple[pd.DataFrame, dict]:
    """Run the configured test; return its ab_arm rows and the true lifts from the hidden function."""
    from rm_lab.world.policies import ScriptedPolicy

    pop = Population(spurious_emoji=cfg.spurious_emoji)
    qc = policy_quality(ScriptedPolicy.preset(cfg.control), pop, cfg.quality_contexts, seed=cfg.seed)
    qt = policy_quality(ScriptedPolicy.preset(cfg.treatment), pop, cfg.quality_contexts, seed=cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    arms = run_ab(qc, qt, pop, cfg.eligible_users, cfg.arm_share, cfg.days, rng, cfg.experiment_id, cfg.per_day)
    _check_simulated(arms, cfg)
    return arms, true_lifts(qc, qt, pop)


# which setting produced each ab_arm field of a simulated test
_SETTING_OF = {"users": "eligible_users, arm_share", "engaged_users": "eligible_users, arm_share",
               "experiment_id": "experiment_id", "days": "days", "day": "days", "arm": "control, treatment",
               "allocation": "arm_share"}


def _check_simulated(arms: pd.DataFrame, cfg: ABConfig) -> None:
    """Simulated arms that are not valid records (an arm that drew no users, say) are the settings'
    fault: name the setting, not an internal arms.parquet."""
    from rm_lab.config import ConfigError
    from rm_lab.schema import AB_ARM, RecordError, validate_frame

    try:
        validate_frame(arms, AB_ARM, "simulated arms")
    except RecordError as e:
        keys = _SETTING_OF.get(e.field or "", "the ab-test settings")
        shown = ", ".join(f"{k}={getattr(cfg, k)!r}" for k in keys.split(", ") if hasattr(cfg, k)) or keys
        raise ConfigError(f"ab-test settings {shown}: the simulated test is not a valid A/B record "
                          f"({e.field or 'record'}: got {e.value!r}, expected {e.expected}); change {keys}") from None


def run_ab(control: ArmQuality, treatment: ArmQuality, population: Population, eligible_users: int,
           arm_share: float, days: int, rng: np.random.Generator, experiment_id: str = "sim-ab",
           per_day: bool = True, model: ActivityModel = ActivityModel()) -> pd.DataFrame:
    """One simulated test as ab_arm rows: a totals row per arm and, optionally, a row per arm-day."""
    rows = []
    for arm, is_ctrl in ((control, True), (treatment, False)):
        n = int(rng.binomial(eligible_users, arm_share))
        st = simulate_arm(arm.q, n, days, population, rng, model, per_day)
        name = arm.name if is_ctrl or arm.name != control.name else f"{arm.name} (treatment)"
        base = {"experiment_id": experiment_id, "arm": name, "is_control": is_ctrl, "days": days,
                "allocation": arm_share}
        rows.append({**base, "day": None, "users": st["users"], "engaged_users": st["engaged_users"],
                     "messages": st["messages"], "engaged_user_days": st["engaged_user_days"],
                     "active_days_sq": st["active_days_sq"], "messages_sq": st["messages_sq"],
                     "active_messages": st["active_messages"]})
        if per_day:
            for d in range(days):
                rows.append({**base, "day": d, "users": st["users"], "engaged_users": int(st["engaged_per_day"][d]),
                             "messages": float(st["messages_per_day"][d]),
                             "engaged_user_days": float(st["engaged_per_day"][d]),
                             "active_days_sq": None, "messages_sq": None, "active_messages": None})
    df = pd.DataFrame(rows)
    df["day"] = df["day"].astype("Int64")
    return df


def true_lifts(control: ArmQuality, treatment: ArmQuality, population: Population,
               model: ActivityModel = ActivityModel()) -> dict:
    c, t = expected_metrics(control.q, population, model), expected_metrics(treatment.q, population, model)
    return {"breadth_control": c["breadth"], "breadth_treatment": t["breadth"],
            "breadth_lift": t["breadth"] / c["breadth"] - 1,
            "depth_control": c["depth"], "depth_treatment": t["depth"], "depth_lift": t["depth"] / c["depth"] - 1}
