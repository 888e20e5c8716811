"""`rm_lab tune` with the train-rm objective on a tiny world and a tiny BERT: child runs in the registry,
a pruned trial recorded as pruned, a resumed study, the best config round-tripping into `train-rm`, and
search-space errors naming the YAML line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rm_lab.cli import app
from rm_lab.config import ConfigError
from rm_lab.registry import Registry
from rm_lab.tune import tuning
from rm_lab.tune.objective import PRUNED, TrainRMObjective

runner = CliRunner()


def _tiny(tmp: Path, backbone: Path, space: str | None = None, **extra) -> Path:
    fixed = {"world": {"seed": 3, "n_characters": 4, "n_contexts": 30, "n_preference_contexts": 30},
             "backbone": str(backbone), "cache_dir": str(tmp / "cache"), "epochs": 2, "hidden": 16,
             "batch_size": 16, "max_length": 64, "pairwise": False, "val_fraction": 0.3}
    text = yaml.safe_dump({"stage": "train-rm", "base": None, "fixed": fixed, "n_startup_trials": 1,
                           "n_warmup_steps": 0, **extra}, sort_keys=False)
    text += space or ("space:\n  lr: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}\n"
                      "  n_layers: {type: int, low: 0, high: 2}\n")
    p = tmp / "tune.yaml"
    p.write_text(text)
    return p


def _ok(args):
    res = runner.invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    return res


def test_tune_cli_records_child_runs_resumes_and_the_best_config_trains(tmp_path, backbone, runs_dir):
    cfg = _tiny(tmp_path, backbone)
    _ok(["tune", "-c", str(cfg), "--n-trials", "2", "--study", "s1"])
    (first,) = sorted((runs_dir / "tune").glob("2*"))
    summary = json.loads((first / "study.json").read_text())
    assert summary["n_trials"] == 2 and summary["metric"] == "truth_spearman" and summary["direction"] == "maximize"
    assert summary["trials"][0]["params"] == {"lr": 0.001, "n_layers": 2}  # trial 0: the base config itself
    reg = Registry(runs_dir / "registry.sqlite")
    children = [r for r in reg.runs("train-rm") if r["parent"] == first.name]
    assert len(children) == 2 and {r["status"] for r in children} <= {"done", PRUNED}
    done = [r for r in children if r["status"] == "done"]
    assert done and "tune/value" in reg.metrics(done[0]["run_id"])
    assert {t["run"] for t in summary["trials"]} == {str(Path(r["path"]).resolve()) for r in children}

    # the same study again: it holds 2 trials, so a target of 3 runs exactly one more
    _ok(["tune", "-c", str(cfg), "--n-trials", "3", "--study", "s1"])
    second = [p for p in sorted((runs_dir / "tune").glob("2*")) if p != first][0]
    s2 = json.loads((second / "study.json").read_text())
    assert s2["n_trials"] == 3
    assert len([r for r in reg.runs("train-rm") if r["parent"] == second.name]) == 1

    # best.yaml is a train-rm config as is: the real CLI trains it and records the same config
    best = second / "best.yaml"
    want = yaml.safe_load(best.read_text())
    b = s2["best"]
    assert want["lr"] == pytest.approx(b["params"]["lr"]) and want["n_layers"] == b["params"]["n_layers"]
    before = {r["run_id"] for r in reg.runs("train-rm")}
    _ok(["train-rm", "-c", str(best)])
    (new,) = [r for r in reg.runs("train-rm") if r["run_id"] not in before]
    assert yaml.safe_load((Path(new["path"]) / "config.yaml").read_text()) == want
    assert (Path(new["path"]) / "model.safetensors").is_file()


def test_a_pruned_trial_is_recorded_as_pruned(tmp_path, backbone, runs_dir):
    """The optuna-integration Lightning callback reports each epoch's held-out loss; a pruner that prunes any
    reported value stops the trial after its first epoch, and both Optuna and the registry say so."""
    import optuna

    cfg, space = tuning.load(_tiny(tmp_path, backbone))
    obj = TrainRMObjective(space, cfg.metric, runs_dir, parent=None, prune_monitor="val/loss")
    assert obj.direction == "maximize"  # the loss is reported negated, in the study's direction
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.0),
                                storage=f"sqlite:///{tmp_path / 's.sqlite'}")
    study.optimize(obj, n_trials=1)
    (t,) = study.trials
    assert t.state == optuna.trial.TrialState.PRUNED
    assert list(t.intermediate_values) == [0] and t.intermediate_values[0] < 0
    (row,) = Registry(runs_dir / "registry.sqlite").runs("train-rm")
    assert row["status"] == PRUNED and row["path"] == t.user_attrs["run"]
    assert json.loads((Path(row["path"]) / "status.json").read_text())["status"] == PRUNED
    assert not (Path(row["path"]) / "model.safetensors").exists()


BAD_SPACES = [
    ("  lrr: {type: float, low: 0.1, high: 1}\n", r"line \d+: space: unknown key 'lrr'.*did you mean 'lr'"),
    ("  lr: {type: float, low: -1, high: 1}\n", r"line \d+: space.lr.low: -1.0 is not a value TrainRMConfig.lr "
                                                r"accepts \(lr: expected in \(0, 10\]"),
    ("  dropout: {type: float, low: 0.1, high: 1.0}\n", r"space.dropout.high: 1.0 .*expected in \[0, 1\)"),
    ("  n_layers: {type: float, low: 1, high: 3}\n", r"space.n_layers.low: 1.0 .*expected an integer"),
    ("  inputs: {type: categorical, choices: [[reply], [nope]]}\n", r"space.inputs.choices\[1\]: \['nope'\]"),
    ("  lr: {type: float, low: 0.1, high: 0.01}\n", r"low 0.1 is above high 0.01"),
    ("  lr: {type: float, low: 0.1, hihg: 1}\n", r"unknown key\(s\) \['hihg'\] for Dist"),
    ("  lr: {type: normal, low: 0.1, high: 1}\n", r"space.lr.type: expected one of \['float', 'int', 'categorical'\]"),
    ("  lr: 0.1\n", r"space.lr: expected a mapping"),
    ("  lr.x: {type: float, low: 0.1, high: 1}\n", r"space: 'lr.x': TrainRMConfig.lr is a float, not a mapping"),
    ("  world.n_contxts: {type: int, low: 10, high: 20}\n", r"WorldConfig has no key 'n_contxts'"),
]


@pytest.mark.parametrize("entry,message", BAD_SPACES)
def test_a_bad_search_space_is_named_at_its_yaml_line(tmp_path, entry, message):
    p = _tiny(tmp_path, tmp_path, space="space:\n" + entry)
    line = len(p.read_text().splitlines())  # the entry is the file's last line
    with pytest.raises(ConfigError, match=message) as e:
        tuning.load(p)
    assert f"{p}, line {line}" in str(e.value)


def test_good_nested_and_mapping_keys_are_accepted(tmp_path):
    p = _tiny(tmp_path, tmp_path, space="space:\n  world.n_contexts: {type: int, low: 20, high: 40, step: 10}\n"
              "  loss_weights.preference: {type: float, low: 0.5, high: 2}\n"
              "  inputs: {type: categorical, choices: [[reply], [reply, relevance]]}\n")
    _, space = tuning.load(p)
    assert set(space.dists) == {"world.n_contexts", "loss_weights.preference", "inputs"}
    data = space.config_data({"world.n_contexts": 30, "loss_weights.preference": 2.0, "inputs": ["reply"]})
    assert data["world"]["n_contexts"] == 30 and data["world"]["n_characters"] == 4
    assert data["loss_weights"] == {"preference": 2.0}


def test_bad_search_space_through_the_cli_is_one_error_line(tmp_path):
    from rm_helpers import one_error_line, run_cli

    p = _tiny(tmp_path, tmp_path, space="space:\n  dropout: {type: float, low: 0, high: 2}\n")
    err = one_error_line(run_cli("tune", "-c", str(p), runs=tmp_path / "runs"))
    assert f"{p}, line" in err and "space.dropout.high" in err
    assert not (tmp_path / "runs" / "tune").exists()  # no run folder for a bad config


def test_workers_option_shares_the_trials_between_processes(tmp_path, backbone, runs_dir):
    """`--workers 2`: this process and one spawned worker both run trials of the one study."""
    cfg = _tiny(tmp_path, backbone)
    _ok(["tune", "-c", str(cfg), "--n-trials", "3", "--workers", "2", "--study", "w"])
    (run,) = sorted((runs_dir / "tune").glob("2*"))
    s = json.loads((run / "study.json").read_text())
    assert 3 <= s["n_trials"] <= 4 and set(s["states"]) <= {"COMPLETE", "PRUNED"}
    assert len({t["worker"] for t in s["trials"]}) == 2
    assert (run / "best.yaml").is_file()
