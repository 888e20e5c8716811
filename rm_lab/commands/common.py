"""Shared pieces of the stage commands: config options and the run folder a command writes into."""

from __future__ import annotations

import os
from typing import Optional

import typer

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config (a path, or a name in configs/)")
OverridesArg = typer.Argument(None, help="key=value overrides, e.g. seed=3 n_contexts=500")
RunsOpt = typer.Option(None, "--runs", help="runs root (default: $RM_LAB_RUNS or ./runs)")


def maybe(v: Optional[list[str]]) -> list[str]:
    return list(v or [])


def use_runs_root(runs: Optional[str]) -> None:
    """`--runs DIR` overrides $RM_LAB_RUNS for this command."""
    if runs:
        os.environ["RM_LAB_RUNS"] = runs
