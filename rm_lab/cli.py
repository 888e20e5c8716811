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
    "rm_lab.commands.calibrate",
    "rm_lab.commands.policy",
    "rm_lab.commands.ab",
    "rm_lab.commands.tune",
    "rm_lab.commands.explore",
    "rm_lab.commands.flywheel",
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

    from typer._click import exceptions as click_errors  # typer vendors click: its own exception classes

    with Job():
        try:
            code = app(standalone_mode=False)  # usage errors come back here, to be told in one line too
        except click_errors.NoArgsIsHelpError as e:
            e.show()
            sys.exit(2)
        except click_errors.UsageError as e:
            cmd = e.ctx.command_path if e.ctx else "rm_lab"
            typer.secho(f"error: {e.format_message()} (see `{cmd} --help`)", fg=typer.colors.RED, err=True)
            sys.exit(2)
        except typer.Abort:
            typer.secho("error: aborted", fg=typer.colors.RED, err=True)
            sys.exit(1)
        except USER_ERRORS as e:  # bad input: one line naming what is wrong, exit status 2
            typer.secho(f"error: {one_line(e)}", fg=typer.colors.RED, err=True)
            sys.exit(2)
        except Stopped as e:
            typer.secho(e.message(), fg=typer.colors.YELLOW, err=True)
            sys.exit(e.exit_code)
        if isinstance(code, int) and code:
            sys.exit(code)


if __name__ == "__main__":
    main()
