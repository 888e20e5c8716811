"""One run folder per job: runs/<kind>/<id>/ with the resolved config, metrics, artifacts, report.

The folder's `status.json` mirrors the registry row (running, done, failed or stopped), so a folder
copied elsewhere still says whether it finished; readers of run folders refuse a failed or stopped one
instead of reading what it left half-done. `resolve_run_folder` turns what a user types after
`--resume` (`.`, a relative path, a path inside the run, or a run id under `--runs`) into the run folder.
"""

from __future__ import annotations

import datetime as _dt
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from rm_lab import io
from rm_lab.config import ConfigError
from rm_lab.registry import Registry

RUNS_ENV = "RM_LAB_RUNS"
STATUS_FILE = "status.json"
CONFIG_FILE = "config.yaml"
NOT_FINISHED = ("failed", "stopped")


def runs_root() -> Path:
    return Path(os.environ.get(RUNS_ENV, "runs"))


@dataclass
class Run:
    kind: str
    config: dict
    root: Path = field(default_factory=runs_root)
    run_id: str | None = None
    parent: str | None = None
    path: Path | None = None  # an existing run folder to reopen (resume); default root/kind/run_id
    resumable: bool = False  # `rm_lab <kind> --resume <folder>` finishes a stopped run

    def __post_init__(self):
        if self.path is not None:
            self.path = Path(self.path)
            self.run_id = self.path.name
        else:
            if self.run_id is None:
                stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
                self.run_id = f"{stamp}-{secrets.token_hex(3)}"
            self.path = Path(self.root) / self.kind / self.run_id
        self.path.mkdir(parents=True, exist_ok=True)
        self.registry = Registry(Path(self.root) / "registry.sqlite")
        io.write_text(self.path / CONFIG_FILE, yaml.safe_dump(self.config, sort_keys=False))
        self.registry.start_run(self.run_id, self.kind, self.path, self.config, self.parent)
        self._write_status("running")
        self.metrics: dict[str, Any] = {}

    @classmethod
    def reopen(cls, folder: str | Path, kind: str, config: dict, **kw) -> "Run":
        """The run in an existing folder, recorded in the registry of `--runs`/$RM_LAB_RUNS when one is given,
        else in the registry of the runs root the folder sits in (<root>/<kind>/<id>)."""
        folder = Path(folder)
        if RUNS_ENV in os.environ or folder.parent.name != kind:
            root = runs_root()
        else:
            root = folder.parent.parent
        return cls(kind, config, root=root, path=folder, **kw)

    def file(self, name: str) -> Path:
        p = self.path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def log_metrics(self, metrics: dict[str, Any], step: int = 0) -> None:
        self.metrics.update(metrics)
        io.write_json(self.path / "metrics.json", self.metrics)
        self.registry.log_metrics(self.run_id, metrics, step)

    def artifact(self, name: str, path: Path) -> Path:
        self.registry.log_artifact(self.run_id, name, path)
        return path

    def resume_command(self) -> str | None:
        if not self.resumable:
            return None
        cmd = f"rm_lab {self.kind} --resume {self.path.resolve()}"
        if self.path.resolve().parent.parent != Path(self.root).resolve():
            cmd += f" --runs {Path(self.root).resolve()}"  # the registry is not the folder's own runs root
        return cmd

    def _write_status(self, status: str, error: str | None = None) -> None:
        rec = {"status": status, "kind": self.kind, "run_id": self.run_id, "pid": os.getpid(),
               "host": socket.gethostname(), "updated": time.time()}
        if error:
            rec["error"] = error
        io.write_json(self.path / STATUS_FILE, rec)

    def finish(self, status: str = "done", error: str | None = None) -> None:
        self.registry.finish_run(self.run_id, status)
        self._write_status(status, error)

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """A `with Run(...)` block is recorded as done, as stopped (SIGINT/SIGTERM) or as failed when it raises."""
        from rm_lab.jobs import Stopped

        if exc_type is None:
            self.finish("done")
        elif isinstance(exc, Stopped):
            exc.run_path, exc.resume = str(self.path), self.resume_command()
            self.finish("stopped", str(exc))
        else:
            self.finish("failed", f"{exc_type.__name__}: {exc}".splitlines()[0][:500])


def run_status(folder: str | Path) -> str | None:
    """The status a run folder records (None for a folder without status.json, e.g. from older versions)."""
    path = Path(folder) / STATUS_FILE
    if not path.is_file():
        return None
    try:
        rec = io.read_json(path)
    except Exception:  # noqa: BLE001  (an unreadable status is no status; readers check the files themselves)
        return None
    return rec.get("status") if isinstance(rec, dict) else None


def check_finished(folder: str | Path, what: str = "records") -> None:
    """Refuse to read `what` from a run folder whose run failed or was stopped (its files may be partial)."""
    status = run_status(folder)
    if status in NOT_FINISHED:
        raise ConfigError(f"{folder}: this run {'was stopped' if status == 'stopped' else 'failed'} before it "
                          f"finished, so its {what} may be incomplete (see {Path(folder) / STATUS_FILE}); "
                          f"run the command again{' or resume it' if status == 'stopped' else ''}")


def _is_run_folder(folder: Path, kind: str, marker: Callable[[Path], bool] | None) -> bool:
    if not (folder / CONFIG_FILE).is_file():
        return False
    path = folder / STATUS_FILE
    if path.is_file():
        try:
            rec = io.read_json(path)
        except Exception:  # noqa: BLE001
            rec = {}
        if isinstance(rec, dict) and rec.get("kind"):
            return rec["kind"] == kind
    return folder.parent.name == kind or bool(marker and marker(folder))


def resolve_run_folder(path: str | Path, kind: str, marker: Callable[[Path], bool] | None = None,
                       option: str = "--resume") -> Path:
    """The `kind` run folder that `path` names: the folder itself (absolute, relative, `.`), a folder inside
    it, or a run id under the runs root (`--runs`); a ConfigError for anything else.

    `marker(folder)` recognises a folder of this kind that is not in the runs/<kind>/<id> layout."""
    given = Path(str(path)).expanduser()
    root = runs_root()
    candidates = [given] if given.is_absolute() else [given, root / kind / given, root / given]
    found = next((c for c in candidates if c.is_dir()), None)
    if found is None:
        if given.exists():
            raise ConfigError(f"{option}: '{path}' is a file, not a {kind} run folder")
        raise ConfigError(f"{option}: '{path}' is not a {kind} run folder: no such folder (looked for "
                          f"{', '.join(str(c) for c in dict.fromkeys(candidates))})")
    folder = found.resolve()
    for cand in [folder, *folder.parents]:
        if _is_run_folder(cand, kind, marker):
            return cand
    shown = f"'{path}'" if Path(str(path)) == folder else f"'{path}' ({folder})"
    raise ConfigError(f"{option}: {shown} is not a {kind} run folder (no {CONFIG_FILE} of a {kind} "
                      f"run in it or above it); give the folder that `rm_lab {kind}` printed after 'wrote'")


def load_run_config(folder: str | Path) -> dict:
    """The resolved config a run folder was started with (config.yaml), as a mapping."""
    path = Path(folder) / CONFIG_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing (not a run folder?)") from None
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]}); the run folder is damaged: "
                          "train into a new folder") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return data
