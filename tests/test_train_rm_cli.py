"""`rm_lab train-rm` / `eval-rm` through the real CLI with the packaged MiniLM, and bad inputs that must
fail with an error naming what is wrong."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from rm_lab import io
from rm_lab.cli import app
from rm_lab.config import ConfigError
from rm_lab.schema import RecordError

pytestmark = pytest.mark.models
runner = CliRunner()


def _ok(args):
    res = runner.invoke(app, args)
    assert res.exit_code == 0, (res.output, res.exception)
    return res


def _only_run(root: Path, kind: str) -> Path:
    runs = sorted((root / kind).iterdir())
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """A tiny simulated world written by the `simulate` command."""
    root = tmp_path_factory.mktemp("runs")
    mp = pytest.MonkeyPatch()
    mp.setenv("RM_LAB_RUNS", str(root))
    _ok(["simulate", "seed=3", "n_characters=4", "n_contexts=24", "n_preference_contexts=24"])
    mp.undo()
    return _only_run(root, "simulate")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("embed_cache")


TINY = ["epochs=2", "pairwise_epochs=2", "hidden=32", "batch_size=16", "max_length=128"]


def test_train_then_eval_with_packaged_minilm(sim, cache, runs_dir):
    _ok(["train-rm", f"data={sim}", f"cache_dir={cache}", "n_ensemble=2", *TINY])
    run = _only_run(runs_dir, "train-rm")
    for name in ("config.yaml", "metrics.json", "model.safetensors", "rm_config.json", "pairwise.safetensors",
                 "split.json", "checkpoints/m0/epoch000.ckpt", "checkpoints/m1/epoch001.ckpt",
                 "checkpoints/m0/last.ckpt"):
        assert (run / name).exists(), name
    rmc = json.loads((run / "rm_config.json").read_text())
    assert rmc["emb_dim"] == 384 and rmc["n_members"] == 2 and rmc["train_mode"] == "frozen"
    assert set(rmc["heads"]) == {"preference", "continue", "thumb_up", "thumb_down", "regenerate", "depth",
                                 "followed", "violation"}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["members"][1]["epochs_done"] == 2

    _ok(["eval-rm", f"model={run}", f"data={sim}", "split=all", f"cache_dir={cache}", "n_counterfactual=8"])
    ev = _only_run(runs_dir, "eval-rm")
    m = json.loads((ev / "metrics.json").read_text())
    assert 0 <= m["pairwise_accuracy"]["pointwise"] <= 1 and "pairwise_model" in m["pairwise_accuracy"]
    for h in ("continue", "thumb_up"):
        assert {"raw", "temperature_scaled", "isotonic"} <= set(m[h]), m[h]
        assert 0 <= m[h]["raw"]["ece"] <= 1
    assert "spearman" in m["depth"]
    assert "spearman_score_vs_truth" in m["truth"]  # the simulate folder carries the hidden truth
    emoji = m["style_artifacts"]["counterfactual"]["append_emoji"]
    assert {"score", "truth"} <= set(emoji)  # learned effect next to the world's true effect
    assert (ev / "reliability_continue.png").stat().st_size > 1000 and (ev / "report.md").exists()

    # the Python API: batch- and padding-invariant scores with the real MiniLM
    from rm_lab.reward.model import RewardModel

    rm = RewardModel.load(run)
    recs = {k: io.read_records(sim / f"{k}.parquet", k) for k in ("interaction", "context", "character")}
    it = recs["interaction"].iloc[:20]
    ctx = recs["context"].set_index("context_id").loc[it.context_id].reset_index()
    s1 = rm.score(ctx, it.response, recs["character"], batch_size=1)
    s64 = rm.score(ctx, it.response, recs["character"], batch_size=64)
    assert {"score", "score_std", "p_continue", "depth"} <= set(s64)
    for k in s64:
        assert np.abs(s1[k] - s64[k]).max() < 1e-5, k


def _records_dir(tmp_path: Path, sim: Path, keep: tuple[str, ...], edit=None) -> Path:
    d = tmp_path / "records"
    d.mkdir()
    for kind in keep:
        df = io.read_records(sim / f"{kind}.parquet", kind)
        if edit and kind in edit:
            df = edit[kind](df)
        io.write_records(df, d / f"{kind}.parquet", kind, validate=len(df) > 0)
    return d


def test_no_label_records_is_named(sim, tmp_path, runs_dir, cache):
    d = _records_dir(tmp_path, sim, ("character", "context"))
    res = runner.invoke(app, ["train-rm", f"data={d}", f"cache_dir={cache}", *TINY])
    assert isinstance(res.exception, ConfigError)
    assert "no label records" in str(res.exception) and "interaction" in str(res.exception)


def test_head_without_labels_is_named(sim, tmp_path, runs_dir, cache):
    d = _records_dir(tmp_path, sim, ("character", "context", "interaction"),
                     {"interaction": lambda df: df.assign(depth=np.nan, thumb=pd.NA)})
    res = runner.invoke(app, ["train-rm", f"data={d}", f"cache_dir={cache}", "heads=[continue,depth]", *TINY])
    assert isinstance(res.exception, ConfigError)
    msg = str(res.exception)
    assert "['depth']" in msg and "interaction.depth" in msg and "continue" in msg


def test_unknown_backbone_path_is_named(sim, tmp_path, runs_dir, cache):
    res = runner.invoke(app, ["train-rm", f"data={sim}", f"backbone={tmp_path}/no_such_encoder", f"cache_dir={cache}",
                              *TINY])
    assert isinstance(res.exception, ConfigError)
    assert "backbone" in str(res.exception) and "no_such_encoder" in str(res.exception)


def test_empty_dataset_is_named(sim, tmp_path, runs_dir, cache):
    d = _records_dir(tmp_path, sim, ("character", "context", "preference"),
                     {"preference": lambda df: df.iloc[:0]})
    res = runner.invoke(app, ["train-rm", f"data={d}", f"cache_dir={cache}", *TINY])
    assert isinstance(res.exception, RecordError)
    assert "preference.parquet" in str(res.exception) and "0 rows" in str(res.exception)


def test_eval_needs_a_model_and_a_real_run_folder(sim, tmp_path, runs_dir):
    res = runner.invoke(app, ["eval-rm", f"data={sim}"])
    assert isinstance(res.exception, ConfigError) and "model" in str(res.exception)
    res = runner.invoke(app, ["eval-rm", f"model={tmp_path}", f"data={sim}"])
    assert isinstance(res.exception, ConfigError) and "rm_config.json" in str(res.exception)


def test_cli_resume_finishes_a_killed_run(sim, cache, runs_dir):
    _ok(["train-rm", f"data={sim}", f"cache_dir={cache}", "pairwise=false", "heads=[preference,continue]",
         *TINY, "epochs=1"])
    run = _only_run(runs_dir, "train-rm")
    # what a kill after the first epoch checkpoint leaves: checkpoints, no final weights
    (run / "checkpoints/m0/final.safetensors").unlink()
    (run / "model.safetensors").unlink()
    res = _ok(["train-rm", "--resume", str(run), "epochs=2"])
    assert "resuming from" in res.output
    assert _only_run(runs_dir, "train-rm") == run  # the same run folder, finished in place
    hist = json.loads((run / "checkpoints/m0/history.json").read_text())
    assert [r["epoch"] for r in hist] == [0, 1]
    assert json.loads((run / "metrics.json").read_text())["members"][0]["epochs_done"] == 2
    assert (run / "model.safetensors").exists()
    res = runner.invoke(app, ["train-rm", "--resume", str(run / "nope")])
    assert isinstance(res.exception, ConfigError) and "nope" in str(res.exception)


def test_more_epochs_on_a_finished_run_trains_on(sim, cache, runs_dir):
    _ok(["train-rm", f"data={sim}", f"cache_dir={cache}", "pairwise=false", "heads=[preference]", *TINY, "epochs=1"])
    run = _only_run(runs_dir, "train-rm")
    _ok(["train-rm", "--resume", str(run), "epochs=2"])
    hist = json.loads((run / "checkpoints/m0/history.json").read_text())
    assert [r["epoch"] for r in hist] == [0, 1]  # not the stale 1-epoch model
    res = runner.invoke(app, ["train-rm", "--resume", str(run), "lr=0.5"])
    assert isinstance(res.exception, ConfigError) and "differs in ['lr']" in str(res.exception)
