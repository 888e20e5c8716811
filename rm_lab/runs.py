"""One run folder per job: runs/<kind>/<id>/ with the resolved config, metrics, artifacts, report."""

from __future__ import annotations

import datetime as _dt
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rm_lab import io
from rm_lab.registry import Registry


def runs_root() -> Path:
    return Path(os.environ.get("RM_LAB_RUNS", "runs"))


@dataclass
class Run:
    kind: str
    config: dict
    root: Path = field(default_factory=runs_root)
    run_id: str | None = None
    parent: str | None = None

    def __post_init__(self):
        if self.run_id is None:
            stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            self.run_id = f"{stamp}-{secrets.token_hex(3)}"
        self.path = Path(self.root) / self.kind / self.run_id
        self.path.mkdir(parents=True, exist_ok=True)
        self.registry = Registry(Path(self.root) / "registry.sqlite")
        io.write_text(self.path / "config.yaml", yaml.safe_dump(self.config, sort_keys=False))
        self.registry.start_run(self.run_id, self.kind, self.path, self.config, self.parent)
        self.metrics: dict[str, Any] = {}

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

    def finish(self, status: str = "done") -> None:
        self.registry.finish_run(self.run_id, status)

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """A `with Run(...)` block is recorded as done, or as failed when it raises."""
        self.finish("failed" if exc_type else "done")
