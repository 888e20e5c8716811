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
    """What the A/B simulator needs of a policy: mean engagement logit per segment (and, when asked, a sample
    of its replies: the arm's reply set, rm_lab.world.reply_sets)."""

    name: str
    q: np.ndarray  # (n_segments,)
    sample: pd.DataFrame | None = None  # the first `keep` quality contexts with the policy's `response`
    characters: pd.DataFrame | None = None


def policy_quality(policy, population: Population, n_contexts: int = 2000, seed: int = 0,
                   n_characters: int = 24, keep: int = 0) -> ArmQuality:
    """Mean hidden engagement logit per segment of `policy` on fresh user-traffic contexts; `keep` > 0 also
    keeps its replies to the first `keep` of them (the same contexts for every policy of one seed)."""
    characters = make_characters(n_characters, seed=seed)
    contexts = make_contexts(characters, n_contexts, traffic_share_user=1.0, seed=seed + 55_555, prefix="ab",
                             world_version=population.world_version)
    replies = policy.respond(contexts, characters, seed=seed + 1)
    z = score_replies(replies, contexts, characters, population).z
    sample = contexts.iloc[:keep].assign(response=list(replies[:keep])) if keep > 0 else None
    return ArmQuality(getattr(policy, "name", "policy"), z.mean(axis=0), sample, characters if keep > 0 else None)


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
                 model: ActivityModel = ActivityModel(), per_day: bool = True, pre_days: int = 0,
                 pre_q: np.ndarray | None = None, return_users: bool = False) -> dict:
    """Sufficient statistics of one arm (totals, user-level second moments, optional per-day counts).

    With per_day, each day also gets the to-date user-level moments (sums over users of the squares of
    their active days and messages from day 0 through that day), which daily sequential monitoring needs.
    With pre_days > 0 the same users are watched for pre_days before the test, all served replies of
    quality pre_q (the control's: nobody is treated yet); their pre-period active days, its square and
    its product with the test's active days are what CUPED needs. The pre-period is drawn after the test
    so that a test without one draws exactly what it always did."""
    shares = np.array(population.shares)
    seg = rng.choice(len(shares), size=n_users, p=shares)
    u = rng.normal(0.0, population.latent_sd, n_users)
    logit = model.alpha + population.segment_base()[seg] + u
    p = sigmoid(logit + model.beta * q[seg])
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
        cum_a = np.zeros(n_users)
        cum_m = np.zeros(n_users)
        to_date = np.zeros((days, 3))
        for d in range(days):
            cum_a += active[d]
            cum_m += msgs_day[d]
            to_date[d] = (cum_a @ cum_a, cum_m @ cum_m, cum_a @ cum_m)
        out["to_date_moments"] = to_date  # columns: active_days_sq, messages_sq, active_messages
    else:
        a = rng.binomial(days, p)
        m = a + rng.poisson(lam * a)
    out.update(users=n_users, engaged_users=int((a > 0).sum()), engaged_user_days=float(a.sum()),
               messages=float(m.sum()), active_days_sq=float((a.astype(float) ** 2).sum()),
               messages_sq=float((m ** 2).sum()), active_messages=float((a * m).sum()))
    if pre_days > 0:
        pq = q if pre_q is None else pre_q
        a0 = rng.binomial(pre_days, sigmoid(logit + model.beta * pq[seg])).astype(float)
        out.update(pre_days=int(pre_days), pre_engaged_user_days=float(a0.sum()),
                   pre_active_days_sq=float(a0 @ a0), pre_active_days_cross=float(a0 @ a))
        if return_users:
            out["pre_active_days_per_user"] = a0
    if return_users:
        out["active_days_per_user"], out["messages_per_user"] = a.astype(float), m.astype(float)
    return out


def _presets() -> list[str]:
    from rm_lab.world.policies import PRESETS

    return sorted(PRESETS)


@dataclass
class ABConfig:
    """A simulated A/B test between two scripted policies (the `ab-test` command's config)."""

    control: str = param("baseline", doc="scripted policy of the control arm", choices=_presets)
    treatment: str = param("improved", doc="scripted policy of the treatment arm", choices=_presets)
    more_treatments: list[str] = param([], doc="further scripted policies, each one more treatment arm against the "
                                       "same control (a K-arm test: Holm corrects across the arms)", choices=_presets)
    eligible_users: int = param(400_000, doc="users eligible for the test", ge=1, le=1_000_000_000)
    arm_share: float = param(0.1, doc="share of eligible users per arm (paper: usually 10%; two disjoint arms)",
                             gt=0, le=0.5)
    days: int = param(7, doc="length of the test in days", ge=1, le=3650)
    seed: int = param(0, doc="seed of the arms' users and of the policies' replies", ge=0, le=MAX_SEED)
    quality_contexts: int = param(2000, doc="fresh user contexts on which each policy's reply quality is measured",
                                  ge=1, le=1_000_000)
    spurious_emoji: bool = param(False, doc="the world with the emoji-lover confound planted")
    world_version: int = param(1, doc="the world the policies are judged in (rm_lab.world.simulate.WorldConfig)",
                               choices=(1, 2))
    per_day: bool = param(True, doc="also write a row per arm and day")
    reply_contexts: int = param(0, doc="also write each arm's reply set: its policy's replies to this many of the "
                                "quality contexts, with the arm's measured breadth and depth (arm_reply_set records, "
                                "which train arm_mean heads); 0: none", ge=0, le=1_000_000)
    experiment_id: str = param("sim-ab", doc="experiment_id of the written ab_arm rows", min_len=1)
    records: str | None = param(None, doc="analyse stored ab_arm records (e.g. an ingested Upworthy run) instead")
    pre_days: int = param(7, doc="days the same users are watched before the test (CUPED's covariate); 0: none",
                          ge=0, le=3650)
    sequential_tau: float = param(0.05, doc="mixing sd of the always-valid (mSPRT) interval on the log-lift scale: "
                                  "the size of lift the daily monitor is tuned to", gt=0, le=10)
    alpha: float = param(0.05, doc="two-sided error rate of the intervals, tests and the sequential monitor",
                         gt=0, lt=0.5)

    def __post_init__(self):
        check_fields(self)
        if self.eligible_users * self.arm_share < 1:
            raise ValueError(f"eligible_users x arm_share = {self.eligible_users * self.arm_share:g} expected users "
                             "per arm; each arm needs at least 1")
        if self.reply_contexts > self.quality_contexts:
            raise ValueError(f"reply_contexts={self.reply_contexts}: the reply sets are a sample of the "
                             f"quality_contexts ({self.quality_contexts}); ask for at most that many")
        n_arms = 2 + len(self.more_treatments)
        if n_arms * self.arm_share > 1 + 1e-9:
            raise ValueError(f"arm_share x arms = {self.arm_share:g} x {n_arms} (control, treatment and "
                             f"{len(self.more_treatments)} more_treatments) is above 1; the arms are disjoint shares "
                             "of the eligible users")


def simulate_ab(cfg: ABConfig) -> tuple[pd.DataFrame, dict]:
    """Run the configured test; return its ab_arm rows and the true lifts from the hidden function."""
    arms, truth, _ = simulate_ab_reply_sets(cfg)
    return arms, truth


def simulate_ab_reply_sets(cfg: ABConfig):
    """`simulate_ab`, and the arms' reply sets (rm_lab.world.reply_sets: Records of characters, contexts and
    arm_reply_set rows) when cfg.reply_contexts > 0, else None."""
    from rm_lab.world.policies import ScriptedPolicy

    pop = Population(spurious_emoji=cfg.spurious_emoji, world_version=cfg.world_version)
    keep = cfg.reply_contexts
    qc = policy_quality(ScriptedPolicy.preset(cfg.control), pop, cfg.quality_contexts, seed=cfg.seed, keep=keep)
    qts = [policy_quality(ScriptedPolicy.preset(name), pop, cfg.quality_contexts, seed=cfg.seed, keep=keep)
           for name in (cfg.treatment, *cfg.more_treatments)]
    rng = np.random.default_rng(cfg.seed)
    arms = run_ab(qc, qts, pop, cfg.eligible_users, cfg.arm_share, cfg.days, rng, cfg.experiment_id, cfg.per_day,
                  pre_days=cfg.pre_days)
    _check_simulated(arms, cfg)
    truth = true_lifts(qc, qts[0], pop)
    if cfg.more_treatments:  # K arms: each arm's own truth, by its name in the records
        names = arms.loc[arms["day"].isna() & ~arms["is_control"], "arm"].tolist()
        truth["by_arm"] = {name: true_lifts(qc, q, pop) for name, q in zip(names, qts)}
    if not keep:
        return arms, truth, None
    from rm_lab.world.reply_sets import reply_set_records

    return arms, truth, reply_set_records(arms, [qc, *qts])


# which setting produced each ab_arm field of a simulated test
_SETTING_OF = {"users": "eligible_users, arm_share", "engaged_users": "eligible_users, arm_share",
               "experiment_id": "experiment_id", "days": "days", "day": "days", "arm": "control, treatment",
               "allocation": "arm_share", "pre_days": "pre_days"}


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


def run_ab(control: ArmQuality, treatment: ArmQuality | list[ArmQuality], population: Population,
           eligible_users: int, arm_share: float, days: int, rng: np.random.Generator, experiment_id: str = "sim-ab",
           per_day: bool = True, model: ActivityModel = ActivityModel(), pre_days: int = 0) -> pd.DataFrame:
    """One simulated test as ab_arm rows: a totals row per arm and, optionally, a row per arm-day.

    `treatment` may be a list (a K-arm test against one control). With pre_days > 0 the totals rows
    carry the pre-period moments of the same users (CUPED); per-day rows carry to-date moments."""
    treatments = [treatment] if isinstance(treatment, ArmQuality) else list(treatment)
    rows, seen = [], set()
    for arm, is_ctrl in ((control, True), *((t, False) for t in treatments)):
        n = int(rng.binomial(eligible_users, arm_share))
        st = simulate_arm(arm.q, n, days, population, rng, model, per_day, pre_days=pre_days, pre_q=control.q)
        name = arm.name if arm.name not in seen else f"{arm.name} (treatment {len(seen)})"
        seen.add(name)
        base = {"experiment_id": experiment_id, "arm": name, "is_control": is_ctrl, "days": days,
                "allocation": arm_share}
        pre = {k: st[k] for k in ("pre_days", "pre_engaged_user_days", "pre_active_days_sq",
                                  "pre_active_days_cross")} if pre_days > 0 else {}
        rows.append({**base, "day": None, "users": st["users"], "engaged_users": st["engaged_users"],
                     "messages": st["messages"], "engaged_user_days": st["engaged_user_days"],
                     "active_days_sq": st["active_days_sq"], "messages_sq": st["messages_sq"],
                     "active_messages": st["active_messages"], **pre})
        if per_day:
            for d in range(days):
                sq_a, sq_m, am = st["to_date_moments"][d]
                rows.append({**base, "day": d, "users": st["users"], "engaged_users": int(st["engaged_per_day"][d]),
                             "messages": float(st["messages_per_day"][d]),
                             "engaged_user_days": float(st["engaged_per_day"][d]),
                             "active_days_sq": None, "messages_sq": None, "active_messages": None,
                             "active_days_sq_to_date": sq_a, "messages_sq_to_date": sq_m,
                             "active_messages_to_date": am})
    df = pd.DataFrame(rows)
    df["day"] = df["day"].astype("Int64")
    if pre_days > 0:
        df["pre_days"] = df["pre_days"].astype("Int64")
    return df


def _batch_sums(q: np.ndarray, n_users: int, n_tests: int, days: int, population: Population,
                rng: np.random.Generator, model: ActivityModel, per_day: bool, pre_days: int,
                pre_q: np.ndarray) -> dict[str, np.ndarray]:
    """Per-test sums over the users of one arm, for n_tests independent tests drawn at once."""
    shares = np.array(population.shares)
    k = n_tests * n_users
    seg = np.minimum(np.searchsorted(np.cumsum(shares), rng.random(k), side="right"), len(shares) - 1)
    u = rng.normal(0.0, population.latent_sd, k)
    logit = model.alpha + population.segment_base()[seg] + u
    p = sigmoid(logit + model.beta * q[seg])
    lam = np.exp(population.segment_depth()[seg] + model.gamma_u * u + model.delta * q[seg])

    def per_test(x):  # (..., k) -> (..., n_tests)
        return x.reshape(*x.shape[:-1], n_tests, n_users).sum(-1)

    out: dict[str, np.ndarray] = {}
    if per_day:
        active = (rng.random((days, k)) < p).astype(float)
        msgs = active * (1 + rng.poisson(lam, size=(days, k)))
        cum_a, cum_m = np.cumsum(active, 0), np.cumsum(msgs, 0)
        out.update(day_engaged=per_test(active), day_messages=per_test(msgs), day_sq_a=per_test(cum_a ** 2),
                   day_sq_m=per_test(cum_m ** 2), day_am=per_test(cum_a * cum_m))
        a, m = cum_a[-1], cum_m[-1]
    else:
        a = rng.binomial(days, p).astype(float)
        m = a + rng.poisson(lam * a)
    out.update(engaged_users=per_test((a > 0).astype(float)), engaged_user_days=per_test(a), messages=per_test(m),
               active_days_sq=per_test(a * a), messages_sq=per_test(m * m), active_messages=per_test(a * m))
    if pre_days > 0:
        a0 = rng.binomial(pre_days, sigmoid(logit + model.beta * pre_q[seg])).astype(float)
        out.update(pre_engaged_user_days=per_test(a0), pre_active_days_sq=per_test(a0 * a0),
                   pre_active_days_cross=per_test(a0 * a))
    return out


def simulate_tests(control: ArmQuality, treatment: ArmQuality | list[ArmQuality], population: Population,
                   users_per_arm: int, days: int, n_tests: int, rng: np.random.Generator,
                   model: ActivityModel = ActivityModel(), per_day: bool = False, pre_days: int = 0,
                   prefix: str = "sim", chunk_users: int = 1_000_000) -> pd.DataFrame:
    """Many independent simulated tests at once (power, coverage and false-positive studies), as ab_arm
    rows with experiment ids `prefix-00000`, ...; arms of exactly users_per_arm users, drawn in chunks
    of about chunk_users so memory stays bounded. Same model as simulate_arm, vectorised over tests."""
    treatments = [treatment] if isinstance(treatment, ArmQuality) else list(treatment)
    per_chunk = max(1, chunk_users // users_per_arm)
    ids = np.array([f"{prefix}-{i:05d}" for i in range(n_tests)], dtype=object)
    frames = []
    for j, (arm, is_ctrl) in enumerate(((control, True), *((t, False) for t in treatments))):
        parts = [_batch_sums(arm.q, users_per_arm, min(per_chunk, n_tests - s), days, population, rng, model,
                             per_day, pre_days, control.q) for s in range(0, n_tests, per_chunk)]
        st = {key: np.concatenate([p[key] for p in parts], axis=-1) for key in parts[0]}
        name = arm.name if j == 0 or arm.name != control.name else f"{arm.name} (treatment {j})"
        tot = pd.DataFrame({"experiment_id": ids, "arm": name, "is_control": is_ctrl, "days": days,
                            "allocation": np.nan, "day": pd.array([None] * n_tests, dtype="Int64"),
                            "users": users_per_arm, "engaged_users": st["engaged_users"].astype(np.int64),
                            **{c: st[c] for c in ("messages", "engaged_user_days", "active_days_sq", "messages_sq",
                                                  "active_messages")}})
        if pre_days > 0:
            tot["pre_days"] = pd.array([pre_days] * n_tests, dtype="Int64")
            for c in ("pre_engaged_user_days", "pre_active_days_sq", "pre_active_days_cross"):
                tot[c] = st[c]
        frames.append(tot)
        if per_day:
            frames.append(pd.DataFrame({
                "experiment_id": np.tile(ids, days), "arm": name, "is_control": is_ctrl, "days": days,
                "allocation": np.nan, "day": pd.array(np.repeat(np.arange(days), n_tests), dtype="Int64"),
                "users": users_per_arm, "engaged_users": st["day_engaged"].ravel().astype(np.int64),
                "messages": st["day_messages"].ravel(), "engaged_user_days": st["day_engaged"].ravel(),
                "active_days_sq_to_date": st["day_sq_a"].ravel(), "messages_sq_to_date": st["day_sq_m"].ravel(),
                "active_messages_to_date": st["day_am"].ravel()}))
    return pd.concat(frames, ignore_index=True)


def true_lifts(control: ArmQuality, treatment: ArmQuality, population: Population,
               model: ActivityModel = ActivityModel()) -> dict:
    c, t = expected_metrics(control.q, population, model), expected_metrics(treatment.q, population, model)
    return {"breadth_control": c["breadth"], "breadth_treatment": t["breadth"],
            "breadth_lift": t["breadth"] / c["breadth"] - 1,
            "depth_control": c["depth"], "depth_treatment": t["depth"], "depth_lift": t["depth"] / c["depth"] - 1}
