"""The ship rule: a candidate replaces the current policy only when the offline gate and the A/B test agree.

The paper shipped on the 7-day A/B test, after an offline gate learned the hard way (generation 12):
a reward-model win rate near 60% and below 65%, no large internal-vs-user gap, no style-artifact spike.
Here a candidate ships when

1. no blocking guardrail alarm fired on the candidate's evaluation (an alarm in the coupled trainer has
   already stopped training: the candidate is the last round's policy before it);
2. (optional) the calibration's predicted lift interval reaches above 0 — the map does not say it loses;
3. the simulated A/B test measured a lift whose 95% interval lies above 0 on the rule's metric
   (breadth, depth, or either).

`decide` is pure (numbers in, decision and reasons out), so the rule is tested on its own and said in
words in every report (`describe`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rm_lab.flywheel.config import METRICS, ShipRule


@dataclass
class Decision:
    ship: bool
    reasons: list[str] = field(default_factory=list)  # why not (empty when shipped), or what held
    checks: dict = field(default_factory=dict)  # check name -> passed

    def to_json(self) -> dict:
        return {"ship": self.ship, "reasons": self.reasons, "checks": self.checks}


def describe(rule: ShipRule) -> str:
    metric = "breadth or depth" if rule.metric == "either" else rule.metric
    parts = [f"no blocking guardrail alarm ({', '.join(rule.blocking) or 'none'}) on the candidate's evaluation"
             + (" (a win-rate alarm counts when its 95% interval is past the threshold)"
                if rule.evidence == "interval" else "")]
    if rule.require_predicted:
        parts.append("the calibration's predicted lift interval reaches above 0")
    parts.append(f"the simulated A/B test's {metric} lift has its 95% interval above 0")
    return "ship when " + "; ".join(parts) + "."


def decide(rule: ShipRule, alarms: list[dict], predicted: dict | None, measured: dict,
           win_rates: dict | None = None) -> Decision:
    """`alarms`: [{name, metric, threshold, why, source}] (the guardrails' alarms on the candidate);
    `predicted`: {lift, low, high} or None (no calibration); `measured`: {breadth: {lift, low, high}, depth:
    {...}}; `win_rates`: the evaluation's, for `evidence: interval` (a win-rate alarm must hold for its interval)."""
    from rm_lab.policy.coupled import significant

    reasons, checks = [], {}
    blocking = [a for a in alarms if a.get("name") in rule.blocking]
    if rule.evidence == "interval" and win_rates is not None:
        blocking = [a for a in blocking if significant(a, win_rates)]
    checks["guardrails"] = not blocking
    reasons += [f"guardrail {a['name']} ({a.get('source', 'evaluate')}, {a.get('metric')}): {a.get('why', '')}"
                for a in blocking]
    if rule.require_predicted:
        high = None if predicted is None else predicted.get("high")
        if high is None or not math.isfinite(high):  # no calibration, or too few past tests for a finite interval
            checks["predicted"] = None
        else:
            checks["predicted"] = predicted["high"] > 0
            if not checks["predicted"]:
                reasons.append(f"predicted lift {predicted['lift']:+.2%} [{predicted['low']:+.2%}, "
                               f"{predicted['high']:+.2%}]: the calibration says it loses")
    metrics = METRICS if rule.metric == "either" else (rule.metric,)
    above = {m: bool(measured.get(m) and measured[m]["low"] > 0) for m in metrics}
    checks["measured"] = any(above.values())
    if not checks["measured"]:
        shown = ", ".join(f"{m} {measured[m]['lift']:+.2%} [{measured[m]['low']:+.2%}, {measured[m]['high']:+.2%}]"
                          for m in metrics if measured.get(m))
        reasons.append(f"A/B lift not above 0 with 95% confidence ({shown})")
    ok = checks["guardrails"] and checks["measured"] and checks.get("predicted") is not False
    return Decision(ok, reasons, checks)
