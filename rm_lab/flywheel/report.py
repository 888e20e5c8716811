"""The flywheel's reports: one per generation and one across generations, markdown and JSON.

What a product team reads before and after each launch: the reward-model win rates with the ceiling,
the calibration's predicted lift with its interval next to the simulated A/B test's measured lift and
the world's true lift, steerability (instruction following, violations), the style artifacts the paper
watched spike, what the coupled trainer's guardrails said, and the ship decision with its rule.
"""

from __future__ import annotations

import math

from rm_lab.features.style import ARTIFACTS

SHOWN_ARTIFACTS = ("n_words", "has_emoji", "n_emoji", "has_list", "wall_of_text", "preachy", "n_i_feel")


def _f(v, d: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{d}f}"


def _pct(v) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:+.2%}"


def _iv(e: dict | None) -> str:
    if not e:
        return "–"
    return f"{_pct(e.get('lift'))} [{_pct(e.get('low'))}, {_pct(e.get('high'))}]"


def _rate(e: dict | None) -> str:
    if not e:
        return "–"
    return f"{e['rate']:.1%} [{e['low']:.1%}, {e['high']:.1%}]"


def inside(pred: dict, lift: float) -> bool:
    """Whether a measured lift lies in the predicted interval (a missing bound: an infinite interval, which
    `predict_lift` gives when there are too few past tests for the confidence)."""
    lo = -math.inf if pred.get("low") is None else pred["low"]
    hi = math.inf if pred.get("high") is None else pred["high"]
    return bool(lo <= lift <= hi)


def generation_summary(g: int, out: dict, ceiling: float) -> dict:
    """The headline figures of one generation (the JSON row of the report across generations)."""
    ev, ab, pred, sh = out.get("evaluate") or {}, out.get("ab") or {}, out.get("predict"), out.get("ship") or {}
    cand, base = ev.get("candidate"), ev.get("baseline")
    steer, arts = ev.get("steerability") or {}, ev.get("artifacts") or {}
    rl = out.get("rl") or {}
    metric = (pred or {}).get("metric", "breadth")
    measured = ab.get(metric) or {}
    return {
        "generation": g, "shipped": sh.get("ship"), "reasons": sh.get("reasons", []),
        "planted": (out.get("sft") or {}).get("planted"),
        "candidate": sh.get("candidate"), "ceiling": ceiling,
        "win_rates": ev.get("win_rates", {}),
        "predicted": pred, "metric": metric,
        "measured": {m: ab.get(m) for m in ("breadth", "depth")},
        "inside_predicted": None if not pred or not measured else inside(pred, measured["lift"]),
        "steerability": {k: {m: (steer.get(k) or {}).get(m) for m in ("follow_rate", "violation_rate")}
                         for k in (cand, base) if k},
        "artifacts": {k: {a: (arts.get(k) or {}).get(a) for a in ARTIFACTS} for k in (cand, base) if k},
        "coupled": {"method": rl.get("method"), "rounds": rl.get("rounds", []), "stopped": rl.get("stopped")},
        "guardrails": ev.get("guardrails"),
    }


def generation_markdown(s: dict, rule: str) -> str:
    g = s["generation"]
    lines = [f"# Flywheel generation {g}: {'SHIPPED' if s['shipped'] else 'not shipped'}", ""]
    lines += [f"Ship rule: {rule}", ""]
    if s.get("planted"):
        lines += [f"Planted reward hack in this generation: {s['planted']}.", ""]
    if not s["shipped"]:
        lines += [f"- {r}" for r in s["reasons"]] + [""]
    lines += [f"## Reward-model win rates of the candidate over the current policy (ceiling {s['ceiling']:.0%})", "",
              "| win rate | rate [95% interval] | above the ceiling |", "|---|---|---|"]
    for k, v in s["win_rates"].items():
        lines.append(f"| {k} | {_rate(v)} | {'YES' if v['rate'] > s['ceiling'] else 'no'} |")
    p = s["predicted"]
    lines += ["", "## Lifts: predicted (before the test), measured (simulated 7-day A/B), true (the world)", "",
              "| metric | predicted [interval] | measured [95% interval] | true lift |", "|---|---|---|---|"]
    for m in ("breadth", "depth"):
        e = s["measured"].get(m) or {}
        pr = (f"{_iv(p)} ({p['confidence']:.0%}, from {p['predictor']} = {p['x']:.3f})"
              if p and p.get("metric") == m else "–")
        lines.append(f"| {m} | {pr} | {_iv(e)} | {_pct(e.get('true_lift'))} |")
    if s["inside_predicted"] is not None:
        lines += ["", f"Measured {s['metric']} lift inside its predicted interval: "
                      f"{'yes' if s['inside_predicted'] else 'no'}"]
    lines += ["", "## Steerability", "", "| policy | instructions followed | violations |", "|---|---|---|"]
    for k, v in s["steerability"].items():
        lines.append(f"| {k} | {_f(v['follow_rate'])} | {_f(v['violation_rate'])} |")
    names = list(s["artifacts"])
    lines += ["", "## Style artifacts", "", "| artifact | " + " | ".join(names) + " |",
              "|---|" + "---|" * len(names)]
    for a in SHOWN_ARTIFACTS:
        lines.append(f"| {a} | " + " | ".join(_f(s["artifacts"][n].get(a)) for n in names) + " |")
    c = s["coupled"]
    if c.get("rounds"):
        lines += ["", f"## Coupled trainer ({c['method']}): rounds and guardrails", "",
                  "| round | win point_user | win point_internal | emoji/reply | words/reply | ensemble std ratio | "
                  "true lift vs start (user) | alarms |", "|---|---|---|---|---|---|---|---|"]
        for r in c["rounds"]:
            w = r.get("win_rates", {})
            tl = r.get("true_lift")
            lines.append(f"| {r['round']} | {_f(w.get('point_user'))} | {_f(w.get('point_internal'))} | "
                         f"{_f(r.get('emoji'))} | {_f(r.get('words'), 1)} | {_f(r.get('uncertainty'), 2)} | "
                         f"{'n/a' if tl is None else f'{tl:+.2%}'} | {', '.join(r.get('alarms') or []) or 'none'} |")
        lines += ["", "Win rates and alarms are the reward model's (what a deployed trainer sees); the true lift is "
                      "the world's hidden truth on the same replies, which no guardrail reads."]
        st = c.get("stopped")
        lines += ["", (f"Stopped at round {st['round']} by {', '.join(st['alarms'])}: {st['why']}. The candidate is "
                       "the last policy before that round." if st else "No stopping alarm: every round passed.")]
    g_ = s.get("guardrails")
    if g_:
        lines += ["", f"## Guardrails on the candidate's evaluation: {'ok' if g_.get('ok') else 'ALARM'}", ""]
        lines += [f"- {a.get('name')} ({a.get('metric')}): {a.get('why', '')}" for a in g_.get("alarms", [])]
    return "\n".join(lines) + "\n"


def across(summaries: list[dict]) -> dict:
    shipped = [s for s in summaries if s["shipped"]]
    true_pos = [s for s in shipped if ((s["measured"].get(s["metric"]) or {}).get("true_lift") or 0) > 0]
    inside = [s for s in summaries if s["inside_predicted"] is not None]
    return {"generations": len(summaries), "shipped": len(shipped), "shipped_with_positive_true_lift": len(true_pos),
            "measured_inside_predicted": sum(bool(s["inside_predicted"]) for s in inside),
            "with_prediction": len(inside),
            "stopped_by_guardrail": sum(bool(s["coupled"].get("stopped")) for s in summaries),
            "planted": [s["generation"] for s in summaries if s.get("planted")],
            "planted_shipped": [s["generation"] for s in summaries if s.get("planted") and s["shipped"]],
            "planted_kept_out_by": {s["generation"]: kept_out_by(s) for s in summaries
                                    if s.get("planted") and not s["shipped"]}}


def kept_out_by(s: dict) -> list[str]:
    """Which checks stood between a generation and shipping: the ship rule's failed checks, and the coupled
    trainer's stop (which kept the policy from before it, so it held the hack back too, or not)."""
    out = []
    for r in s.get("reasons") or []:
        if r.startswith("guardrail "):
            out.append("evaluation guardrail " + r.split()[1])
        elif r.startswith("A/B lift"):
            out.append("the A/B test")
        elif r.startswith("predicted lift"):
            out.append("the predicted lift")
        else:
            out.append(r.split(":")[0])
    st = (s.get("coupled") or {}).get("stopped")
    if st:
        out.append(f"coupled trainer stopped on {', '.join(st['alarms'])} (round {st['round']})")
    return list(dict.fromkeys(out))


def across_markdown(summaries: list[dict], rule: str, title: str) -> str:
    a = across(summaries)
    lines = [f"# {title}", "", f"Ship rule: {rule}", "",
             f"{a['shipped']} of {a['generations']} generations shipped; {a['shipped_with_positive_true_lift']} of "
             f"those had a positive true lift; measured lift inside the predicted interval in "
             f"{a['measured_inside_predicted']} of {a['with_prediction']}; coupled trainer stopped by a guardrail in "
             f"{a['stopped_by_guardrail']}."
             + (f" Planted reward hacks in generations {a['planted']}: {len(a['planted_shipped'])} shipped"
                f"{' (' + str(a['planted_shipped']) + ')' if a['planted_shipped'] else ', every one kept out'}"
                + "".join(f"; generation {g} by {', '.join(by) or 'no check named'}"
                          for g, by in a["planted_kept_out_by"].items()) + "."
                if a["planted"] else ""), "",
             "| gen | shipped | win user | win internal | predicted lift | measured breadth | true breadth | "
             "measured depth | true depth | follow | violations | emoji/reply | words/reply |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        w = s["win_rates"]
        cand = next(iter(s["steerability"]), None)
        st, ar = s["steerability"].get(cand) or {}, s["artifacts"].get(cand) or {}
        p = s["predicted"]
        b, d = s["measured"].get("breadth") or {}, s["measured"].get("depth") or {}
        lines.append(f"| {s['generation']}{' (planted)' if s.get('planted') else ''} | "
                     f"{'yes' if s['shipped'] else 'no'} | {_rate(w.get('point_user'))} | "
                     f"{_rate(w.get('point_internal'))} | {(p or {}).get('metric', '')} {_iv(p)} | {_iv(b)} | "
                     f"{_pct(b.get('true_lift'))} | {_iv(d)} | {_pct(d.get('true_lift'))} | "
                     f"{_f(st.get('follow_rate'))} | {_f(st.get('violation_rate'))} | {_f(ar.get('n_emoji'))} | "
                     f"{_f(ar.get('n_words'), 1)} |")
    ceiling = summaries[0]["ceiling"] if summaries else 0.65
    lines += ["", f"Win rates are the reward model's, of each candidate over the policy it would replace; the "
                  f"ceiling is {ceiling:.0%}."]
    return "\n".join(lines) + "\n"


def console_lines(s: dict) -> list[str]:
    """What `make demo` prints per generation."""
    w = s["win_rates"]
    p = s["predicted"]
    out = [f"generation {s['generation']}: {'SHIPPED' if s['shipped'] else 'not shipped'}"
           + ("" if s["shipped"] else f" ({'; '.join(s['reasons'])})")]
    out.append("  win rates (ceiling {:.0%}): ".format(s["ceiling"]) +
               ", ".join(f"{k} {_rate(v)}" for k, v in w.items()))
    for m in ("breadth", "depth"):
        e = s["measured"].get(m) or {}
        pr = f"predicted {_iv(p)}, " if p and p.get("metric") == m else ""
        out.append(f"  {m}: {pr}simulated A/B {_iv(e)}, true {_pct(e.get('true_lift'))}")
    for k, v in s["steerability"].items():
        a = s["artifacts"].get(k) or {}
        out.append(f"  {k}: instructions followed {_f(v['follow_rate'])}, violations {_f(v['violation_rate'])}; "
                   f"emoji/reply {_f(a.get('n_emoji'))}, with emoji {_f(a.get('has_emoji'))}, "
                   f"words {_f(a.get('n_words'), 1)}, "
                   f"lists {_f(a.get('has_list'))}, preachy {_f(a.get('preachy'))}")
    st = s["coupled"].get("stopped")
    if st:
        out.append(f"  coupled trainer stopped at round {st['round']}: {st['why']}")
    return out
