"""Loaders for public datasets into canonical records (see ../shared/data/README.md for the data).

Each loader takes a file or folder (and an optional `limit`) and returns a `Records` bundle:
canonical frames (named by record kind) plus source-specific frames, and a `dropped` frame listing
every source row left out by design, with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from rm_lab.schema import Records
from rm_lab.sources import convai2, ifeval, predictive_engagement, upworthy

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent

SOURCES: dict[str, Callable[..., Records]] = {
    "upworthy": upworthy.load,
    "convai2": convai2.load,
    "ifeval": ifeval.load,
    "predictive-engagement": predictive_engagement.load,
}

# folder of each source under the data root
FOLDERS = {"upworthy": "upworthy", "convai2": "convai2", "ifeval": "ifeval",
           "predictive-engagement": "predictive_engagement"}


def data_root(path: str | os.PathLike | None = None) -> Path:
    """The shared data folder: `path`, else $RM_LAB_DATA, else ../shared/data next to the project."""
    if path is not None:
        return Path(path)
    env = os.environ.get("RM_LAB_DATA")
    if env:
        return Path(env)
    return (PROJECT_ROOT.parent / "shared" / "data").resolve()


def load(source: str, path: str | os.PathLike | None = None, limit: int | None = None) -> Records:
    """Load `source` from `path` (default: its folder under `data_root()`)."""
    if source not in SOURCES:
        raise ValueError(f"unknown source '{source}', expected one of {sorted(SOURCES)}")
    return SOURCES[source](Path(path) if path is not None else data_root() / FOLDERS[source], limit=limit)
