"""`rm_lab <command>`: one Typer app; each stage's command lives beside its stage and registers here."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import typer

from rm_lab.commands.common import USER_ERRORS, one_line

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="rm_lab: reward modeling and engagement prediction for social chat.")

# Command modules: each defines `register(app)`. Add new stages here.
COMMAND_MODULES = [
    "rm_lab.commands.world",
    "rm_lab.commands.ingest",
    "rm_lab.commands.steer",
    "rm_lab.commands.reward",
    "rm_lab.commands.curate",
    # rm_lab-commands-marker (keep this line: helpers add modules above it)
]


def _register() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register()


def main() -> None:
    """Every command runs as one signal-safe job (rm_lab.jobs): SIGINT/SIGTERM end it with status 130/143."""
    from rm_lab.jobs import Job, Stopped

    with Job():
        try:
            app()
        except USER_ERRORS as e:  # bad input: one line naming what is wrong, exit status 2
            typer.secho(f"error: {one_line(e)}", fg=typer.colors.RED, err=True)
            sys.exit(2)
        except Stopped as e:
            typer.secho(e.message(), fg=typer.colors.YELLOW, err=True)
            sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
