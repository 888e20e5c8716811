"""The explorer (`apps/landscape.py`, `rm_lab explore`) and its library (`rm_lab.explore`), on a runs folder
made here: a tiny simulate, train-rm (2 members, tiny encoder), eval-rm, calibrate and evaluate through the
CLI, and a best-of-n-shaped samples run scored by the same library function best-of-n uses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from rm_lab.cli import app
from rm_lab.config import ConfigError

pytestmark = pytest.mark.models
runner = CliRunner()
APP = str(Path(__file__).resolve().parent.parent / "apps" / "landscape.py")


def _ok(args):
    res = runner.invoke(app, args)
    assert res.exit_code == 0, (args[0], res.output[-2000:], res.exception)
    return res


def _only(root: Path, kind: str) -> Path:
    (run,) = sorted((root / kind).iterdir())
    return run


def _write_samples(root: Path, model: Path, sim: Path) -> Path:
    """A best-of-n run folder: two replies per context (a preference pair), scored and picked by
    `score_samples` with the model's scorer, the world's truth beside them."""
    from rm_lab import io
    from rm_lab.policy.objectives.best_of_n import load_scorer, score_report, score_samples, world_truth
    from rm_lab.runs import Run

    from rm_lab.reward.data import read_record_folder

    recs = read_record_folder(sim)
    pr = recs["preference"].head(5)
    ctx = recs["context"].set_index("context_id").loc[pr["context_id"]].reset_index()
    chars = recs["character"]
    scorer = load_scorer(str(model))
    samples = score_samples(ctx, [[a, b] for a, b in zip(pr["chosen"], pr["rejected"])], chars, scorer.outputs)
    samples["truth_engagement"] = world_truth(samples["response"], ctx.loc[ctx.index.repeat(2)].reset_index(drop=True),
                                              chars, 1)
    run = Run("best-of-n", {"model": str(model), "n": 2}, root=root)
    with io.atomic_path(run.file("samples.parquet")) as tmp:
        samples.to_parquet(tmp, index=False)
    io.write_json(run.file("report.json"), {"n": 2, "n_contexts": len(ctx), "scores": score_report(samples)})
    run.finish()
    return run.path


@pytest.fixture(scope="module", autouse=True)
def map_cache(tmp_path_factory):
    """The explorer's scored-map cache in a temporary folder (not the user's cache)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("RM_LAB_EXPLORE_CACHE", str(tmp_path_factory.mktemp("explore_cache")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def runs(backbone, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    mp = pytest.MonkeyPatch()
    mp.setenv("RM_LAB_RUNS", str(root))
    mp.setenv("HF_HUB_OFFLINE", "1")
    try:
        _ok(["simulate", "seed=3", "n_characters=4", "n_contexts=24", "n_preference_contexts=24"])
        sim = _only(root, "simulate")
        _ok(["train-rm", f"data={sim}", f"backbone={backbone}", "cache_dir=run", "n_ensemble=2", "epochs=1",
             "pairwise=false", "hidden=16", "batch_size=16", "max_length=64"])
        model = _only(root, "train-rm")
        _ok(["eval-rm", f"model={model}", f"data={sim}", "split=all", "n_counterfactual=4"])
        _ok(["calibrate", f"model={model}", "n_characters=4", "n_tests=8", "offline_contexts=16",
             "quality_contexts=60", "eligible_users=3000", "jitter=0.1"])
        _ok(["evaluate", f"model={model}", "n_contexts=8", "eligible_users=20000"])
        _write_samples(root, model, sim)
    finally:
        mp.undo()
    return root


@pytest.fixture(scope="module")
def land(runs):
    from rm_lab.explore import landscape as L

    return L.load_landscape(runs, L.train_runs(runs)[0])


# ----------------------------------------------------------------------------------------------
# library

def test_paths_outside_the_runs_folder_are_refused(tmp_path):
    from rm_lab.explore import paths

    root = tmp_path / "runs"
    (root / "simulate" / "a").mkdir(parents=True)
    assert paths.inside(root, "simulate/a") == (root / "simulate" / "a").resolve()
    for bad in ("/etc", "../", "simulate/../../x", str(tmp_path)):
        with pytest.raises(paths.OutsideRunsFolder, match="outside the runs folder"):
            paths.inside(root, bad)
    (root / "link").symlink_to(tmp_path)  # a symlink that leaves the runs folder is outside too
    with pytest.raises(paths.OutsideRunsFolder):
        paths.run_folder(root, "link")
    with pytest.raises(ConfigError, match="does not exist"):
        paths.runs_folder(tmp_path / "nope")


def test_style_edits_set_exactly_the_feature():
    from rm_lab.explore.edits import set_emoji, set_length, set_list, set_question
    from rm_lab.features.style import style_features as f

    t = "Hey there! I love hiking 😊. Do you like it?"
    for k in (0, 1, 4):
        assert f(set_emoji(t, k))["n_emoji"] == k
    assert "hiking." in set_emoji(t, 0)
    for n in (3, 9, 40):
        assert f(set_length(t, n))["n_words"] == n
    assert f(set_question(t, 0))["ends_with_question"] == 0 and f(set_question(t, 1))["ends_with_question"] == 1
    assert f(set_question("Fine.", 1))["ends_with_question"] == 1
    assert f(set_list(t, 1))["has_list"] == 1 and f(set_list(set_list(t, 1), 0))["has_list"] == 0
    assert f(set_list("one short line", 1))["has_list"] == 1


def test_runs_table_and_side_by_side(runs):
    from rm_lab.explore import runs as R

    table = R.runs_table(runs)
    assert {"simulate", "train-rm", "eval-rm", "calibrate", "evaluate", "best-of-n"} <= set(table["kind"])
    assert (table["status"] == "done").all()
    sim = table.loc[table["kind"] == "simulate", "run_id"].iloc[0]
    tr = table.loc[table["kind"] == "train-rm", "run_id"].iloc[0]
    df = R.compare(runs, sim, tr).set_index("key")
    assert df.loc["config/n_ensemble", f"A: {sim}"] == "" and df.loc["config/n_ensemble", f"B: {tr}"] == "2"
    assert df.loc["config/n_ensemble", "differs"]
    same = R.compare(runs, tr, tr)
    assert not same["differs"].any() and any(k.startswith("metric/") for k in same["key"])
    with pytest.raises(ConfigError, match="not in"):
        R.run_record(runs, "no-such-run")
    assert R.runs_table(runs / "simulate").empty  # no registry there: an empty table, none created
    assert not (runs / "simulate" / "registry.sqlite").exists()


def test_landscape_points_heads_uncertainty_and_truth(runs, land):
    sim = _only(runs, "simulate")
    from rm_lab.reward.data import read_record_folder

    it = read_record_folder(sim)["interaction"]
    pts = land.points
    assert len(pts) == len(pts.drop_duplicates(["context_id", "response"])) and len(pts) >= len(it.drop_duplicates(
        ["context_id", "response"]))
    assert np.isfinite(pts[["x", "y"]].to_numpy()).all() and pts["x"].std() > 0
    assert land.colours[0] == "score" and {"p_continue", "uncertainty", "truth"} <= set(land.colours)
    assert (pts["uncertainty"] > 0).all()  # two members disagree somewhere everywhere
    # the truth the map shows is the world's own, as logged at simulation time
    logged = it.drop_duplicates(["context_id", "response"]).merge(pts, on=["context_id", "response"])
    assert len(logged) > 10
    np.testing.assert_allclose(logged["truth"], logged["truth_engagement"], rtol=1e-6)
    # the scores are the model's: the same as RewardModel.score on those rows
    sc = land.model.score(land.contexts.head(6), pts["response"].head(6).tolist(), land.characters)
    np.testing.assert_allclose(pts["score"].head(6), sc["score"], rtol=1e-4, atol=1e-5)


def test_style_sweep_sets_the_feature_and_follows_the_truth(land):
    from rm_lab.explore import landscape as L

    cache_dir = next(land.folder.glob("embed_cache/*"))
    shards = sorted(cache_dir.iterdir())
    sw = L.style_sweep(land, "emoji", [0, 2, 6], n_replies=16)
    assert list(sw["feature_mean"]) == [0, 2, 6] and (sw["n"] == 16).all()
    t = sw.set_index("level")["truth"]
    assert t[2] > t[6]  # the world: moderate emoji help most users, many hurt
    assert {"score_change", "truth_change", "ensemble_sd", "train_share"} <= set(sw.columns)
    assert 0 <= sw["train_share"].min() and sw["train_share"].max() <= 1
    q = L.style_sweep(land, "questions", n_replies=8)
    assert list(q["feature_mean"]) == [0, 1]
    assert sorted(cache_dir.iterdir()) == shards  # the explorer never writes into a run folder's cache
    with pytest.raises(ConfigError, match="expected one of"):
        L.style_sweep(land, "sarcasm")


def test_landscape_refuses_data_outside_and_unfinished_runs(runs, tmp_path):
    from rm_lab.explore import landscape as L

    with pytest.raises(ConfigError, match="no finished reward model"):
        L.train_run(runs, _only(runs, "simulate"))
    with pytest.raises(ConfigError, match="outside the runs folder"):
        L.train_run(runs, tmp_path)


def test_calibration_and_head_reliability(runs):
    from rm_lab.explore import calibration as C

    view = C.calibration_view(runs, C.calibrate_runs(runs)[0])
    t = view["experiments"]
    assert len(t) == 8 and (t["observed_low"] < t["observed_lift"]).all()
    assert (t["observed_lift"] < t["observed_high"]).all()
    assert {"loo_pred", "loo_low", "loo_high"} <= set(t.columns) and "coverage" in view["reliability"]
    iv = C.interval_of(view["calibration"], float(t[view["calibration"].predictor].median()))
    assert iv["low"] <= iv["lift"] <= iv["high"]
    rel = C.head_reliability(runs, C.eval_runs(runs)[0])
    assert {"continue", "thumb_up"} <= set(rel["table"]["head"]) and rel["table"]["ece"].between(0, 1).all()
    assert rel["plots"] and all(p.suffix == ".png" for p in rel["plots"].values())
    with pytest.raises(ConfigError, match="calibration.json"):
        C.calibration_view(runs, _only(runs, "simulate"))


def test_samples_ranked_by_value(runs):
    from rm_lab.explore import samples as S

    view = S.load_samples(runs, S.sample_runs(runs)[0])
    assert len(view["contexts"]) == 5 and "score" in view["outputs"]
    r = S.ranked(view, view["contexts"][0])
    assert list(r["rank"]) == [1, 2] and r["value"].is_monotonic_decreasing and r["chosen"].iloc[0]
    assert "p_continue" in r and "truth_engagement" in r
    assert set(S.summary(view).columns) == {"output", "picked", "not picked"}
    with pytest.raises(ConfigError, match="no samples"):
        S.ranked(view, "nope")


def _style_samples(n_contexts: int = 30, seed: int = 0) -> pd.DataFrame:
    """Four replies per prompt whose value is 0.3 per emoji plus noise: style explains it, emoji most."""
    rng = np.random.default_rng(seed)
    bodies = ["Sure thing", "I love that idea, tell me more", "Hmm, not sure about that at all my friend", "Ok"]
    rows = []
    for i in range(4 * n_contexts):
        e, q = int(rng.integers(0, 5)), int(rng.integers(0, 2))
        rows.append({"context_id": f"c{i // 4}", "sample": i % 4, "value": 0.3 * e + 0.05 * rng.normal(),
                     "response": bodies[i % 4] + " 😊" * e + (" What do you think?" if q else "."), "chosen": False})
    return pd.DataFrame(rows)


def test_shap_of_the_style_baseline_explains_what_drives_the_score(tmp_path, monkeypatch):
    import warnings

    from rm_lab.explore import attribution as A

    df = _style_samples()
    att = A.fit_attribution(df)
    imp = att.importance()
    assert imp["feature"].iloc[0] == "n_emoji" and imp["direction"].iloc[0] > 0.9  # more emoji, higher value
    assert att.r2_heldout > 0.9
    np.testing.assert_allclose(att.base + att.values.sum(axis=1), att.prediction, atol=1e-9)
    with warnings.catch_warnings():  # the values are shap's own TreeSHAP values
        warnings.simplefilter("ignore")
        import shap

        ref = shap.TreeExplainer(A._fit(att.features, df["value"].to_numpy(), 0)).shap_values(att.features)
    np.testing.assert_allclose(att.values.to_numpy(), ref, atol=1e-9)
    one = att.for_context(df, "c3")
    assert list(one["rank"]) == [1, 2, 3, 4] and one["value"].is_monotonic_decreasing
    assert "shap:n_emoji" in one and np.allclose(one.filter(like="shap:").sum(axis=1) + att.base,
                                                 one["style_prediction"])
    # one fit per run and target: a reopened page reads it back from the explorer's cache
    monkeypatch.setenv("RM_LAB_EXPLORE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "run").mkdir()
    df.to_parquet(tmp_path / "run" / "samples.parquet")
    first = A.run_attribution(tmp_path / "run", df)
    monkeypatch.setattr(A, "_fit", lambda *a, **k: (_ for _ in ()).throw(AssertionError("fitted again")))
    again = A.run_attribution(tmp_path / "run", df)
    pd.testing.assert_frame_equal(again.values, first.values)
    assert again.base == first.base and again.r2_heldout == first.r2_heldout
    with pytest.raises(ConfigError, match="at least 8"):
        A.fit_attribution(df.head(5))
    with pytest.raises(ConfigError, match="numeric column"):
        A.fit_attribution(df, "response")
    with pytest.raises(ConfigError, match="no samples"):
        att.for_context(df, "nope")


def test_generations_from_evaluate_runs(runs):
    from rm_lab.explore import generations as G

    gen = G.generations(runs)
    assert len(gen) == 1 and gen["candidate"].iloc[0] and gen["ceiling"].iloc[0] == 0.65
    wins = [c for c in gen.columns if c.startswith("win_") and not c.endswith(("_low", "_high"))]
    assert wins and all(0 <= gen[c].iloc[0] <= 1 for c in wins)
    assert gen["ab_breadth_low"].iloc[0] <= gen["ab_breadth_lift"].iloc[0] <= gen["ab_breadth_high"].iloc[0]
    long = G.win_rate_long(gen)
    assert len(long) == len(wins) and (long["low"] <= long["rate"]).all()
    assert G.training_histories(runs).empty


def _flywheel_root(tmp_path: Path) -> Path:
    """A runs folder holding one finished flywheel: the recorded 4-generation report."""
    import shutil

    folder = tmp_path / "runs" / "flywheel" / "20261202-000000-abcdef"
    folder.mkdir(parents=True)
    shutil.copy(Path(__file__).parents[1] / "reports" / "flywheel_4gen_spurious" / "report.json", folder)
    return tmp_path / "runs"


def test_flywheel_generations_show_predicted_next_to_measured_and_true(tmp_path):
    from rm_lab.explore import generations as G

    root = _flywheel_root(tmp_path)
    fly = G.flywheel_generations(root)
    assert list(fly["generation"]) == [1, 2, 3, 4] and fly["shipped"].sum() == 1
    assert (fly["predicted_low"] <= fly["predicted_lift"]).all() and (fly["predicted_lift"] <= fly["predicted_high"]).all()
    assert (fly["ab_breadth_low"] <= fly["ab_breadth_lift"]).all() and fly["ab_breadth_true_lift"].notna().all()
    assert fly["ceiling"].eq(0.65).all() and fly["follow_rate"].between(0, 1).all()
    long = G.lift_long(fly)
    assert sorted(long["which"].unique()) == ["measured", "predicted", "true"] and len(long) == 12
    (root / "flywheel" / "20261202-000000-abcdef" / "report.json").write_text('{"generations": 3}')
    with pytest.raises(ConfigError, match="not a flywheel report"):
        G.flywheel_generations(root)


def test_app_generations_page_shows_a_flywheel(tmp_path, monkeypatch):
    at = _app(monkeypatch, _flywheel_root(tmp_path), "Generations")
    assert not at.exception and not _errors(at)
    assert len(at.dataframe[0].value) == 4 and "vega_lite_chart" in _types(at)
    assert any("evaluate" in i.value for i in at.info)  # no evaluate run of its own: that view's empty state


# ----------------------------------------------------------------------------------------------
# the app (streamlit AppTest)

def _walk(node):
    yield node
    for child in getattr(node, "children", {}).values():
        yield from _walk(child)


def _types(at) -> list[str]:
    return [getattr(n, "type", "") for n in _walk(at.main)]


def _app(monkeypatch, root: Path, page: str | None = None):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("RM_LAB_EXPLORE_RUNS", str(root))
    at = AppTest.from_file(APP, default_timeout=300).run()
    if page:
        at.sidebar.radio(key="page").set_value(page).run()
    assert not at.exception, at.exception
    return at


def _errors(at) -> list[str]:
    return [e.value for e in at.error]


def test_app_runs_page(runs, monkeypatch):
    at = _app(monkeypatch, runs)
    assert not _errors(at) and at.header[0].value == "Runs"
    assert len(at.dataframe) == 2 and len(at.dataframe[0].value) == 6  # the registry, then A | B
    at.checkbox(key="only_diff").check().run()
    assert not at.exception and at.dataframe[1].value["differs"].all()


def test_app_landscape_page(runs, monkeypatch):
    at = _app(monkeypatch, runs, "Landscape")
    assert not _errors(at), _errors(at)
    assert _types(at).count("vega_lite_chart") >= 3  # the map, the sweep, the train share
    assert "truth" in at.selectbox(key="colour").options
    at.selectbox(key="colour").set_value("uncertainty").run()
    at.radio(key="edit").set_value("lists").run()
    assert not at.exception and not _errors(at)
    assert list(at.dataframe[-1].value["feature_mean"]) == [0, 1]
    at.sidebar.text_input(key="rm_run_path").set_value("/etc").run()  # outside: refused, one line
    (err,) = _errors(at)
    assert "outside the runs folder" in err and not at.exception


def test_app_calibration_page(runs, monkeypatch):
    at = _app(monkeypatch, runs, "Calibration")
    assert not _errors(at), _errors(at)
    assert "vega_lite_chart" in _types(at) and "image" in _types(at) and len(at.metric) == 1
    assert any("ece" in d.value.columns for d in at.dataframe)


def test_app_samples_and_generations_pages(runs, monkeypatch):
    at = _app(monkeypatch, runs, "Samples")
    assert not _errors(at) and list(at.dataframe[-1].value["rank"]) == [1, 2]
    ranked, shap_table = at.dataframe[-2].value, at.dataframe[-1].value  # the prompt's replies, then their SHAP
    assert list(ranked["response"]) == list(shap_table["response"])
    assert any(c.startswith("shap:") for c in shap_table.columns) and "style_prediction" in shap_table
    assert "score" in at.selectbox(key="shap_target").options and any("SHAP" in h.value for h in at.subheader)
    at.selectbox(key="shap_target").set_value("truth_engagement").run()
    assert not at.exception and not _errors(at) and "truth_engagement" in at.dataframe[-1].value
    at.sidebar.radio(key="page").set_value("Generations").run()
    assert not at.exception and not _errors(at)
    assert "vega_lite_chart" in _types(at) and len(at.dataframe[0].value) == 1
    assert any("train-policy" in i.value for i in at.info)  # no policy training yet: an empty state
    assert any("flywheel" in i.value for i in at.info)  # no flywheel run: its empty state


def test_app_opens_the_page_named_in_its_link(tmp_path, monkeypatch):
    """`?page=Tuning` (what the screenshot script navigates to) selects that page; an unknown name, the first."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("RM_LAB_EXPLORE_RUNS", str(tmp_path))
    for asked, shown in (("Tuning", "Tuning"), ("Samples", "Samples"), ("nope", "Runs")):
        at = AppTest.from_file(APP, default_timeout=300)
        at.query_params["page"] = asked
        at.run()
        assert not at.exception and at.header[0].value == shown, (asked, [h.value for h in at.header])


def test_app_empty_states_and_a_missing_runs_folder(tmp_path, monkeypatch):
    for page in ("Runs", "Landscape", "Calibration", "Samples", "Generations", "Tuning"):
        at = _app(monkeypatch, tmp_path, page)
        assert not _errors(at) and at.info, page
    at = _app(monkeypatch, tmp_path / "missing")
    (err,) = _errors(at)
    assert "does not exist" in err


def test_app_shows_a_damaged_run_as_one_error(tmp_path, monkeypatch):
    bad = tmp_path / "best-of-n" / "r1"
    bad.mkdir(parents=True)
    (bad / "samples.parquet").write_bytes(b"not parquet")
    at = _app(monkeypatch, tmp_path, "Samples")
    (err,) = _errors(at)
    assert "not a readable Parquet file" in err


# ----------------------------------------------------------------------------------------------
# the command

def test_explore_command_binds_to_localhost_unless_told(tmp_path, monkeypatch):
    import subprocess

    from rm_lab.explore.launch import streamlit_argv

    argv = streamlit_argv(tmp_path)
    assert argv[argv.index("--server.address") + 1] == "127.0.0.1" and argv[-1] == str(tmp_path.resolve())
    from streamlit import config as st_config  # no "Deploy" toolbar; an option this Streamlit knows

    assert argv[argv.index("--client.toolbarMode") + 1] == "minimal"
    assert st_config.get_option("client.toolbarMode") in ("auto", "developer", "viewer", "minimal")
    seen = []
    monkeypatch.setattr(subprocess, "call", lambda a, **kw: seen.append(a) or 0)
    res = runner.invoke(app, ["explore", str(tmp_path), "--address", "0.0.0.0", "--port", "8600"])
    assert res.exit_code == 0, res.output
    (a,) = seen
    assert a[a.index("--server.address") + 1] == "0.0.0.0" and a[a.index("--server.port") + 1] == "8600"
    assert a[a.index("run") + 1].endswith("apps/landscape.py")
    for args, msg in ((["explore", str(tmp_path / "nope")], "does not exist"),
                      (["explore", str(tmp_path), "--port", "0"], "--port"),
                      (["explore", str(tmp_path), "--address", "a b"], "--address")):
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and msg in res.output and "Traceback" not in res.output, res.output


# ----------------------------------------------------------------------------------------------
# tuning: study.json as rm_lab.tune.export writes it

def _tune_run(root: Path) -> Path:
    import optuna

    from rm_lab import io
    from rm_lab.runs import Run
    from rm_lab.tune.export import SUMMARY_FILE, write_summary

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial):
        lr, hidden = trial.suggest_float("lr", 1e-4, 1e-2, log=True), trial.suggest_int("hidden", 8, 64)
        if trial.number == 3:
            trial.report(0.0, 0)
            raise optuna.TrialPruned()
        return -abs(np.log10(lr) + 3) + hidden / 1000

    study.optimize(objective, n_trials=6)
    run = Run("tune", {"stage": "train-rm"}, root=root)
    write_summary(run.file(SUMMARY_FILE), study, "spearman_truth", "sqlite://", "train-rm")
    io.write_text(run.file("best.yaml"), "lr: 0.001\nhidden: 32\n")
    run.finish()
    return run.path


def test_tuning_view_and_page(tmp_path, monkeypatch):
    from rm_lab.explore import tuning as T

    folder = _tune_run(tmp_path)
    view = T.study_view(tmp_path, T.tune_runs(tmp_path)[0])
    trials = view["trials"]
    assert len(trials) == 6 and (trials["state"] == "PRUNED").sum() == 1
    assert {"param/lr", "param/hidden"} <= set(trials.columns)
    best = trials.loc[trials["value"].idxmax()]
    assert view["best"]["number"] == best["number"] and view["summary"]["direction"] == "maximize"
    assert set(view["importances"]["parameter"]) <= {"lr", "hidden"}
    at = _app(monkeypatch, tmp_path, "Tuning")
    assert not _errors(at) and len(at.dataframe[0].value) == 6 and "hidden: 32" in at.code[0].value
    (folder / "study.json").write_text("{broken")
    at = _app(monkeypatch, tmp_path, "Tuning")
    (err,) = _errors(at)
    assert "not valid JSON" in err


def test_no_page_unpickles_anything(runs, monkeypatch):
    """Every page's data loads with pickle and torch.load disabled (safetensors, JSON, Parquet, CSV only)."""
    import pickle

    import torch

    from rm_lab.explore import calibration as C, generations as G, landscape as L, samples as S

    def refuse(*a, **k):
        raise AssertionError("the explorer unpickled a file")

    for mod, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(mod, name, refuse)
    land = L.load_landscape(runs, L.train_runs(runs)[0], max_points=20)
    assert len(land.points) == 20
    C.calibration_view(runs, C.calibrate_runs(runs)[0])
    C.head_reliability(runs, C.eval_runs(runs)[0])
    S.load_samples(runs, S.sample_runs(runs)[0])
    assert len(G.generations(runs)) == 1


def test_a_scored_map_reopens_from_the_explorer_cache(runs, land, tmp_path, monkeypatch):
    from rm_lab.explore import landscape as L

    monkeypatch.setenv("RM_LAB_EXPLORE_CACHE", str(tmp_path / "cache"))
    first = L.load_landscape(runs, land.folder, max_points=30, model=land.model)
    (cached,) = L.map_cache_dir().glob("*.parquet")
    calls = []
    real = land.model.score_features
    monkeypatch.setattr(land.model, "score_features", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = L.load_landscape(runs, land.folder, max_points=30, model=land.model)
    assert not calls  # read back, not rescored
    pd.testing.assert_frame_equal(first.points, again.points)
    assert list(again.contexts["context_id"]) == list(again.points["context_id"]) and again.explained == first.explained
    fresh = L.load_landscape(runs, land.folder, max_points=31, model=land.model, cache=False)
    assert calls and len(fresh.points) == 31 and len(list(L.map_cache_dir().glob("*.parquet"))) == 1


def test_read_only_cache_reads_shards_computes_misses_and_writes_nothing(tmp_path):
    from rm_lab.explore.landscape import ReadOnlyCache
    from rm_lab.reward.embed_cache import EmbeddingCache

    emb = lambda ts: np.array([[len(t), 1.0] for t in ts], np.float32)
    EmbeddingCache(tmp_path, "k").get(["aa"], lambda ts: np.array([[9.0, 9.0]] * len(ts), np.float32))
    shards = sorted((tmp_path / "k").iterdir())
    cache = EmbeddingCache(tmp_path, "k")
    assert [v is None for v in cache.lookup(["aa", "bbb"])] == [False, True]
    out = ReadOnlyCache(cache).get(["bbb", "aa", "c"], emb)
    assert out.tolist() == [[3.0, 1.0], [9.0, 9.0], [1.0, 1.0]]
    assert sorted((tmp_path / "k").iterdir()) == shards and cache.lookup(["bbb"]) == [None]
    assert ReadOnlyCache(cache).get([], emb).shape == (0, 0)


def test_a_reopened_map_and_its_sweeps_need_no_model(runs, land, tmp_path, monkeypatch):
    """The Landscape page's first render in a new process: the map and the default sweep come back from the
    explorer's cache, and the model (torch, Lightning: seconds to import) is loaded only for new text."""
    from rm_lab.explore import landscape as L

    monkeypatch.setenv("RM_LAB_EXPLORE_CACHE", str(tmp_path / "cache"))
    first = L.load_landscape(runs, land.folder, max_points=40, model=land.model)
    sw = L.style_sweep(first, "emoji", [0, 2], n_replies=8)

    def refuse(*a, **k):
        raise AssertionError("the reward model was loaded")

    monkeypatch.setattr(L, "load_model", refuse)
    again = L.load_landscape(runs, land.folder, max_points=40)
    assert again._model is None and again.colours == first.colours and again.info["outputs"] == land.model.outputs()
    pd.testing.assert_frame_equal(L.style_sweep(again, "emoji", [0, 2], n_replies=8), sw)
    pd.testing.assert_frame_equal(again.points, first.points)
    with pytest.raises(AssertionError, match="was loaded"):  # a sweep not seen before scores new text
        L.style_sweep(again, "emoji", [0, 3], n_replies=8)
    monkeypatch.undo()
    monkeypatch.setenv("RM_LAB_EXPLORE_CACHE", str(tmp_path / "cache"))
    fresh = L.style_sweep(again, "emoji", [0, 3], n_replies=8)  # loads the model lazily, then scores
    assert list(fresh["feature_mean"]) == [0, 3] and again._model is not None
    (tmp_path / "cache" / f"{first.info['map_key']}.parquet").write_bytes(b"damaged")
    rescored = L.load_landscape(runs, land.folder, max_points=40, model=land.model)  # rescored, not an error
    pd.testing.assert_frame_equal(rescored.points, first.points)


def test_a_cached_map_opens_without_importing_torch(runs, land, tmp_path):
    """Regression: opening a cached map imported torch and Lightning through the model and the run-folder
    layout (23 s of the Landscape page's 41 s first render on a loaded machine)."""
    import os
    import subprocess
    import sys

    from rm_lab.explore import landscape as L

    env = {**os.environ, "RM_LAB_EXPLORE_CACHE": str(tmp_path / "cache")}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RM_LAB_EXPLORE_CACHE", env["RM_LAB_EXPLORE_CACHE"])
        L.style_sweep(L.load_landscape(runs, land.folder, max_points=30, model=land.model), "lists", [0, 1], 8)
    code = ("import sys; from rm_lab.explore import landscape as L\n"
            f"land = L.load_landscape({str(runs)!r}, {str(land.folder)!r}, max_points=30)\n"
            "sw = L.style_sweep(land, 'lists', [0, 1], 8)\n"
            "print(len(land.points), list(sw['level']), land.colours[0], 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["30", "[0,", "1]", "score", "False"], out.stdout


# ----------------------------------------------------------------------------------------------
# `rm_lab explore --prepare`: the pages' derived data computed ahead, into the explorer's cache

_PAGES_IN_A_NEW_PROCESS = """
import json, sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(sys.argv[1], default_timeout=120).run()
out = {}
for page in ("Landscape", "Samples"):
    at.sidebar.radio(key="page").set_value(page).run()
    out[page] = {"errors": [e.value for e in at.error], "exception": bool(at.exception),
                 "charts": sum(1 for e in at.main if getattr(e, "type", "") == "vega_lite_chart"),
                 "preparing": [i.value for i in at.info if "preparing" in i.value],
                 "tables": len(at.dataframe)}
out["imported"] = sorted(m for m in ("torch", "lightning", "lightgbm", "transformers") if m in sys.modules)
print(json.dumps(out))
"""


def test_prepare_fills_the_cache_so_a_new_process_opens_the_pages_without_torch(runs, tmp_path, monkeypatch):
    """After `rm_lab explore --prepare`, a new explorer process renders Landscape (map + default sweep) and
    Samples (SHAP of the default target) from the cache: no 'preparing' state, and neither torch, Lightning
    nor LightGBM is imported (the first open of a 10,000-reply folder took 53 s and 12 s without this)."""
    import json
    import os
    import subprocess
    import sys

    from rm_lab.explore import cache
    from rm_lab.explore import landscape as L

    monkeypatch.setenv("RM_LAB_EXPLORE_CACHE", str(tmp_path / "cache"))
    res = runner.invoke(app, ["explore", "--prepare", str(runs)])
    assert res.exit_code == 0, res.output
    assert "scoring and projecting" in res.output and "fitting the style baseline to 'value'" in res.output
    assert "prepared 2 run(s)" in res.output
    assert L.is_prepared(runs, L.train_runs(runs)[0])
    n_sweeps = len(list((cache.cache_dir() / "sweeps").glob("*.parquet")))
    assert n_sweeps == len(L.page_sweeps())  # every style edit over its levels, as the page asks first
    assert not list(cache.cache_dir().rglob("*.tmp*"))  # written atomically: no temp file left behind
    env = {**os.environ, "RM_LAB_EXPLORE_RUNS": str(runs)}
    out = subprocess.run([sys.executable, "-c", _PAGES_IN_A_NEW_PROCESS, APP], env=env, capture_output=True,
                         text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["imported"] == [], seen
    for page, charts in (("Landscape", 3), ("Samples", 1)):
        assert not seen[page]["errors"] and not seen[page]["exception"] and not seen[page]["preparing"], seen
        assert seen[page]["charts"] >= charts, seen
    again = runner.invoke(app, ["explore", "--prepare", str(runs)])  # nothing left to compute
    assert again.exit_code == 0 and "map already prepared" in again.output and "already prepared in" in again.output


def test_prepare_refuses_bad_input_with_one_error_line(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("RM_LAB_EXPLORE_CACHE", str(tmp_path / "cache"))
    eval_run = _only(runs, "eval-rm")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    cases = [(["explore", "--prepare", str(tmp_path / "missing")], "does not exist"),
             (["explore", "--prepare", str(runs), "--only", str(tmp_path)], "outside the runs folder"),
             (["explore", "--prepare", str(runs), "--only", "../.."], "outside the runs folder"),
             (["explore", "--prepare", str(runs), "--only", str(eval_run)], "no finished reward model"),
             (["explore", str(runs), "--only", str(eval_run)], "give it with --prepare")]
    for args, msg in cases:
        res = runner.invoke(app, args)
        lines = [ln for ln in res.output.splitlines() if ln.strip()]
        assert res.exit_code == 2 and msg in res.output and "Traceback" not in res.output, (args, res.output)
        assert [ln for ln in lines if ln.startswith("error:")] == [lines[-1]], (args, res.output)
    monkeypatch.setenv("RM_LAB_EXPLORE_CACHE", str(blocker / "cache"))  # under a file: cannot be written
    res = runner.invoke(app, ["explore", "--prepare", str(runs), "--only", str(_only(runs, "train-rm"))])
    assert res.exit_code == 2 and "cannot write" in res.output.splitlines()[-1], res.output


def test_a_cold_landscape_page_says_so_and_draws_a_sample_first(runs, tmp_path, monkeypatch):
    """With an empty cache the page names the wait and `--prepare`, draws a sample's map, then the full one
    (scored with the model loaded once, for the sample); Samples draws its tables, then fits SHAP."""
    from rm_lab.explore import cache
    from rm_lab.explore import landscape as L
    from rm_lab.reward import model as M

    import streamlit as st

    st.cache_resource.clear()  # the app's in-process caches (earlier tests filled them)
    monkeypatch.setenv("RM_LAB_EXPLORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(L, "PREVIEW_POINTS", 20)
    loads = []
    real = M.RewardModel.load
    monkeypatch.setattr(M.RewardModel, "load", staticmethod(lambda *a, **k: loads.append(1) or real(*a, **k)))
    at = _app(monkeypatch, runs, "Landscape")
    assert not _errors(at), _errors(at)
    assert any("map prepared in" in c.value and "rm_lab explore --prepare" in c.value for c in at.caption)
    assert _types(at).count("vega_lite_chart") >= 3 and len(loads) == 1  # the sample's model scored the full map
    assert len(list(cache.cache_dir().glob("*.parquet"))) == 2  # the 20-reply sample and the full map
    at.sidebar.radio(key="page").set_value("Samples").run()
    assert not at.exception and not _errors(at)
    assert any("fitted now" in c.value and "--prepare" in c.value for c in at.caption)
