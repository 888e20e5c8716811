"""Real-data splits and the figure scripts: folds by query (Predictive Engagement) and by dialogue (ConvAI2)
that never leak, and the pipelines run as a user runs them (subprocess, tiny settings)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rm_lab import sources
from rm_lab.reward import crossval, folds
from rm_lab.reward.metrics import spearman

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.realdata
def test_pe_folds_by_query_keep_every_rating_of_a_query_together(shared_data):
    recs = sources.load("predictive-engagement", shared_data / "predictive_engagement")
    f = crossval.context_folds(recs["context"], 5, seed=0, by="context")
    eng = recs["engagement"].assign(fold=lambda d: d["context_id"].map(f))
    assert eng["fold"].notna().all()
    assert folds.leak_report(eng, ["context_id", "query"]) == {"context_id": 0, "query": 0}
    sizes = f.value_counts()  # every query of the records (rated or judged 0/1) is dealt, one fold each
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == recs["context"]["context_id"].nunique()
    lab = recs["label"]
    assert set(lab.loc[lab["name"] == "engaging", "context_id"]) <= set(f.index)


@pytest.mark.realdata
def test_convai2_folds_by_dialogue_never_split_a_dialogue(shared_data):
    recs = sources.load("convai2", shared_data / "convai2")
    ctx = recs["context"]
    it = recs["interaction"].drop_duplicates("context_id").set_index("context_id")
    conv = ctx.set_index("context_id")["conversation_id"]
    assert conv.notna().all() and (conv.loc[it.index] == it["dialogue_id"]).all()  # a context names its dialogue
    f = crossval.context_folds(ctx, 5, seed=0, by="conversation")
    rows = recs["interaction"].assign(fold=lambda d: d["context_id"].map(f))
    assert folds.leak_report(rows, ["dialogue_id"]) == {"dialogue_id": 0}
    train = crossval.subset_records(recs, f.index[f.to_numpy() != 0])
    held = set(f.index[f.to_numpy() == 0])
    for kind in ("context", "interaction", "label"):
        if kind in train:
            assert held and set(train[kind]["context_id"]).isdisjoint(held), kind
    # persona content words are the characters' keywords, so the persona_hits style feature counts them
    chars = recs["character"].set_index("character_id")
    some = chars[chars["persona"].map(len) > 0].iloc[0]
    assert some["keywords"] and all(w in " ".join(some["persona"]).lower() for w in some["keywords"])
    assert "i" not in some["keywords"] and "the" not in some["keywords"]


def _run(script: str, args: list[str], tmp_path: Path, timeout: int = 3000) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RM_LAB_CACHE": str(tmp_path / "cache")}
    md, js = tmp_path / "r.md", tmp_path / "r.json"
    proc = subprocess.run([sys.executable, str(ROOT / "pipelines" / script), *args, "--out-md", str(md),
                           "--out-json", str(js)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"md": md.read_text(), "json": json.loads(js.read_text())}


@pytest.mark.realdata
@pytest.mark.models
@pytest.mark.slow
def test_realdata_pipeline_pe_one_fold_through_ingest_and_train_rm(shared_data, tmp_path):
    out = _run("rm_realdata.py", ["--pe", "--data", str(shared_data), "--only-folds", "0", "--limit", "600",
                                  "--pe-rm", "epochs=5"], tmp_path)
    pe = out["json"]["pe"]
    assert pe["leaks"] == {"context_id": 0} and pe["settings"][-1] == "epochs=5"
    assert list(pe["spearman"]["ours"]["per_fold"]) == ["0"] and pe["folds"][0]["fold"] == 0
    # the peer column is the authors' own score on the same rows, not something we fit
    recs = sources.load("predictive-engagement", shared_data / "predictive_engagement", limit=600)
    f = crossval.context_folds(recs["context"], 5, seed=0, by="context")
    e = recs["engagement"][recs["engagement"]["context_id"].map(f) == 0]
    assert pe["rows"] == len(e)
    assert pe["spearman"]["Eng_Score_MeanPooling"]["pooled"] == pytest.approx(
        spearman(e["Eng_Score_MeanPooling"], e["human_score"]))
    assert np.isfinite(pe["spearman"]["ours"]["pooled"]) and "| **rm_lab `engaging`** (expected rating) |" in out["md"]


@pytest.mark.realdata
@pytest.mark.models
@pytest.mark.slow
def test_transfer_pipeline_runs_both_ways_with_baselines_from_the_source(shared_data, tmp_path):
    from rm_lab.reward.text_baselines import TextBaseline

    out = _run("rm_transfer.py", ["--data", str(shared_data), "--limit", "40", "--folds", "2", "epochs=2"], tmp_path)
    res = out["json"]
    t, ms = res["transfer"], res["multi_source"]
    assert res["settings"][-1] == "epochs=2" and "inputs=[relevance]" in res["settings"]  # no source-specific view
    for lab in ("thumb_up", "rating_ge_4"):
        assert {"ours", "length", "tfidf"} == set(t["pe_to_convai2"][lab])
        assert all(0 <= v["pooled"] <= 1 for v in t["pe_to_convai2"][lab].values())
        assert set(ms["convai2"][lab]) == {"convai2_only", "both", "pe_only"}
    assert set(t["convai2_to_pe"]) == {"thumb_up", "rating", "continue"}
    assert set(ms["pe"]) == {"pe_only", "both", "convai2_only"}
    # each source's heads fit in the joint model as in the source's own model (tests/test_multisource_heads.py)
    for m, own in [(ms["pe"], "pe_only")] + [(ms["convai2"][lab], "convai2_only") for lab in ("thumb_up", "rating_ge_4")]:
        assert m["both"]["per_fold"] == pytest.approx(m[own]["per_fold"], abs=1e-9, nan_ok=True)
    # the ConvAI2 -> PE length baseline is fitted on ConvAI2's thumbs and scored on PE's rated replies
    c2 = sources.load("convai2", shared_data / "convai2", limit=40)["interaction"]
    th = c2[c2["thumb"].notna()]
    pe = sources.load("predictive-engagement", shared_data / "predictive_engagement", limit=40)["engagement"]
    b = TextBaseline("length", "binary").fit(th["response"], (th["thumb"] == 1).astype(float))
    assert t["convai2_to_pe"]["thumb_up"]["length"]["pooled"] == pytest.approx(
        spearman(b.score(pe["response"]), pe["human_score"]))
    assert "## One source -> the other" in out["md"] and "## Both sources at once vs one" in out["md"]
