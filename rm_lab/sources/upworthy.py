"""Upworthy Research Archive: each clickability test is a K-arm text A/B experiment (`ab_arm` rows).

Rules, so that results are reproducible:
- experiment_id = clickability_test_id; users = impressions, engaged_users = clicks; days = 1, day null
  (the archive only has whole-test totals).
- arm = a content hash of (headline, lede, excerpt, eyecatcher_id), with `-2`, `-3`... for repeats of
  identical content inside one test (the archive holds such repeats with their own counts).
- is_control = the first package of each test in file order. The archive marks no control; this rule
  only fixes a reference arm so that lifts are defined. It is not a treatment assignment.
- `ctr` (derivable) and `winner_count_anomaly` (unreliable, per the data README) are not kept.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rm_lab.io import read_parquet
from rm_lab.schema import AB_ARM, RecordError, Records, validate_frame
from rm_lab.sources._common import (bool_cell, dropped_frame, files_in, number_cell, stable_id,
                                    text_cell)

REQUIRED = ["clickability_test_id", "headline", "impressions", "clicks"]
OPTIONAL_TEXT = ["lede", "excerpt", "eyecatcher_id"]


def load(path: str | Path, limit: int | None = None) -> Records:
    """Load the archive (a Parquet file or a folder of them); `limit` keeps the first N tests."""
    frames = []
    for f in files_in(Path(path), ["*.parquet"], "an Upworthy Parquet file"):
        frames.append(_load_file(f))
    arms = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if limit is not None:
        keep = pd.unique(arms["experiment_id"])[:limit]
        arms = arms[arms["experiment_id"].isin(keep)].reset_index(drop=True)
    return Records({"ab_arm": arms, "dropped": dropped_frame([])})


def _load_file(path: Path) -> pd.DataFrame:
    df = read_parquet(path)
    if len(df) == 0:
        raise RecordError(str(path), None, None, "0 rows", "at least one Upworthy package")
    for c in REQUIRED:
        if c not in df.columns:
            raise RecordError(str(path), 0, c, "missing column",
                              f"a '{c}' column; columns found: {list(df.columns)}")
    cols = {c: df[c].tolist() for c in df.columns}
    n = len(df)
    test_ids = [text_cell(path, i, "clickability_test_id", v) for i, v in enumerate(cols["clickability_test_id"])]
    headlines = [text_cell(path, i, "headline", v) for i, v in enumerate(cols["headline"])]
    imps = [number_cell(path, i, "impressions", v, integer=True, lo=0) for i, v in enumerate(cols["impressions"])]
    clicks = [number_cell(path, i, "clicks", v, integer=True, lo=0) for i, v in enumerate(cols["clicks"])]
    for i in range(n):
        if clicks[i] > imps[i]:
            raise RecordError(str(path), i, "clicks", clicks[i], f"clicks <= impressions ({imps[i]})")
    extra: dict[str, list] = {}
    for c in OPTIONAL_TEXT:
        if c in cols:
            extra[c] = [None if _null(v) else text_cell(path, i, c, v, nonempty=False) for i, v in enumerate(cols[c])]
    if "test_week" in cols:
        extra["test_week"] = [number_cell(path, i, "test_week", v, integer=True, nullable=True, nan_is_null=True)
                              for i, v in enumerate(cols["test_week"])]
    if "significance" in cols:
        extra["significance"] = [number_cell(path, i, "significance", v, lo=0, nullable=True, nan_is_null=True)
                                 for i, v in enumerate(cols["significance"])]
    for c in ("winner", "first_place"):
        if c in cols:
            extra[c] = [None if _null(v) else bool_cell(path, i, c, v) for i, v in enumerate(cols[c])]

    seen: dict[tuple[str, str], int] = {}
    first: set[str] = set()
    arm_ids, control = [], []
    for i in range(n):
        h = stable_id(headlines[i], *(extra[c][i] if c in extra else None for c in OPTIONAL_TEXT))
        k = seen.get((test_ids[i], h), 0) + 1
        seen[(test_ids[i], h)] = k
        arm_ids.append(h if k == 1 else f"{h}-{k}")
        control.append(test_ids[i] not in first)
        first.add(test_ids[i])

    out = pd.DataFrame({
        "experiment_id": test_ids, "arm": arm_ids, "is_control": control,
        "day": pd.array([None] * n, dtype="Int64"), "days": 1, "users": imps, "engaged_users": clicks,
        "text": headlines,
    })
    for c in ("lede", "excerpt", "eyecatcher_id"):
        if c in extra:
            out[c] = extra[c]
    if "test_week" in extra:
        out["test_week"] = pd.array(extra["test_week"], dtype="Int64")
    if "significance" in extra:
        out["significance"] = pd.array(extra["significance"], dtype="Float64").astype(float)
    for c in ("winner", "first_place"):
        if c in extra:
            out[c] = pd.array(extra[c], dtype="boolean")
    out["source_row"] = range(n)
    out["source_file"] = path.name
    return validate_frame(out, AB_ARM, str(path))


def _null(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and v != v)
