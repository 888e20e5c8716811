"""The explorer's own cache: what a page computed from a run folder, kept so a reopened page reads it back.

Entries live in $RM_LAB_EXPLORE_CACHE, else $RM_LAB_CACHE/explore (never in the run folders, which the
explorer only reads), as Parquet and JSON. A key is a digest of the input files' paths, sizes and
modification times plus the settings, so an entry is never served for changed inputs. `rm_lab explore
--prepare` (`rm_lab.explore.prepare`) fills it ahead, so a page's first open reads instead of computing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from rm_lab.config import ConfigError


class NotWritable(ConfigError):
    """The explorer's cache folder cannot be written (preparing it ahead is then impossible)."""

    def __init__(self, why: str = ""):
        super().__init__(f"explorer cache {cache_dir()}: cannot write there{f' ({why})' if why else ''}; set "
                         "$RM_LAB_EXPLORE_CACHE to a writable folder")


def cache_dir() -> Path:
    own = os.environ.get("RM_LAB_EXPLORE_CACHE")
    if own:
        return Path(own).expanduser()
    # rm_lab.models.cache_root, without importing rm_lab.models (and torch with it) just for a folder name
    base = os.environ.get("RM_LAB_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "rm_lab") / "explore"


def key(files, *settings) -> str:
    """Digest of the files (path, size, mtime; missing files are skipped) and the settings."""
    parts = [f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in map(Path, files) if p.is_file()]
    return hashlib.sha1("|".join([*parts, *map(str, settings)]).encode()).hexdigest()[:20]
