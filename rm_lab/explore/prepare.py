"""`rm_lab explore --prepare [RUNS_DIR]`: compute what the explorer's pages derive from a runs folder, ahead.

Two pages derive data that costs far more than drawing it: Landscape scores every training reply with
the reward model (a model load and one pass: about a minute for 10,000 replies on a loaded machine)
and Samples fits a LightGBM style baseline with a 5-fold R^2 for its SHAP values (about 10 s for 10,000
samples). Both keep the result in the explorer's cache (`rm_lab.explore.cache`), so only the first open
of a run pays. Preparing runs that first open here, in the terminal, right after the stages wrote their
folders: it calls the very functions the pages call (`landscape.load_landscape`, `landscape.style_sweep`,
`attribution.run_attribution`) with the pages' defaults, so the entries it writes are the ones the pages
read (the same keys), and every entry is written atomically (temp file + rename). Afterwards a new
explorer process opens every page from the cache, without importing torch, Lightning or LightGBM.

What it prepares: each finished train-rm run's map (`landscape.MAX_POINTS` replies) with the sweep of
every style edit over its levels, and each sampling run's SHAP fit to the default target (other targets
are fitted when picked, once). An entry already in the cache is left as it is."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from rm_lab.config import ConfigError
from rm_lab.explore import attribution as A
from rm_lab.explore import cache, paths
from rm_lab.explore import landscape as L
from rm_lab.explore import samples as S


def prepare_landscape(root: Path, folder: Path, echo: Callable[[str], None]) -> dict:
    """The map of one train-rm run and the page's default sweeps, into the explorer's cache."""
    rel = folder.relative_to(root)
    t = time.time()
    was = L.is_prepared(root, folder, L.MAX_POINTS)
    echo(f"landscape {rel}: " + ("map already prepared" if was else
                                 f"scoring and projecting up to {L.MAX_POINTS:,} replies (loads the model)..."))
    land = L.load_landscape(root, folder, max_points=L.MAX_POINTS)
    if not land.info.get("map_key"):
        raise cache.NotWritable()
    n_new = 0
    for edit, levels in L.page_sweeps():
        if L.sweep_is_prepared(land, edit, levels):
            continue
        echo(f"landscape {rel}: style sweep '{edit}' over levels {levels} ({L.SWEEP_REPLIES} replies)...")
        L.style_sweep(land, edit, levels)
        if not L.sweep_is_prepared(land, edit, levels):
            raise cache.NotWritable()
        n_new += 1
    secs = time.time() - t
    echo(f"landscape {rel}: ready ({land.info['n_points']:,} replies, {n_new} new sweep(s)) in {secs:.1f} s")
    return {"run": str(rel), "page": "Landscape", "was_prepared": was and n_new == 0, "seconds": round(secs, 2)}


def prepare_samples(root: Path, folder: Path, echo: Callable[[str], None]) -> dict:
    """The SHAP fit of one sampling run (default target), into the explorer's cache."""
    rel = folder.relative_to(root)
    t = time.time()
    samples = S.load_samples(root, folder)["samples"]
    was = A.is_prepared(folder, samples)
    if not was:
        echo(f"samples {rel}: fitting the style baseline to '{A.DEFAULT_TARGET}' over {len(samples):,} samples "
             "(5-fold R², SHAP)...")
        try:
            A.run_attribution(folder, samples, require_cache=True)
        except cache.NotWritable:
            raise
        except ConfigError as e:
            echo(f"samples {rel}: no SHAP fit ({e}); the page shows why")  # too few samples: nothing to cache
    secs = time.time() - t
    echo(f"samples {rel}: {'already prepared' if was else 'ready'} in {secs:.1f} s")
    return {"run": str(rel), "page": "Samples", "was_prepared": was, "seconds": round(secs, 2)}


def targets(root: Path, only: list[str] | None = None) -> list[tuple[str, Path]]:
    """(page, run folder) pairs to prepare: every train-rm and sampling run, or the run folders in `only`
    (each under the runs folder, refused otherwise, and of a kind with something to prepare)."""
    if not only:
        return [("Landscape", f) for f in L.train_runs(root)] + [("Samples", f) for f in S.sample_runs(root)]
    out = []
    for o in only:
        full = paths.run_folder(root, o, "run folder to prepare")
        if (full / "samples.parquet").is_file():
            out.append(("Samples", full))
        else:
            out.append(("Landscape", L.train_run(root, full)))  # a ConfigError naming what a model run needs
    return out


def prepare(runs: str | Path, only: list[str] | None = None, echo: Callable[[str], None] = print) -> list[dict]:
    """Prepare the explorer's cache for a runs folder (see the module docstring); one dict per run done."""
    root = paths.runs_folder(runs)
    todo = targets(root, only)
    if not todo:
        echo(f"nothing to prepare under {root}: no finished train-rm run and no sampling run")
        return []
    echo(f"preparing {len(todo)} run(s) of {root} into the explorer cache {cache.cache_dir()}")
    fns = {"Landscape": prepare_landscape, "Samples": prepare_samples}
    return [fns[page](root, folder, echo) for page, folder in todo]
