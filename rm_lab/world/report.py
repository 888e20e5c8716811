"""Human-readable summaries of world runs (markdown), shared by the CLI and the demo."""

from __future__ import annotations

import pandas as pd


def fmt_pct(x: float) -> str:
    return "n/a" if pd.isna(x) else f"{100 * x:+.2f}%"


def _p(x) -> str:
    return "n/a" if pd.isna(x) else f"{x:.3g}"


def truth_of(truth: dict | None, treatment: str) -> dict | None:
    """The true lifts of one treatment arm: its own in a K-arm test (truth["by_arm"]), else the test's."""
    return (truth.get("by_arm") or {}).get(treatment, truth) if truth else None


def ab_table(analysis: pd.DataFrame, truth: dict | None = None) -> str:
    """Markdown table of lifts with 95% intervals, p-values (raw and Holm-corrected across the test's
    treatment arms), next to the true lifts when known."""
    lines = ["| metric | control | treatment | lift | 95% CI | p | Holm p | true lift | covered |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for _, r in analysis.iterrows():
        tr = truth_of(truth, r["treatment"])
        for m in ("breadth", "depth"):
            if pd.isna(r[f"{m}_control"]) and pd.isna(r[f"{m}_treatment"]) and not truth:
                continue  # not measured: e.g. click tests have no depth
            t = tr.get(f"{m}_lift") if tr else None
            covered = "" if t is None else ("yes" if r[f"{m}_ci_low"] <= t <= r[f"{m}_ci_high"] else "NO")
            lines.append(
                f"| {m} ({r['treatment']} vs {r['control']}) | {r[f'{m}_control']:.4f} | {r[f'{m}_treatment']:.4f} "
                f"| {fmt_pct(r[f'{m}_lift'])} | [{fmt_pct(r[f'{m}_ci_low'])}, {fmt_pct(r[f'{m}_ci_high'])}] "
                f"| {_p(r[f'{m}_p_value'])} | {_p(r.get(f'{m}_p_holm'))} | {'' if t is None else fmt_pct(t)} "
                f"| {covered} |")
    return "\n".join(lines)


def cuped_table(analysis: pd.DataFrame, truth: dict | None = None) -> str:
    """CUPED-adjusted breadth lifts next to the plain ones, with the variance reduction achieved;
    empty when no arm has a pre-period."""
    rows = analysis[analysis["breadth_cuped_lift"].notna()] if "breadth_cuped_lift" in analysis else analysis.iloc[:0]
    if rows.empty:
        return ""
    known = truth is not None
    lines = ["CUPED (pre-period active days as covariate), breadth:", "",
             "| arm | lift | 95% CI | CUPED lift | 95% CI | CUPED p | Holm p | pre-period rho | variance cut |"
             + (" covered |" if known else ""),
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if known else "")]
    for _, r in rows.iterrows():
        t = truth_of(truth, r["treatment"]).get("breadth_lift") if known else None
        cov = "" if t is None else (" yes |" if r["breadth_cuped_ci_low"] <= t <= r["breadth_cuped_ci_high"]
                                    else " NO |")
        lines.append(
            f"| {r['treatment']} vs {r['control']} | {fmt_pct(r['breadth_lift'])} "
            f"| [{fmt_pct(r['breadth_ci_low'])}, {fmt_pct(r['breadth_ci_high'])}] | {fmt_pct(r['breadth_cuped_lift'])} "
            f"| [{fmt_pct(r['breadth_cuped_ci_low'])}, {fmt_pct(r['breadth_cuped_ci_high'])}] "
            f"| {_p(r['breadth_cuped_p_value'])} | {_p(r['breadth_cuped_p_holm'])} "
            f"| {r['breadth_pre_correlation']:.3f} "
            f"| {r['breadth_variance_reduction']:.1%} |{cov}")
    return "\n".join(lines)


def sequential_verdict(r: pd.Series, m: str) -> str:
    """One phrase: when the always-valid monitor could stop, and what it decided."""
    day = r.get(f"{m}_seq_decision_day")
    if pd.isna(day):
        return f"no decision after {int(r[f'{m}_seq_looks'])} daily looks (always-valid p {_p(r[f'{m}_seq_p_value'])})"
    sign = "treatment wins" if r[f"{m}_seq_ci_low"] > 0 else "treatment loses"
    return f"{sign}, stoppable on day {int(day) + 1}"


def sequential_table(analysis: pd.DataFrame) -> str:
    """Always-valid intervals after daily looks and the monitor's verdict; empty without per-day moments."""
    if "breadth_seq_looks" not in analysis or analysis["breadth_seq_looks"].isna().all():
        return ""
    lines = ["Sequential monitoring (mixture SPRT, always-valid after daily looks):", "",
             "| metric | always-valid 95% CI | always-valid p | Holm p | verdict | naive daily z-test |",
             "| --- | --- | --- | --- | --- | --- |"]
    for _, r in analysis[analysis["breadth_seq_looks"].notna()].iterrows():
        for m in ("breadth", "depth"):
            if pd.isna(r[f"{m}_seq_looks"]):
                continue
            naive = r[f"{m}_naive_flag_day"]
            lines.append(
                f"| {m}, {r['treatment']} vs {r['control']} | [{fmt_pct(r[f'{m}_seq_ci_low'])}, "
                f"{fmt_pct(r[f'{m}_seq_ci_high'])}] | {_p(r[f'{m}_seq_p_value'])} | {_p(r[f'{m}_seq_p_holm'])} "
                f"| {sequential_verdict(r, m)} | "
                f"{'never significant' if pd.isna(naive) else f'significant on day {int(naive) + 1}'} |")
    return "\n".join(lines)


def ab_report(analysis: pd.DataFrame, truth: dict | None = None) -> str:
    """All A/B tables of a test: lifts with Holm p-values, CUPED when a pre-period exists, the sequential
    verdict when per-day moments exist, and the sample-ratio check."""
    parts = [ab_table(analysis, truth), cuped_table(analysis, truth), sequential_table(analysis)]
    flagged = analysis[analysis["srm_flag"].astype(bool)] if "srm_flag" in analysis else analysis.iloc[:0]
    if len(flagged):
        parts.append("Sample-ratio mismatch (arm sizes off their allocation, p < 0.001): "
                     + ", ".join(f"{r.experiment_id}/{r.treatment} (p {r.srm_p_value:.2g})"
                                 for r in flagged.itertuples()) + " — the lifts of these tests are not trustworthy.")
    return "\n\n".join(p for p in parts if p)


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
