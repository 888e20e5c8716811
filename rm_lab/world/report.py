"""Human-readable summaries of world runs (markdown), shared by the CLI and the demo."""

from __future__ import annotations

import pandas as pd


def fmt_pct(x: float) -> str:
    return "n/a" if pd.isna(x) else f"{100 * x:+.2f}%"


def ab_table(analysis: pd.DataFrame, truth: dict | None = None) -> str:
    """Markdown table of lifts with 95% intervals, next to the true lifts when known."""
    lines = ["| metric | control | treatment | lift | 95% CI | p | true lift | covered |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for _, r in analysis.iterrows():
        for m in ("breadth", "depth"):
            if pd.isna(r[f"{m}_control"]) and pd.isna(r[f"{m}_treatment"]) and not truth:
                continue  # not measured: e.g. click tests have no depth
            t = truth.get(f"{m}_lift") if truth else None
            covered = "" if t is None else ("yes" if r[f"{m}_ci_low"] <= t <= r[f"{m}_ci_high"] else "NO")
            lines.append(
                f"| {m} ({r['treatment']} vs {r['control']}) | {r[f'{m}_control']:.4f} | {r[f'{m}_treatment']:.4f} "
                f"| {fmt_pct(r[f'{m}_lift'])} | [{fmt_pct(r[f'{m}_ci_low'])}, {fmt_pct(r[f'{m}_ci_high'])}] "
                f"| {r[f'{m}_p_value']:.3g} | {'' if t is None else fmt_pct(t)} | {covered} |")
    return "\n".join(lines)


def policy_table(interactions: pd.DataFrame) -> str:
    g = interactions.groupby("policy").agg(n=("response", "size"), truth=("truth_engagement", "mean"),
                                           cont=("continued", "mean"), depth=("depth", "mean"),
                                           thumb=("thumb", "mean")).sort_values("truth", ascending=False)
    lines = ["| policy | replies | true engagement | continued | depth | mean thumb |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, r in g.iterrows():
        lines.append(f"| {name} | {r.n} | {r.truth:.3f} | {r.cont:.3f} | {r.depth:.2f} | {r.thumb:+.3f} |")
    return "\n".join(lines)


def steer_table(interactions: pd.DataFrame, steer_labels: pd.DataFrame) -> str:
    """Instruction-following, prompt-level and violation rates per logging policy, with 95% intervals."""
    from rm_lab.evaluate.steerability import steerability_report

    rows = steer_labels.merge(interactions[["context_id", "policy"]].drop_duplicates("context_id"), on="context_id")
    rep = steerability_report(rows).overall.sort_values("follow_rate", ascending=False)
    lines = ["| policy | instructions followed | all followed (reply) | replies with a violation |",
             "| --- | --- | --- | --- |"]
    for _, r in rep.iterrows():
        lines.append(f"| {r.policy} | {r.follow_rate:.1%} [{r.follow_lo:.1%}, {r.follow_hi:.1%}] "
                     f"| {r.prompt_rate:.1%} [{r.prompt_lo:.1%}, {r.prompt_hi:.1%}] "
                     f"| {r.violation_rate:.1%} [{r.violation_lo:.1%}, {r.violation_hi:.1%}] |")
    return "\n".join(lines)
