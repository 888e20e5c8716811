"""`rm_lab explore [RUNS_DIR]`: the reward-landscape explorer (Streamlit), on localhost by default.

`rm_lab explore --prepare [RUNS_DIR]` serves nothing: it computes what the pages derive (the Landscape
maps and sweeps, the Samples SHAP fits) into the explorer's cache, so the first open of each page is fast
(`rm_lab.explore.prepare`)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import Optional

import typer

from rm_lab.commands.common import stage_command
from rm_lab.config import ConfigError, check_fields, param


@dataclass
class ExploreConfig:
    """Where `rm_lab explore` serves the app; the runs folder it reads is its argument."""

    address: str = param("127.0.0.1", doc="address to bind to (0.0.0.0: every interface)", min_len=1)
    port: int = param(8501, doc="port to serve on", ge=1, le=65535)

    def __post_init__(self):
        check_fields(self)


def register(app: typer.Typer) -> None:
    @stage_command(app, "explore", ExploreConfig, config_options={"address": "--address", "port": "--port"},
                   runs_option=False, catch_errors=True)
    def explore_cmd(
        cfg, run,
        runs_dir: Optional[str] = typer.Argument(None, help="the runs folder (default $RM_LAB_RUNS or ./runs)"),
        address: Optional[str] = typer.Option(None, "--address", help="address to bind to (default 127.0.0.1)"),
        port: Optional[int] = typer.Option(None, "--port", help="port to serve on (default 8501)"),
        prepare: bool = typer.Option(False, "--prepare", help="compute the pages' derived data (Landscape maps and "
                                     "sweeps, Samples SHAP fits) into the explorer's cache, then exit"),
        only: Optional[list[str]] = typer.Option(None, "--only", help="with --prepare: only this run folder (under "
                                                 "RUNS_DIR; repeatable)"),
    ) -> None:
        """Open the explorer over a runs folder: runs, reward landscape, calibration, samples, generations
        (--prepare: compute the pages' derived data into the explorer's cache ahead, then exit)."""
        from rm_lab.explore.launch import streamlit_argv

        runs = runs_dir or os.environ.get("RM_LAB_RUNS", "runs")
        if only and not prepare:
            raise ConfigError("--only: names run folders to prepare; give it with --prepare")
        if prepare:
            from rm_lab.explore.prepare import prepare as prepare_cache

            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            done = prepare_cache(runs, only, echo=lambda m: typer.echo(m, err=True))
            typer.echo(f"prepared {len(done)} run(s); `rm_lab explore {runs}` now opens them from the cache")
            return
        argv = streamlit_argv(runs, cfg.address, cfg.port)
        typer.echo(f"serving the explorer on http://{argv[argv.index('--server.address') + 1]}:{cfg.port}")
        env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
        try:
            code = subprocess.call(argv, env=env)
        except KeyboardInterrupt:  # Ctrl-C stops the server: no traceback
            code = 130
        raise typer.Exit(code)
