"""`rm_lab explore [RUNS_DIR]`: the reward-landscape explorer (Streamlit), on localhost by default."""

from __future__ import annotations

import os
import subprocess
from typing import Optional

import typer

from rm_lab.commands.common import fail
from rm_lab.config import ConfigError


def register(app: typer.Typer) -> None:
    @app.command("explore")
    def explore_cmd(runs_dir: Optional[str] = typer.Argument(None, help="the runs folder (default $RM_LAB_RUNS or "
                                                                         "./runs)"),
                    address: str = typer.Option("127.0.0.1", "--address",
                                                help="address to bind to (0.0.0.0: every interface)"),
                    port: int = typer.Option(8501, "--port", help="port to serve on")):
        """Open the explorer over a runs folder: runs, reward landscape, calibration, samples, generations."""
        from rm_lab.explore.launch import streamlit_argv

        try:
            argv = streamlit_argv(runs_dir or os.environ.get("RM_LAB_RUNS", "runs"), address, port)
        except ConfigError as e:
            raise fail(e) from None
        typer.echo(f"serving the explorer on http://{argv[argv.index('--server.address') + 1]}:{port}")
        env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
        try:
            code = subprocess.call(argv, env=env)
        except KeyboardInterrupt:  # Ctrl-C stops the server: no traceback
            code = 130
        raise typer.Exit(code)
