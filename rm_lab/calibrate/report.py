"""The calibrate report: predicted vs observed lift with intervals, and the reliability numbers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd


def plot_predicted_vs_observed(table: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Each test's held-out predicted lift and interval against its measured lift (and true, if known)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rm_lab import io

    pred, obs = table["loo_pred"].to_numpy(float), table["observed_lift"].to_numpy(float)
    lo, hi = table["loo_low"].to_numpy(float), table["loo_high"].to_numpy(float)
    covered = (obs >= lo) & (obs <= hi)
    span = np.nanmax(np.abs(np.r_[pred, obs])) * 2 + 1e-9  # an infinite interval (too few tests) drawn clipped
    lo_shown, hi_shown = np.clip(lo, -span, span), np.clip(hi, -span, span)
    fig, ax = plt.subplots(figsize=(6, 5.5))
    for mask, color, label in ((covered, "tab:blue", "measured lift, inside interval"),
                               (~covered, "tab:red", "measured lift, outside interval")):
        if mask.any():
            ax.vlines(pred[mask], lo_shown[mask], hi_shown[mask], color=color, alpha=0.25, lw=1.5)
            ax.scatter(pred[mask], obs[mask], s=18, color=color, label=label, zorder=3)
    if "true_lift" in table:
        ax.scatter(pred, table["true_lift"], marker="x", s=14, color="k", alpha=0.6, label="true expected lift")
    lim = [np.nanmin(np.r_[pred, obs]), np.nanmax(np.r_[pred, obs])]
    ax.plot(lim, lim, color="grey", ls="--", lw=1, label="y = x")
    ax.set_xlabel("calibrated predicted lift (leave-one-out)")
    ax.set_ylabel("lift measured in the A/B test")
    ax.set_title(title or "offline prediction -> A/B lift")
    ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    with io.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return Path(path)


def _f(v, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.1%}" if pct else f"{v:.3f}"


def reliability_table(rows: dict[str, dict]) -> str:
    """Markdown: one row per predictor with its held-out reliability numbers."""
    head = ("| predictor | sign agreement | Spearman (measured) | Spearman (true) | slope | intercept | "
            "coverage | mean width |")
    lines = [head, "|" + "---|" * 8]
    for name, m in rows.items():
        lines.append(f"| {name} | {_f(m.get('sign_agreement'), True)} | {_f(m.get('spearman'))} | "
                     f"{_f(m.get('spearman_true'))} | {_f(m.get('calibration_slope'))} | "
                     f"{_f(m.get('calibration_intercept'))} | {_f(m.get('coverage'), True)} | "
                     f"{_f(m.get('mean_width'), True)} |")
    return "\n".join(lines)


def report_markdown(cfg, metrics: dict, by_predictor: dict[str, dict], verdict: dict | None, plot_name: str) -> str:
    m = metrics["heldout"]
    targets = metrics.get("targets", {})
    world = cfg.source + (f" v{cfg.world_version}" if cfg.source == "world" else "")
    world += ", emoji-lover confound planted" if getattr(cfg, "spurious_emoji", False) else ""
    lines = [f"# calibrate ({world})", "",
             f"{metrics['n_tests']} past A/B tests; map `{cfg.method}` from `{cfg.predictor}` to the {cfg.metric} lift; "
             f"{cfg.confidence:.0%} conformal prediction intervals (scores normalised by sqrt(tau^2 + se^2), "
             f"tau = {metrics['calibration']['tau']:.4f}); every number below is held out "
             f"({'leave-one-out' if not cfg.folds else f'{cfg.folds}-fold'}).", "",
             f"![predicted vs observed]({plot_name})", "",
             "## Reliability of the chosen predictor", "",
             f"- sign agreement {_f(m['sign_agreement'], True)}, Spearman {_f(m['spearman'])} with the measured lift"
             + (f", {_f(m.get('spearman_true'))} with the true expected lift" if "spearman_true" in m else ""),
             f"- calibration slope {_f(m['calibration_slope'])}, intercept {_f(m['calibration_intercept'])}",
             f"- interval coverage {_f(m['coverage'], True)} (target {cfg.confidence:.0%}), mean width "
             f"{_f(m['mean_width'], True)}", ""]
    if targets:
        lines += ["| target | value | met |", "|---|---|---|"]
        lines += [f"| {k} | {_f(v['value'])} | {'yes' if v['met'] else 'NO'} |" for k, v in targets.items()]
        lines.append("")
    lines += ["## Every offline predictor (held out)", "", reliability_table(by_predictor), ""]
    if verdict is not None:
        lines += [f"## Guardrail: `{cfg.over_optimised}` vs `{cfg.controls[0]}`", "",
                  f"**{'ok' if verdict['ok'] else 'ALARM'}**", ""]
        lines += [f"- {a['name']} ({a['metric']}): {a['why']}" for a in verdict["alarms"]]
        lines += ["", "| win rate | rate | interval |", "|---|---|---|"]
        lines += [f"| {k} | {v['rate']:.1%} | [{v['low']:.1%}, {v['high']:.1%}] |"
                  for k, v in verdict["win_rates"].items()]
        lines.append("")
    return "\n".join(lines) + "\n"
