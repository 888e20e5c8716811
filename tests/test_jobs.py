"""Signal-safe jobs (rm_lab.jobs): SIGTERM and SIGINT stop `train-rm` at a safe point with exit status 143/130,
a message with the resume command and the run marked `stopped`; `--resume` then ends with the weights of a run
that was never interrupted, bit for bit. Also: what `--resume` accepts, non-finite training, valid JSON, and
damaged run folders."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from rm_lab import io, jobs
from rm_lab.cli import app
from rm_lab.config import ConfigError
from rm_lab.registry import Registry
from rm_lab.reward import store

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
TINY = ["hidden=16", "batch_size=4", "max_length=64", "pairwise=false", "heads=[preference,continue]", "dropout=0.2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from rm_helpers import tiny_world

    d = tmp_path_factory.mktemp("records")
    for kind, df in tiny_world(seed=5, n=24).frames.items():
        io.write_records(df, d / f"{kind}.parquet", kind)
    return d


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("embed_cache")


def _train_args(data, backbone, cache, epochs):
    return ["train-rm", f"data={data}", f"backbone={backbone}", f"cache_dir={cache}", f"epochs={epochs}", *TINY]


def _cli(args, runs: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "RM_LAB_RUNS": str(runs), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "rm_lab.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=kw.get("cwd", ROOT))


def _only_run(runs: Path) -> Path:
    (run,) = (runs / "train-rm").iterdir()
    return run


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k  # bit-identical, not just close


EPOCHS = 6


@pytest.fixture(scope="module")
def reference(data, backbone, cache, tmp_path_factory):
    """The model of a run that was never interrupted."""
    runs = tmp_path_factory.mktemp("ref_runs")
    p = _cli(_train_args(data, backbone, cache, EPOCHS), runs)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
    return _only_run(runs) / "model.safetensors"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_train_rm_resumably(sig, data, backbone, cache, reference, tmp_path):
    runs = tmp_path / "runs"
    p = _cli(_train_args(data, backbone, cache, EPOCHS), runs)
    from rm_helpers import signal_when

    # wait until training is under way
    out, err = signal_when(p, lambda: any(runs.glob("train-rm/*/checkpoints/m0/history.json")), sig)
    run = _only_run(runs).resolve()
    assert p.returncode == 128 + sig, (p.returncode, err[-3000:])
    name = signal.Signals(sig).name
    assert f"stopped by {name}" in err and f"rm_lab train-rm --resume {run}" in err, err[-2000:]
    assert "Traceback" not in err
    (row,) = Registry(runs / "registry.sqlite").runs("train-rm")
    assert row["status"] == "stopped"
    assert json.loads((run / "status.json").read_text())["status"] == "stopped"
    assert not (run / "rm_config.json").exists() and not (run / "model.safetensors").exists()  # never looks done
    last = store.load_checkpoint(run / "checkpoints/m0/last.ckpt")  # a resumable checkpoint, safe to read
    assert 0 <= last["epoch"] < EPOCHS - 1

    res = _cli(["train-rm", "--resume", str(run)], runs)
    out, err = res.communicate(timeout=600)
    assert res.returncode == 0, err[-3000:]
    assert "resuming from" in out
    (row,) = Registry(runs / "registry.sqlite").runs("train-rm")  # the same run, finished in place
    assert row["status"] == "done" and Path(row["path"]).resolve() == run
    hist = json.loads((run / "checkpoints/m0/history.json").read_text())
    assert [r["epoch"] for r in hist] == list(range(EPOCHS))
    _assert_same_weights(reference, run / "model.safetensors")


def test_a_signal_stops_any_command_and_its_records_are_refused(tmp_path):
    """simulate has no checkpoints: it stops at once, says nothing is resumable, and its folder is never read."""
    from rm_lab.reward.data import read_record_folder

    runs = tmp_path / "runs"
    p = _cli(["simulate", "n_contexts=50000", "n_preference_contexts=50000"], runs)
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None and not list(runs.glob("simulate/*/status.json")):
        time.sleep(0.05)
    time.sleep(0.5)
    assert p.poll() is None, "simulate ended before the signal could be sent"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, (p.returncode, err[-2000:])
    assert "stopped by SIGINT" in err and "nothing of it is resumable" in err and "Traceback" not in err
    (row,) = Registry(runs / "registry.sqlite").runs("simulate")
    assert row["status"] == "stopped"
    with pytest.raises(ConfigError, match="was stopped before it finished"):
        read_record_folder(row["path"])


class SendSignal(L.Callback):
    """Deliver a real signal to this process after `after` optimizer steps (inside an epoch)."""

    def __init__(self, sig: int, after: int):
        self.sig, self.after, self.sent = sig, after, False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.after and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.sig)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_inside_an_epoch_resumes_to_identical_weights(sig, backbone, tmp_path):
    """The signal arrives in the middle of an epoch; the partial epoch is replayed on resume."""
    from rm_helpers import tiny_world

    from rm_lab.reward.train import TrainRMConfig, train_reward_model

    world = tiny_world(seed=1, n=40)
    cfg = TrainRMConfig(backbone=str(backbone), epochs=4, hidden=32, batch_size=16, max_length=128,
                        cache_dir=str(tmp_path / "cache"), pairwise=False, dropout=0.2)
    quiet = lambda _: None  # noqa: E731
    train_reward_model(cfg, tmp_path / "full", records=world, say=quiet)
    run = tmp_path / "stopped"
    before = signal.getsignal(sig)
    with jobs.Job(), pytest.raises(jobs.Stopped) as e:
        train_reward_model(cfg, run, records=world, say=quiet, callbacks=[SendSignal(sig, after=9)])
    assert signal.getsignal(sig) == before  # the job gave the handlers back
    assert e.value.signum == sig and e.value.exit_code == 128 + sig
    last = store.load_checkpoint(run / "checkpoints/m0/last.ckpt")
    per_epoch = last["global_step"] // (last["epoch"] + 1)
    assert last["global_step"] < 9 < last["global_step"] + per_epoch  # whole epochs kept; the next was cut short
    assert not (run / "model.safetensors").exists()
    train_reward_model(cfg, run, records=world, say=quiet)
    _assert_same_weights(tmp_path / "full/model.safetensors", run / "model.safetensors")


def test_outside_deferred_work_a_signal_stops_at_once():
    with jobs.Job() as job, pytest.raises(jobs.Stopped) as e:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(10_000_000):  # the handler raises as soon as the signal is handled
            pass
    assert e.value.signum == signal.SIGTERM and job.requested == signal.SIGTERM
    with jobs.Job() as job:
        with job.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)  # handled, but deferred to the next safe point
            assert job.requested == signal.SIGINT
            with pytest.raises(jobs.Stopped):
                jobs.safe_point()
            with pytest.raises(jobs.Stopped):  # a second signal stops at once
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.01)


def test_lightnings_own_sigterm_exit_is_reported_as_stopped():
    """Lightning raises SIGTERMException (a SystemExit: status 0) when it sees SIGTERM itself."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    class Trainer:
        def fit(self, *a, **k):
            raise SIGTERMException()

    with pytest.raises(jobs.Stopped) as e:
        jobs.lightning_fit(Trainer())
    assert e.value.exit_code == 143


# ----------------------------------------------------------------------------------------------
# --resume: what it accepts

@pytest.fixture
def finished_run(data, backbone, cache, runs_dir):
    res = runner.invoke(app, _train_args(data, backbone, cache, 1))
    assert res.exit_code == 0, (res.output, res.exception)
    return _only_run(runs_dir)


def _stop_after_first_epoch(run: Path) -> None:
    """What a stop after the first epoch leaves: checkpoints, no final weights, status stopped."""
    (run / "checkpoints/m0/final.safetensors").unlink()
    (run / "model.safetensors").unlink()
    (run / "rm_config.json").unlink()
    st = json.loads((run / "status.json").read_text())
    io.write_json(run / "status.json", {**st, "status": "stopped"})


def test_resume_dot_inside_the_run_folder(data, backbone, cache, runs_dir, monkeypatch):
    monkeypatch.chdir(data.parent)  # the run names its data by a relative path
    res = runner.invoke(app, ["train-rm", f"data={data.name}", f"backbone={backbone}", f"cache_dir={cache}",
                              "epochs=1", *TINY])
    assert res.exit_code == 0, (res.output, res.exception)
    run = _only_run(runs_dir)
    _stop_after_first_epoch(run)
    monkeypatch.delenv("RM_LAB_RUNS")  # the registry is the one of the runs root the folder is in
    monkeypatch.chdir(run / "checkpoints")  # `.` may also be a folder inside the run
    res = runner.invoke(app, ["train-rm", "--resume", ".", "epochs=2"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert "resuming from" in res.output
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == ["checkpoints"]  # no nested run, no new root
    assert not (run / "checkpoints" / "runs").exists() and not (run / "checkpoints" / "registry.sqlite").exists()
    (row,) = Registry(runs_dir / "registry.sqlite").runs("train-rm")
    assert row["status"] == "done" and row["run_id"] == run.name
    assert (run / "rm_config.json").exists()
    assert [r["epoch"] for r in json.loads((run / "checkpoints/m0/history.json").read_text())] == [0, 1]


def test_resume_a_relative_path_or_a_run_id_under_runs(finished_run, runs_dir, tmp_path, monkeypatch):
    run = finished_run
    _stop_after_first_epoch(run)
    monkeypatch.chdir(runs_dir.parent)
    res = runner.invoke(app, ["train-rm", "--resume", str(run.relative_to(runs_dir.parent)), "epochs=2"])
    assert res.exit_code == 0, (res.output, res.exception)
    _stop_after_first_epoch(run)
    monkeypatch.delenv("RM_LAB_RUNS")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    res = runner.invoke(app, ["train-rm", "--resume", run.name, "--runs", str(runs_dir), "epochs=2"])
    assert res.exit_code == 0, (res.output, res.exception)
    assert _only_run(runs_dir) == run and not list(elsewhere.iterdir())
    (row,) = Registry(runs_dir / "registry.sqlite").runs("train-rm")
    assert row["status"] == "done"


def test_resume_refuses_what_is_not_a_train_rm_run(finished_run, runs_dir, tmp_path, data):
    empty = tmp_path / "empty"
    empty.mkdir()
    for bad, why in [(empty, "is not a train-rm run folder"), (tmp_path / "nope", "no such folder"),
                     (data / "context.parquet", "is a file"), (data, "is not a train-rm run folder")]:
        res = runner.invoke(app, ["train-rm", "--resume", str(bad)])
        assert isinstance(res.exception, ConfigError), (bad, res.output, res.exception)
        assert why in str(res.exception) and str(bad.name) in str(res.exception)
    sim = runs_dir / "simulate" / "x"  # a run folder of another command
    sim.mkdir(parents=True)
    (sim / "config.yaml").write_text("seed: 1\n")
    io.write_json(sim / "status.json", {"status": "done", "kind": "simulate"})
    res = runner.invoke(app, ["train-rm", "--resume", str(sim)])
    assert isinstance(res.exception, ConfigError) and "not a train-rm run folder" in str(res.exception)
    assert _only_run(runs_dir) == finished_run  # nothing new was started


# ----------------------------------------------------------------------------------------------
# non-finite training and valid JSON

def test_a_diverging_loss_stops_training_with_a_clear_error(backbone, tmp_path):
    from rm_helpers import tiny_world

    from rm_lab.reward.model import NonFiniteLoss
    from rm_lab.reward.train import TrainRMConfig, train_reward_model

    cfg = TrainRMConfig(backbone=str(backbone), epochs=3, hidden=16, batch_size=8, max_length=64,
                        cache_dir=str(tmp_path / "cache"), pairwise=False)
    cfg.lr = -1.0  # past the config's own range check: what the training guard must catch on its own
    with pytest.raises(NonFiniteLoss) as e:
        train_reward_model(cfg, tmp_path / "run", records=tiny_world(seed=2, n=24), say=lambda _: None)
    msg = str(e.value)
    assert "training diverged" in msg and "not finite" in msg and "lr=-1" in msg and "smaller learning rate" in msg
    assert any(h in msg for h in ("preference=", "continue=", "depth=", "total="))
    assert isinstance(e.value, ConfigError)  # the CLI prints it as one error line with exit status 2
    assert not (tmp_path / "run/model.safetensors").exists() and not (tmp_path / "run/rm_config.json").exists()


def test_lr_minus_one_on_the_command_line_is_an_error_not_a_nan_model(data, backbone, cache, tmp_path):
    runs = tmp_path / "runs"
    p = _cli(_train_args(data, backbone, cache, 2) + ["lr=-1"], runs)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 2, (out, err[-2000:])
    assert err.strip().startswith("error:") and "lr" in err and "Traceback" not in err
    assert not list(runs.glob("train-rm/*/model.safetensors"))


def test_json_artifacts_hold_no_bare_nan(tmp_path, runs_dir):
    from rm_lab.runs import Run

    def strict(text):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))

    io.write_json(tmp_path / "m.json", {"a": float("nan"), "b": [np.inf, -np.inf, 1.5], "c": np.float32("nan"),
                                        "d": np.array([1.0, np.nan]), "e": {"f": np.float64(2.0)}})
    assert strict((tmp_path / "m.json").read_text()) == {"a": None, "b": [None, None, 1.5], "c": None,
                                                          "d": [1.0, None], "e": {"f": 2.0}}
    with Run("train-rm", {"lr": float("nan")}) as run:
        run.log_metrics({"val/loss": float("nan"), "ok": 0.5})
    assert strict((run.path / "metrics.json").read_text()) == {"val/loss": None, "ok": 0.5}
    reg = Registry(runs_dir / "registry.sqlite")
    assert reg.metrics(run.run_id) == {"val/loss": None, "ok": 0.5}
    assert reg.runs()[0]["config"] == {"lr": None}


# ----------------------------------------------------------------------------------------------
# damaged run folders: one clear error naming the file and how to rebuild it

def test_damaged_model_files_are_named(finished_run, tmp_path):
    from rm_lab.reward.model import RewardModel

    run = finished_run
    RewardModel.load(run)  # loads as it is
    hint = f"rm_lab train-rm --resume {run}"

    model = run / "model.safetensors"
    good = model.read_bytes()
    model.write_bytes(good[: len(good) // 2])
    with pytest.raises(store.RunFolderError) as e:
        RewardModel.load(run)
    assert str(model) in str(e.value) and "truncated" in str(e.value) and hint in str(e.value)
    model.write_bytes(good)

    cfg = run / "rm_config.json"
    good_cfg = cfg.read_text()
    cfg.write_text(good_cfg[:40])
    with pytest.raises(store.RunFolderError) as e:
        RewardModel.load(run)
    assert str(cfg) in str(e.value) and "not valid JSON" in str(e.value) and hint in str(e.value)
    cfg.write_text("[1, 2]")
    with pytest.raises(store.RunFolderError, match="not a JSON object"):
        RewardModel.load(run)
    cfg.write_text(good_cfg)

    hist = run / "checkpoints/m0/history.json"
    hist.write_text("{broken")
    res = runner.invoke(app, ["train-rm", "--resume", str(run)])
    assert isinstance(res.exception, store.RunFolderError) and str(hist) in str(res.exception)

    model.unlink()
    with pytest.raises(store.RunFolderError) as e:
        RewardModel.load(run)
    assert "no finished reward model" in str(e.value) and hint in str(e.value)
    res = runner.invoke(app, ["eval-rm", f"model={run}", f"data={tmp_path}"])
    assert isinstance(res.exception, ConfigError) and "model.safetensors" in str(res.exception)


def test_an_old_run_folder_still_loads(finished_run):
    """Folders written before status.json existed (and a copied folder) load as before."""
    from rm_lab.reward.model import RewardModel

    (finished_run / "status.json").unlink()
    rm = RewardModel.load(finished_run)
    assert rm.heads == ["preference", "continue"]


def test_records_of_a_failed_or_stopped_run_are_refused(data, tmp_path):
    from rm_lab.reward.data import read_record_folder

    d = tmp_path / "sim"
    d.mkdir()
    for p in data.iterdir():
        (d / p.name).write_bytes(p.read_bytes())
    read_record_folder(d)
    io.write_json(d / "status.json", {"status": "stopped", "kind": "simulate"})
    with pytest.raises(ConfigError, match="was stopped before it finished"):
        read_record_folder(d)
    io.write_json(d / "status.json", {"status": "failed", "kind": "simulate"})
    with pytest.raises(ConfigError, match="failed before it finished"):
        read_record_folder(d)
