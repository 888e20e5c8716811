"""Past A/B tests of the simulated world as reply sets: the training data of `arm_mean` heads, with the
truth that judges them.

Each test (`simulated.design_tests`: a control preset against a treatment moved part of the way toward
another preset, its knobs jittered) is run by the A/B simulator; each arm keeps its policy's replies to the
first `reply_contexts` of the test's quality contexts (`rm_lab.world.reply_sets`), next to the breadth and
depth it measured. The table beside the records holds, per treatment arm, the measured and the true
expected lifts (the hidden engagement function's), which the evaluation of a held-out arm compares with.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from rm_lab.schema import Records


def simulate_reply_set_tests(tests, population, reply_contexts: int, quality_contexts: int, eligible_users: int,
                             arm_share: float, days: int, seed: int, world_seed: int = 0, n_characters: int = 24,
                             say: Callable[[str], None] = print) -> tuple[Records, pd.DataFrame]:
    """(reply-set records of every test, one row per treatment arm: experiment_id, arm, control, family,
    measured and true breadth/depth lifts with the measured lifts' standard errors)."""
    from rm_lab.world.ab import policy_quality, run_ab, true_lifts
    from rm_lab.world.reply_sets import measured_arms, merge_reply_sets, reply_set_records

    quality: dict = {}

    def q(policy):
        if policy.name not in quality:
            quality[policy.name] = policy_quality(policy, population, quality_contexts, seed=world_seed,
                                                  n_characters=n_characters, keep=reply_contexts)
        return quality[policy.name]

    rng = np.random.default_rng(seed + 17)
    parts, rows = [], []
    for i, (c, t) in enumerate(tests):
        eid = f"rs-{i:03d}"
        qc, qt = q(c), q(t)
        arms = run_ab(qc, qt, population, eligible_users, arm_share, days, rng, eid, per_day=False)
        parts.append(reply_set_records(arms, [qc, qt]))
        m = measured_arms(arms).set_index("is_control")
        truth = true_lifts(qc, qt, population)
        row = {"experiment_id": eid, "arm": str(m.loc[False, "arm"]), "control": c.name, "treatment": t.name,
               "family": t.name.split("~")[0]}
        for metric in ("breadth", "depth"):
            mc, mt = float(m.loc[True, metric]), float(m.loc[False, metric])
            row[f"{metric}_log_lift"] = float(np.log(mt / mc))
            row[f"{metric}_log_lift_se"] = float(np.hypot(m.loc[True, f"{metric}_se"] / mc,
                                                          m.loc[False, f"{metric}_se"] / mt))
            row[f"{metric}_true_log_lift"] = float(np.log1p(truth[f"{metric}_lift"]))
        rows.append(row)
        if (i + 1) % 10 == 0 or i + 1 == len(tests):
            say(f"simulated {i + 1}/{len(tests)} tests")
    return merge_reply_sets(parts), pd.DataFrame(rows)


def split_experiments(table: pd.DataFrame, heldout_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(training, held-out) experiment ids: a seeded random share of the tests held out whole (each
    treatment is its own jittered policy, so a held-out test is a held-out policy)."""
    ids = table["experiment_id"].astype(str).tolist()
    rng = np.random.default_rng(seed)
    held = set(rng.choice(ids, size=int(round(heldout_fraction * len(ids))), replace=False).tolist())
    return [e for e in ids if e not in held], [e for e in ids if e in held]


def experiment_folds(table: pd.DataFrame, k: int, seed: int) -> list[list[str]]:
    """The held-out experiment ids of each of `k` folds (a seeded permutation cut in k): every test is held
    out once, so a cross-fitted prediction exists for every arm."""
    ids = np.array(table["experiment_id"].astype(str).tolist(), dtype=object)
    order = np.random.default_rng(seed).permutation(len(ids))
    return [sorted(ids[order[i::k]].tolist()) for i in range(k)]


def paired_bootstrap(pred_a, pred_b, y, n_boot: int = 2000, seed: int = 0, level: float = 0.9) -> dict:
    """Spearman(pred_b, y) - Spearman(pred_a, y) with a percentile interval over arms resampled together."""
    from scipy.stats import rankdata

    a, b, y = (np.asarray(v, float) for v in (pred_a, pred_b, y))

    def rho(x, t):
        rx, rt = rankdata(x), rankdata(t)
        return float(np.corrcoef(rx, rt)[0, 1])

    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        i = rng.integers(0, len(y), len(y))
        if np.std(y[i]) > 0 and np.std(a[i]) > 0 and np.std(b[i]) > 0:
            diffs.append(rho(b[i], y[i]) - rho(a[i], y[i]))
    lo, hi = np.quantile(diffs, [(1 - level) / 2, (1 + level) / 2])
    return {"diff": rho(b, y) - rho(a, y), "low": float(lo), "high": float(hi), "level": level}


def subset_reply_sets(records: Records, experiment_ids) -> Records:
    """The reply sets of some experiments, with only the contexts they reply to."""
    keep = set(map(str, experiment_ids))
    rows = records["arm_reply_set"]
    rows = rows[rows["experiment_id"].astype(str).isin(keep)].reset_index(drop=True)
    ctx = records["context"][records["context"]["context_id"].isin(set(rows["context_id"]))].reset_index(drop=True)
    return Records({"character": records["character"], "context": ctx, "arm_reply_set": rows})


__all__ = ["experiment_folds", "paired_bootstrap", "simulate_reply_set_tests", "split_experiments",
           "subset_reply_sets"]
