"""A simulated A/B test's arms as reply sets: what each arm's policy wrote on a sample of contexts, next to
the breadth and depth the test measured for that arm (`arm_reply_set` records).

An A/B platform reports per arm its measured metrics with standard errors; the reward model sees the texts.
Joining the two lets an `arm_mean` head (rm_lab.reward.arm_mean) learn from A/B outcomes. Every arm of one
test replies to the same contexts (policy_quality draws them from the test's seed), so the contexts' own
difficulty cancels in a within-test comparison.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rm_lab.evaluate.ab import breadth_stats, depth_stats
from rm_lab.schema import Records, validate_frame


def measured_arms(arms: pd.DataFrame) -> pd.DataFrame:
    """Per whole-test arm row of validated ab_arm records: users, breadth, depth and their standard errors."""
    tot = arms[arms["day"].isna()] if "day" in arms.columns else arms
    b, vb = breadth_stats(tot)
    d, vd = depth_stats(tot)
    sessions = tot["engaged_user_days"].to_numpy(float) if "engaged_user_days" in tot else np.full(len(tot), np.nan)
    ok_d = np.isfinite(d) & np.isfinite(vd) & (vd > 0)
    return pd.DataFrame({"experiment_id": tot["experiment_id"].to_numpy(object), "arm": tot["arm"].to_numpy(object),
                         "is_control": tot["is_control"].to_numpy(bool), "users": tot["users"].to_numpy(np.int64),
                         "breadth": b, "breadth_se": np.sqrt(vb), "depth": np.where(ok_d, d, np.nan),
                         "depth_se": np.where(ok_d, np.sqrt(vd), np.nan), "sessions": sessions})


def reply_set_frame(arms: pd.DataFrame, qualities: list) -> pd.DataFrame:
    """arm_reply_set rows of one simulated test: `qualities` are the ArmQuality of its arms in the order
    `run_ab` wrote them (control first), each with its `sample` of replies."""
    meas = measured_arms(arms)
    if len(meas) != len(qualities):
        raise ValueError(f"reply sets: {len(meas)} whole-test arms but {len(qualities)} policies")
    parts = []
    for (_, m), q in zip(meas.iterrows(), qualities):
        if q.sample is None or not len(q.sample):
            raise ValueError(f"reply sets: arm '{m['arm']}' has no sample of replies (policy_quality keep=0)")
        s = q.sample
        parts.append(pd.DataFrame({"experiment_id": m["experiment_id"], "arm": m["arm"], "policy": q.name,
                                   "is_control": bool(m["is_control"]), "context_id": s["context_id"].to_numpy(object),
                                   "response": s["response"].to_numpy(object), "users": int(m["users"]),
                                   **{c: float(m[c]) for c in ("breadth", "breadth_se", "depth", "depth_se",
                                                               "sessions")}}))
    return pd.concat(parts, ignore_index=True)


def reply_set_records(arms: pd.DataFrame, qualities: list) -> Records:
    """Characters, the sampled contexts and the validated arm_reply_set rows of one simulated test: a
    records folder `train-rm` reads."""
    rows = validate_frame(reply_set_frame(arms, qualities), "arm_reply_set", "simulated reply sets")
    ctx = pd.concat([q.sample for q in qualities], ignore_index=True).drop_duplicates("context_id")
    ctx = ctx.drop(columns=["response"]).reset_index(drop=True)
    return Records({"character": qualities[0].characters, "context": ctx, "arm_reply_set": rows})


def merge_reply_sets(records: list[Records]) -> Records:
    """The reply sets of several tests in one bundle (contexts and characters of one world, de-duplicated)."""
    out = {}
    for kind, key in (("character", "character_id"), ("context", "context_id")):
        out[kind] = pd.concat([r[kind] for r in records], ignore_index=True).drop_duplicates(key).reset_index(drop=True)
    out["arm_reply_set"] = pd.concat([r["arm_reply_set"] for r in records], ignore_index=True)
    return Records(out)


__all__ = ["measured_arms", "merge_reply_sets", "reply_set_frame", "reply_set_records"]
