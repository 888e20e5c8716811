"""The head registry and declared heads: ordinal and gaussian heads against reference fits of the same
model on the same features (statsmodels OrderedModel, OLS), the negative-binomial loss against scipy,
clear errors for declared heads, saving/loading declared heads, multi-source training, and
ingest predictive-engagement -> train-rm -> eval-rm through the real CLI."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from rm_helpers import tiny_world
from typer.testing import CliRunner

from rm_lab import io
from rm_lab.cli import app
from rm_lab.config import ConfigError
from rm_lab.reward.data import build_reward_data, read_sources, resolve_heads
from rm_lab.reward.heads import BUILTIN, HeadSpec, declare, spec_of
from rm_lab.reward.model import (RewardModel, RewardNet, multitask_loss, negbin_nll, ordered_cuts,
                                 ordinal_log_probs)
from rm_lab.reward.train import TrainRMConfig, UnitCollator, train_reward_model
from rm_lab.schema import RecordError, Records

runner = CliRunner()


def _say(_):
    pass


# ---------------------------------------------------------------------------------------- registry

def test_builtin_heads_are_registry_entries():
    assert list(BUILTIN)[:2] == ["preference", "continue"]
    assert spec_of("preference").likelihood == "bradley_terry" and spec_of("preference").out == "score"
    up, down = spec_of("thumb_up"), spec_of("thumb_down")
    assert (up.record, up.col, up.equals, up.out) == ("interaction", "thumb", 1, "p_thumb_up")
    assert down.equals == -1 and spec_of("depth").likelihood == "poisson" and spec_of("depth").link == "log"
    assert spec_of("followed").record == "steer_label"
    with pytest.raises(ConfigError, match="'likes'"):
        spec_of("likes")


def test_declarations_are_checked():
    s = declare("engaging", {"column": "human_score", "kind": "ordinal", "levels": 5})
    assert (s.likelihood, s.record, s.col, s.levels, s.min, s.max, s.link) == \
        ("ordinal", "label", "human_score", 5, 1.0, 5.0, "cumulative_logit")
    assert s.outputs() == ["engaging", "engaging_p_ge_2", "engaging_p_ge_3", "engaging_p_ge_4", "engaging_p_ge_5"]
    assert declare("r", {"kind": "ordinal", "min": 0, "max": 6}).levels == 7
    nb = declare("depth", {"kind": "negative_binomial"}, base=BUILTIN["depth"])  # a built-in's likelihood swapped
    assert (nb.record, nb.col, nb.out) == ("interaction", "depth", "depth")
    for bad, match in [({"kind": "ordinal"}, "levels >= 2"), ({"kind": "logistic"}, "expected one of"),
                       ({"kind": "ordinal", "levels": 5, "max": 7}, "disagrees"),
                       ({"kind": "gaussian", "levels": 3}, "levels is for ordinal"),
                       ({"kind": "binomial", "colour": "red"}, "unknown key"),
                       ({"kind": "gaussian", "scale": -1.0}, "scale"),
                       ({"kind": "ordinal", "levels": 2.5}, "an integer")]:
        with pytest.raises(ConfigError, match=match):
            declare("x", bad)
    with pytest.raises(ConfigError, match="letters"):
        declare("bad name", {"kind": "binomial"})
    with pytest.raises(ConfigError, match="hidden truth"):
        declare("cheat", {"kind": "gaussian", "record": "interaction", "column": "truth_engagement"})
    assert HeadSpec.from_json(s.to_json()) == s


# ---------------------------------------------------------------------------------------- losses

def test_ordinal_log_probs_are_a_distribution_and_cuts_stay_ordered():
    raw = torch.tensor([0.3, -4.0, 2.0, 0.0])
    cuts = ordered_cuts(raw)
    assert torch.all(cuts[1:] > cuts[:-1])
    eta = torch.tensor([-3.0, 0.0, 1.5, 30.0], dtype=torch.float64)
    lp = ordinal_log_probs(eta, cuts.double())
    assert torch.allclose(lp.exp().sum(1), torch.ones(4, dtype=torch.float64), atol=1e-12)
    c = cuts.double()
    cdf = torch.sigmoid(c[None, :] - eta[:, None])
    direct = torch.diff(torch.cat([torch.zeros(4, 1), cdf, torch.ones(4, 1)], 1), dim=1)
    assert torch.allclose(lp[:3].exp(), direct[:3], atol=1e-12)
    assert torch.isfinite(lp).all()  # eta = 30: the low levels' log-probabilities stay finite


def test_negative_binomial_nll_matches_scipy():
    from scipy import stats

    mu, alpha = torch.tensor([2.0, 0.5, 7.0]), torch.tensor(0.4)
    y, n = torch.tensor([3.0, 0.0, 20.0]), torch.tensor([1.0, 1.0, 3.0])  # row 3: the total of 3 draws
    r = 1 / 0.4
    want = -(stats.nbinom.logpmf(3, r, r / (r + 2.0)) + stats.nbinom.logpmf(0, r, r / (r + 0.5))
             + stats.nbinom.logpmf(20, 3 * r, r / (r + 7.0)))
    const = sum(math.lgamma(v + 1) for v in (3, 0, 20))  # the loss leaves out log y!
    got = negbin_nll(torch.log(mu), torch.log(alpha), y, n).item() * 5
    assert got == pytest.approx(want - const, abs=1e-4)


# ---------------------------------------------------------------------------------------- reference fits

def _label_records(values: list[list[float]], name: str) -> Records:
    """One context per item, with one or more label values each."""
    ctx = pd.DataFrame({"context_id": [f"c{i}" for i in range(len(values))], "character_id": "ch",
                        "history": [[{"role": "user", "content": "hi"}] for _ in values], "traffic": "user"})
    rows = [{"context_id": f"c{i}", "response": "r", "name": name, "value": float(v)}
            for i, vs in enumerate(values) for v in vs]
    char = pd.DataFrame([{"character_id": "ch", "name": "C", "persona": [], "instructions": []}])
    return Records({"character": char, "context": ctx, "label": pd.DataFrame(rows)})


def _fit_full_batch(spec: HeadSpec, data, X: np.ndarray) -> RewardNet:
    """The head as a linear model on fixed features X (no trunk, no style), full-batch L-BFGS, float64."""
    torch.manual_seed(0)
    net = RewardNet(X.shape[1], [spec], n_style=0, n_layers=0).double()
    data.items["feat_row"] = np.arange(len(data.items))
    net.init_heads(data.items)
    col = UnitCollator(data, torch.tensor(X), np.zeros((len(X), 0)), data.heads)
    batch = {k: (v.double() if torch.is_tensor(v) and v.is_floating_point() else v)
             for k, v in col(list(range(col.n_units))).items()}
    opt = torch.optim.LBFGS(net.parameters(), lr=1, max_iter=2000, tolerance_grad=1e-12, tolerance_change=1e-15,
                            history_size=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss, _ = multitask_loss(net(batch["emb"], batch["style"]), batch, None, net)
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    return net


def test_ordinal_head_matches_statsmodels_ordered_model():
    from statsmodels.miscmodels.ordinal_model import OrderedModel

    rng = np.random.default_rng(0)
    n, beta, cuts = 600, np.array([1.2, -0.7, 0.4]), np.array([-1.0, 0.3, 1.8])
    X = rng.normal(size=(n, 3))
    u = rng.logistic(size=n)
    y = 1 + (X @ beta + u > cuts[:, None]).sum(0)  # levels 1..4 under P(Y <= j) = sigmoid(cut_j - x.beta)
    data = build_reward_data(_label_records([[v] for v in y], "grade"),
                             {"grade": {"kind": "ordinal", "levels": 4}})
    assert data.heads == ["grade"] and data.spec("grade").levels == 4
    net = _fit_full_batch(data.spec("grade"), data, X)
    ours_beta = net.heads["grade"].weight.detach().numpy()[0]
    ours_cuts = net.head_params("grade")["cuts"].detach().numpy()

    res = OrderedModel(y, X, distr="logit").fit(method="newton", maxiter=200, disp=False)
    assert res.mle_retvals["converged"]
    ref_beta = res.params[:3]
    ref_cuts = res.model.transform_threshold_params(res.params)[1:-1]
    np.testing.assert_allclose(ours_beta, ref_beta, atol=1e-3)
    np.testing.assert_allclose(ours_cuts, ref_cuts, atol=1e-3)
    assert np.all(np.abs(ours_beta - beta) < 0.3)  # and both recover the generating model

    # the outputs: expected level and P(level >= v) from the same cut-points
    eta = X @ ours_beta
    out = data.spec("grade").transform(eta, {"cuts": ours_cuts})
    p_ge = 1 / (1 + np.exp(ours_cuts[None, :] - eta[:, None]))
    np.testing.assert_allclose(out["grade_p_ge_2"], p_ge[:, 0])
    np.testing.assert_allclose(out["grade"], 1 + p_ge.sum(1))


def test_gaussian_head_matches_ols_with_repeated_values():
    rng = np.random.default_rng(1)
    n = 300
    X = rng.normal(size=(n, 2))
    reps = rng.integers(1, 4, size=n)  # 1-3 values per item: aggregated into mean and m2, exactly
    values = [list(40.0 + X[i] @ [3.0, -2.0] + rng.normal(0, 1.5, size=r)) for i, r in enumerate(reps)]
    data = build_reward_data(_label_records(values, "y"), {"y": {"kind": "gaussian"}})
    assert data.items["y_n"].sum() == reps.sum()
    net = _fit_full_batch(data.spec("y"), data, X)
    p = {k: v.detach().numpy() for k, v in net.head_params("y").items()}
    w, b = net.heads["y"].weight.detach().numpy()[0], net.heads["y"].bias.item()
    coef, icpt = p["spread"] * w, p["loc"] + p["spread"] * b  # the head predicts the standardised target

    Xe = np.repeat(np.c_[X, np.ones(n)], reps, axis=0)
    ye = np.concatenate(values)
    ref, rss, *_ = np.linalg.lstsq(Xe, ye, rcond=None)
    np.testing.assert_allclose(np.r_[coef, icpt], ref, atol=1e-3)
    sigma = p["spread"] * np.exp(p["log_sigma"])
    assert sigma == pytest.approx(math.sqrt(rss[0] / len(ye)), abs=1e-3)  # the ML scale
    out = data.spec("y").transform(X @ w + b, p)["y"]
    np.testing.assert_allclose(out, np.c_[X, np.ones(n)] @ ref, atol=1e-3)


# ---------------------------------------------------------------------------------------- declared-head errors

def _folder(tmp: Path, frames: dict) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    for kind, df in frames.items():
        io.write_records(df, tmp / f"{kind}.parquet", kind)
    return tmp


def test_declared_head_errors_name_file_row_and_field(tmp_path):
    base = _label_records([[4.0], [2.0], [5.0]], "engaging")
    folder = _folder(tmp_path / "d", base.frames)
    src = read_sources(folder)
    ordinal = {"kind": "ordinal", "levels": 5}
    # no labels: the column it reads is not there; the message names the file and what it holds
    with pytest.raises(ConfigError, match=r"\['engaging'\] declared.*human_score.*label\.parquet.*\['engaging'\]"):
        build_reward_data(src, {"engaging": {**ordinal, "column": "human_score"}})
    # levels outside the declared range: file, row and field of the first bad rating
    with pytest.raises(RecordError) as e:
        build_reward_data(src, {"engaging": {"kind": "ordinal", "levels": 4}})
    assert e.value.row == 2 and e.value.field == "value" and "label.parquet" in str(e.value)
    assert "[1, 4]" in str(e.value)
    # a non-integer level
    lab = base["label"].copy()
    lab.loc[1, "value"] = 2.5
    with pytest.raises(RecordError, match="row 1.*'value'.*integer level"):
        build_reward_data(read_sources(_folder(tmp_path / "e", {**base.frames, "label": lab})), {"engaging": ordinal})
    # a scale that disagrees with the declared range
    lab = base["label"].assign(scale_min=1.0, scale_max=7.0)
    with pytest.raises(RecordError, match="row 0.*'scale_max'.*declared range"):
        build_reward_data(read_sources(_folder(tmp_path / "f", {**base.frames, "label": lab})), {"engaging": ordinal})
    # a column of the wrong type: a head over the interactions' text column
    w = tiny_world(0, 6)
    wf = _folder(tmp_path / "w", w.frames)
    with pytest.raises(RecordError) as e:
        build_reward_data(read_sources(wf), {"policy_grade": {"kind": "ordinal", "levels": 3, "record": "interaction",
                                                              "column": "policy"}})
    assert e.value.field == "policy" and e.value.row == 0 and "interaction.parquet" in str(e.value)
    assert "a finite number" in str(e.value)
    # a binomial head over a graded label
    with pytest.raises(RecordError, match="row 0.*0/1"):
        build_reward_data(src, {"engaging": {"kind": "binomial"}})
    # an undeclared name
    with pytest.raises(ConfigError, match="not a built-in head"):
        build_reward_data(src, {"vibes": None})


def test_train_rm_cli_reports_a_bad_declaration_in_one_line(tmp_path, runs_dir):
    """The real entry point, as a user runs it: exit status 2 and one `error:` line, no traceback."""
    import os
    import subprocess
    import sys

    folder = _folder(tmp_path / "d", _label_records([[4.0], [9.0]], "engaging").frames)
    p = subprocess.run([sys.executable, "-m", "rm_lab.cli", "train-rm", f"data={folder}",
                        "heads={engaging: {kind: ordinal, levels: 5}}"], capture_output=True, text=True,
                       env={**os.environ, "RM_LAB_RUNS": str(runs_dir), "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in p.stderr, p.stderr
    assert "label.parquet" in lines[0] and "row 1" in lines[0] and "'value'" in lines[0] and "[1, 5]" in lines[0]


# ---------------------------------------------------------------------------------------- train, save, load

def _cfg(backbone, tmp, **kw) -> TrainRMConfig:
    base = dict(backbone=str(backbone), epochs=2, hidden=16, batch_size=16, cache_dir=str(tmp / "cache"),
                val_fraction=0.25, max_length=64, pairwise=False)
    base.update(kw)
    return TrainRMConfig(**base)


def _world_with_grades(seed: int = 0) -> Records:
    """A tiny world plus graded and continuous labels of its interactions (the dataset declares `grade`)."""
    w = tiny_world(seed, 24)
    it = w["interaction"]
    lab = pd.DataFrame({"context_id": it["context_id"], "response": it["response"], "name": "grade",
                        "value": (1 + np.arange(len(it)) % 3).astype(float), "scale_min": 1.0, "scale_max": 3.0})
    cont = pd.DataFrame({"context_id": it["context_id"], "response": it["response"], "name": "minutes",
                         "value": 10.0 + 5.0 * np.sin(np.arange(len(it)))})
    lab = pd.concat([lab, cont], ignore_index=True)
    head = pd.DataFrame([{"name": "grade", "kind": "ordinal", "levels": 3}])
    return Records({**w.frames, "label": lab, "head": head})


def test_declared_heads_train_save_and_load(backbone, tmp_path):
    rec = _world_with_grades()
    cfg = _cfg(backbone, tmp_path, heads={"depth": {"kind": "negative_binomial"}, "minutes": {"kind": "gaussian"}},
               loss_weights={"grade": 2.0})
    m = train_reward_model(cfg, tmp_path / "run", records=rec, say=_say)
    assert {"preference", "continue", "grade", "depth", "minutes"} <= set(m["heads"])
    rmc = json.loads((tmp_path / "run" / "rm_config.json").read_text())
    assert rmc["head_specs"]["grade"]["likelihood"] == "ordinal" and rmc["head_specs"]["grade"]["levels"] == 3
    assert rmc["head_specs"]["depth"]["likelihood"] == "negative_binomial"
    rm = RewardModel.load(tmp_path / "run", tmp_path / "cache")
    assert rm.specs["grade"].likelihood == "ordinal" and rm.specs["minutes"].likelihood == "gaussian"
    ctx = rec["context"].set_index("context_id").loc[rec["interaction"]["context_id"]].reset_index()
    out = rm.score(ctx, rec["interaction"]["response"].tolist(), rec["character"])
    assert set(rm.outputs()) <= set(out)
    assert np.all((out["grade"] >= 1) & (out["grade"] <= 3))
    assert np.all(out["grade_p_ge_2"] >= out["grade_p_ge_3"])
    assert np.all(out["depth"] > 0) and np.isfinite(out["minutes"]).all()
    # the cut-points were trained and saved (not left at their start)
    state = rm.members[0].state_dict()
    assert "extras.grade.raw_cuts" in state and "extras.depth.log_alpha" in state
    # a model from before declared heads (no head_specs in rm_config.json) still loads as built-in heads
    old = tmp_path / "old"
    train_reward_model(_cfg(backbone, tmp_path, heads=["preference", "continue"]), old, records=rec, say=_say)
    raw = json.loads((old / "rm_config.json").read_text())
    raw.pop("head_specs")
    (old / "rm_config.json").write_text(json.dumps(raw))
    assert [s.likelihood for s in RewardModel.load(old).specs.values()] == ["bradley_terry", "binomial"]
    with pytest.raises(ConfigError, match="loss_weights.*no trained head.*'nope'"):
        train_reward_model(_cfg(backbone, tmp_path, loss_weights={"nope": 1.0}), tmp_path / "x", records=rec, say=_say)


# ---------------------------------------------------------------------------------------- multi-source

def test_multi_source_per_source_heads_and_id_collisions(backbone, tmp_path, runs_dir):
    a = _folder(tmp_path / "world_a", tiny_world(0, 24).frames)
    wb = _world_with_grades(1).frames  # another world: its characters renamed, as their cards differ from a's
    wb["character"] = wb["character"].assign(character_id="b-" + wb["character"]["character_id"])
    wb["context"] = wb["context"].assign(character_id="b-" + wb["context"]["character_id"])
    b = _folder(tmp_path / "world_b", wb)
    sources = read_sources([a, b])
    assert [s.name for s in sources] == ["world_a", "world_b"]
    heads = {spec.name: spec for spec, _ in resolve_heads(sources)}
    # both label `continue`: one head per source; one preference head (the RL reward) for both; `grade` only in b
    assert {"continue@world_a", "continue@world_b", "preference", "grade"} <= set(heads)
    assert "continue" not in heads and heads["continue@world_b"].out == "p_continue@world_b"
    data = build_reward_data(sources)
    b_items = data.items["context_id"].str.startswith("ctx-1-").to_numpy()
    assert data.items.loc[b_items, "continue@world_a_n"].sum() == 0  # b's rows never supervise a's head
    assert data.items.loc[~b_items, "continue@world_b_n"].sum() == 0 and data.items.loc[~b_items, "grade_n"].sum() == 0
    assert data.items.loc[b_items, "continue@world_b_n"].sum() == len(tiny_world(1, 24)["interaction"])
    # the masked loss: a batch of b's items has no part for a's head
    net = RewardNet(4, [data.spec(h) for h in data.heads], n_style=0, n_layers=0)
    data.items["feat_row"] = np.arange(len(data.items))
    only_b = data.subset(data.items.loc[b_items, "context_id"].unique())
    col = UnitCollator(only_b, torch.randn(len(data.items), 4), np.zeros((len(data.items), 0)),
                       [h for h in data.heads if h != "preference"])
    batch = col(list(range(col.n_units)))
    _, parts = multitask_loss(net(batch["emb"], batch["style"]), batch, None, net)
    assert "continue@world_b" in parts and "grade" in parts and "continue@world_a" not in parts

    # train and evaluate on both through the CLI: one model, every head reported
    res = runner.invoke(app, ["train-rm", f"data=[{a}, {b}]", f"backbone={backbone}", "epochs=2", "hidden=16",
                              "max_length=64", "pairwise=false", f"cache_dir={tmp_path / 'cache'}",
                              "loss_weights={continue: 0.5}"])
    assert res.exit_code == 0, res.output
    run = next((runs_dir / "train-rm").iterdir())
    rmc = json.loads((run / "rm_config.json").read_text())
    assert rmc["head_specs"]["continue@world_a"]["source"] == "world_a"
    res = runner.invoke(app, ["eval-rm", f"model={run}", f"data=[{a}, {b}]", "split=all", "n_counterfactual=8",
                              f"cache_dir={tmp_path / 'cache'}"])
    assert res.exit_code == 0, res.output
    m = json.loads((next((runs_dir / "eval-rm").iterdir()) / "metrics.json").read_text())
    assert "raw" in m["continue@world_a"] and "raw" in m["continue@world_b"]
    assert m["grade"]["likelihood"] == "ordinal" and {"spearman", "kendall_tau", "mae"} <= set(m["grade"])

    # ids that two sources use for different records are an error naming both (b before its renaming)
    with pytest.raises(RecordError, match=r"world_b2.*character\.parquet.*character_id.*world_a"):
        from rm_lab.reward.data import merge_sources

        merge_sources(read_sources([a, _folder(tmp_path / "world_b2", _world_with_grades(1).frames)]))
    clash = tiny_world(0, 24).frames
    ctx = clash["context"].copy()
    ctx.loc[0, "history"] = [[{"role": "user", "content": "something else entirely"}]]
    c = _folder(tmp_path / "clash", {**clash, "context": ctx})
    with pytest.raises(RecordError, match=r"clash.*context\.parquet.*row 0.*context_id.*world_a"):
        from rm_lab.reward.data import merge_sources

        merge_sources(read_sources([a, c]))


# ---------------------------------------------------------------------------------------- real data, real CLI

@pytest.mark.models
def test_ingest_predictive_engagement_then_train_and_eval(shared_data, tmp_path, runs_dir):
    """A user's path with no adapter: the ratings arrive as `engaging` labels, train the declared ordinal head
    by name, and eval-rm reports it with rank metrics (packaged MiniLM, the first 240 ratings)."""
    res = runner.invoke(app, ["ingest", "predictive-engagement", str(shared_data / "predictive_engagement"),
                              "limit=240"])
    assert res.exit_code == 0, res.output
    ing = next((runs_dir / "ingest").iterdir())
    heads = pd.read_parquet(ing / "head.parquet")
    assert heads.set_index("name").loc["engaging", "kind"] == "ordinal"
    lab = pd.read_parquet(ing / "label.parquet")
    assert set(lab["name"]) == {"engaging", "engaged"} and lab.loc[lab["name"] == "engaging", "value"].between(1, 5).all()
    res = runner.invoke(app, ["train-rm", f"data={ing}", "epochs=3", "hidden=32", "pairwise=false",
                              f"cache_dir={tmp_path / 'cache'}"])
    assert res.exit_code == 0, res.output
    run = next((runs_dir / "train-rm").iterdir())
    # the first 240 rows hold no two rated replies to one query, so no preference pair: the declared heads only
    assert json.loads((run / "rm_config.json").read_text())["heads"] == ["engaging", "engaged"]
    res = runner.invoke(app, ["eval-rm", f"model={run}", f"data={ing}", f"cache_dir={tmp_path / 'cache'}",
                              "n_counterfactual=16"])
    assert res.exit_code == 0, res.output
    assert "engaging (ordinal, 5 levels): Spearman" in res.output
    m = json.loads((next((runs_dir / "eval-rm").iterdir()) / "metrics.json").read_text())
    e = m["engaging"]
    assert e["n"] > 0 and -1 <= e["spearman"] <= 1 and 0 <= e["mae"] <= 4 and e["log_loss"] > 0
