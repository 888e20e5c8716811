"""Two worker processes share one Optuna study (rm_lab.tune.study), on SQLite and on a real PostgreSQL
server started here in a temp folder: the study's trials are the union of both workers', none lost.

The objective is a tiny one (the sharing is the storage's and `optimize`'s business, not the stage's);
test_tune.py runs the train-rm objective itself."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from rm_lab.config import ConfigError
from rm_lab.tune import study as S

N_TRIALS = 12


def _toy_worker(url: str, name: str, tag: int, out: str, barrier) -> None:
    """One worker: waits for the other, then runs trials until the study holds N_TRIALS."""
    import optuna

    study = S.open_study(name, S.open_storage(url), "maximize", "random", "median", n_startup_trials=2,
                         n_warmup_steps=0, seed=tag)
    ran: list[int] = []

    def objective(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        trial.set_user_attr("worker", tag)
        ran.append(trial.number)
        for step in range(3):
            time.sleep(0.05)
            trial.report(x * (step + 1), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return x

    barrier.wait(timeout=60)
    S.optimize(study, objective, N_TRIALS)
    Path(out).write_text(json.dumps(ran))


def _two_workers(url: str, tmp: Path) -> None:
    import optuna

    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(2)
    outs = [tmp / f"w{i}.json" for i in range(2)]
    procs = [ctx.Process(target=_toy_worker, args=(url, "shared", i, str(outs[i]), barrier)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    ran = [set(json.loads(o.read_text())) for o in outs]
    study = optuna.load_study(study_name="shared", storage=S.open_storage(url))
    trials = study.get_trials()
    numbers = {t.number for t in trials}
    assert ran[0] and ran[1], ran  # both workers ran trials of the one study
    assert not ran[0] & ran[1]  # no trial ran twice
    assert ran[0] | ran[1] == numbers  # every trial is one of the workers', and none of theirs is missing
    assert N_TRIALS <= len(trials) <= N_TRIALS + 1  # the other may start one just as the target is reached
    assert {t.state for t in trials} <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert {t.user_attrs["worker"] for t in trials} == {0, 1}


def test_two_workers_share_a_sqlite_study(tmp_path):
    _two_workers(S.default_storage(tmp_path / "runs"), tmp_path)
    assert (tmp_path / "runs" / "tune" / S.STUDY_FILE).is_file()


def test_a_resumed_study_runs_only_the_missing_trials(tmp_path):
    import optuna

    url = S.default_storage(tmp_path)
    study = S.open_study("r", S.open_storage(url), "minimize", "random", "none", seed=0)
    assert S.optimize(study, lambda t: t.suggest_float("x", 0, 1), 3) == 3
    again = S.open_study("r", S.open_storage(url), "minimize", "random", "none", seed=1)
    assert S.optimize(again, lambda t: t.suggest_float("x", 0, 1), 5) == 2
    assert len(again.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 5
    with pytest.raises(ConfigError, match="exists and minimizes"):
        S.open_study("r", S.open_storage(url), "maximize")


def test_bad_storage_urls_are_named_without_password(tmp_path):
    with pytest.raises(ConfigError, match="not a SQLAlchemy URL"):
        S.open_storage("not a url")
    with pytest.raises(ConfigError, match=r"cannot open the study storage") as e:
        S.open_storage(f"postgresql://u:secret@/db?host={tmp_path}&port=1")
    assert "secret" not in str(e.value) and "***" in str(e.value)


# ----------------------------------------------------------------------------------------------
# a real PostgreSQL server

def _pg(cmd: list[str], user: str | None) -> subprocess.CompletedProcess:
    full = (["runuser", "-u", user, "--"] if user else []) + cmd
    return subprocess.run(full, capture_output=True, text=True, timeout=120)


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server on a Unix socket in a temp folder (initdb + pg_ctl); its URL."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL's initdb/pg_ctl are not on PATH (Debian: apt-get install postgresql; .ci/run "
                    "adds /usr/lib/postgresql/<version>/bin)")
    pytest.importorskip("psycopg", reason="the PostgreSQL driver psycopg is not installed (dev extra)")
    user = None
    root = Path(tempfile.mkdtemp(prefix="rm_lab_pg"))
    if os.geteuid() == 0:  # the server refuses to run as root: run it as the postgres (or nobody) user
        import pwd

        user = next((u for u in ("postgres", "nobody") if _has_user(u)), None)
        if user is None or not shutil.which("runuser"):
            pytest.skip("running as root with no postgres/nobody user (or no runuser) to start PostgreSQL as")
        pw = pwd.getpwnam(user)
        os.chmod(root, 0o755)
        os.chown(root, pw.pw_uid, pw.pw_gid)
    data, sock = root / "data", root
    port = random.randint(20000, 60000)
    try:
        r = _pg([initdb, "-D", str(data), "-U", "tune", "--auth=trust", "-E", "UTF8"], user)
        assert r.returncode == 0, r.stderr
        opts = f"-k {sock} -c listen_addresses='' -p {port} -c fsync=off"
        r = _pg([pg_ctl, "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "-t", "60", "start"], user)
        assert r.returncode == 0, (r.stdout, r.stderr, (root / "log").read_text() if (root / "log").exists() else "")
        yield f"postgresql://tune@/postgres?host={sock}&port={port}"
    finally:
        _pg([pg_ctl, "-D", str(data), "-m", "immediate", "stop"], user)
        shutil.rmtree(root, ignore_errors=True)


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def test_two_workers_share_a_postgresql_study(postgres, tmp_path):
    _two_workers(postgres, tmp_path)
