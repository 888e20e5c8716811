"""Run folders and the SQLite registry."""

import json

import yaml

from rm_lab.registry import Registry
from rm_lab.runs import Run


def test_run_folder_and_registry_roundtrip(runs_dir):
    run = Run("simulate", {"seed": 3, "nested": {"a": 1}})
    assert run.path.parent == runs_dir / "simulate"
    assert yaml.safe_load((run.path / "config.yaml").read_text()) == {"seed": 3, "nested": {"a": 1}}
    run.log_metrics({"acc": 0.9, "group": {"auc": 0.7}, "label": "text is not a metric"})
    run.artifact("model", run.file("model.safetensors"))
    run.finish()
    reg = Registry(runs_dir / "registry.sqlite")
    (row,) = reg.runs("simulate")
    assert row["status"] == "done" and row["config"]["seed"] == 3 and row["finished"] >= row["created"]
    assert reg.metrics(run.run_id) == {"acc": 0.9, "group/auc": 0.7}
    assert reg.artifacts(run.run_id)["model"].endswith("model.safetensors")
    assert json.loads((run.path / "metrics.json").read_text())["group"] == {"auc": 0.7}
    assert reg.runs("train-rm") == []


def test_failed_run_is_recorded(runs_dir):
    run = Run("ab-test", {})
    run.finish("failed")
    assert Registry(runs_dir / "registry.sqlite").runs()[0]["status"] == "failed"
