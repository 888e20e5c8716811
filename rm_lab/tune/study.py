"""The study: its storage (a SQLAlchemy URL), its creation or resumption, and the worker processes.

SQLite (the default: <runs>/tune/optuna.sqlite, one file for every study of that runs root) serves a few
workers on one machine; PostgreSQL (`--storage postgresql://user@host/db`) serves many, on many machines.
Workers share a study by its name: `--workers N` starts N processes, and running the command again with
the same study and storage (here or elsewhere) adds workers to it. `load_if_exists` makes a study
resumable: a worker only runs what the study lacks of `n_trials` (finished, pruned or running trials count).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Callable

from rm_lab.config import ConfigError

STUDY_FILE = "optuna.sqlite"
CREATE_RETRIES = 8
HEARTBEAT_S = 30  # a running trial whose worker died is failed after 4 missed beats (and retried)


def default_storage(runs_root: Path) -> str:
    return f"sqlite:///{(Path(runs_root) / 'tune' / STUDY_FILE).resolve()}"


def redact(url: str) -> str:
    """The URL without its password (what run folders and summaries record)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is reported by open_storage
        return url


def open_storage(url: str):
    """An Optuna RDBStorage for `url`; a bad URL, a missing driver or an unreachable server is a ConfigError."""
    import optuna
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    shown = redact(url)
    try:
        u = make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise ConfigError(f"storage '{shown}': not a SQLAlchemy URL (expected e.g. sqlite:///runs/tune/optuna.sqlite "
                          f"or postgresql://user@host/db)") from None
    kwargs: dict = {"pool_pre_ping": True}
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs = {"connect_args": {"timeout": 120}}  # several workers wait for the file's write lock
    for attempt in range(CREATE_RETRIES):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
                return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S,
                                                  grace_period=4 * HEARTBEAT_S)
        except ImportError:  # optuna's own ImportError names no module: the URL's dialect does
            raise ConfigError(f"storage '{shown}': the database driver of '{u.drivername}' is not installed "
                              f"(for PostgreSQL: pip install 'psycopg[binary]')") from None
        except (sqlalchemy.exc.SQLAlchemyError, ValueError) as e:
            first = str(getattr(e, "orig", None) or e).strip().splitlines()[0][:300]
            if attempt + 1 < CREATE_RETRIES and _racing(e, first):
                time.sleep(0.2 * (attempt + 1))  # another worker is creating the same tables: they exist soon
                continue
            raise ConfigError(f"storage '{shown}': cannot open the study storage ({first})") from None


def _racing(e: Exception, message: str) -> bool:
    """Two workers creating a fresh storage at once: one sees the other's tables or rows half-made."""
    import sqlalchemy.exc

    return isinstance(e, sqlalchemy.exc.IntegrityError) or any(
        s in message.lower() for s in ("already exists", "database is locked", "duplicate key"))


def open_study(name: str, storage, direction: str, sampler: str = "tpe", pruner: str = "median",
               n_startup_trials: int = 3, n_warmup_steps: int = 1, seed: int | None = None):
    """Create the study, or load it (resume / another worker); a study of that name that optimizes the other
    way is a ConfigError (its trials would be compared the wrong way round)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the tune command says one line per trial itself
    samplers = {"tpe": lambda: optuna.samplers.TPESampler(seed=seed, constant_liar=True,
                                                          n_startup_trials=max(n_startup_trials, 1)),
                "random": lambda: optuna.samplers.RandomSampler(seed=seed)}
    pruners = {"median": lambda: optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials,
                                                             n_warmup_steps=n_warmup_steps),
               "none": lambda: optuna.pruners.NopPruner()}
    study = optuna.create_study(study_name=name, storage=storage, direction=direction, sampler=samplers[sampler](),
                                pruner=pruners[pruner](), load_if_exists=True)
    if study.direction.name.lower() != direction:
        raise ConfigError(f"study '{name}' exists and {study.direction.name.lower()}s; this metric must be "
                          f"{direction}d: give another study name")
    return study


def n_counted(study) -> int:
    """Trials that count towards n_trials: every trial but the failed ones (those are retried)."""
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING,
              optuna.trial.TrialState.WAITING)
    return len(study.get_trials(deepcopy=False, states=states))


def optimize(study, objective: Callable, n_trials: int) -> int:
    """Run trials until the study holds `n_trials` (counting every worker's); returns how many ran here."""
    import optuna

    ran = 0
    while n_counted(study) < n_trials or any(
            t.state == optuna.trial.TrialState.WAITING for t in study.get_trials(deepcopy=False)):
        try:
            study.optimize(objective, n_trials=1, gc_after_trial=True)
        except ValueError as e:  # another worker claimed and finished the same waiting trial (SQLite race)
            if not str(e).startswith("Cannot tell a"):
                raise
        ran += 1
        if ran > 10 * n_trials + 10:  # failed trials are retried, but not forever
            break
    return ran
