"""The Runs page: the registry's runs with their configs and metrics, and two runs side by side."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import pandas as pd

from rm_lab.config import ConfigError
from rm_lab.registry import Registry, _flatten

REGISTRY = "registry.sqlite"


def registry(root: str | Path) -> Registry | None:
    """The runs folder's registry; None when no run has been recorded yet (never creates one)."""
    path = Path(root) / REGISTRY
    return Registry(path) if path.is_file() else None


def _when(t: float | None) -> str:
    return "" if t is None else _dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S")


def runs_table(root: str | Path, kind: str | None = None) -> pd.DataFrame:
    """One row per registered run: id, kind, status, created, finished, seconds, path, number of metrics."""
    reg = registry(root)
    cols = ["run_id", "kind", "status", "created", "finished", "seconds", "n_metrics", "path"]
    if reg is None:
        return pd.DataFrame(columns=cols)
    rows = []
    for r in reg.runs(kind):
        secs = None if r["finished"] is None else round(r["finished"] - r["created"], 1)
        rows.append({"run_id": r["run_id"], "kind": r["kind"], "status": r["status"], "created": _when(r["created"]),
                     "finished": _when(r["finished"]), "seconds": secs, "n_metrics": len(reg.metrics(r["run_id"])),
                     "path": r["path"]})
    return pd.DataFrame(rows, columns=cols).iloc[::-1].reset_index(drop=True)


def run_record(root: str | Path, run_id: str) -> dict[str, Any]:
    """One run's row, its config, its metrics and artifacts."""
    reg = registry(root)
    found = [r for r in (reg.runs() if reg else []) if r["run_id"] == run_id]
    if not found:
        raise ConfigError(f"run '{run_id}' is not in {Path(root) / REGISTRY}")
    r = found[0]
    return {"run": {k: v for k, v in r.items() if k != "config"}, "config": r["config"],
            "metrics": reg.metrics(run_id), "artifacts": reg.artifacts(run_id)}


def _cell(v: Any) -> Any:
    """A table cell Arrow can hold: numbers and strings as they are, the rest as text."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def compare(root: str | Path, run_a: str, run_b: str) -> pd.DataFrame:
    """Two runs side by side: every config key (`config/...`) and metric (`metric/...`), with `differs`."""
    a, b = run_record(root, run_a), run_record(root, run_b)
    col_a, col_b = f"A: {run_a}", f"B: {run_b}"
    rows = []
    for section, key in (("config", "config"), ("metric", "metrics")):
        fa, fb = _flatten(a[key]) if key == "config" else a[key], _flatten(b[key]) if key == "config" else b[key]
        for name in sorted(set(fa) | set(fb)):
            va, vb = fa.get(name), fb.get(name)
            rows.append({"key": f"{section}/{name}", col_a: _cell(va), col_b: _cell(vb), "differs": va != vb})
    df = pd.DataFrame(rows, columns=["key", col_a, col_b, "differs"])
    for c in (col_a, col_b):  # mixed numbers and text: show as text (Arrow needs one type per column)
        df[c] = df[c].map(lambda v: "" if v is None else str(v))
    return df
