"""`rm_lab explore [RUNS_DIR]`: the reward-landscape explorer (Streamlit), on localhost by default."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import Optional

import typer

from rm_lab.commands.common import stage_command
from rm_lab.config import check_fields, param


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
    ) -> None:
        """Open the explorer over a runs folder: runs, reward landscape, calibration, samples, generations."""
        from rm_lab.explore.launch import streamlit_argv

        argv = streamlit_argv(runs_dir or os.environ.get("RM_LAB_RUNS", "runs"), cfg.address, cfg.port)
        typer.echo(f"serving the explorer on http://{argv[argv.index('--server.address') + 1]}:{cfg.port}")
        env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
        try:
            code = subprocess.call(argv, env=env)
        except KeyboardInterrupt:  # Ctrl-C stops the server: no traceback
            code = 130
        raise typer.Exit(code)
