"""The explorer's one rule about paths: it reads only inside its runs folder.

A path given on the command line, typed into a page or named in a run's config (train-rm's `data`) is
resolved (symlinks and `..` included) and refused unless it lies under the runs folder; the error is a
`ConfigError`, shown by the app as one line."""

from __future__ import annotations

from pathlib import Path

from rm_lab.config import ConfigError


class OutsideRunsFolder(ConfigError):
    """A path that resolves outside the explorer's runs folder."""


def runs_folder(path: str | Path) -> Path:
    """The runs folder the explorer serves: an existing directory."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(f"runs folder '{path}' does not exist (run a stage first, or give RUNS_DIR)")
    if not p.is_dir():
        raise ConfigError(f"runs folder '{path}' is a file; expected the folder that holds registry.sqlite and "
                          "the run folders")
    return p.resolve()


def inside(root: str | Path, path: str | Path, what: str = "run folder") -> Path:
    """`path` (absolute, or relative to `root`) resolved; refused when it lies outside `root`."""
    root = Path(root).resolve()
    p = Path(path).expanduser()
    full = (p if p.is_absolute() else root / p).resolve()
    if full != root and root not in full.parents:
        raise OutsideRunsFolder(f"{what} '{path}' lies outside the runs folder {root}; the explorer reads only "
                                "run folders under it")
    return full


def run_folder(root: str | Path, path: str | Path, what: str = "run folder") -> Path:
    """An existing run folder under `root`."""
    full = inside(root, path, what)
    if not full.is_dir():
        raise ConfigError(f"{what} '{path}' is not a folder under {Path(root).resolve()}")
    return full


def folders_of_kind(root: str | Path, kinds: tuple[str, ...]) -> list[Path]:
    """Run folders `<root>/<kind>/<run_id>/` of the given kinds, newest name first."""
    root = Path(root)
    out: list[Path] = []
    for kind in kinds:
        d = root / kind
        if d.is_dir():
            out += [p for p in d.iterdir() if p.is_dir()]
    return sorted(out, key=lambda p: p.name, reverse=True)
