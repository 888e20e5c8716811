"""Embedded SQLite registry of runs, their configs, metrics and artifacts (one file under runs/)."""

from __future__ import annotations

import json
import math
import sqlite3
import time
from contextlib import closing
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, kind TEXT NOT NULL, path TEXT NOT NULL, status TEXT NOT NULL,
  config TEXT NOT NULL, created REAL NOT NULL, finished REAL, parent TEXT
);
CREATE TABLE IF NOT EXISTS metrics (
  run_id TEXT NOT NULL, name TEXT NOT NULL, value REAL, step INTEGER, PRIMARY KEY (run_id, name, step)
);
CREATE TABLE IF NOT EXISTS artifacts (
  run_id TEXT NOT NULL, name TEXT NOT NULL, path TEXT NOT NULL, PRIMARY KEY (run_id, name)
);
"""


class Registry:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as con:
            con.executescript(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30)
        con.execute("PRAGMA journal_mode=WAL")
        return con

    def start_run(self, run_id: str, kind: str, path: str | Path, config: dict, parent: str | None = None) -> None:
        """A new row, or the same row reopened (a resumed run keeps its creation time)."""
        with closing(self._connect()) as con, con:
            con.execute("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(run_id) DO UPDATE SET "
                        "kind=excluded.kind, path=excluded.path, status=excluded.status, config=excluded.config, "
                        "finished=NULL, parent=excluded.parent",
                        (run_id, kind, str(path), "running", _json(config), time.time(), None, parent))

    def finish_run(self, run_id: str, status: str = "done") -> None:
        with closing(self._connect()) as con, con:
            con.execute("UPDATE runs SET status=?, finished=? WHERE run_id=?", (status, time.time(), run_id))

    def log_metrics(self, run_id: str, metrics: dict[str, Any], step: int = 0) -> None:
        # a NaN or infinite value is stored as NULL: it is no measurement
        rows = [(run_id, k, float(v) if math.isfinite(float(v)) else None, step)
                for k, v in _flatten(metrics).items() if _is_number(v)]
        with closing(self._connect()) as con, con:
            con.executemany("INSERT OR REPLACE INTO metrics VALUES (?,?,?,?)", rows)

    def log_artifact(self, run_id: str, name: str, path: str | Path) -> None:
        with closing(self._connect()) as con, con:
            con.execute("INSERT OR REPLACE INTO artifacts VALUES (?,?,?)", (run_id, name, str(path)))

    def runs(self, kind: str | None = None) -> list[dict]:
        q = "SELECT run_id, kind, path, status, config, created, finished, parent FROM runs"
        args: tuple = ()
        if kind:
            q += " WHERE kind=?"
            args = (kind,)
        with closing(self._connect()) as con:
            rows = con.execute(q + " ORDER BY created", args).fetchall()
        keys = ("run_id", "kind", "path", "status", "config", "created", "finished", "parent")
        return [dict(zip(keys, r)) | {"config": json.loads(r[4])} for r in rows]

    def metrics(self, run_id: str) -> dict[str, float]:
        with closing(self._connect()) as con:
            rows = con.execute("SELECT name, value FROM metrics WHERE run_id=? ORDER BY step", (run_id,)).fetchall()
        return {k: v for k, v in rows}

    def artifacts(self, run_id: str) -> dict[str, str]:
        with closing(self._connect()) as con:
            rows = con.execute("SELECT name, path FROM artifacts WHERE run_id=?", (run_id,)).fetchall()
        return dict(rows)


def _json(obj: Any) -> str:
    from rm_lab.io import json_safe

    return json.dumps(json_safe(obj), default=str, allow_nan=False)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) or type(v).__module__ == "numpy"


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = v
    return out
