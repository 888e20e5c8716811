"""Upworthy Research Archive: each clickability test is a K-arm text A/B experiment (`ab_arm` rows).

Rules, so that results are reproducible:
- experiment_id = clickability_test_id; users = impressions, engaged_users = clicks; days = 1, day null
  (the archive only has whole-test totals).
- arm = a content hash of (headline, lede, excerpt, eyecatcher_id), with `-2`, `-3`... for repeats of
  identical content inside one test (the archive holds such repeats with their own counts).
- is_control = the first package of each test in file order. The archive marks no control; this rule
  only fixes a reference arm so that lifts are defined. It is not a treatment assignment.
- `ctr` (derivable) and `winner_count_anomaly` (unreliable, per the data README) are not kept.
- Each test is also a `context` record (context_id = experiment_id) of one `character` ("upworthy"), so
  the reward model reads an arm's headline as a reply to its test: the built-in `ab_engaged` head
  (kind arm_logit, rm_lab.reward.heads) trains on the arms within each test. The context's history is the
  test's lede (HTML stripped) when every arm shares it, else empty; its `conversation_id` is the test's
  headline group (tests linked by an identical headline, transitively), which `train-rm val_split=conversation`
  and `rm_lab.calibrate.upworthy.split_by_week` hold on one side of a split.
"""

from __future__ import annotations

import html
import re
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
    return Records({"character": character_frame(), "context": context_frame(arms), "ab_arm": arms,
                    "dropped": dropped_frame([])})


CHARACTER_ID = "upworthy"
_TAG = re.compile(r"<[^>]+>")


def character_frame() -> pd.DataFrame:
    return pd.DataFrame({"character_id": [CHARACTER_ID], "name": ["Upworthy"],
                         "persona": [["An editor writing headlines for stories that matter, to be clicked and "
                                      "shared."]],
                         "instructions": [[]]})


def plain_text(v) -> str:
    """HTML of a lede as plain text."""
    return " ".join(html.unescape(_TAG.sub(" ", v)).split()) if isinstance(v, str) else ""


def headline_groups(experiment_ids, headlines) -> dict[str, str]:
    """experiment -> the id of its headline group: experiments linked by an identical headline, transitively
    (union-find), named by their first experiment. Holding groups whole keeps every headline on one side."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first_of: dict[str, str] = {}
    for e, h in zip(experiment_ids, headlines):
        e = str(e)
        find(e)
        key = " ".join(str(h).split()).lower()
        if key in first_of:
            a, b = find(first_of[key]), find(e)
            if a != b:
                parent[b] = a
        else:
            first_of[key] = e
    return {e: find(e) for e in parent}


def context_frame(arms: pd.DataFrame) -> pd.DataFrame:
    """One context per test: its shared lede as the user turn (empty when the arms' ledes differ)."""
    exp = arms["experiment_id"].astype(str)
    groups = headline_groups(exp, arms["text"])
    ledes = arms["lede"] if "lede" in arms.columns else pd.Series([None] * len(arms))
    shared = {}
    for e, l in zip(exp, ledes.map(plain_text)):
        shared.setdefault(e, set()).add(l)
    ids = list(dict.fromkeys(exp))
    hist = [[{"role": "user", "content": next(iter(shared[e]))}] if len(shared[e]) == 1 and next(iter(shared[e]))
            else [] for e in ids]
    return pd.DataFrame({"context_id": ids, "character_id": CHARACTER_ID, "history": hist, "traffic": "user",
                         "conversation_id": [groups[e] for e in ids]})


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
