"""The policy commands end to end with the real packaged SmolLM2 (max_new_tokens 8, a handful of contexts) and a
tiny reward model: best-of-n, rejection-sample -> train-policy -> evaluate; and their bad input, one error line
each with no run folder left behind."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from rm_lab import io

TINY = ["max_new_tokens=8", "n_contexts=2", "n=2", "chunk=2"]


@pytest.fixture(scope="module")
def rm(backbone, tmp_path_factory):
    from policy_helpers import make_tiny_rm

    return make_tiny_rm(tmp_path_factory.mktemp("rm") / "run", backbone)


@pytest.fixture(scope="module")
def smollm2():
    from policy_helpers import smollm2_folder

    return smollm2_folder()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def _one(runs: Path, kind: str) -> Path:
    (run,) = (runs / kind).iterdir()
    return run


@pytest.fixture(scope="module")
def rejection(rm, smollm2, runs):
    from rm_helpers import run_cli

    p = run_cli("rejection-sample", f"model={rm}", *TINY, "require_finished=false", "min_signal={continue: 0.0}",
                runs=runs)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "true engagement best-of-2" in p.stdout
    return _one(runs, "rejection-sample")


def test_rejection_sample_writes_an_sft_set_and_its_report(rejection):
    recs = io.read_record_folder(rejection)
    assert set(recs.frames) >= {"character", "context", "label", "preference"}
    assert (recs["label"]["name"] == "rejection_pick").all() and len(recs["label"]) == 2
    samples = pd.read_parquet(rejection / "samples.parquet")
    assert len(samples) == 4 and samples["chosen"].sum() == 2 and samples["n_tokens"].max() <= 8
    rep = json.loads((rejection / "report.json").read_text())
    assert rep["filters"] == ["p_continue >= 0"] and "truth" in rep and rep["artifacts"]["n_accepted"] == 2
    assert "Style artifacts: accepted vs rejected" in (rejection / "report.md").read_text()


def test_best_of_n_with_the_real_smollm2(rm, smollm2, tmp_path):
    from rm_helpers import run_cli

    p = run_cli("best-of-n", f"model={rm}", *TINY, runs=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    run = _one(tmp_path, "best-of-n")
    samples = pd.read_parquet(run / "samples.parquet")
    assert samples.groupby("context_id")["chosen"].sum().tolist() == [1, 1]  # best-of-N answers every context
    m = json.loads((run / "metrics.json").read_text())
    assert m["n_picked"] == 2 and "truth_lift" in m


@pytest.fixture(scope="module")
def trained(rejection, smollm2, runs):
    from rm_helpers import run_cli

    p = run_cli("train-policy", "--method", "sft", f"data={rejection}", "epochs=1", "batch_size=2",
                "max_completion_tokens=8", runs=runs)
    assert p.returncode == 0, p.stderr[-3000:]
    return _one(runs, "train-policy")


def test_train_policy_sft_on_smollm2_writes_a_new_policy(trained):
    from rm_lab.policy.trainer import PolicyRun

    run = PolicyRun(trained)
    assert run.finished() and any(run.policy.glob("*.safetensors"))
    assert json.loads((trained / "metrics.json").read_text())["trainable_parameters"] < 5_000_000  # LoRA


def test_evaluate_the_new_policy_against_smollm2(trained, rm, runs):
    from rm_helpers import run_cli

    p = run_cli("evaluate", f"model={rm}", f"candidate={{engine: {{model: {trained}/policy}}}}",
                "baseline={engine: {model: null}}", "n_contexts=2", "max_new_tokens=8", runs=runs)
    assert p.returncode == 0, p.stderr[-3000:]
    rep = json.loads((_one(runs, "evaluate") / "report.json").read_text())
    assert set(rep["win_rates"]) >= {"point_user", "point_internal"}
    assert rep["candidate"] != rep["baseline"] and set(rep["ab"]) >= {"breadth", "depth"}
    for m in ("breadth", "depth"):
        assert rep["ab"][m]["low"] <= rep["ab"][m]["lift"] <= rep["ab"][m]["high"]


def test_evaluate_scripted_policies_reports_truth_next_to_the_ab_lift(rm, tmp_path):
    from rm_helpers import run_cli

    p = run_cli("evaluate", f"model={rm}", "candidate={scripted: engaging}", "baseline={scripted: terse}",
                "n_contexts=30", runs=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    rep = json.loads((_one(tmp_path, "evaluate") / "report.json").read_text())
    w = rep["world"]
    assert w["engaging"]["true_engagement"]["rate"] > w["terse"]["true_engagement"]["rate"]
    assert rep["ab"]["breadth"]["true_lift"] > 0 and rep["ab"]["breadth"]["low"] > 0  # the A/B sees it too
    assert rep["steerability"]["engaging"]["follow_rate"] > 0


def test_bad_input_is_one_error_line_and_leaves_no_run(rm, backbone, tmp_path):
    from rm_helpers import one_error_line, run_cli

    runs = tmp_path / "runs"
    assert "n" in one_error_line(run_cli("best-of-n", f"model={rm}", "n=0", runs=runs))
    line = one_error_line(run_cli("rejection-sample", f"model={rm}", "min_signal={violation: 0.5}", runs=runs))
    assert "no head 'violation'" in line
    line = one_error_line(run_cli("best-of-n", f"model={rm}", f"engine.model={backbone}", runs=runs))
    assert "not a causal language model" in line
    line = one_error_line(run_cli("best-of-n", "model=", runs=runs))
    assert "train-rm run folder" in line
    line = one_error_line(run_cli("best-of-n", f"model={rm}", "risk_lambda=1", runs=runs))
    assert "n_ensemble" in line
    # an empty prompt set: a records folder without user-traffic contexts
    from rm_lab.world.characters import make_characters
    from rm_lab.world.contexts import make_contexts

    folder = tmp_path / "internal_only"
    folder.mkdir()
    chars = make_characters(4, seed=0)
    io.write_records(chars, folder / "character.parquet", "character")
    io.write_records(make_contexts(chars, 3, 0.0, seed=0), folder / "context.parquet", "context")
    line = one_error_line(run_cli("best-of-n", f"model={rm}", f"contexts={folder}", "traffic=user", runs=runs))
    assert "empty prompt set" in line and "traffic" in line
    assert not runs.exists() or not [p for p in runs.rglob("status.json")]
