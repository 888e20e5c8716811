"""`rm_lab ingest` through the real CLI: run folders, reports, and exit code 2 on a bad file."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from rm_lab import config as cfgmod
from rm_lab import io
from rm_lab.cli import app
from rm_lab.commands.ingest import IngestConfig
from rm_lab.sources import data_root

runner = CliRunner()
DATA = data_root()
PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture
def runs(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    monkeypatch.setenv("RM_LAB_RUNS", str(root))
    return root


def _only_run(root: Path) -> Path:
    found = list((root / "ingest").iterdir())
    assert len(found) == 1
    return found[0]


def _interactions() -> pd.DataFrame:
    return pd.DataFrame({"context_id": ["c1", "c2", "c3"], "response": ["hi 😀", "sure", "no"],
                         "policy": ["g1"] * 3, "continued": [True, False, True],
                         "thumb": pd.array([1, None, -1], dtype="Int64")})


def test_shipped_config_is_valid():
    cfg = cfgmod.load(IngestConfig, "ingest", ["limit=5"])
    assert cfg.limit == 5 and cfg.out is None


@pytest.mark.realdata
def test_ingest_real_source(runs):
    src = DATA / "predictive_engagement"
    if not src.is_dir():
        pytest.skip(f"real data folder {src} is missing (set RM_LAB_DATA)")
    result = runner.invoke(app, ["ingest", "predictive-engagement", str(src)])
    assert result.exit_code == 0, result.output
    assert "engagement" in result.output and "1,800" in result.output
    run = _only_run(runs)
    report = json.loads((run / "report.json").read_text())
    assert report["counts"]["engagement"] == 1800 and report["counts"]["engagement_utt"] == 297
    ctx = io.read_records(run / "context.parquet", "context")
    assert len(ctx) == report["counts"]["context"]
    eng = pd.read_parquet(run / "engagement.parquet")
    assert eng["human_score"].dtype == float and len(eng) == 1800
    assert (run / "config.yaml").exists()


@pytest.mark.realdata
def test_ingest_real_source_with_config_and_overrides(runs, tmp_path):
    src = DATA / "convai2"
    if not src.is_dir():
        pytest.skip(f"real data folder {src} is missing (set RM_LAB_DATA)")
    out = tmp_path / "frames"
    result = runner.invoke(app, ["ingest", "convai2", str(src), "--config", "ingest", "limit=20", f"out={out}"])
    assert result.exit_code == 0, result.output
    report = json.loads((_only_run(runs) / "report.json").read_text())
    assert report["counts"]["dialogues"] == 20 and report["limit"] == 20
    inter = io.read_records(out / "interaction.parquet", "interaction")
    assert len(inter) == report["counts"]["interaction"]
    assert sum(d["n"] for d in report["dropped"]) == len(pd.read_parquet(out / "dropped.parquet"))


@pytest.mark.parametrize("ext", [".jsonl", ".parquet"])
def test_ingest_user_records(runs, tmp_path, ext):
    path = io.write_records(_interactions(), tmp_path / f"mine{ext}", "interaction")
    result = runner.invoke(app, ["ingest", "records", str(path), "--kind", "interaction"])
    assert result.exit_code == 0, result.output
    run = _only_run(runs)
    back = io.read_records(run / "interaction.parquet", "interaction")
    assert back["response"].tolist() == ["hi 😀", "sure", "no"]
    assert json.loads((run / "report.json").read_text())["counts"] == {"interaction": 3}


def test_ingest_records_kind_from_file_name(runs, tmp_path):
    path = io.write_records(_interactions(), tmp_path / "interaction.jsonl", "interaction")
    result = runner.invoke(app, ["ingest", "records", str(path), "limit=2"])
    assert result.exit_code == 0, result.output
    assert len(pd.read_parquet(_only_run(runs) / "interaction.parquet")) == 2


def test_ingest_bad_records_file(runs, tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = _interactions().astype(object).where(_interactions().notna(), None).to_dict("records")
    rows[1]["response"] = ""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = runner.invoke(app, ["ingest", "records", str(path), "--kind", "interaction"])
    assert result.exit_code == 2
    assert str(path) in result.output and "row 2" in result.output and "field 'response'" in result.output
    assert not (runs / "ingest").exists() or not any((runs / "ingest").iterdir())


def test_ingest_bad_source_file(runs, tmp_path):
    p = tmp_path / "Eng_Scores.csv"
    p.write_text("query,response,human_score\nhi,hello,3\nhow ?,fine,lots\n")
    result = runner.invoke(app, ["ingest", "predictive-engagement", str(p)])
    assert result.exit_code == 2
    assert str(p) in result.output and "row 3" in result.output and "field 'human_score'" in result.output


def test_ingest_usage_errors(runs, tmp_path):
    path = io.write_records(_interactions(), tmp_path / "mine.jsonl", "interaction")
    r = runner.invoke(app, ["ingest", "records", str(path)])
    assert r.exit_code == 2 and "--kind" in r.output
    r = runner.invoke(app, ["ingest", "nosuch", str(path)])
    assert r.exit_code == 2 and "unknown source" in r.output
    r = runner.invoke(app, ["ingest", "records", str(path), "--kind", "interaction", "limit=many"])
    assert r.exit_code == 2 and "limit" in r.output


def test_ingest_subprocess_exit_code(tmp_path):
    exe = PROJECT / ".venv" / "bin" / "rm_lab"
    if not exe.exists():
        pytest.skip("the rm_lab console script is not installed in .venv")
    bad = tmp_path / "data.json"
    bad.write_text('[{"dialog": [{"id": 0, "sender": "participant1", "text": "hi"}')
    env = {**os.environ, "RM_LAB_RUNS": str(tmp_path / "runs")}
    proc = subprocess.run([str(exe), "ingest", "convai2", str(bad)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert str(bad) in proc.stderr and "row 0" in proc.stderr and "truncated" in proc.stderr
