"""The Generations page: one row per policy generation, from `evaluate` runs (candidate vs the current
policy: reward-model win rates on internal and user traffic, the guardrail ceiling, A/B lifts with
intervals next to the true lift, instruction following, violations and style artifacts) and the
per-epoch history of `train-policy` runs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from rm_lab.config import ConfigError
from rm_lab.explore import paths

EVALUATE = ("evaluate",)
TRAIN = ("train-policy",)
FLYWHEEL = ("flywheel",)


def _read(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None


def _ceiling(rep: dict) -> float | None:
    from rm_lab.calibrate.guardrails import GuardrailConfig

    g = rep.get("guardrails") or {}
    for a in g.get("alarms", []):
        if a.get("name") == "ceiling" and a.get("threshold") is not None:
            return float(a["threshold"])
    return GuardrailConfig().ceiling


def _win_columns(win_rates: dict | None) -> dict:
    """win_<source>, win_<source>_low, win_<source>_high from a report's {source: {rate, low, high}}."""
    out = {}
    for k, v in (win_rates or {}).items():
        out[f"win_{k}"], out[f"win_{k}_low"], out[f"win_{k}_high"] = v.get("rate"), v.get("low"), v.get("high")
    return out


def generations(root: str | Path) -> pd.DataFrame:
    """One row per finished evaluate run, oldest first (a generation each)."""
    rows = []
    for folder in sorted(paths.folders_of_kind(root, EVALUATE), key=lambda p: p.name):
        path = folder / "report.json"
        if not path.is_file():
            continue
        rep = _read(path)
        if not isinstance(rep, dict) or "candidate" not in rep:
            raise ConfigError(f"{path}: not an evaluate report (no 'candidate')")
        c, b = rep["candidate"], rep.get("baseline")
        row = {"run": folder.name, "candidate": c, "baseline": b, "n_contexts": rep.get("n_contexts"),
               "ceiling": _ceiling(rep)}
        row |= _win_columns(rep.get("win_rates"))
        for m in ("breadth", "depth"):
            ab = (rep.get("ab") or {}).get(m) or {}
            for k in ("lift", "low", "high", "true_lift"):
                row[f"ab_{m}_{k}"] = ab.get(k)
        st = (rep.get("steerability") or {}).get(c) or {}
        row["follow_rate"], row["violation_rate"] = st.get("follow_rate"), st.get("violation_rate")
        for a, v in ((rep.get("artifacts") or {}).get(c) or {}).items():
            row[f"artifact_{a}"] = v
        g = rep.get("guardrails")
        row["guardrails"] = None if not g else ("ok" if g.get("ok") else "ALARM")
        rows.append(row)
    return pd.DataFrame(rows)


def flywheel_generations(root: str | Path) -> pd.DataFrame:
    """One row per generation of every finished `rm_lab flywheel` run (its report.json): the ship decision,
    the reward model's win rates with the ceiling, the calibration's predicted lift next to the A/B test's
    measured lift and the true lift, steerability and artifacts of the candidate. The flywheel's own
    report, because its predicted lift and ship decision are in no evaluate run."""
    rows = []
    for folder in sorted(paths.folders_of_kind(root, FLYWHEEL), key=lambda p: p.name):
        path = folder / "report.json"
        if not path.is_file():
            continue
        rep = _read(path)
        if not isinstance(rep, dict) or not isinstance(rep.get("generations"), list):
            raise ConfigError(f"{path}: not a flywheel report (no 'generations' list)")
        for g in rep["generations"]:
            row = {"flywheel": folder.name, "generation": g.get("generation"), "shipped": g.get("shipped"),
                   "ceiling": g.get("ceiling"), "metric": g.get("metric")}
            row |= _win_columns(g.get("win_rates"))
            pred = g.get("predicted") or {}
            row["predicted_lift"], row["predicted_low"], row["predicted_high"] = (pred.get("lift"), pred.get("low"),
                                                                                  pred.get("high"))
            for m, ab in (g.get("measured") or {}).items():
                for k in ("lift", "low", "high", "true_lift"):
                    row[f"ab_{m}_{k}"] = (ab or {}).get(k)
            row["inside_predicted"] = g.get("inside_predicted")
            cand = next((k for k in (g.get("steerability") or {}) if k != "current"), None)
            st = (g.get("steerability") or {}).get(cand) or {}
            row["follow_rate"], row["violation_rate"] = st.get("follow_rate"), st.get("violation_rate")
            for a, v in ((g.get("artifacts") or {}).get(cand) or {}).items():
                row[f"artifact_{a}"] = v
            rows.append(row)
    return pd.DataFrame(rows)


def lift_long(fly: pd.DataFrame) -> pd.DataFrame:
    """Predicted, measured and true lift of each generation's metric, long form for one chart."""
    rows = []
    for _, r in fly.iterrows():
        m, key = r.get("metric") or "breadth", f"{r['flywheel']} g{r['generation']}"
        rows.append({"generation": key, "which": "predicted", "lift": r.get("predicted_lift"),
                     "low": r.get("predicted_low"), "high": r.get("predicted_high")})
        rows.append({"generation": key, "which": "measured", "lift": r.get(f"ab_{m}_lift"),
                     "low": r.get(f"ab_{m}_low"), "high": r.get(f"ab_{m}_high")})
        rows.append({"generation": key, "which": "true", "lift": r.get(f"ab_{m}_true_lift"),
                     "low": None, "high": None})
    return pd.DataFrame(rows, columns=["generation", "which", "lift", "low", "high"]).dropna(subset=["lift"])


def win_rate_long(gen: pd.DataFrame) -> pd.DataFrame:
    """Win rates in long form (generation, which, rate, low, high) for a chart with intervals."""
    out = []
    for i, r in gen.reset_index(drop=True).iterrows():
        for col in [c for c in gen.columns if c.startswith("win_") and not c.endswith(("_low", "_high"))]:
            out.append({"generation": i + 1, "run": r["run"], "which": col[4:], "rate": r[col],
                        "low": r.get(f"{col}_low"), "high": r.get(f"{col}_high")})
    return pd.DataFrame(out, columns=["generation", "run", "which", "rate", "low", "high"])


def training_histories(root: str | Path) -> pd.DataFrame:
    """train-policy runs' per-epoch records (history.json), one row per (run, epoch)."""
    rows = []
    for folder in paths.folders_of_kind(root, TRAIN):
        h = folder / "history.json"
        if not h.is_file():
            continue
        recs = _read(h)
        if not isinstance(recs, list):
            raise ConfigError(f"{h}: expected a list of per-epoch records")
        for r in recs:
            if isinstance(r, dict):
                rows.append({"run": folder.name, **{k: v for k, v in r.items() if isinstance(v, (int, float, str))}})
    return pd.DataFrame(rows)
