"""Out-of-fold scoring through the user path (rm_lab.reward.crossval): folds over whole conversations,
training sides that never see a held-out context, every row scored once by a model that did not train on it."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from rm_helpers import tiny_world

from rm_lab.config import ConfigError
from rm_lab.reward import crossval
from rm_lab.reward.train import TrainRMConfig


def _with_conversations(world):
    """Tiny-world contexts grouped two by two into conversations."""
    ctx = world["context"].copy()
    ids = sorted(ctx["context_id"].unique())
    conv = {c: f"conv{i // 2}" for i, c in enumerate(ids)}
    ctx["conversation_id"] = ctx["context_id"].map(conv)
    return type(world)({**world.frames, "context": ctx}), conv


def test_context_folds_keep_conversations_whole_and_subset_filters_every_labelled_frame():
    world, conv = _with_conversations(tiny_world(seed=1, n=40))
    f = crossval.context_folds(world["context"], 4, seed=3)
    assert set(f.index) == set(world["context"]["context_id"])
    by_conv = pd.DataFrame({"conv": f.index.map(conv), "fold": f.to_numpy()})
    assert (by_conv.groupby("conv")["fold"].nunique() == 1).all() and set(f) == {0, 1, 2, 3}
    by_ctx = crossval.context_folds(world["context"], 4, seed=3, by="context")
    assert not by_ctx.equals(f)  # the grouping matters
    keep = f.index[f.to_numpy() != 0]
    sub = crossval.subset_records(world, keep)
    for name, df in sub.frames.items():
        if "context_id" in df.columns and name not in crossval.KEPT_WHOLE:
            assert set(df["context_id"]) <= set(keep), name
            assert len(df) == world[name]["context_id"].isin(set(keep)).sum(), name
    assert sub["character"].equals(world["character"])


def test_cross_validate_scores_each_row_out_of_fold(backbone, tmp_path, monkeypatch):
    world, _ = _with_conversations(tiny_world(seed=2, n=40))
    cfg = TrainRMConfig(backbone=str(backbone), epochs=1, hidden=16, batch_size=32, pairwise=False, max_length=64,
                        cache_dir=str(tmp_path / "cache"), val_fraction=0.0, heads=["continue"])
    seen = []
    real = crossval.train_and_score

    def spy(cfg, train, score_on, rows, work, say=lambda *_: None, reuse=False):
        seen.append((set(train["context"]["context_id"]), set(rows["context_id"])))
        return real(cfg, train, score_on, rows, work, say)

    monkeypatch.setattr(crossval, "train_and_score", spy)
    rows = world["interaction"][["context_id", "response"]].drop_duplicates().reset_index(drop=True)
    out, fold, info = crossval.cross_validate(cfg, world, rows, tmp_path / "cv", k=3, seed=0)
    assert len(seen) == 3 and [i["fold"] for i in info] == [0, 1, 2]
    for train_ctx, test_ctx in seen:
        assert train_ctx and test_ctx and train_ctx.isdisjoint(test_ctx)
    assert out.index.equals(rows.index) and np.isfinite(out["p_continue"]).all()
    assert sum(i["n_rows"] for i in info) == len(rows) and set(fold) == {0, 1, 2}
    part, _, info1 = crossval.cross_validate(cfg, world, rows, tmp_path / "cv1", k=3, seed=0, only=[1])
    assert part["p_continue"].notna().to_numpy().tolist() == (fold == 1).tolist()  # other folds stay empty
    assert np.allclose(part.loc[fold == 1, "p_continue"], out.loc[fold == 1, "p_continue"])  # same fit, same scores
    bad = pd.DataFrame({"context_id": ["nope"], "response": ["hi"]})
    with pytest.raises(ValueError, match="'nope' is not in the context records"):
        crossval.cross_validate(cfg, world, bad, tmp_path / "cv2", k=3)


def test_fold_metric_pools_and_averages_folds():
    y = np.array([0, 1, 0, 1, 0, 1, 1, 1])
    s = np.array([0.1, 0.9, 0.2, 0.8, 0.9, 0.1, 0.5, 0.6])
    fold = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    m = crossval.fold_metric(y, s, fold, "auc")
    assert m["per_fold"][0] == 1.0 and m["per_fold"][1] == 0.0 and np.isnan(m["per_fold"][2])  # one class: no AUC
    assert m["fold_mean"] == 0.5 and m["n"] == 8
    only = crossval.fold_metric(y, s, fold, "auc", folds=[0])
    assert only["pooled"] == 1.0 and only["n"] == 4
    assert crossval.fold_metric([1, 2, 3, 4], [4, 3, 2, 1], [0, 0, 1, 1], "spearman")["pooled"] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="metric 'mae'"):
        crossval.fold_metric(y, s, fold, "mae")


def test_as_source_tags_frames_for_multi_source_training():
    world = tiny_world(seed=3, n=10)
    src = crossval.as_source("world", world)
    assert src.name == "world" and all((df["_source"] == "world").all() for df in src.records.frames.values())
    assert "_source" not in world["context"].columns  # the caller's frames are untouched


def test_mean_by_averages_scores_per_dialogue_and_refuses_mixed_labels():
    ev = pd.DataFrame({"dialogue": ["a", "a", "b"], "y": [1, 1, 0], "fold": [0, 0, 1], "s": [1.0, 3.0, -1.0]})
    out = crossval.mean_by(ev, "dialogue", ["s"])
    assert out.to_dict("list") == {"dialogue": ["a", "b"], "y": [1, 0], "fold": [0, 1], "s": [2.0, -1.0]}
    with pytest.raises(ValueError, match=r"\['y'\] differ within one dialogue"):
        crossval.mean_by(ev.assign(y=[1, 0, 0]), "dialogue", ["s"])


def test_cross_validate_reuses_given_folds(backbone, tmp_path):
    world, _ = _with_conversations(tiny_world(seed=4, n=30))
    cfg = TrainRMConfig(backbone=str(backbone), epochs=1, hidden=16, batch_size=32, pairwise=False, max_length=64,
                        cache_dir=str(tmp_path / "cache"), val_fraction=0.0, heads=["continue"])
    full = crossval.context_folds(world["context"], 3, seed=5)
    part = crossval.subset_records(world, full.index[:20])  # part of the data, scored on the folds of all of it
    rows = part["interaction"][["context_id", "response"]].drop_duplicates().reset_index(drop=True)
    _, fold, _ = crossval.cross_validate(cfg, part, rows, tmp_path / "cv", k=3, fold_of=full)
    assert (fold.to_numpy() == rows["context_id"].map(full).to_numpy()).all()


def test_reuse_reloads_a_finished_fold_and_refuses_another_config(backbone, tmp_path, monkeypatch):
    world, _ = _with_conversations(tiny_world(seed=4, n=24))
    cfg = TrainRMConfig(backbone=str(backbone), epochs=1, hidden=16, batch_size=32, pairwise=False, max_length=64,
                        cache_dir=str(tmp_path / "cache"), val_fraction=0.0, heads=["continue"])
    rows = world["interaction"][["context_id", "response"]].drop_duplicates().reset_index(drop=True)
    first, _, _ = crossval.cross_validate(cfg, world, rows, tmp_path / "cv", k=2, only=[0], reuse=True)
    from rm_lab.reward import train as train_mod

    def no_training(*a, **k):
        raise AssertionError("a finished fold was trained again")

    monkeypatch.setattr(train_mod, "_fit", no_training)
    again, _, _ = crossval.cross_validate(cfg, world, rows, tmp_path / "cv", k=2, only=[0], reuse=True)
    pd.testing.assert_frame_equal(first, again)
    with pytest.raises(ConfigError, match="other settings"):  # a fold folder never serves another config
        crossval.cross_validate(replace(cfg, hidden=8), world, rows, tmp_path / "cv", k=2, only=[0], reuse=True)


def test_a_training_side_with_an_empty_preference_frame_still_splits():
    """Regression: a fold whose training side keeps the preference frame with no rows gave object-typed pair
    indices, and RewardData.subset (the held-out split) failed on them with an IndexError."""
    from rm_lab.reward.data import build_reward_data

    world = tiny_world(seed=5, n=12)
    empty = type(world)({**world.frames, "preference": world["preference"].iloc[:0]})
    data = build_reward_data(empty, ["continue"])
    assert data.pairs["chosen"].dtype.kind == "i" and len(data.pairs) == 0
    assert len(data.subset([]).items) == 0 and len(data.subset(world["context"]["context_id"]).items) == len(data.items)


# ---------------------------------------------------------------------------------------- speed without drift

def test_frozen_training_and_refit_run_on_one_thread_with_unchanged_scores(backbone, tmp_path):
    """The heads' small ops run single-threaded (rm_lab.reward.threads): a thread team waiting at its barrier for
    a descheduled peer made a ConvAI2 fold take 21 minutes. The scores are those of a multi-threaded run."""
    import lightning as L
    import torch

    from rm_lab.reward import threads

    seen = []

    class Spy(L.Callback):
        def on_train_batch_start(self, *a):
            seen.append(torch.get_num_threads())

    world = tiny_world(seed=4, n=30)
    cfg = TrainRMConfig(backbone=str(backbone), epochs=2, hidden=16, batch_size=16, pairwise=False, max_length=64,
                        cache_dir=str(tmp_path / "cache"), val_fraction=0.0, heads=["continue", "preference"],
                        head_refit=True, refit_folds=2)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        from rm_lab.reward.model import RewardModel
        from rm_lab.reward.train import train_reward_model

        train_reward_model(cfg, tmp_path / "a", records=world, callbacks=[Spy()], say=lambda *_: None)
        assert seen and set(seen) == {1} and torch.get_num_threads() == 2  # restored after the fit
        rows = world["interaction"][["context_id", "response"]].drop_duplicates().reset_index(drop=True)
        a = crossval.score_rows(RewardModel.load(tmp_path / "a", tmp_path / "cache"), world, rows)
        real = threads.single_thread
        try:  # the same training with the limit switched off
            threads_off = lambda enabled=True: real(False)  # noqa: E731
            import rm_lab.reward.train as T

            T.single_thread = threads_off
            train_reward_model(cfg, tmp_path / "b", records=world, say=lambda *_: None)
        finally:
            T.single_thread = real
        b = crossval.score_rows(RewardModel.load(tmp_path / "b", tmp_path / "cache"), world, rows)
    finally:
        torch.set_num_threads(before)
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=0, atol=1e-6)


def test_context_texts_are_formatted_once_and_as_format_inputs_formats_them(backbone, monkeypatch):
    """Every fold's training side and every scoring call format the same contexts: the second time reads the
    memo, and the memo's text is exactly `format_inputs`'s."""
    from rm_lab.models import load_encoder
    from rm_lab.reward import data, inputs

    tok, _ = load_encoder(str(backbone))
    cards = ["a pirate who loves maps", "a chef"] * 2
    hists = [f"user: {'tell me more about the sea ' * 40} {i}" for i in range(4)]
    direct = data.format_inputs(cards, hists, [""] * 4, tok, 64, 16, 0)
    calls = []
    real = data.format_inputs
    monkeypatch.setattr(data, "format_inputs", lambda c, *a, **k: calls.append(len(c)) or real(c, *a, **k))
    monkeypatch.setattr(inputs, "_CONTEXT_TEXTS", inputs._TextMemo(size=3))
    assert inputs.context_texts(cards, hists, tok, 64, 16) == direct and calls == [4]
    assert inputs.context_texts(cards[:2], hists[:2], tok, 64, 16) == direct[:2]
    assert calls == [4, 1]  # the bound (3) dropped the oldest: recomputed, not read stale
    assert inputs.context_texts(cards[:2], hists[:2], tok, 64, 16) == direct[:2] and calls == [4, 1]
    assert inputs.context_texts(cards[:2], hists[:2], tok, 32, 16) != direct[:2]  # budgets are part of the key
