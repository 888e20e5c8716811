"""The Upworthy benchmark: no headline on both sides of the split, the pair statistics, the pair baselines,
a tiny end-to-end run on synthetic tests whose winning words are known, and the real archive's split."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rm_lab.calibrate import upworthy as U
from rm_lab.reward.text_baselines import PairDiffBaseline, longer_text
from rm_lab.schema import RecordError
from rm_lab.sources import upworthy as source

ROOT = Path(__file__).resolve().parent.parent
GOOD, BAD = ["Amazing", "Incredible", "Wow"], ["Report", "Update", "Notice"]


def synthetic(n_tests=80, seed=0, shared=True) -> pd.DataFrame:
    """Tests of 3 arms each: a headline with a 'good' word has 1.6x the CTR; weeks 201401.. across the split.
    With `shared`, one later test repeats a headline of an earlier one (as the real archive does twice)."""
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(n_tests):
        base = rng.uniform(0.01, 0.04)  # the story's popularity: the same for every arm of the test
        week = 201401 + t * 40 // n_tests
        for j in range(3):
            good = rng.random() < 0.5
            word = rng.choice(GOOD if good else BAD)
            head = f"{word} story {t} number {j} " + " ".join(rng.choice(["about", "the", "city", "dog"], 2))
            n = int(rng.integers(3000, 6000))
            rows.append({"clickability_test_id": f"t{t:03d}", "headline": head, "lede": f"<p>story {t}</p>",
                         "excerpt": "x", "impressions": n, "clicks": int(rng.binomial(n, base * (1.6 if good else 1))),
                         "significance": 0.0, "winner": False, "first_place": False, "test_week": week,
                         "eyecatcher_id": "img"})
    df = pd.DataFrame(rows)
    if shared:
        late = df.index[df.test_week > 201420][0]
        df.loc[late, "headline"] = "  " + df.loc[0, "headline"].upper() + " "  # identical up to case and spacing
    return df


@pytest.fixture
def records(tmp_path):
    p = tmp_path / "u.parquet"
    synthetic().to_parquet(p)
    return source.load(p), p


# ----------------------------------------------------------------------------------------------
# leakage

def test_no_headline_on_both_sides_of_the_split(records):
    rec, _ = records
    arms = rec["ab_arm"]
    split = U.split_by_week(rec, 201420)
    tr, te = split.train["ab_arm"], split.test["ab_arm"]
    assert U.shared_headlines(tr, te) == []
    assert not set(tr["text"].map(U.normalise)) & set(te["text"].map(U.normalise))
    info = split.info
    assert info["shared_headlines"] == [U.normalise(arms["text"].iloc[0])]
    assert info["shared_headlines_exact"] == []  # only identical after folding case and spacing
    assert len(info["dropped_test_tests"]) == 1 and info["n_test_tests"] == info["n_test_tests_before_dedup"] - 1
    weeks = U.test_weeks(arms)
    assert (weeks[split.train["ab_arm"]["experiment_id"].unique()] <= 201420).all()
    assert (weeks[split.test["ab_arm"]["experiment_id"].unique()] > 201420).all()
    # every test on exactly one side (or dropped), contexts follow their arms
    sides = set(tr["experiment_id"]) | set(te["experiment_id"]) | set(info["dropped_test_tests"])
    assert sides == set(arms["experiment_id"]) and not set(tr["experiment_id"]) & set(te["experiment_id"])
    assert set(split.test["context"]["context_id"]) == set(te["experiment_id"])


def test_without_the_dedup_the_check_would_fail(records):
    """The leak the split removes is real: the raw week split has the repeated headline on both sides."""
    rec, _ = records
    arms = rec["ab_arm"]
    w = U.test_weeks(arms)
    exp = arms["experiment_id"]
    raw_train, raw_test = arms[exp.map(w) <= 201420], arms[exp.map(w) > 201420]
    assert len(U.shared_headlines(raw_train, raw_test)) == 1


def test_headline_groups_link_tests_transitively():
    g = source.headline_groups(["a", "b", "b", "c", "d"], ["x", "x", "y", "Y ", "z"])
    assert g["a"] == g["b"] == g["c"] and g["d"] != g["a"]


def test_missing_week_is_an_error_naming_the_row(records):
    rec, _ = records
    arms = rec["ab_arm"].copy()
    arms.loc[4, "test_week"] = pd.NA
    with pytest.raises(RecordError) as e:
        U.test_weeks(arms, "u.parquet")
    assert e.value.row == 4 and e.value.field == "test_week"


# ----------------------------------------------------------------------------------------------
# pairs, significance, baselines

def test_pairs_and_their_statistics(records):
    rec, _ = records
    arms = rec["ab_arm"].head(6).copy()
    arms.loc[2, "text"] = arms.loc[1, "text"]  # an identical headline: that pair is not a text pair
    pairs = U.arm_pairs(arms, scores=np.arange(6.0))
    assert len(pairs) == 2 + 3 and ((pairs.a == 1) & (pairs.b == 2)).sum() == 0
    assert (pairs.pred_log_lift == pairs.b - pairs.a).all()
    r = pairs.iloc[0]
    assert r.observed_lift == pytest.approx((r.k_b / r.n_b) / (r.k_a / r.n_a) - 1)


def test_z_test_matches_statsmodels():
    from statsmodels.stats.proportion import proportions_ztest

    k_a, n_a = np.array([30, 50, 7]), np.array([3000, 2500, 900])
    k_b, n_b = np.array([45, 50, 19]), np.array([3100, 2600, 880])
    got = U.two_proportion_p(k_a, n_a, k_b, n_b)
    for i in range(3):
        _, p = proportions_ztest([k_b[i], k_a[i]], [n_b[i], n_a[i]])
        assert got[i] == pytest.approx(p, rel=1e-9)


def test_accuracy_counts_ties_as_half_and_splits_significant_pairs():
    pairs = pd.DataFrame({"experiment_id": ["a", "a", "b", "c"], "b_wins": [1.0, 0.0, 1.0, np.nan],
                          "p_value": [0.01, 0.5, 0.02, 0.9]})
    acc = U.pair_accuracy(pairs, [1.0, 1.0, 0.0, 5.0])
    assert acc["all"]["accuracy"] == pytest.approx((1 + 0 + 0.5) / 3) and acc["all"]["n_pairs"] == 3
    assert acc["significant"]["accuracy"] == pytest.approx(0.75) and acc["significant"]["n_tests"] == 2


def test_pair_baselines_are_antisymmetric_and_learn_a_word():
    rng = np.random.default_rng(0)
    a = [f"{rng.choice(GOOD + BAD)} story {i}" for i in range(300)]
    b = [f"{rng.choice(GOOD + BAD)} story {i}" for i in range(300)]
    good_a, good_b = np.array([t.split()[0] in GOOD for t in a]), np.array([t.split()[0] in GOOD for t in b])
    y = np.where(good_b & ~good_a, 1.0, np.where(good_a & ~good_b, 0.0, rng.integers(0, 2, 300)))
    m = PairDiffBaseline("tfidf").fit(a, b, y, groups=np.arange(300) // 3)
    assert np.allclose(m.decision(a, b), -m.decision(b, a))
    assert m.decision(["Report story 1"], ["Amazing story 1"])[0] > 0
    assert longer_text(["ab", "abc", "x"], ["abc", "ab", "y"]).tolist() == [1, -1, 0]
    with pytest.raises(ValueError, match="embed_fn"):
        PairDiffBaseline("embedding")


# ----------------------------------------------------------------------------------------------
# end to end (tiny)

@pytest.mark.models
def test_tiny_benchmark_end_to_end(records, backbone, tmp_path):
    """`rm_lab calibrate source=upworthy` as a user runs it: split, the arm_logit head trained through
    train_reward_model, cross-fit, baselines, calibrated lifts, report and plots in the run folder."""
    from rm_helpers import run_cli

    _, path = records
    runs = tmp_path / "runs"
    p = run_cli("calibrate", "source=upworthy", f"upworthy.data={path}", "upworthy.last_train_week=201420",
                "upworthy.calib_folds=2", "upworthy.conformal_folds=5", "upworthy.baselines=[longer, tfidf]",
                f"cache_dir={tmp_path / 'cache'}",
                *(f"upworthy.train.{k}" for k in (f"backbone={backbone}", "epochs=10", "max_length=32", "n_layers=1",
                                                   "hidden=32", "lr=3e-3", "val_fraction=0")), runs=runs)
    assert p.returncode == 0, p.stderr[-3000:]
    run = next((runs / "calibrate").iterdir())
    for name in ("calibration.json", "test_pairs.csv", "report.md", "predicted_vs_observed.png", "reliability.png",
                 "upworthy.json"):
        assert (run / name).is_file() and (run / name).stat().st_size > 100, name
    m = json.loads((run / "upworthy.json").read_text())
    assert m["split"]["n_test_tests"] == m["split"]["n_test_tests_before_dedup"] - 1
    ours = m["accuracy"]["ours: reward model, ab_engaged head (arm_logit)"]
    assert ours["all"]["n_pairs"] == m["n_test_pairs"] > 50
    assert ours["all"]["accuracy"] > 0.6  # the good words win; a tiny random encoder still reads them
    assert set(m["accuracy"]) >= {"always the longer headline", "TF-IDF + logistic regression on differences"}
    t = pd.read_csv(run / "test_pairs.csv")
    assert (t["low"] <= t["pred_lift"]).all() and (t["pred_lift"] <= t["high"]).all()
    assert 0 < m["lift"]["coverage"] <= 1 and "0.5" in m["coverage_by_level"]
    assert "Picking the higher-CTR headline" in (run / "report.md").read_text()
    assert "coverage" in p.stdout and "tests" in p.stdout


# ----------------------------------------------------------------------------------------------
# the real archive

def test_real_archive_split(shared_data):
    path = shared_data / "upworthy"
    if not path.exists():
        pytest.skip(f"{path} is missing: the Upworthy archive is not in the shared data folder")
    rec = source.load(path)
    split = U.split_by_week(rec, U.LAST_TRAIN_WEEK)
    info = split.info
    assert info["n_train_tests"] == 2_453 and info["n_test_tests_before_dedup"] == 1_763
    assert len(info["shared_headlines_exact"]) == 2  # the two the issue names
    assert U.shared_headlines(split.train["ab_arm"], split.test["ab_arm"]) == []
    assert info["n_test_tests"] == 1_763 - len(info["dropped_test_tests"]) and info["dropped_test_tests"]
    ctx = rec["context"]
    assert len(ctx) == 4_216 and set(ctx["context_id"]) == set(rec["ab_arm"]["experiment_id"])
