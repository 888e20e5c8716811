"""The Upworthy benchmark: which headline wins a real A/B test, and by how much, predicted before the test.

Steps (each a function; `pipelines/upworthy.py` and `rm_lab calibrate source=upworthy` compose them):

1. `split_by_week`: train on the tests up to a week, test on the later ones, with identical headlines
   (whitespace and case folded) on one side only: a later test sharing a headline with a training test is
   dropped from the test side and reported.
2. `train_ranker`: the reward model's `ab_engaged` head (kind arm_logit: a conditional logit over the arms
   of each test, `rm_lab.reward.arm_logit`), trained by `train_reward_model` on the training tests.
   `cross_fit` trains one per fold of the training tests' headline groups, so every training pair gets a
   prediction from a model that never saw its test: the calibration set.
3. `arm_pairs` + `pair_accuracy`: every within-test pair of arms with different headlines; accuracy at
   picking the higher-CTR arm, on all pairs and on those whose difference is significant at 5% (pooled
   two-proportion z-test), next to the `text_baselines` pair baselines fitted on the same training pairs.
4. `calibrate_lifts`: the predicted log lift (score difference) -> the observed relative lift, with
   conformal intervals (`rm_lab.calibrate.intervals`) that hold the map's error and the new test's
   sampling noise. The noise is what a team knows before the test: its arms' impressions and the test's
   pooled click rate (`planned_se`), not the arms' own click counts.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from rm_lab.config import ConfigError, check_fields, param
from rm_lab.schema import RecordError, Records

HEAD = "ab_engaged"
LAST_TRAIN_WEEK = 201426
PUBLISHED = ("LOLA (Ye, Yoganarasimhan, Zheng, Marketing Science 2025): prompt-based LLMs, embedding classifiers "
             "and a fine-tuned Llama-3-8B pick the catchier Upworthy headline only marginally better than chance")
# Chosen on the training weeks only (fit on weeks <= 201410, scored on 201411-201426): a linear head on the
# headline's MiniLM embedding and its style features, 16 epochs of AdamW, reached 61.5% / 72.3% there (MLP
# trunks of 64-256 units peaked at 61.3% after 4 epochs, then overfit; MiniLM + logistic regression: 60.0% /
# 71.2%). The held-out loss per click barely moves (the signal is weak), so no epoch is picked by it.
DEFAULT_TRAIN = {"heads": [HEAD], "inputs": ["reply"], "pairwise": False, "val_split": "conversation",
                 "val_fraction": 0.0, "epochs": 16, "n_layers": 0, "lr": 1e-3, "weight_decay": 1e-4,
                 "batch_size": 64, "n_ensemble": 1}


@dataclass
class UpworthyConfig:
    """Settings of the Upworthy benchmark (`rm_lab calibrate source=upworthy upworthy.<key>=...`)."""

    data: str | None = param(None, doc="the Upworthy Parquet file or folder; null: $RM_LAB_DATA/upworthy")
    last_train_week: int = param(LAST_TRAIN_WEEK, doc="tests of this week (YYYYWW) and earlier train", ge=0)
    last_test_week: int | None = param(None, doc="the last test week (null: every later test)", ge=0)
    limit: int | None = param(None, doc="keep the first N tests of the file (quick runs)", ge=2)
    train: dict = param({}, doc="train-rm keys over the benchmark's defaults (heads, inputs, epochs, ...)")
    calib_folds: int = param(5, doc="cross-fitted reward models over the training tests (the calibration set)",
                             ge=2, le=50)
    conformal_folds: int = param(10, doc="folds of the conformal scores of the lift map", ge=2, le=100_000)
    confidence: float = param(0.9, doc="coverage of the lift prediction intervals", gt=0, lt=1)
    method: str = param("linear", doc="shape of the lift map", choices=("linear", "isotonic"))
    baselines: list[str] = param(["longer", "tfidf", "minilm"], doc="pair baselines fitted on the same split",
                                 choices=("longer", "tfidf", "minilm"))
    alpha: float = param(0.05, doc="significance level of the 'significant pairs' accuracy", gt=0, lt=1)
    cache_dir: str | None = param(None, doc="embedding cache; null: the shared one")
    seed: int = param(0, doc="seed of the folds and the reward models", ge=0)

    def __post_init__(self):
        check_fields(self)


# ----------------------------------------------------------------------------------------------
# split

def normalise(text) -> str:
    """What makes two headlines 'identical' for the split: the same words, ignoring case and spacing."""
    return " ".join(str(text).split()).casefold()


def test_weeks(arms: pd.DataFrame, source: str | None = None) -> pd.Series:
    """experiment_id -> its test week (the earliest of its arms' weeks); a missing week is an error."""
    if "test_week" not in arms.columns:
        raise RecordError(source, None, "test_week", "missing column", "a test_week column (YYYYWW) to split by week")
    wk = pd.to_numeric(arms["test_week"], errors="coerce")
    if wk.isna().any():
        i = int(np.flatnonzero(wk.isna().to_numpy())[0])
        raise RecordError(source, int(arms["source_row"].iloc[i]) if "source_row" in arms else i, "test_week",
                          None, "a test week (YYYYWW) on every arm, to split by week")
    return wk.groupby(arms["experiment_id"].astype(str).to_numpy()).min().astype(int)


def shared_headlines(arms_a: pd.DataFrame, arms_b: pd.DataFrame) -> list[str]:
    """Normalised headlines that occur in both sets of arms (must be empty across a split)."""
    return sorted(set(arms_a["text"].map(normalise)) & set(arms_b["text"].map(normalise)))


def subset(records: Records, experiment_ids) -> Records:
    """The records of some experiments: their arms and contexts, and every character."""
    keep = set(map(str, experiment_ids))
    arms = records["ab_arm"]
    ctx = records["context"]
    return Records({"character": records["character"],
                    "context": ctx[ctx["context_id"].astype(str).isin(keep)].reset_index(drop=True),
                    "ab_arm": arms[arms["experiment_id"].astype(str).isin(keep)].reset_index(drop=True)})


@dataclass
class Split:
    train: Records
    test: Records
    info: dict = field(default_factory=dict)


def split_by_week(records: Records, last_train_week: int = LAST_TRAIN_WEEK, last_test_week: int | None = None,
                  source: str | None = None) -> Split:
    """Tests up to `last_train_week` train, later ones (to `last_test_week`) test; a test-side test that shares
    a headline with any training test is dropped (reported in `info`), so no headline is on both sides."""
    arms = records["ab_arm"]
    weeks = test_weeks(arms, source)
    train_ids = weeks.index[weeks <= last_train_week]
    test_ids = weeks.index[(weeks > last_train_week) & ((weeks <= last_test_week) if last_test_week else True)]
    exp = arms["experiment_id"].astype(str)
    train_arms, test_arms = arms[exp.isin(train_ids)], arms[exp.isin(test_ids)]
    shared = shared_headlines(train_arms, test_arms)
    exact = sorted(set(train_arms["text"]) & set(test_arms["text"]))
    hit = test_arms["text"].map(normalise).isin(set(shared))
    dropped = sorted(set(test_arms.loc[hit.to_numpy(), "experiment_id"].astype(str)))
    test_ids = [e for e in test_ids if e not in set(dropped)]
    info = {"last_train_week": last_train_week, "last_test_week": last_test_week,
            "n_train_tests": len(train_ids), "n_test_tests_before_dedup": len(test_ids) + len(dropped),
            "n_test_tests": len(test_ids), "shared_headlines": shared, "shared_headlines_exact": exact,
            "dropped_test_tests": dropped,
            "test_weeks": [int(weeks[test_ids].min()), int(weeks[test_ids].max())] if len(test_ids) else None}
    return Split(subset(records, train_ids), subset(records, test_ids), info)


# ----------------------------------------------------------------------------------------------
# pairs

def two_proportion_p(k_a, n_a, k_b, n_b) -> np.ndarray:
    """Two-sided p-values of the pooled two-proportion z-test (statsmodels' proportions_ztest), vectorised:
    `rm_lab.evaluate.ab.pooled_z_pvalues` on Bernoulli arms (a click's square is the click)."""
    from rm_lab.evaluate.ab import pooled_z_pvalues

    k_a, n_a, k_b, n_b = (np.asarray(v, float) for v in (k_a, n_a, k_b, n_b))
    return pooled_z_pvalues((n_b, k_b, k_b), (n_a, k_a, k_a))


def planned_se(n_a, n_b, pooled_rate) -> np.ndarray:
    """Standard error of a relative lift (b over a) from the arms' sizes and the test's pooled click rate: what
    is known before the test, not the direction of its result (delta method, lift near 0)."""
    n_a, n_b, p = (np.asarray(v, float) for v in (n_a, n_b, pooled_rate))
    p = np.clip(p, 0.5 / (n_a + n_b), 1 - 1e-9)
    return np.sqrt((1 - p) / p * (1 / n_a + 1 / n_b))


def arm_pairs(arms: pd.DataFrame, scores: np.ndarray | None = None) -> pd.DataFrame:
    """Every within-test pair (a before b in file order) of arms whose headlines differ: counts, CTRs, the
    observed relative lift of b over a, its planned standard error, the z-test p-value, and, with `scores`
    (one per arm row), the predicted log lift d = score_b - score_a."""
    exp = arms["experiment_id"].astype(str).to_numpy()
    text = arms["text"].map(normalise).to_numpy()
    n, k = arms["users"].to_numpy(float), arms["engaged_users"].to_numpy(float)
    ia, ib = [], []
    for idx in pd.Series(np.arange(len(arms))).groupby(exp, sort=False).indices.values():
        for x in range(len(idx)):
            for y in range(x + 1, len(idx)):
                if text[idx[x]] != text[idx[y]]:
                    ia.append(idx[x])
                    ib.append(idx[y])
    ia, ib = np.asarray(ia, int), np.asarray(ib, int)
    out = pd.DataFrame({"experiment_id": exp[ia], "a": ia, "b": ib, "text_a": arms["text"].to_numpy()[ia],
                        "text_b": arms["text"].to_numpy()[ib], "n_a": n[ia], "k_a": k[ia], "n_b": n[ib], "k_b": k[ib]})
    out["ctr_a"], out["ctr_b"] = out.k_a / out.n_a, out.k_b / out.n_b
    with np.errstate(divide="ignore", invalid="ignore"):
        out["observed_lift"] = out.ctr_b / out.ctr_a - 1
    # the log of the CTR ratio, with half a click added to each arm so that an arm without clicks has one
    out["observed_log_lift"] = np.log((out.k_b + 0.5) / (out.n_b + 0.5)) - np.log((out.k_a + 0.5) / (out.n_a + 0.5))
    pooled = (out.k_a + out.k_b) / (out.n_a + out.n_b)
    out["planned_se"] = planned_se(out.n_a, out.n_b, pooled)
    out["p_value"] = two_proportion_p(out.k_a, out.n_a, out.k_b, out.n_b)
    out["b_wins"] = np.where(out.ctr_b > out.ctr_a, 1.0, np.where(out.ctr_b < out.ctr_a, 0.0, np.nan))
    if scores is not None:
        s = np.asarray(scores, float)
        if len(s) != len(arms):
            raise ValueError(f"arm_pairs: {len(s)} scores for {len(arms)} arms")
        out["pred_log_lift"] = s[ib] - s[ia]
    return out


def pair_accuracy(pairs: pd.DataFrame, decision, alpha: float = 0.05) -> dict:
    """Accuracy at picking the higher-CTR arm (decision > 0: b; ties count 1/2) on pairs with a winner, and
    on those significant at `alpha`; with binomial standard errors."""
    d = np.asarray(decision, float)
    y = pairs["b_wins"].to_numpy(float)
    ok = ~np.isnan(y)
    hit = np.where(d == 0, 0.5, (d > 0) == (y == 1)).astype(float)
    out = {}
    for name, sel in (("all", ok), ("significant", ok & (pairs["p_value"].to_numpy() < alpha))):
        m = int(sel.sum())
        acc = float(hit[sel].mean()) if m else float("nan")
        out[name] = {"accuracy": acc, "n_pairs": m, "n_tests": int(pairs.loc[sel, "experiment_id"].nunique()),
                     "se": math.sqrt(acc * (1 - acc) / m) if m else float("nan")}
    return out


# ----------------------------------------------------------------------------------------------
# the reward model

def train_config(overrides: dict | None = None, cache_dir: str | None = None, seed: int = 0):
    from rm_lab import config as cfgmod
    from rm_lab.reward.train import TrainRMConfig

    keys = {**DEFAULT_TRAIN, "seed": seed, **dict(overrides or {})}
    if cache_dir and "cache_dir" not in keys:
        keys["cache_dir"] = cache_dir
    keys["data"] = None
    return cfgmod.build(TrainRMConfig, keys, "upworthy.train")


def train_ranker(records: Records, folder: str | Path, tcfg, say: Callable[[str], None] = print):
    """The reward model trained on these tests' arms (its arm_logit head); returns the loaded RewardModel."""
    from rm_lab.reward.model import RewardModel
    from rm_lab.reward.train import train_reward_model

    train_reward_model(tcfg, folder, records=records, say=say)
    return RewardModel.load(folder, _cache(tcfg))


def _cache(tcfg):
    from rm_lab.reward.embed_cache import default_cache_root

    return tcfg.cache_dir if tcfg.cache_dir and tcfg.cache_dir != "run" else str(default_cache_root())


def score_arms(model, records: Records) -> np.ndarray:
    """The head's score of each arm row (its headline read as a reply to its test)."""
    arms = records["ab_arm"]
    ctx = records["context"].drop_duplicates("context_id").set_index("context_id")
    rows = ctx.loc[arms["experiment_id"].astype(str)].reset_index()
    return np.asarray(model.score(rows, arms["text"].astype(str).tolist(), records["character"])[HEAD], float)


def group_folds(records: Records, k: int, seed: int = 0) -> dict[str, int]:
    """experiment -> fold, whole headline groups (context.conversation_id) per fold, by a seeded permutation."""
    ctx = records["context"]
    groups = ctx["conversation_id"].astype(str).to_numpy() if "conversation_id" in ctx else ctx["context_id"].to_numpy()
    uniq = sorted(set(groups))
    perm = np.random.default_rng(seed).permutation(len(uniq))
    fold_of = {g: int(perm[i] % k) for i, g in enumerate(uniq)}
    return {str(e): fold_of[g] for e, g in zip(ctx["context_id"], groups)}


def cross_fit(records: Records, k: int, folder: Path, tcfg, say: Callable[[str], None] = print) -> np.ndarray:
    """Out-of-fold scores of every arm: fold f's arms scored by a model trained on the other folds' tests.
    Scores are comparable within a test only, which is all a pair needs."""
    import dataclasses

    folds = group_folds(records, k, tcfg.seed)
    exp = records["ab_arm"]["experiment_id"].astype(str).map(folds).to_numpy()
    out = np.full(len(exp), np.nan)
    for f in range(k):
        held = [e for e, v in folds.items() if v == f]
        rest = [e for e, v in folds.items() if v != f]
        say(f"cross-fit {f + 1}/{k}: training on {len(rest)} tests, scoring {len(held)}")
        model = train_ranker(subset(records, rest), folder / f"fold{f}",
                             dataclasses.replace(tcfg, seed=tcfg.seed + 101 * (f + 1)), say=lambda m: None)
        out[exp == f] = score_arms(model, subset(records, held))
    return out


# ----------------------------------------------------------------------------------------------
# baselines on the same split

def baseline_decisions(names, train_pairs: pd.DataFrame, test_pairs: pd.DataFrame, embed_fn=None,
                       say: Callable[[str], None] = print) -> dict[str, np.ndarray]:
    """Decision values (> 0: b wins) of each pair baseline on the test pairs, fitted on the training pairs."""
    from rm_lab.reward.text_baselines import PairDiffBaseline, longer_text

    fit = train_pairs[train_pairs["b_wins"].notna()]
    out = {}
    for name in names:
        t0 = time.time()
        if name == "longer":
            out["always the longer headline"] = longer_text(test_pairs["text_a"], test_pairs["text_b"])
            continue
        b = PairDiffBaseline("tfidf" if name == "tfidf" else "embedding", embed_fn=embed_fn)
        b.fit(fit["text_a"], fit["text_b"], fit["b_wins"], groups=fit["experiment_id"])
        out[b.name] = b.decision(test_pairs["text_a"], test_pairs["text_b"])
        say(f"baseline {b.name}: C={b.C_:g} ({time.time() - t0:.0f}s)")
    return out


def minilm_embedder(cache_dir: str | None = None, max_length: int = 256):
    """MiniLM sentence embeddings through the shared embedding cache (the reward model's reply view)."""
    from rm_lab.models import embed, encoder_path, load_encoder
    from rm_lab.reward.embed_cache import EmbeddingCache, backbone_key, default_cache_root

    cache = EmbeddingCache(cache_dir or default_cache_root(), backbone_key(encoder_path(), max_length))
    state = {}

    def fn(texts):
        def compute(t):
            if "enc" not in state:
                state["tok"], state["enc"] = load_encoder(None)
            return embed(t, state["tok"], state["enc"], 64, max_length)
        return cache.get([str(t) for t in texts], compute)
    return fn


# ----------------------------------------------------------------------------------------------
# lift calibration

def calibrate_lifts(calib_pairs: pd.DataFrame, test_pairs: pd.DataFrame, confidence: float = 0.9,
                    method: str = "linear", folds: int = 10):
    """Fit the map from the predicted log lift to the observed log lift (log CTR ratio) on the calibration pairs
    (out-of-fold predictions of training tests), then predict each test pair's lift with its interval, mapped
    back to relative lifts (exp - 1: coverage is the same on either scale). The log scale, because a CTR
    ratio's noise is near-symmetric there and its standard error is `planned_se`; on the relative scale a few
    arms with a handful of clicks give +300% lifts that inflate every interval. Returns (Calibration on the
    log scale, test pairs with pred_lift/low/high/covered/p_b_wins, reliability numbers on relative lifts)."""
    from scipy.stats import norm

    from rm_lab.calibrate.intervals import fit_calibration, predict_lift
    from rm_lab.calibrate.reliability import reliability

    c = calib_pairs[np.isfinite(calib_pairs["pred_log_lift"])]
    cal = fit_calibration(c["pred_log_lift"], c["observed_log_lift"], c["planned_se"], method, confidence,
                          predictor="pred_log_lift", folds=folds,
                          meta={"n_pairs": len(c), "n_tests": int(c["experiment_id"].nunique()),
                                "scale": "log CTR ratio (observed_log_lift); relative lift = exp(.) - 1"},
                          floor=None)  # a log ratio has no floor; exp(.) - 1 keeps relative lifts above -100%
    t = test_pairs[np.isfinite(test_pairs["observed_lift"])].copy()
    p = predict_lift(cal, t["pred_log_lift"].to_numpy(), t["planned_se"].to_numpy())
    t["pred_log"], t["low_log"], t["high_log"] = p["lift"], p["low"], p["high"]
    t["pred_lift"], t["low"], t["high"] = np.expm1(p["lift"]), np.expm1(p["low"]), np.expm1(p["high"])
    t["covered"] = (t["observed_lift"] >= t["low"]) & (t["observed_lift"] <= t["high"])
    rel = reliability(t["pred_lift"], t["observed_lift"], t["low"], t["high"])
    sigma = np.sqrt(cal.tau ** 2 + t["planned_se"].to_numpy() ** 2)
    t["p_b_wins"] = norm.cdf(t["pred_log"].to_numpy() / sigma)  # P(measured lift > 0) under the map
    rel["coverage_log_scale_continuity"] = float(((t["observed_log_lift"] >= t["low_log"]) &
                                                  (t["observed_log_lift"] <= t["high_log"])).mean())
    rel["n_excluded_zero_clicks"] = int(len(test_pairs) - len(t))
    return cal, t, rel


def coverage_by_level(cal_pairs: pd.DataFrame, test_pairs: pd.DataFrame, levels=(0.5, 0.8, 0.9, 0.95),
                      method: str = "linear", folds: int = 10, calibration=None) -> dict[float, float]:
    """Empirical coverage of the test pairs' intervals at several nominal levels. One fit serves every level
    (`calibration`, else fitted here once): the map and its conformal scores do not depend on the level,
    only the quantile read from the scores does."""
    from rm_lab.calibrate.intervals import predict_lift

    cal = calibration if calibration is not None else calibrate_lifts(cal_pairs, test_pairs, float(levels[0]), method,
                                                                      folds)[0]
    t = test_pairs[np.isfinite(test_pairs["observed_lift"])]
    y = t["observed_lift"].to_numpy(float)
    out = {}
    for lv in levels:
        p = predict_lift(cal, t["pred_log_lift"].to_numpy(), t["planned_se"].to_numpy(), confidence=float(lv))
        out[float(lv)] = float(((y >= np.expm1(p["low"])) & (y <= np.expm1(p["high"]))).mean())
    return out


# ----------------------------------------------------------------------------------------------
# the whole benchmark

@dataclass
class Result:
    metrics: dict
    test_pairs: pd.DataFrame
    calibration: object
    coverage_levels: dict


def run_benchmark(ucfg: UpworthyConfig, folder: str | Path, say: Callable[[str], None] = print) -> Result:
    """Split, train, cross-fit, score, baselines, calibrate: every figure of reports/upworthy.md."""
    from rm_lab.sources import data_root, upworthy

    t0 = time.time()
    folder = Path(folder)
    path = Path(ucfg.data) if ucfg.data else data_root() / "upworthy"
    if not path.exists():
        raise ConfigError(f"upworthy.data: '{path}' does not exist (the Upworthy archive Parquet file or folder; "
                          f"set RM_LAB_DATA or upworthy.data)")
    records = upworthy.load(path, limit=ucfg.limit)
    split = split_by_week(records, ucfg.last_train_week, ucfg.last_test_week, str(path))
    info = split.info
    say(f"split: {info['n_train_tests']} training tests, {info['n_test_tests']} test tests "
        f"({len(info['shared_headlines'])} headlines on both sides: {len(info['dropped_test_tests'])} test-side tests "
        "dropped)")
    if info["n_train_tests"] < ucfg.calib_folds or info["n_test_tests"] < 1:
        raise ConfigError(f"upworthy: {info['n_train_tests']} training and {info['n_test_tests']} test tests: "
                          f"need at least calib_folds={ucfg.calib_folds} and 1 (check last_train_week, limit)")
    leak = shared_headlines(split.train["ab_arm"], split.test["ab_arm"])
    if leak:  # split_by_week guarantees this; checked again where the figures are made
        raise AssertionError(f"headlines on both sides of the split: {leak[:3]}")
    tcfg = train_config(ucfg.train, ucfg.cache_dir, ucfg.seed)
    say("training the reward model (ab_engaged head, arm_logit) on the training tests")
    model = train_ranker(split.train, folder / "rm", tcfg, say)
    test_scores = score_arms(model, split.test)
    train_scores = score_arms(model, split.train)
    say(f"cross-fitting {ucfg.calib_folds} reward models for the calibration set")
    oof = cross_fit(split.train, ucfg.calib_folds, folder / "crossfit", tcfg, say)
    train_pairs = arm_pairs(split.train["ab_arm"], oof)
    train_pairs["in_sample_log_lift"] = arm_pairs(split.train["ab_arm"], train_scores)["pred_log_lift"].to_numpy()
    test_pairs = arm_pairs(split.test["ab_arm"], test_scores)
    acc = {"ours: reward model, ab_engaged head (arm_logit)": pair_accuracy(test_pairs, test_pairs["pred_log_lift"],
                                                                          ucfg.alpha)}
    embed_fn = minilm_embedder(ucfg.cache_dir) if "minilm" in ucfg.baselines else None
    for name, dec in baseline_decisions(ucfg.baselines, train_pairs, test_pairs, embed_fn, say).items():
        acc[name] = pair_accuracy(test_pairs, dec, ucfg.alpha)
        test_pairs[f"baseline: {name}"] = dec
    oof_acc = pair_accuracy(train_pairs, train_pairs["pred_log_lift"], ucfg.alpha)
    cal, lifted, rel = calibrate_lifts(train_pairs, test_pairs, ucfg.confidence, ucfg.method, ucfg.conformal_folds)
    levels = coverage_by_level(train_pairs, test_pairs, method=ucfg.method, folds=ucfg.conformal_folds,
                               calibration=cal)
    ours = next(iter(acc.values()))
    beats = {name: ours["all"]["accuracy"] > m["all"]["accuracy"] and
             ours["significant"]["accuracy"] > m["significant"]["accuracy"] for name, m in list(acc.items())[1:]}
    metrics = {
        "split": dict(info), "n_test_pairs": int(test_pairs["b_wins"].notna().sum()),
        "n_test_pairs_identical_headline_excluded": _identical_pairs(split.test["ab_arm"]),
        "accuracy": acc, "crossfit_accuracy_on_training_tests": oof_acc,
        "lift": {**rel, "confidence": ucfg.confidence, "tau": cal.tau, "map": cal.lift_map.to_json(),
                 "n_calibration_pairs": cal.meta.get("n_pairs")},
        "coverage_by_level": levels,
        "targets": {"beats_every_baseline": all(beats.values()), "beats": beats,
                    "coverage_in_85_95": bool(0.85 <= rel["coverage"] <= 0.95)},
        "train_config": {k: v for k, v in tcfg.__dict__.items() if k not in ("world",)},
        "seconds": round(time.time() - t0, 1),
    }
    return Result(metrics, lifted, cal, levels)


def _identical_pairs(arms: pd.DataFrame) -> int:
    """Within-test pairs whose headlines are identical (the arms differ in image or lede only)."""
    c = arms.assign(_t=arms["text"].map(normalise)).groupby(["experiment_id", "_t"]).size()
    return int((c * (c - 1) // 2).sum())


# ----------------------------------------------------------------------------------------------
# report

def plot_lifts(t: pd.DataFrame, path: str | Path, confidence: float, n_show: int = 300, seed: int = 0) -> Path:
    """Predicted vs observed lift of the test pairs: a sample with its intervals, and binned means."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rm_lab import io

    rng = np.random.default_rng(seed)
    show = t.iloc[rng.permutation(len(t))[:n_show]]
    fig, ax = plt.subplots(figsize=(7, 5.5))
    for cov, color, label in ((True, "tab:blue", "inside its interval"), (False, "tab:red", "outside its interval")):
        s = show[show["covered"] == cov]
        ax.vlines(s["pred_lift"], s["low"], s["high"], color=color, alpha=0.2, lw=0.8)
        ax.scatter(s["pred_lift"], s["observed_lift"], s=8, color=color, alpha=0.6,
                   label=f"test pair (observed), {label}")
    q = pd.qcut(t["pred_lift"], 10, duplicates="drop")
    b = t.groupby(q, observed=True).agg(x=("pred_lift", "mean"), y=("observed_lift", "mean"),
                                        se=("observed_lift", "sem"))
    ax.errorbar(b["x"], b["y"], yerr=1.96 * b["se"], fmt="s-", color="k", ms=6, lw=1.5,
                label="decile of predicted lift: mean observed (95% CI)")
    lim = [t["pred_lift"].min(), t["pred_lift"].max()]
    ax.plot(lim, lim, ls="--", color="grey", lw=1, label="y = x")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_ylim(np.nanpercentile(t["low"], 1), np.nanpercentile(t["high"], 99))
    ax.set_xlabel("calibrated predicted lift of headline b over a")
    ax.set_ylabel("observed CTR lift in the test")
    ax.set_title(f"Upworthy test pairs: predicted lift with {confidence:.0%} intervals "
                 f"(coverage {t['covered'].mean():.1%})")
    ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    with io.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)


def plot_reliability(t: pd.DataFrame, levels: dict, path: str | Path, bins: int = 10) -> Path:
    """Left: predicted P(b wins) against the observed share of b wins, by bin. Right: interval coverage by level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rm_lab import io

    d = t[t["b_wins"].notna()]
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(d["p_b_wins"], edges) - 1, 0, bins - 1)
    g = d.groupby(idx).agg(p=("p_b_wins", "mean"), y=("b_wins", "mean"), n=("b_wins", "size"))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4.5))
    a1.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
    a1.errorbar(g["p"], g["y"], yerr=1.96 * np.sqrt(g["y"] * (1 - g["y"]) / g["n"]), fmt="o-", color="tab:blue")
    for x, y, n in zip(g["p"], g["y"], g["n"]):
        a1.annotate(str(int(n)), (x, y), fontsize=7, xytext=(3, -10), textcoords="offset points")
    a1.set_xlabel("predicted P(headline b gets the higher CTR)")
    a1.set_ylabel("observed share of pairs b won")
    a1.set_title("reliability of win probabilities (test pairs)")
    lv = np.array(sorted(levels))
    a2.plot([0.4, 1], [0.4, 1], ls="--", color="grey", lw=1)
    a2.plot(lv, [levels[v] for v in lv], "o-", color="tab:green")
    a2.axhspan(0.85, 0.95, xmin=0, xmax=1, color="tab:green", alpha=0.08)
    a2.set_xlabel("nominal interval level")
    a2.set_ylabel("observed coverage of test pairs' lifts")
    a2.set_title("interval coverage")
    fig.tight_layout()
    with io.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)


def _pct(v) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{100 * v:.1f}%"


def report_markdown(res: Result, command: str, lift_png: str, reliability_png: str) -> str:
    m = res.metrics
    s, lift = m["split"], m["lift"]
    rows = ["| method | accuracy, all pairs | accuracy, pairs significant at 5% |", "|---|---|---|"]
    for name, a in m["accuracy"].items():
        rows.append(f"| {name} | {_pct(a['all']['accuracy'])} ± {_pct(a['all']['se'])} | "
                    f"{_pct(a['significant']['accuracy'])} ± {_pct(a['significant']['se'])} |")
    first = next(iter(m["accuracy"].values()))
    lv = ", ".join(f"{k:.0%}: {_pct(v)}" for k, v in sorted(m["coverage_by_level"].items()))
    t = m["targets"]
    return "\n".join([
        "# Upworthy: which headline wins, and by how much", "",
        f"Command: `{command}`", "",
        "## Split",
        f"- train: tests of weeks up to {s['last_train_week']} ({s['n_train_tests']:,} tests); test: later tests "
        f"(weeks {s['test_weeks'][0]}–{s['test_weeks'][1]}; {s['n_test_tests_before_dedup']:,} tests).",
        f"- identical headlines (case and spacing folded) on both sides: {len(s['shared_headlines'])} "
        f"({len(s['shared_headlines_exact'])} exactly identical): {s['shared_headlines']}. The "
        f"{len(s['dropped_test_tests'])} test-side tests holding them are dropped: {s['n_test_tests']:,} test tests "
        "remain, and `tests/test_upworthy_split.py` asserts no headline is on both sides.",
        f"- pairs: every within-test pair of arms whose headlines differ ({m['n_test_pairs']:,} test pairs with a "
        f"higher-CTR arm, {first['all']['n_tests']:,} tests); {m['n_test_pairs_identical_headline_excluded']:,} pairs "
        "with the same headline (the arms differ in image or lede only) are left out: no text model can rank them.",
        "", "## Picking the higher-CTR headline (test tests)", "", *rows, "",
        f"Significant: pooled two-proportion z-test p < 0.05 ({first['significant']['n_pairs']:,} pairs). "
        "± is one binomial standard error. Baselines are fitted on the same training pairs (the logistic "
        "regressions on feature differences, their penalty chosen by 3-fold cross-validation over training tests).",
        f"Ours beats every baseline on both columns: **{t['beats_every_baseline']}** ({t['beats']}).",
        f"Out-of-fold accuracy of the cross-fitted models on the training tests: "
        f"{_pct(m['crossfit_accuracy_on_training_tests']['all']['accuracy'])} (all), "
        f"{_pct(m['crossfit_accuracy_on_training_tests']['significant']['accuracy'])} (significant).",
        f"Published context: {PUBLISHED}; the data README treats anything far above 60% as a leak until proven "
        "otherwise.", "",
        "## Lift prediction",
        f"Predictor: the score difference of the two headlines (a log lift), mapped to the observed relative CTR "
        f"lift by a {lift['map'].get('method', 'linear')} fit on {lift['n_calibration_pairs']:,} training pairs, each "
        f"scored by a cross-fitted model that never saw its test; conformal {lift['confidence']:.0%} intervals "
        "(rm_lab.calibrate.intervals) scaled by sqrt(tau² + se²), se from the arms' impressions and the test's "
        "pooled "
        f"CTR (known before the test), tau = {lift['tau']:.4f}.", "",
        f"| test pairs | coverage of {lift['confidence']:.0%} intervals | mean width | sign agreement | Spearman | "
        "calibration slope | intercept |", "|---|---|---|---|---|---|---|",
        f"| {lift['n']:,} | **{_pct(lift['coverage'])}** | {_pct(lift['mean_width'])} | "
        f"{_pct(lift['sign_agreement'])} | {lift['spearman']:.3f} | {lift['calibration_slope']:.2f} | "
        f"{lift['calibration_intercept']:.4f} |", "",
        f"Coverage at other levels: {lv}. Target 85–95% at 90%: **{t['coverage_in_85_95']}**.", "",
        f"![predicted vs observed lift]({lift_png})", "", f"![reliability]({reliability_png})", "",
        f"Run time: {m['seconds']:.0f} s.", ""])


def calibrate_upworthy(cfg, run, say: Callable[[str], None] = print) -> dict:
    """`rm_lab calibrate source=upworthy`: the benchmark into the run folder (calibration.json, pairs, report)."""
    from rm_lab import config as cfgmod
    from rm_lab import io
    from rm_lab.calibrate.intervals import save_calibration

    keys = dict(cfg.upworthy or {})
    keys.setdefault("confidence", cfg.confidence)
    keys.setdefault("method", cfg.method)
    if cfg.cache_dir:
        keys.setdefault("cache_dir", cfg.cache_dir)
    ucfg = cfgmod.build(UpworthyConfig, keys, "upworthy")
    res = run_benchmark(ucfg, run.file("work"), say)
    save_calibration(res.calibration, run.file("calibration.json"))
    res.test_pairs.drop(columns=["a", "b"]).to_csv(run.file("test_pairs.csv"), index=False)
    plot_lifts(res.test_pairs, run.file("predicted_vs_observed.png"), ucfg.confidence)
    plot_reliability(res.test_pairs, res.coverage_levels, run.file("reliability.png"))
    io.write_text(run.file("report.md"), report_markdown(res, "rm_lab calibrate source=upworthy",
                                                         "predicted_vs_observed.png", "reliability.png"))
    io.write_json(run.file("upworthy.json"), res.metrics)
    flat = {"coverage": res.metrics["lift"]["coverage"],
            **{f"accuracy/{k}": v["all"]["accuracy"] for k, v in res.metrics["accuracy"].items()}}
    run.log_metrics(flat)
    # what `rm_lab calibrate` prints: the held-out (test-week) pairs' lift figures
    return {**res.metrics, "n_tests": res.metrics["split"]["n_test_tests"], "heldout": res.metrics["lift"]}


__all__ = ["UpworthyConfig", "split_by_week", "shared_headlines", "arm_pairs", "pair_accuracy", "two_proportion_p",
           "planned_se", "train_ranker", "score_arms", "cross_fit", "calibrate_lifts", "run_benchmark",
           "report_markdown", "plot_lifts", "plot_reliability", "calibrate_upworthy"]
