"""`rm_lab tune`: an Optuna study over a stage's config keys (rm_lab.tune)."""

from __future__ import annotations

from typing import Optional

import typer

from rm_lab import config as cfgmod
from rm_lab.commands.common import stage_command

KIND = "tune"
OPTIONS = {"workers": "--workers", "storage": "--storage", "study": "--study", "n_trials": "--n-trials"}


def _load(cls, config, overrides, options):
    """The tune YAML with its search space checked at load time, so its errors name the YAML line."""
    from rm_lab.tune.tuning import load

    return load(config or "tune_rm", overrides, options)[0]


def _prepare(cfg):
    """The search space and the storage, checked before a run folder exists (a bad URL leaves none)."""
    from rm_lab.runs import runs_root
    from rm_lab.tune.study import open_storage
    from rm_lab.tune.tuning import search_space, storage_url

    url = storage_url(cfg, runs_root())
    open_storage(url)
    return search_space(cfg), url


def _open_run(cfg):
    """The run records the storage URL without its password."""
    from rm_lab.runs import Run
    from rm_lab.tune.study import redact

    data = cfgmod.to_dict(cfg)
    if data.get("storage"):
        data["storage"] = redact(data["storage"])
    return Run(KIND, data)


def register(app: typer.Typer) -> None:
    @stage_command(app, "tune", "rm_lab.tune.spec:TuneConfig", config="tune_rm", load=_load, prepare=_prepare,
                   open_run=_open_run, config_options=OPTIONS)
    def tune_cmd(
        cfg, run, inputs,
        workers: Optional[int] = typer.Option(None, "--workers", help="worker processes sharing the study (workers=)"),
        storage: Optional[str] = typer.Option(None, "--storage", help="SQLAlchemy URL of the study, e.g. "
                                              "postgresql://user@host/db (storage=; default: SQLite under --runs)"),
        study: Optional[str] = typer.Option(None, "--study", help="the study's name: runs that share it share trials"),
        n_trials: Optional[int] = typer.Option(None, "--n-trials", help="trials the study should hold (n_trials=)"),
    ):
        """Tune a stage's config keys with Optuna (pruning, shared SQLite/PostgreSQL studies); writes best.yaml."""
        from rm_lab.runs import runs_root
        from rm_lab.tune.tuning import tune

        space, _ = inputs
        s = tune(cfg, space, run.path, runs_root(), run.run_id, say=typer.echo)
        run.log_metrics({"n_trials": s["n_trials"], "states": s["states"],
                         **({"best_value": s["best"]["value"], "best_trial": s["best"]["number"]} if s["best"] else {}),
                         **({"importance": s["importances"]} if s["importances"] else {})})
        typer.echo(f"trials: {s['n_trials']} {s['states']}")
        if s["best"]:
            typer.echo(f"best: trial {s['best']['number']} {s['metric']}={s['best']['value']:.4f} {s['best']['params']}")
            typer.echo(f"best config: {s['best_config']} (rm_lab {cfg.stage} -c {s['best_config']})")
        if s["importances"]:
            typer.echo("importance: " + ", ".join(f"{k}={v:.2f}" for k, v in s["importances"].items()))
        typer.echo(f"wrote {run.path}")
