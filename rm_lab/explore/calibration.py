"""The Calibration page: a `calibrate` run's predicted vs observed lifts, and eval-rm's reliability per head.

Reads calibration.json (`rm_lab.calibrate.intervals.load_calibration`), experiments.csv (each test's
offline predictor, observed lift with its SE, the held-out prediction and interval) and metrics.json;
eval-rm runs give each binary head's calibration metrics and the reliability diagrams it drew."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from rm_lab.config import ConfigError
from rm_lab.explore import paths

CALIBRATE_KINDS = ("calibrate",)
EVAL_KINDS = ("eval-rm",)


def calibrate_runs(root: str | Path) -> list[Path]:
    """calibrate run folders holding calibration.json, newest first."""
    return [p for p in paths.folders_of_kind(root, CALIBRATE_KINDS) if (p / "calibration.json").is_file()]


def eval_runs(root: str | Path) -> list[Path]:
    return [p for p in paths.folders_of_kind(root, EVAL_KINDS) if (p / "metrics.json").is_file()]


def _json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing ({what})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e}); {what}") from None


def calibration_view(root: str | Path, folder: str | Path) -> dict:
    """{"calibration": Calibration, "experiments": DataFrame with lift/low/high columns (held out),
    "metrics": dict, "reliability": dict, "plot": PNG path or None}."""
    from rm_lab.calibrate.intervals import load_calibration

    full = paths.run_folder(root, folder, "calibrate run")
    if not (full / "calibration.json").is_file():
        raise ConfigError(f"'{folder}' holds no calibration.json: not a finished calibrate run")
    cal = load_calibration(full / "calibration.json")
    metrics = _json(full / "metrics.json", "the calibrate run's metrics") if (full / "metrics.json").is_file() else {}
    table = pd.DataFrame()
    csv = full / "experiments.csv"
    if csv.is_file():
        table = pd.read_csv(csv)
        need = {"observed_lift", "observed_se"}
        if not need <= set(table.columns):
            raise ConfigError(f"{csv}: expected columns {sorted(need)}, got {list(table.columns)}")
        table["observed_low"] = table["observed_lift"] - 1.96 * table["observed_se"]
        table["observed_high"] = table["observed_lift"] + 1.96 * table["observed_se"]
    plot = next((p for p in sorted(full.glob("*.png"))), None)
    return {"calibration": cal, "experiments": table, "metrics": metrics,
            "reliability": metrics.get("heldout", {}), "plot": plot, "folder": full}


def interval_of(cal, x: float, se_new: float = 0.0) -> dict:
    """The calibrated lift and its interval for one offline prediction (the page's what-if box)."""
    from rm_lab.calibrate.intervals import predict_lift

    out = predict_lift(cal, float(x), float(se_new))
    return {k: float(v) for k, v in out.items()}


def head_reliability(root: str | Path, folder: str | Path) -> dict:
    """An eval-rm run's binary heads: {"table": ECE/Brier/log loss raw, temperature-scaled and isotonic,
    "plots": {head: reliability PNG}, "truth": its truth metrics}."""
    full = paths.run_folder(root, folder, "eval-rm run")
    m = _json(full / "metrics.json", "an eval-rm run's metrics")
    rows = []
    for head, v in m.items():
        if not (isinstance(v, dict) and v.get("likelihood") == "binomial" and "raw" in v):
            continue
        for variant in ("raw", "temperature_scaled", "isotonic"):
            met = v.get(variant) or {}
            rows.append({"head": head, "variant": variant,
                         **{k: met[k] for k in sorted(met) if isinstance(met[k], (int, float))}})
    plots = {p.stem.removeprefix("reliability_"): p for p in sorted(full.glob("reliability_*.png"))}
    table = pd.DataFrame(rows)
    if not table.empty:
        table = table.replace([np.inf, -np.inf], np.nan)
    return {"table": table, "plots": plots, "truth": m.get("truth", {})}
