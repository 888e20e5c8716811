"""`rm_lab calibrate` end to end on a tiny world (tiny random encoder): the run folder holds a loadable
calibration, held-out reliability, the guardrail verdict and the report; bad settings are one error line."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from rm_lab.cli import app

runner = CliRunner()


def tiny_args(backbone, cache):
    return [f"train.backbone={backbone}", "train.epochs=2", "train.pairwise_epochs=1", "train.hidden=16",
            "train.batch_size=32", "train.max_length=64", "train.world.n_contexts=40",
            "train.world.n_preference_contexts=40", f"cache_dir={cache}", "n_characters=4", "n_tests=10",
            "offline_contexts=24", "quality_contexts=100", "eligible_users=4000", "jitter=0.1"]


@pytest.fixture(scope="module")
def calibrate_run(backbone, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("RM_LAB_RUNS", str(root))
    res = runner.invoke(app, ["calibrate", *tiny_args(backbone, cache)])
    mp.undo()
    assert res.exit_code == 0, (res.output, res.exception)
    (run,) = sorted((root / "calibrate").iterdir())
    return run, res.output


def test_run_folder_holds_calibration_metrics_report(calibrate_run):
    from rm_lab.calibrate.intervals import load_calibration, predict_lift

    run, out = calibrate_run
    for name in ("calibration.json", "experiments.csv", "metrics.json", "report.md", "predicted_vs_observed.png",
                 "guardrail.json", "rm/rm_config.json"):
        assert (run / name).is_file(), name
    cal = load_calibration(run)
    assert cal.predictor == "win_point_user" and len(cal.scores) == 10
    p = predict_lift(cal, 0.6, 0.01)
    assert p["low"] <= p["lift"] <= p["high"]
    table = pd.read_csv(run / "experiments.csv")
    assert len(table) == 10 and table["experiment_id"].is_unique
    assert {"win_point_user", "win_point_internal", "win_pair_user", "pred_lift", "observed_lift", "observed_se",
            "true_lift", "loo_pred", "loo_low", "loo_high"} <= set(table.columns)
    assert table["win_point_user"].between(0, 1).all() and (table["observed_se"] > 0).all()
    # the measured lift is the true lift plus sampling noise of the size its standard error says
    z = (table["observed_lift"] - table["true_lift"]) / table["observed_se"]
    assert np.abs(z).max() < 5
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["heldout"]) >= {"sign_agreement", "spearman", "spearman_true", "calibration_slope",
                                       "calibration_intercept", "coverage", "mean_width"}
    assert {"win_point_user", "win_pair_user", "pred_lift"} <= set(metrics["by_predictor"])
    assert "Spearman" in out and "guardrail" in out
    report = (run / "report.md").read_text()
    assert "predicted_vs_observed.png" in report and "sign agreement" in report


def test_guardrail_fires_on_the_emoji_heavy_preset(calibrate_run):
    """emoji_heavy (5 emoji a reply) against baseline (0.6): the style-drift alarm names emoji."""
    run, _ = calibrate_run
    v = json.loads((run / "guardrail.json").read_text())
    assert not v["ok"]
    drift = {a["metric"] for a in v["alarms"] if a["name"] == "style_drift"}
    assert "n_emoji" in drift
    assert set(v["win_rates"]) >= {"point_user", "point_internal"}


def test_reuses_a_trained_model_and_refuses_bad_settings(calibrate_run, tmp_path, monkeypatch):
    run, _ = calibrate_run
    monkeypatch.setenv("RM_LAB_RUNS", str(tmp_path / "runs"))
    res = runner.invoke(app, ["calibrate", f"model={run / 'rm'}", "predictor=nope"])
    assert res.exit_code != 0 and "predictor" in str(res.exception)
    assert not (tmp_path / "runs").exists()  # bad input leaves no run folder
    res = runner.invoke(app, ["calibrate", "strength=[0.9, 0.1]"])
    assert res.exit_code != 0 and "strength" in str(res.exception)
    # regression: a model folder that is not a reward model used to fail only after the run folder was opened
    res = runner.invoke(app, ["calibrate", f"model={tmp_path / 'nope'}"])
    assert res.exit_code != 0 and "not a train-rm run folder" in str(res.exception)
    res = runner.invoke(app, ["calibrate", f"model={run / 'rm'}", "lift_output=p_nothing"])
    assert res.exit_code != 0 and "lift_output" in str(res.exception)
    assert not (tmp_path / "runs").exists()


def test_world_v2_past_tests_are_run_in_world_v2(calibrate_run, tmp_path, monkeypatch):
    """The flywheel judges in world v2, so its calibration's past tests must be v2's users and contexts."""
    from rm_lab.calibrate.config import CalibrateConfig
    from rm_lab.calibrate.simulated import run_world_tests
    from rm_lab.reward.model import RewardModel

    run, _ = calibrate_run
    base = dict(source="world", model=str(run / "rm"), n_characters=4, n_tests=3, offline_contexts=12,
                quality_contexts=60, eligible_users=4000, jitter=0.1)
    model = RewardModel.load(str(run / "rm"), str(tmp_path / "cache"))
    tables = {}
    for v in (1, 2):
        table, state = run_world_tests(CalibrateConfig(**base, world_version=v), model, say=lambda m: None)
        turns = state["contexts"]["history"].map(len)
        tables[v] = table
        assert (turns.max() > 1) == (v == 2), v  # v2's contexts carry 1-6 turns of history, v1's one
    # the same tests, other users: the true lifts differ between the worlds
    assert not np.allclose(tables[1]["true_lift"], tables[2]["true_lift"])
    monkeypatch.setenv("RM_LAB_RUNS", str(tmp_path / "runs"))
    res = runner.invoke(app, ["calibrate", f"model={run / 'rm'}", "world_version=3"])
    assert res.exit_code != 0 and "world_version" in str(res.exception)
