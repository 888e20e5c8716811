"""The Tuning page: a `tune` run's study (study.json from `rm_lab.tune.export`): every trial with its state,
value and parameters, the parameter importances and the best trial with its child run."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from rm_lab.config import ConfigError
from rm_lab.explore import paths

KINDS = ("tune",)


def tune_runs(root: str | Path) -> list[Path]:
    return [p for p in paths.folders_of_kind(root, KINDS) if (p / "study.json").is_file()]


def study_view(root: str | Path, folder: str | Path) -> dict:
    """{"summary": study-level fields, "trials": one row per trial (params as columns),
    "importances": parameter -> importance, "best": the best trial or None, "best_yaml": its config text}."""
    full = paths.run_folder(root, folder, "tune run")
    path = full / "study.json"
    if not path.is_file():
        raise ConfigError(f"'{folder}' holds no study.json: not a finished tune run")
    try:
        s = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(s, dict) or not isinstance(s.get("trials"), list):
        raise ConfigError(f"{path}: expected a study summary with a list of 'trials'")
    rows = []
    for t in s["trials"]:
        params = {f"param/{k}": (v if isinstance(v, (int, float, str, bool)) or v is None else str(v))
                  for k, v in (t.get("params") or {}).items()}
        rows.append({"number": t.get("number"), "state": t.get("state"), "value": t.get("value"),
                     "seconds": t.get("seconds"), "run_id": t.get("run_id"), **params})
    imp = pd.DataFrame(sorted((s.get("importances") or {}).items(), key=lambda kv: -kv[1]),
                       columns=["parameter", "importance"])
    best_yaml = (full / "best.yaml").read_text(encoding="utf-8") if (full / "best.yaml").is_file() else None
    summary = {k: s.get(k) for k in ("study", "stage", "metric", "direction", "n_trials", "states")}
    return {"summary": summary, "trials": pd.DataFrame(rows), "importances": imp, "best": s.get("best"),
            "best_yaml": best_yaml}
