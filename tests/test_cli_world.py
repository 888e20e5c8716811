"""The real CLI on tiny settings: simulate, ab-test (simulated and stored arms), demo, bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from rm_lab.cli import app
from rm_lab.io import read_records
from rm_lab.registry import Registry

runner = CliRunner()


def _only_run(runs_dir: Path, kind: str) -> Path:
    found = list((runs_dir / kind).iterdir())
    assert len(found) == 1
    return found[0]


def test_simulate_writes_valid_records(runs_dir):
    res = runner.invoke(app, ["simulate", "n_contexts=200", "n_preference_contexts=100", "seed=1"])
    assert res.exit_code == 0, res.output
    run = _only_run(runs_dir, "simulate")
    for kind in ("character", "context", "interaction", "preference", "steer_label"):
        df = read_records(run / f"{kind}.parquet", kind)
        assert len(df) > 0
    assert read_records(run / "interaction.parquet", "interaction").shape[0] == 200
    assert "n_contexts: 200" in (run / "config.yaml").read_text()
    reg = Registry(runs_dir / "registry.sqlite")
    assert [r["status"] for r in reg.runs("simulate")] == ["done"]
    assert reg.metrics(run.name)["counts/interaction"] == 200


def test_ab_test_simulated_and_from_records(runs_dir, tmp_path):
    res = runner.invoke(app, ["ab-test", "eligible_users=50000", "quality_contexts=300"])
    assert res.exit_code == 0, res.output
    assert "true lift" in res.output and "breadth (improved vs baseline)" in res.output
    run = _only_run(runs_dir, "ab-test")
    report = json.loads((run / "report.json").read_text())
    assert report["truth"]["breadth_lift"] > 0
    # analyse stored arms (as a user would with an ingested experiment)
    arms = tmp_path / "arms.jsonl"
    pd.DataFrame({"experiment_id": "x", "arm": ["a", "b"], "is_control": [True, False], "days": 1,
                  "users": [5000, 5000], "engaged_users": [250, 300]}).to_json(arms, orient="records", lines=True)
    res = runner.invoke(app, ["ab-test", f"records={arms}"])
    assert res.exit_code == 0, res.output
    assert "+20.00%" in res.output


def test_bad_override_and_bad_records_are_clear_errors(tmp_path, runs_dir):
    env = {**os.environ, "RM_LAB_RUNS": str(runs_dir)}
    rm_lab = [sys.executable, "-m", "rm_lab.cli"]
    p = subprocess.run(rm_lab + ["simulate", "n_contxts=5"], capture_output=True, text=True, env=env)
    assert p.returncode == 2 and "unknown key(s) ['n_contxts']" in p.stderr
    bad = tmp_path / "arms.jsonl"
    bad.write_text('{"experiment_id": "x", "arm": "a", "is_control": true, "days": 1, "users": 10, "engaged_users": 1}\n'
                   '{"experiment_id": "x", "arm": "b", "is_control": false, "days": 1, "users": "ten", "engaged_users": 1}\n')
    p = subprocess.run(rm_lab + ["ab-test", f"records={bad}"], capture_output=True, text=True, env=env)
    assert p.returncode == 2
    assert f"file {bad}, row 2, field 'users'" in p.stderr and "expected an integer" in p.stderr
    assert "Traceback" not in p.stderr


def test_demo_runs_and_reports_truth(runs_dir):
    res = runner.invoke(app, ["demo", "world.n_contexts=300", "world.n_preference_contexts=300",
                              "ab.eligible_users=50000", "ab.quality_contexts=300", "train.epochs=10"])
    assert res.exit_code == 0, res.output
    run = _only_run(runs_dir, "demo")
    report = (run / "report.md").read_text()
    assert "true lift" in report and "A/A test" in report
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["truth"]["breadth_lift"] > 0
    # the reward model was trained on the logged traffic and agrees with the hidden engagement
    assert "Reward model" in report and (run / "reward_model" / "model.safetensors").exists()
    assert metrics["reward_model"]["truth"]["spearman_score_vs_truth"] > 0.6


def test_usage_errors_are_one_line_with_exit_2(tmp_path):
    """Typer's usage errors (unknown option, missing argument, unknown command) get the same one-line form."""
    from rm_helpers import one_error_line, run_cli

    runs = tmp_path / "runs"
    assert "No such option: --bogus" in one_error_line(run_cli("simulate", "--bogus", runs=runs))
    assert "Missing argument" in one_error_line(run_cli("ingest", runs=runs))
    assert "No such command 'nosuch'" in one_error_line(run_cli("nosuch", runs=runs))
    ok = run_cli("simulate", "--help", runs=runs)
    assert ok.returncode == 0 and "n_contexts" in ok.stdout
    assert not runs.exists()
