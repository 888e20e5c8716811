"""The Samples page: a best-of-n or rejection-sample run's N replies per prompt, ranked by the reward model.

Reads samples.parquet (one row per sample: context_id, sample, response, every reward output, the
selection `value`, `passed`, `chosen`, and `truth_engagement` in the simulated world) and report.json."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from rm_lab.config import ConfigError
from rm_lab.explore import paths

KINDS = ("best-of-n", "rejection-sample")
META = ("context_id", "sample", "response", "n_tokens", "finished", "value", "passed", "chosen", "truth_engagement")


def sample_runs(root: str | Path) -> list[Path]:
    return [p for p in paths.folders_of_kind(root, KINDS) if (p / "samples.parquet").is_file()]


def load_samples(root: str | Path, folder: str | Path) -> dict:
    """{"samples": DataFrame, "report": dict, "outputs": reward outputs present, "contexts": ids}."""
    full = paths.run_folder(root, folder, "sampling run")
    path = full / "samples.parquet"
    if not path.is_file():
        raise ConfigError(f"'{folder}' holds no samples.parquet: not a finished best-of-n / rejection-sample run")
    try:
        df = pd.read_parquet(path)
    except Exception as e:  # noqa: BLE001 (pyarrow raises several types for a damaged file)
        raise ConfigError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
    for col in ("context_id", "response", "value", "chosen"):
        if col not in df.columns:
            raise ConfigError(f"{path}: missing column '{col}' (columns: {list(df.columns)})")
    report = {}
    if (full / "report.json").is_file():
        try:
            report = json.loads((full / "report.json").read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{full / 'report.json'}: not valid JSON ({e})") from None
    outputs = [c for c in df.columns if c not in META and pd.api.types.is_numeric_dtype(df[c])]
    return {"samples": df, "report": report, "outputs": outputs,
            "contexts": list(dict.fromkeys(df["context_id"].astype(str)))}


def ranked(view: dict, context_id: str) -> pd.DataFrame:
    """One prompt's samples, best selection value first, with rank, pick and each head's value."""
    df = view["samples"]
    rows = df[df["context_id"].astype(str) == str(context_id)]
    if rows.empty:
        raise ConfigError(f"context '{context_id}' has no samples in this run")
    rows = rows.sort_values("value", ascending=False).reset_index(drop=True)
    rows.insert(0, "rank", range(1, len(rows) + 1))
    keep = ["rank", "response", "value", "chosen"] + [c for c in ("passed", "truth_engagement") if c in rows] + \
        [c for c in view["outputs"] if c != "value"]
    return rows[list(dict.fromkeys(keep))]


def summary(view: dict) -> pd.DataFrame:
    """Mean of each output over the picks vs the rest (what the selection bought)."""
    df = view["samples"]
    cols = [c for c in view["outputs"] + (["truth_engagement"] if "truth_engagement" in df else []) if c in df]
    out = df.groupby(df["chosen"].map({True: "picked", False: "not picked"}))[cols].mean().T
    return out.reset_index(names="output")
