"""Guardrails before an A/B test: is the candidate's offline win too good, too weak, or too lopsided?

The paper's rule of thumb ships a candidate whose reward-model win rate over the current policy is
50-65%: below, it is no better; far above, it has likely found what the reward model over-rates
(a style artifact) rather than what users want. A large gap between internal and user traffic
says the gain comes from one kind of prompt only. And a jump in a style artifact between the two
policies' replies (emoji, length, lists, "I feel...", preachiness) is the paper's emoji spike
caught before it ships. The verdict lists each alarm with the number that fired it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from rm_lab.config import check_fields, param
from rm_lab.features.style import style_frame

# feature -> (what it is, smallest absolute change that counts as drift)
DRIFT_FEATURES: dict[str, tuple[str, float]] = {
    "has_emoji": ("share of replies with an emoji", 0.05),
    "n_emoji": ("emoji per reply", 0.5),
    "n_words": ("words per reply", 8.0),
    "has_list": ("share of replies with a list", 0.05),
    "wall_of_text": ("share of walls of text", 0.03),
    "n_i_feel": ("'I feel...' per reply", 0.05),
    "preachy": ("share of preachy replies", 0.05),
    "refusal": ("share of refusals", 0.05),
}


@dataclass
class GuardrailConfig:
    """Thresholds of the alarms (the `guardrail` block of the calibrate config)."""

    ceiling: float = param(0.65, doc="alarm when a win rate over the current policy is above this (over-optimised)",
                           gt=0.5, le=1)
    floor: float = param(0.5, doc="alarm when a win rate is below this (no better than the current policy)",
                         ge=0, lt=1)
    max_gap: float = param(0.15, doc="alarm when user and internal win rates differ by more than this", gt=0, le=1)
    max_relative_drift: float = param(0.5, doc="alarm when a style artifact changes by more than this share of its "
                                      "current level (and by more than its minimum absolute change)", gt=0, le=100)
    confidence: float = param(0.95, doc="confidence of the reported win-rate intervals", gt=0, lt=1)

    def __post_init__(self):
        check_fields(self)
        if self.floor >= self.ceiling:
            raise ValueError(f"guardrail floor {self.floor} must be below its ceiling {self.ceiling}")

    @property
    def z(self) -> float:
        """The normal quantile of `confidence` (two-sided), for the win-rate intervals."""
        from scipy import stats

        return float(stats.norm.ppf(0.5 + self.confidence / 2))


@dataclass
class Alarm:
    name: str  # ceiling | floor | gap | style_drift
    metric: str
    value: float
    threshold: float
    why: str


@dataclass
class Verdict:
    ok: bool
    alarms: list[Alarm] = field(default_factory=list)
    win_rates: dict = field(default_factory=dict)
    drift: dict = field(default_factory=dict)

    def fired(self, name: str) -> bool:
        return any(a.name == name for a in self.alarms)

    def to_json(self) -> dict:
        return {"ok": self.ok, "alarms": [asdict(a) for a in self.alarms], "win_rates": self.win_rates,
                "drift": self.drift}

    def summary(self) -> str:
        if self.ok:
            return "ok: no guardrail alarm"
        return "; ".join(f"{a.name} ({a.metric}): {a.why}" for a in self.alarms)


def style_drift(replies_candidate, replies_current, keywords_candidate=None, keywords_current=None) -> dict:
    """Mean of each artifact in the current and the candidate policy's replies, and the change."""
    cand = style_frame(list(replies_candidate), keywords_candidate)
    cur = style_frame(list(replies_current), keywords_current)
    if not len(cand) or not len(cur):
        raise ValueError(f"style drift: {len(cand)} candidate and {len(cur)} current replies; both need some")
    out = {}
    for f in DRIFT_FEATURES:
        a, b = float(cur[f].mean()), float(cand[f].mean())
        rel = (b - a) / a if a > 0 else (math.inf if b > 0 else 0.0)
        out[f] = {"current": a, "candidate": b, "change": b - a, "relative_change": rel}
    return out


def check_guardrails(win_rates: dict, drift: dict | None = None, cfg: GuardrailConfig | None = None) -> Verdict:
    """Alarms from win rates ({point_user: {rate, low, high}, ...}) and a style drift (style_drift)."""
    cfg = cfg or GuardrailConfig()
    alarms: list[Alarm] = []
    for key, r in win_rates.items():
        rate = r["rate"]
        if not math.isfinite(rate):
            continue
        shown = f"{rate:.1%} [{r['low']:.1%}, {r['high']:.1%}]"
        if rate > cfg.ceiling:
            alarms.append(Alarm("ceiling", key, rate, cfg.ceiling,
                                f"win rate {shown} above the {cfg.ceiling:.0%} ceiling: likely over-optimised "
                                "for what the reward model over-rates"))
        if rate < cfg.floor:
            alarms.append(Alarm("floor", key, rate, cfg.floor,
                                f"win rate {shown} below the {cfg.floor:.0%} floor: no better than the current policy"))
    for kind in ("point", "pair"):
        u, i = win_rates.get(f"{kind}_user"), win_rates.get(f"{kind}_internal")
        if u and i and math.isfinite(u["rate"]) and math.isfinite(i["rate"]):
            gap = u["rate"] - i["rate"]
            if abs(gap) > cfg.max_gap:
                alarms.append(Alarm("gap", f"{kind}_user-internal", gap, cfg.max_gap,
                                    f"user {u['rate']:.1%} vs internal {i['rate']:.1%} win rate: a gap of "
                                    f"{abs(gap) * 100:.1f} points (> {cfg.max_gap * 100:.0f})"))
    for f, d in (drift or {}).items():
        what, min_abs = DRIFT_FEATURES.get(f, (f, 0.0))
        if abs(d["change"]) > min_abs and abs(d["relative_change"]) > cfg.max_relative_drift:
            rel = d["relative_change"]
            rel_s = "from none" if math.isinf(rel) else f"{rel:+.0%}"
            alarms.append(Alarm("style_drift", f, float(d["change"]), cfg.max_relative_drift,
                                f"{what} {d['current']:.3g} -> {d['candidate']:.3g} ({rel_s})"))
    return Verdict(not alarms, alarms, win_rates, drift or {})


def guardrail(model, contexts, replies_candidate, replies_current, characters, cfg: GuardrailConfig | None = None
              ) -> Verdict:
    """Win rates of the candidate over the current policy (reward model) plus style drift, checked."""
    from rm_lab.calibrate.offline import win_rates

    cfg = cfg or GuardrailConfig()
    rates = win_rates(model, contexts, replies_candidate, replies_current, characters, cfg.z)
    keys = context_keywords(contexts, characters)
    return check_guardrails(rates, style_drift(replies_candidate, replies_current, keys, keys), cfg)


def context_keywords(contexts, characters) -> list | None:
    """Each context's character keywords (style_drift's keywords), None when the characters have none."""
    if "keywords" not in characters:
        return None
    kw = characters.set_index("character_id")["keywords"]
    return [kw.get(c) for c in contexts["character_id"]]

