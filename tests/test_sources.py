"""Real-data loaders on ../shared/data: the published counts, and the rules each loader documents."""

from __future__ import annotations

import json

import pytest

from rm_lab import sources
from rm_lab.schema import validate_frame

ROOT = sources.data_root()
pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not ROOT.is_dir(), reason=f"real data folder {ROOT} is missing (set RM_LAB_DATA)"),
]


def need(folder: str):
    p = ROOT / folder
    if not p.is_dir():
        pytest.skip(f"{p} is missing")
    return p


@pytest.fixture(scope="module")
def convai2():
    return sources.convai2.load(need("convai2"))


def test_sources_mapping():
    assert set(sources.SOURCES) == {"upworthy", "convai2", "ifeval", "predictive-engagement"}


def test_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("RM_LAB_DATA", str(tmp_path))
    assert sources.data_root() == tmp_path
    assert sources.data_root("x") == sources.Path("x")
    monkeypatch.delenv("RM_LAB_DATA")
    assert sources.data_root() == (sources.PROJECT_ROOT.parent / "shared" / "data").resolve()


def test_upworthy():
    r = sources.upworthy.load(need("upworthy"))
    arms = r["ab_arm"]
    assert len(arms) == 19_414
    assert arms["experiment_id"].nunique() == 4_216
    assert (arms.groupby("experiment_id")["is_control"].sum() == 1).all()
    assert not arms.duplicated(["experiment_id", "arm"]).any()
    assert (arms["days"] == 1).all() and arms["day"].isna().all()
    assert {"lede", "excerpt", "test_week", "eyecatcher_id", "significance", "winner"} <= set(arms.columns)
    assert arms["users"].sum() > 0 and (arms["engaged_users"] <= arms["users"]).all()
    validate_frame(arms, "ab_arm")
    # the first package of each test in file order is the control
    first = arms.sort_values("source_row").drop_duplicates("experiment_id")
    assert first["is_control"].all()
    # stable ids: a second load gives the same arms
    again = sources.upworthy.load(need("upworthy"), limit=5)["ab_arm"]
    assert again["arm"].tolist() == arms[arms["experiment_id"].isin(again["experiment_id"])]["arm"].tolist()
    assert again["experiment_id"].nunique() == 5


def test_convai2_counts(convai2):
    d = convai2["dialogues"]
    assert (d["source_file"] == "data_intermediate.json").sum() == 291
    assert d["source_file"].str.startswith("export_2018-07-0").sum() == 3_005
    assert d["source_file"].nunique() == 5
    inter = convai2["interaction"]
    assert inter["thumb"].notna().sum() == 439
    assert (inter["thumb"] == 1).sum() == 186 and (inter["thumb"] == -1).sum() == 253
    assert (inter.loc[inter["thumb"].notna(), "source_file"] == "data_intermediate.json").all()
    exports = d[d["source_file"] != "data_intermediate.json"]
    assert exports["eval_score"].notna().sum() == 2_919
    assert exports["profile_match"].notna().sum() == 2_888
    assert exports["has_profile"].sum() == 2_140
    assert d["n_turns"].sum() - d.loc[d["source_file"] == "data_intermediate.json", "n_turns"].sum() == 38_529


def test_convai2_rules(convai2):
    d, inter, ctx = convai2["dialogues"], convai2["interaction"], convai2["context"]
    # every dialogue either yields interactions or is listed as dropped
    dropped = convai2["dropped"]
    assert len(dropped) == (d["n_bot_turns"] == 0).sum()
    assert d["n_bot_turns"].sum() == len(inter) == len(ctx)
    assert set(inter["context_id"]) == set(ctx["context_id"])
    # roles: explicit in the intermediate file, inferred in the exports
    inter_rules = d.loc[d["source_file"] == "data_intermediate.json", "bot_rule"]
    assert (inter_rules == "sender_class").all()
    exp = d[d["source_file"] != "data_intermediate.json"]
    assert set(exp["bot_rule"]) == {"profile_overlap", "default_participant2"}
    assert (exp.loc[~exp["has_profile"], "bot_sender"] == "participant2").all()
    overlap = exp[exp["bot_rule"] == "profile_overlap"]
    p1 = overlap["bot_sender"] == "participant1"
    assert (overlap.loc[p1, "overlap_p1"] > overlap.loc[p1, "overlap_p2"]).all()
    assert 0 < p1.sum() < 0.1 * len(overlap)  # participant2 is usually the bot
    # continued <=> a later human turn; a bot turn that ends the dialogue never continues
    assert ((inter["depth"] > 0) == inter["continued"]).all()
    n_turns = inter["dialogue_id"].map(d.set_index("dialogue_id")["n_turns"])
    last = inter["turn_id"] == n_turns - 1
    assert last.sum() > 0 and not inter.loc[last, "continued"].any()
    assert 0.5 < inter["continued"].mean() < 1
    assert inter["eval_score"].dropna().between(1, 5).all()
    assert set(inter["profile_match"].dropna().unique()) <= {0, 1}
    assert ctx["traffic"].eq("user").all()
    roles = {t["role"] for h in ctx["history"].head(2000) for t in h}
    assert roles <= {"user", "assistant"}
    chars = convai2["character"]
    assert set(ctx["character_id"]) <= set(chars["character_id"])


def test_ifeval():
    r = sources.ifeval.load(need("ifeval"))
    p = r["prompts"]
    assert len(p) == 541 and p["instruction_id_list"].map(len).sum() == 834
    assert len(r["responses"]) == 541
    assert (~r["responses"]["prompt_matches"]).sum() == 1  # one response was written for another wording
    v = r["verdicts"]
    assert v["key"].nunique() == 540 and len(v) == 832
    per_prompt = v.drop_duplicates("key")
    assert per_prompt["follow_all_strict"].sum() == 415 and v["followed_strict"].sum() == 695
    assert per_prompt["follow_all_loose"].sum() == 431 and v["followed_loose"].sum() == 713
    s = r["steer_label"]
    assert len(s) == 832 and s["followed"].sum() == 695 and not s["violation"].any()
    assert s["kwargs_json"].map(json.loads).map(type).eq(dict).all()
    assert set(s["context_id"]) <= set(p["key"].astype(str))
    assert len(r["dropped"]) == 1 and r["dropped"]["reason"].iloc[0] == "no reference verdict"
    assert set(p["instruction_id_list"].explode()) and p["instruction_id_list"].explode().nunique() == 25


def test_predictive_engagement():
    r = sources.predictive_engagement.load(need("predictive_engagement"))
    e = r["engagement"]
    assert len(e) == 1_800
    assert e["human_score"].dtype == float and e["human_score"].between(1, 5).all()
    for c in ("Ruber_Unref_Score", "CTX_Unref_Score", "Eng_Score_MeanPooling", "Eng_Score_MaxPooling"):
        assert e[c].dtype == float and e[c].notna().all()
    assert e["pair_id"].nunique() == 600 and e["annotator"].max() == 2
    u = r["engagement_utt"]
    assert len(u) == 297 and set(u["engaged"].unique()) == {True, False}
    assert (u["response"] == "").sum() == 3  # kept: empty replies were rated too
    ctx = r["context"]
    assert set(e["context_id"]) | set(u["context_id"]) == set(ctx["context_id"])
    assert ctx["history"].map(len).eq(1).all()


def test_limit():
    assert len(sources.load("ifeval", need("ifeval"), limit=3)["prompts"]) == 3
    assert sources.load("convai2", need("convai2"), limit=10)["dialogues"].shape[0] == 10
    assert len(sources.load("predictive-engagement", need("predictive_engagement"), limit=4)["engagement"]) == 4
