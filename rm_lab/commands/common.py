"""The stage-command pattern: one factory builds each `rm_lab <command>` from its config dataclass.

Every stage command shares, through `stage_command`:

- config loading: `-c/--config` (a YAML path or a name in configs/, with a default per stage) plus
  `key=value` overrides, validated by `rm_lab.config` (the error names the file and line or the
  override), and options that set a config key (`ingest --kind`);
- `--runs DIR` (the runs root; a file there is an error) and the run folder: a `Run` opened after the
  config and the inputs are checked, so bad input leaves no run folder, and marked done, failed or
  stopped when the body ends;
- progress (`progress()`), and error handling: user-input errors reach `rm_lab.cli.main`, which prints
  one `error:` line with exit status 2 (a command may turn them into that itself: `catch_errors`);
- `--help` listing every config key with its type, default and one-line doc from the dataclass fields.

The command body is a plain function `body(cfg, run, **extras)`: `extras` are its own Typer arguments
and options, declared in its signature as usual (`resume: Optional[str] = typer.Option(None, "--resume")`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import typing
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import typer
import typer.core

from rm_lab import config as cfgmod
from rm_lab.config import ConfigError
from rm_lab.schema import RecordError

# What a user can get wrong: named in one `error:` line with exit status 2, never a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, RecordError, FileNotFoundError, IsADirectoryError,
                                                NotADirectoryError, PermissionError, UnicodeDecodeError)
RESERVED = ("cfg", "run", "inputs")  # body parameters the factory fills (not command-line parameters)


def maybe(v: Optional[list[str]]) -> list[str]:
    return list(v or [])


def use_runs_root(runs: Optional[str]) -> None:
    """`--runs DIR` overrides $RM_LAB_RUNS for this command; a runs root that is a file, or lies under one, is
    an error (named now, before any work, not when the run folder is made)."""
    for value, name in ((runs, "--runs"), (None if runs else os.environ.get("RM_LAB_RUNS"), "$RM_LAB_RUNS")):
        if not value:
            continue
        p = Path(value)
        blocker = next((q for q in (p, *p.parents) if q.exists()), None)
        if blocker is not None and not blocker.is_dir():
            what = "is a file" if blocker == p else f"{blocker} is a file"
            raise ConfigError(f"{name} '{value}': {what}; expected the runs folder (it is created when missing)")
    if runs:
        os.environ["RM_LAB_RUNS"] = runs


def fail(e: BaseException) -> typer.Exit:
    """Print `error: <one line>` on stderr; return the exit (status 2) to raise."""
    typer.secho(f"error: {one_line(e)}", fg=typer.colors.RED, err=True)
    return typer.Exit(2)


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split("\n")) or type(e).__name__


@contextlib.contextmanager
def progress(description: str = "working") -> Iterator[Callable[[str], None]]:
    """A transient spinner with elapsed time; yields `update(message)`."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as prog:
        task = prog.add_task(description, total=None)
        yield lambda m: prog.update(task, description=m)


# ----------------------------------------------------------------------------------------------
# --help: the config keys

def _schema(spec: Any) -> type:
    return cfgmod._resolve(spec)


def config_keys_help(schema: type):
    """Each key as `key: type = default` over its indented doc (readable at any terminal width)."""
    from rich.console import Group
    from rich.padding import Padding
    from rich.text import Text

    items = []
    for d in cfgmod.describe(schema):
        head = Text.assemble((d.key, "bold cyan"), ": ", (d.type, "yellow"), " = ", d.default)
        items += [head, Padding(Text(d.doc), (0, 0, 0, 4))]
    return Group(*items)


class StageCommand(typer.core.TyperCommand):
    """A Typer command whose --help ends with the keys of its config dataclass."""

    schema_spec: Any = None
    default_config: str | None = None

    def format_help(self, ctx, formatter) -> None:
        super().format_help(ctx, formatter)
        from rich.console import Console
        from rich.panel import Panel

        schema = _schema(self.schema_spec)
        title = f"Config keys ({schema.__name__}): key=value, or in the -c YAML"
        from typer import rich_utils

        console = Console(width=rich_utils.MAX_WIDTH)  # as wide as Typer's own panels above
        with console.capture() as cap:
            console.print(Panel(config_keys_help(schema), title=title, title_align="left", border_style="dim"))
        formatter.write(cap.get())


# ----------------------------------------------------------------------------------------------
# the factory

def stage_command(app: typer.Typer, name: str, schema: Any, *, config: str | None = None,
                  run_kind: str | None = None, config_options: dict[str, str] | None = None,
                  load: Callable[..., Any] | None = None, prepare: Callable[..., Any] | None = None,
                  open_run: Callable[..., Any] | None = None, catch_errors: bool = False,
                  runs_option: bool = True, help: str | None = None) -> Callable[[Callable], Callable]:
    """Register `rm_lab <name>` built from the config dataclass `schema` (a class or "module:Class").

    config: the default YAML in configs/ (used when -c is not given).
    run_kind: open a `Run` of this kind for the body (None: the body gets run=None, e.g. when a library
        function opens its own run).
    config_options: body options that set a config key, {key: flag}; their values reach the body in cfg.
    load(schema, config, overrides, options, **extras) -> cfg: replaces the default loading (e.g. --resume).
    prepare(cfg, **extras) -> inputs: reads and checks the inputs before any run folder exists; the body
        receives the result as `inputs=`.
    open_run(cfg, **extras) -> Run: replaces `Run(run_kind, config)` (e.g. reopening a run folder).
    catch_errors: print user-input errors here (exit 2) instead of letting them reach `rm_lab.cli.main`.
    runs_option: offer `--runs` (off for a command that writes no run folder).
    """
    config_options = dict(config_options or {})

    def decorate(body: Callable) -> Callable:
        hints = typing.get_type_hints(body)
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in inspect.signature(body).parameters.values() if p.name not in RESERVED]
        wants_inputs = "inputs" in inspect.signature(body).parameters
        P = inspect.Parameter
        arguments = [p for p in own if isinstance(p.default, typer.models.ArgumentInfo)]
        options = [p for p in own if p not in arguments]
        shared_args = [P("overrides", P.POSITIONAL_OR_KEYWORD, default=typer.Argument(
            None, help="key=value overrides of the config keys listed below (a.b=1 sets a nested key)"),
            annotation=Optional[list[str]])]
        shared_opts = [
            P("config", P.POSITIONAL_OR_KEYWORD, annotation=Optional[str], default=typer.Option(
                None, "--config", "-c", help="YAML config: a path, or a name in configs/"
                + (f" (default: {config})" if config else ""))),
            P("runs", P.POSITIONAL_OR_KEYWORD, annotation=Optional[str], default=typer.Option(
                None, "--runs", help="runs root (default: $RM_LAB_RUNS or ./runs)")),
        ][: 2 if runs_option else 1]
        params = arguments + shared_args + options + shared_opts
        own_names = [p.name for p in own]

        @functools.wraps(body)
        def command(**kw):
            overrides, cfg_file, runs = maybe(kw.pop("overrides", None)), kw.pop("config", None), kw.pop("runs", None)
            opts = {k: (flag, kw.pop(k, None)) for k, flag in config_options.items()}
            extras = {k: kw[k] for k in own_names if k in kw}
            try:
                use_runs_root(runs)
                cls = _schema(schema)
                if load is not None:
                    cfg = load(cls, cfg_file, overrides, opts, **extras)
                else:
                    cfg = cfgmod.load(cls, cfg_file or config, overrides, options=opts)
                call = dict(extras)
                if prepare is not None:
                    inputs = prepare(cfg, **extras)
                    if wants_inputs:
                        call["inputs"] = inputs
                if run_kind is None and open_run is None:
                    return body(cfg, None, **call)
                from rm_lab.runs import Run

                run = open_run(cfg, **extras) if open_run is not None else Run(run_kind, cfgmod.to_dict(cfg))
                with run:
                    return body(cfg, run, **call)
            except USER_ERRORS as e:
                if catch_errors:
                    raise fail(e) from None
                raise

        for k in config_options:  # the option is a command-line parameter, but not one of the body's
            own_names.remove(k)
        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        del command.__wrapped__  # Typer must read the signature above, not the body's
        cls_ = type(f"StageCommand_{name.replace('-', '_')}", (StageCommand,),
                    {"schema_spec": schema, "default_config": config})
        app.command(name, cls=cls_, help=help or body.__doc__)(command)
        return body

    return decorate


def new_or_resumed_config(cls, config, overrides, options, resume, *, default: str, kind: str,
                          is_run: Callable[[Path], bool], absolute: Callable[[Any], Any],
                          resume_options: bool = False):
    """The `load=` of a resumable training command. A new run: configs/<default>.yaml (or -c) + overrides,
    its paths made absolute; --resume: the run folder's own config.yaml + overrides (-c refused)."""
    if not resume:
        return absolute(cfgmod.load(cls, config or default, overrides, options=options))
    if config:
        raise ConfigError("--resume continues a run with the config.yaml in its folder; drop -c/--config "
                          "(give changes as key=value)")
    from rm_lab.runs import CONFIG_FILE, resolve_run_folder

    return cfgmod.load(cls, resolve_run_folder(resume, kind, is_run) / CONFIG_FILE, overrides,
                       **({"options": options} if resume_options else {}))
