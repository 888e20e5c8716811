"""rm_lab.curate: each step on hand-made records with exact counts, then the `curate` command on a
small simulated run."""
from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from rm_lab import config as cfgmod, io
from rm_lab.curate import dedup as D, diversity as V, pairs as P, scrub as S
from rm_lab.curate.pipeline import CurateConfig, curate, load_folder
from rm_lab.schema import RecordError, Records, validate_frame


# ---------------------------------------------------------------------------------------------- scrub

@pytest.mark.parametrize("text,expected,counts", [
    ("mail me at john.doe+x@mail.example.co.uk or @jdoe_99!", "mail me at [EMAIL] or [HANDLE]!",
     {"email": 1, "handle": 1}),
    ("see https://x.com/@bob?a=1. ok", "see [URL]. ok", {"url": 1}),
    ("www.foo.org/bar, then", "[URL], then", {"url": 1}),
    ("call (555) 123-4567 or +44 20 7946 0958 or 555-1234", "call [PHONE] or [PHONE] or [PHONE]", {"phone": 3}),
    ("tel 555.123.4567 and 5551234567", "tel [PHONE] and [PHONE]", {"phone": 2}),
    ("on 2024-05-17 at 12:30 it costs $1,234.50; 3 of 4; year 1999, id 12345678", None, {}),
    ("ahoy @ sea, 16:9, 1.234.567 and a@b", None, {}),
])
def test_scrub_text(text, expected, counts):
    out, c = S.scrub_text(text)
    assert out == (text if expected is None else expected)
    assert dict(c) == counts


def _records() -> Records:
    char = pd.DataFrame({"character_id": ["pirate", "chef"], "name": ["Captain Salt", "Chef Rosa"],
                         "persona": [["a pirate"], ["a chef"]], "instructions": [[], []]})
    ctx = pd.DataFrame({
        "context_id": [f"c{i}" for i in range(7)],
        "character_id": ["pirate", "pirate", "pirate", "chef", "chef", "chef", "chef"],
        "history": [[{"role": "user", "content": "hi, I am bob@example.com"}],
                    [{"role": "user", "content": "hi, I am bob@example.com"}],
                    [{"role": "user", "content": "tell me about the sea"}],
                    [{"role": "user", "content": "what should I cook tonight?"}],
                    [{"role": "user", "content": "what should I cook tonight?"}],
                    [{"role": "user", "content": "any dessert ideas?"}],
                    [{"role": "user", "content": "a bare prompt, ping @rosa_fan"}]],
        "traffic": ["user", "user", "internal", "user", "internal", "user", "user"],
    })
    inter = pd.DataFrame({
        "context_id": ["c0", "c1", "c2", "c3"],
        # c1 repeats c0 exactly once scrubbed and normalised (same character): removed
        "response": ["Ahoy! Call me at 555-123-4567, matey.", "ahoy!  call me at (555) 123-4567 matey",
                     "The sea is wide and deep, matey.", "Try a risotto with mushrooms tonight!"],
        "policy": ["p"] * 4, "continued": [True, False, True, True],
    })
    pref = pd.DataFrame({
        "context_id": ["c4", "c5", "c5"],
        "chosen": ["Pasta with garlic and a little lemon, simple and quick.", "Tiramisu! 😊😊😊",
                   "A fruit tart with berries and cream would be lovely tonight, honestly."],
        "rejected": ["Soup with bread and a bit of cheese, simple and warm.", "Cheesecake.",
                     "Cake."],
        "source": ["human"] * 3,
    })
    steer = pd.DataFrame({"context_id": ["c0", "c1", "c2"],
                          "response": ["Ahoy! Call me at 555-123-4567, matey.", "ahoy!  call me at (555) 123-4567 matey",
                                       "The sea is wide and deep, matey."],
                          "instruction_id": ["x", "x", "x"], "followed": [True, True, False],
                          "violation": [False, False, True]})
    frames = {"character": char, "context": ctx, "interaction": inter, "preference": pref, "steer_label": steer}
    return Records({k: validate_frame(v, k) for k, v in frames.items()})


def test_scrub_frames_counts_per_kind_and_field():
    frames, rep = S.scrub_frames(_records().frames)
    assert rep["replaced"] == {"url": 0, "email": 2, "phone": 4, "handle": 1}
    assert rep["by_field"]["context.history"] == {"url": 0, "email": 2, "phone": 0, "handle": 1, "rows_changed": 3}
    assert rep["by_field"]["interaction.response"]["phone"] == 2
    assert rep["by_field"]["steer_label.response"]["rows_changed"] == 2
    assert frames["context"]["history"][0][0]["content"] == "hi, I am [EMAIL]"
    assert frames["interaction"]["response"][0] == "Ahoy! Call me at [PHONE], matey."
    assert _records()["context"]["history"][0][0]["content"] == "hi, I am bob@example.com"  # input untouched


# ---------------------------------------------------------------------------------------------- dedup

def test_dedup_exact_near_threshold_and_groups():
    texts = [
        "Hello there, how are you doing today?",
        "hello there how are you doing   today",  # exact after normalisation
        "Hello there, how are you doing today my friend?",  # 5 of 7 shingles shared: Jaccard 5/7
        "Completely different words about ships and the open sea",
        "Hello there, how are you doing today? 😊",  # emoji are kept: a near copy (5/6), not exact
    ]
    keep, rep = D.dedup_texts(texts, threshold=0.8)
    assert keep.tolist() == [True, False, True, True, False]
    assert (rep["exact_duplicates"], rep["near_duplicates"], rep["n_after"]) == (1, 1, 3)
    keep, rep = D.dedup_texts(texts, threshold=0.7)
    assert keep.tolist() == [True, False, False, True, False]
    assert (rep["exact_duplicates"], rep["near_duplicates"]) == (1, 2)
    keep, rep = D.dedup_texts(texts, threshold=1.0)  # exact only
    assert keep.tolist() == [True, False, True, True, True]
    keep, _ = D.dedup_texts(texts[:2], groups=["pirate", "chef"])  # different characters: both kept
    assert keep.tolist() == [True, True]
    assert D.jaccard(D.shingles(texts[0]), D.shingles(texts[2])) == pytest.approx(5 / 7)


def test_dedup_is_greedy_without_chaining():
    a = " ".join(f"w{i}" for i in range(20))
    b = " ".join(f"w{i}" for i in range(2, 22))  # ~0.8 with a
    c = " ".join(f"w{i}" for i in range(4, 24))  # ~0.8 with b, ~0.64 with a
    keep, rep = D.dedup_texts([a, b, c], threshold=0.75)
    assert keep.tolist() == [True, False, True]
    assert rep["lsh_miss_probability_at_threshold"] < 1e-4


# ---------------------------------------------------------------------------------------------- pairs

def test_pair_filter_exact_counts():
    prefs = pd.DataFrame({
        "chosen": ["one two three four", "one two", "one two three", "hi there", "hi 😊😊😊 a b c d e f",
                   "😊😊😊"],
        "rejected": ["a b c d", "a b c d e", "a b c d e f", "hello you 😊😊😊", "hi", "ok"],
    })
    # ratios: 1, 2.5, 2 (kept at the limit), 1 (emoji diff 3), 7 and diff 3 (both), 1/0 words -> 1 (diff 3)
    keep, rep = P.pair_filter(prefs, max_length_ratio=2.0, max_emoji_diff=2)
    assert keep.tolist() == [True, False, True, False, False, False]
    assert (rep["dropped_length_only"], rep["dropped_emoji_only"], rep["dropped_both"]) == (1, 2, 1)
    assert (rep["n_before"], rep["n_after"], rep["removed"]) == (6, 2, 4)
    keep, rep = P.pair_filter(prefs, max_length_ratio=0, max_emoji_diff=-1)
    assert keep.all() and rep["removed"] == 0


# ---------------------------------------------------------------------------------------------- diversity

def test_even_allocation():
    assert V.even_allocation([1, 5, 10], 9).tolist() == [1, 4, 4]
    assert V.even_allocation([1, 5, 10], 10).tolist() == [1, 4, 5]
    assert V.even_allocation([1, 5, 10], 100).tolist() == [1, 5, 10]
    assert V.even_allocation([4, 4, 4], 7).tolist() in ([2, 2, 3], [3, 2, 2], [2, 3, 2])
    assert V.even_allocation([4, 4, 4], 7).sum() == 7


def _blobs():
    rng = np.random.default_rng(0)
    centres = np.array([[10.0, 0.0], [0.0, 10.0], [-10.0, -10.0]])
    sizes = [100, 20, 5]
    emb = np.vstack([c + rng.normal(0, 0.3, (s, 2)) for c, s in zip(centres, sizes)])
    truth = np.repeat([0, 1, 2], sizes)
    return emb, truth


def test_diversity_sample_is_even_across_clusters():
    emb, truth = _blobs()
    sel, rep = V.diversity_sample(emb, 30, n_clusters=3, seed=0)
    assert len(sel) == 30 and len(np.unique(sel)) == 30
    assert sorted(np.bincount(truth[sel]).tolist()) == [5, 12, 13]
    assert rep["per_stratum"]["all"] == {"available": 125, "target": 30, "selected": 30, "shortfall": 0,
                                         "clusters": 3, "clusters_sampled": 3}
    sel2, _ = V.diversity_sample(emb, 30, n_clusters=3, seed=0)
    assert sel.tolist() == sel2.tolist()


def test_diversity_sample_stratified_to_a_mix_with_shortfall():
    emb, truth = _blobs()
    strata = np.where(np.arange(len(emb)) % 25 == 0, "internal", "user")  # 5 internal, 120 user
    sel, rep = V.diversity_sample(emb, 20, strata, {"internal": 0.5, "user": 0.5}, n_clusters=3)
    assert rep["per_stratum"]["internal"] == {"available": 5, "target": 10, "selected": 5, "shortfall": 5,
                                              "clusters": 2, "clusters_sampled": 2}
    assert rep["per_stratum"]["user"]["selected"] == 10
    assert (strata[sel] == "internal").sum() == 5 and len(sel) == 15
    sel, rep = V.diversity_sample(emb, 20, strata, {"user": 1.0}, n_clusters=3)
    assert rep["excluded_by_mix"] == 5 and (strata[sel] == "user").all() and len(sel) == 20


def test_tfidf_embeddings_cluster_templated_text():
    texts = [f"ahoy matey the ship sails at dawn {i}" for i in range(10)] + \
            [f"preheat the oven and whisk the eggs {i}" for i in range(10)]
    emb, used = V.embed_texts(texts, "tfidf", dim=8)
    assert used == "tfidf" and emb.shape[0] == 20
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    labels = V.cluster(emb, 2, seed=0)
    assert len(set(labels[:10])) == 1 and len(set(labels[10:])) == 1 and labels[0] != labels[10]


# ---------------------------------------------------------------------------------------------- pipeline

def test_curate_pipeline_on_hand_made_records():
    cfg = CurateConfig(embedding="tfidf")
    out, rep = curate(_records(), cfg)
    assert rep["steps"]["dedup"]["interaction"]["exact_duplicates"] == 1  # c1 repeats c0 once scrubbed
    assert rep["steps"]["dedup"]["preference"]["n_after"] == 3
    assert rep["steps"]["pair_filter"]["dropped_emoji_only"] == 1  # Tiramisu 😊😊😊 vs no emoji
    assert rep["steps"]["pair_filter"]["dropped_length_only"] == 1  # 12 words vs 1
    assert out["interaction"]["context_id"].tolist() == ["c0", "c2", "c3"]
    assert out["preference"]["context_id"].tolist() == ["c4"]
    # contexts follow their items (c1 and c5 lose theirs); the bare prompt c6 is an item of its own
    assert out["context"]["context_id"].tolist() == ["c0", "c2", "c3", "c4", "c6"]
    assert out["context"]["history"][4][0]["content"] == "a bare prompt, ping [HANDLE]"
    assert out["steer_label"]["context_id"].tolist() == ["c0", "c2"]
    assert rep["cascade"] == {"context_removed_as_items": 0, "context_removed_with_items": 2, "steer_label_removed": 1}
    assert rep["output"] == {"character": 2, "context": 5, "interaction": 3, "preference": 1, "steer_label": 2}
    assert "diversity" not in rep["steps"]
    off = CurateConfig(scrub=False, dedup=False, pair_filter=False)
    out, rep = curate(_records(), off)
    assert rep["output"] == rep["input"]


def test_curate_config_validation_and_shipped_yaml():
    cfg = cfgmod.load(CurateConfig, "curate", ["input=x", "sample_size.interaction=50"])
    assert cfg.sample_size["interaction"] == 50 and cfg.sample_size["preference"] == 1000
    assert cfgmod.schema_for("configs/curate.yaml") is CurateConfig
    for bad in (["traffic_mix={internal: 0.5, user: 0.6}"], ["traffic_mix={bots: 1.0}"],
                ["sample_size={steer_label: 5}"], ["near_duplicate_threshold=0"], ["minhash_permutations=6"],
                ["embedding=bert"]):
        with pytest.raises(cfgmod.ConfigError):
            cfgmod.load(CurateConfig, None, bad)


def test_load_folder_errors(tmp_path):
    with pytest.raises(RecordError, match="files named <kind>.parquet"):
        load_folder(tmp_path)
    io.write_records(_records()["interaction"], tmp_path / "interaction.jsonl", "interaction")
    assert load_folder(tmp_path).counts() == {"interaction": 4}


# ---------------------------------------------------------------------------------------------- CLI

def test_curate_cli_on_a_simulated_run(tmp_path, monkeypatch):
    from rm_lab.cli import app

    monkeypatch.setenv("RM_LAB_RUNS", str(tmp_path))
    runner = CliRunner()
    res = runner.invoke(app, ["simulate", "n_contexts=400", "n_preference_contexts=400", "n_characters=6"])
    assert res.exit_code == 0, res.output
    (sim,) = list((tmp_path / "simulate").iterdir())
    res = runner.invoke(app, ["curate", f"input={sim.name}", "embedding=tfidf", "n_clusters=6",
                              "sample_size={interaction: 150, preference: 60}",
                              "traffic_mix={internal: 0.4, user: 0.6}"])
    assert res.exit_code == 0, res.output
    (cur,) = list((tmp_path / "curate").iterdir())
    rep = json.loads((cur / "report.json").read_text())
    assert rep["input"]["interaction"] == 400 and rep["output"]["interaction"] == 150
    div = rep["steps"]["diversity"]["interaction"]
    assert div["embedding"] == "tfidf"
    assert div["per_stratum"]["internal"]["selected"] == 60 and div["per_stratum"]["user"]["selected"] == 90
    assert rep["output"]["preference"] <= 60
    inter = io.read_records(cur / "interaction.parquet", "interaction")
    ctx = io.read_records(cur / "context.parquet", "context")
    assert len(inter) == 150 and set(inter["context_id"]) <= set(ctx["context_id"])
    assert "truth_engagement" in inter.columns  # extra columns travel along
    assert (ctx.set_index("context_id").loc[inter["context_id"], "traffic"] == "internal").sum() == 60
    assert "| pair filter | preference |" in (cur / "report.md").read_text()
    # the output folder is itself valid curate input
    res = runner.invoke(app, ["curate", f"input={cur}", "diversity=false"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["curate", "input=no-such-run"])
    assert res.exit_code != 0 and isinstance(res.exception, RecordError)
