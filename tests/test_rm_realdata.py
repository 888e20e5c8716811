"""Real-data checks of pipelines/rm_realdata.py: splits that never leak, the label plumbing, and reduced
runs (one fold) that must point the same way as the full report."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _pipeline():
    spec = importlib.util.spec_from_file_location("rm_realdata", ROOT / "pipelines" / "rm_realdata.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["rm_realdata"] = mod
    spec.loader.exec_module(mod)
    return mod


R = _pipeline()


@pytest.fixture
def private_cache(tmp_path_factory, monkeypatch):
    """Embeddings go to a per-session folder, never the user's cache (cold in CI, shared by these tests)."""
    monkeypatch.setenv("RM_LAB_CACHE", str(tmp_path_factory.getbasetemp() / "rm_cache"))
    yield


def test_group_folds_are_seeded_balanced_and_order_free():
    groups = [f"g{i % 37}" for i in range(500)]
    a = R.group_folds(groups, 5, seed=3)
    b = R.group_folds(list(reversed(groups)), 5, seed=3)
    assert a == b  # row order does not move a group
    assert R.group_folds(groups, 5, seed=4) != a
    sizes = np.bincount(list(a.values()), minlength=5)
    assert sizes.max() - sizes.min() <= 1
    f = R.folds_of(groups, 5, 3)
    df = pd.DataFrame({"g": groups, "fold": f})
    assert R.leak_report(df, "g", []) == {"g": 0}
    df.loc[0, "fold"] = (df.loc[0, "fold"] + 1) % 5  # a planted leak is reported
    assert R.leak_report(df, "g", [])["g"] == 1


@pytest.mark.realdata
def test_pe_split_keeps_identical_queries_together_and_binomial_rows(shared_data):
    from rm_lab import sources
    from rm_lab.reward.data import build_reward_data

    recs = sources.load("predictive-engagement", shared_data / "predictive_engagement")
    eng = recs["engagement"].reset_index(drop=True)
    eng["fold"] = R.folds_of(eng["context_id"], 5, 0)
    assert R.leak_report(eng, "context_id", ["query"]) == {"context_id": 0, "query": 0}
    train = eng[eng["fold"] != 0]
    tr_recs = R.pe_records(train, recs)
    assert set(tr_recs["context"]["context_id"]).isdisjoint(set(eng.loc[eng["fold"] == 0, "context_id"]))
    data = build_reward_data(tr_recs, ["continue", "preference"])
    # a 1-5 rating is 4 trials with score-1 successes, summed over the annotators of a (query, reply)
    want = train.groupby(["context_id", "response"])["human_score"].agg(n=lambda s: 4 * len(s), k=lambda s: (s - 1).sum())
    got = data.items.set_index(["context_id", "response"])[["continue_n", "continue_k"]]
    got = got.loc[want.index]
    assert np.allclose(got["continue_n"], want["n"]) and np.allclose(got["continue_k"], want["k"])
    # each pair prefers the reply with the higher mean rating
    mean = train.groupby(["context_id", "response"])["human_score"].mean()
    items = data.items
    for c, r, cid in data.pairs[["chosen", "rejected", "context_id"]].itertuples(index=False):
        assert mean[(cid, items.loc[c, "response"])] > mean[(cid, items.loc[r, "response"])]


@pytest.mark.realdata
def test_convai2_split_by_dialogue_never_leaks(shared_data):
    from rm_lab import sources

    recs = sources.load("convai2", shared_data / "convai2")
    folds = R.group_folds(recs["interaction"]["dialogue_id"], 5, 0)
    tasks = R.convai2_tasks(recs)
    for task, spec in tasks.items():
        rows = spec["rows"]
        assert len(rows) == len(spec["y"]) and 0 < spec["y"].mean() < 1, task
        fold = rows["dialogue_id"].map(folds)
        assert R.leak_report(rows.assign(fold=fold), "dialogue_id", ["context_id"]) == {"dialogue_id": 0,
                                                                                      "context_id": 0}
        train_dlg = {d for d, f in folds.items() if f != 0}
        tr = R.convai2_train_records(task, spec, train_dlg, recs)
        test_ctx = set(rows.loc[fold == 0, "context_id"])
        label_kind = "steer_label" if task == "persona" else "interaction"
        assert test_ctx and set(tr[label_kind]["context_id"]).isdisjoint(test_ctx), task
        assert set(tr["context"]["context_id"]).isdisjoint(test_ctx), task
    assert set(tasks["thumb_up"]["rows"]["source_file"]) == {"data_intermediate.json"}
    assert "data_intermediate.json" not in set(tasks["rating"]["rows"]["source_file"])
    # every context names its dialogue, so val_split=conversation (and the head refit's folds) hold it out whole
    it = recs["interaction"].drop_duplicates("context_id").set_index("context_id")["dialogue_id"]
    conv = recs["context"].set_index("context_id")["conversation_id"]
    assert conv.notna().all() and (conv.loc[it.index] == it).all()


@pytest.mark.realdata
@pytest.mark.models
@pytest.mark.slow
def test_pe_one_fold_beats_the_authors_model(shared_data, private_cache, tmp_path):
    args = R.Args(data=str(shared_data), convai2=False, only_folds=[0], epochs=30, joint=False, out_md=None,
                  out_json=None)
    res = R.run_pe(args, shared_data, tmp_path, say=lambda *_: None)
    fold = res["per_fold"][0]
    assert fold["n_rows"] == res["rows"] and res["leak_check"]["context_id"] == 0
    # the peer column is the authors' own score on the same rows, not something we fit
    assert fold["peer"] == pytest.approx(R.spearman(
        *[np.asarray(v) for v in _peer_and_truth(shared_data, 0)]))
    assert fold["ours_p_engaging"] > fold["peer"]
    assert fold["ours_p_engaging"] > max(fold["length_only"], fold["tfidf_lr"])
    assert np.isnan(fold["ours_joint_p_engaging"])  # the joint fit was switched off, not silently reused


def _peer_and_truth(shared_data, k):
    from rm_lab import sources

    eng = sources.load("predictive-engagement", shared_data / "predictive_engagement")["engagement"]
    f = R.folds_of(eng["context_id"], 5, 0)
    e = eng[f == k]
    return e[R.PE_PEER], e["human_score"]


@pytest.mark.realdata
@pytest.mark.models
@pytest.mark.slow
def test_convai2_thumbs_one_fold_scores_only_held_out_rows(shared_data, private_cache, tmp_path):
    args = R.Args(data=str(shared_data), pe=False, only_folds=[2], tasks=["thumb_up"], max_length=128,
                  epochs=10, joint=False, out_md=None, out_json=None)
    res = R.run_convai2(args, shared_data, tmp_path, say=lambda *_: None)["thumb_up"]
    assert res["leak_check"] == {"dialogue_id": 0, "context_id": 0}
    assert [p["fold"] for p in res["per_fold"]] == [2] and res["per_fold"][0]["n"] == res["n"]
    assert 40 < res["n"] < 439  # one fold of the 439 thumbs, nothing else
    for c in ("ours", "length_only", "tfidf_lr"):
        assert 0.0 < res["auc"][c] < 1.0, (c, res["auc"])
    assert np.isnan(res["auc"]["ours_joint"])  # the joint fit was switched off, not silently reused
    # the ConvAI2 settings refit the thumb head on the training side, with a C from the grid
    from rm_lab.reward.refit import DEFAULT_CS

    assert [(r["fold"], r["head"]) for r in res["refit"]] == [(2, "thumb_up")]
    r = res["refit"][0]
    assert r["C"] in DEFAULT_CS and 50 < r["n_groups"] < r["n_rows"]  # groups are dialogues, not turns
    md = R.render({"args": {"epochs": 10, "seed": 0, "folds": 5}, "convai2": {"thumb_up": res}}, "cmd")
    assert "C chosen per fold" in md and "the settings listed at the top" in md  # args name no ConvAI2 settings
    md_shipped = R.render({"args": {"epochs": 10, "seed": 0, "folds": 5, "convai2_rm": dict(R.CONVAI2_RM)},
                           "convai2": {"thumb_up": res}}, "cmd")
    assert "`refit_metric=auc`" in md_shipped
    m = res["auc_fold_mean"]
    beats = m["ours"] > max(m["length_only"], m["tfidf_lr"])
    assert ("| yes |" in md) == beats and ("| NO |" in md) == (not beats)
