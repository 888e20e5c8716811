"""A tuning run: the checked config and space, the study, the workers, and what the run folder gets (spawned workers: `worker`).

`load` reads the tune YAML keeping each key's line, so a bad search space is named at its line; `tune`
opens the study, runs this process as worker 0 next to `workers - 1` spawned ones, then writes best.yaml
and study.json (rm_lab.tune.export).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import sys
from pathlib import Path
from typing import Any, Callable

from rm_lab import config as cfgmod
from rm_lab.config import ConfigError, Sources
from rm_lab.tune import export, space as spacemod, study as studymod
from rm_lab.tune.objective import OBJECTIVES, STAGE_SCHEMAS
from rm_lab.tune.spec import TuneConfig


def stage_schema(stage: str) -> type:
    return cfgmod._resolve(STAGE_SCHEMAS[stage])


def stage_base(cfg: TuneConfig, sources: Sources | None = None) -> tuple[dict, Sources]:
    """The stage mapping every trial starts from: the `base` YAML with `fixed` on top, and where each key
    came from (the base file's lines, the tune file's `fixed` lines)."""
    data, src = ({}, Sources()) if cfg.base is None else cfgmod.read_yaml(cfgmod.resolve_path(cfg.base))
    data = cfgmod._merge(data, dict(cfg.fixed))
    for path, label in (sources.at.items() if sources else ()):
        if path[:1] == ("fixed",) and len(path) > 1:
            src.at[path[1:]] = label
    return data, src


def search_space(cfg: TuneConfig, sources: Sources | None = None, where: str = "config") -> spacemod.SearchSpace:
    base, base_src = stage_base(cfg, sources)
    return spacemod.parse(cfg.space, stage_schema(cfg.stage), base, sources, where, base_sources=base_src)


def load(config: str | Path | None, overrides: list[str] | None = None,
         options: dict[str, tuple[str, Any]] | None = None) -> tuple[TuneConfig, spacemod.SearchSpace]:
    """The tune config (`rm_lab.config.load`, as every stage) and its checked search space, whose errors name
    the YAML line (the file's key lines are read again for them)."""
    cfg = cfgmod.load(TuneConfig, config, overrides, options=options)
    path = cfgmod.resolve_path(config)
    _, sources = cfgmod.read_yaml(path) if path else ({}, Sources())
    cfgmod.parse_overrides(overrides, sources)
    for key, (flag, value) in (options or {}).items():
        if value is not None:
            sources.set((key,), f"option '{flag} {value}'", value)
    return cfg, search_space(cfg, sources, str(path) if path else "overrides")


def storage_url(cfg: TuneConfig, runs_root: Path) -> str:
    return cfg.storage or studymod.default_storage(runs_root)


def _objective(cfg: TuneConfig, space, runs_root: Path, parent: str | None, say):
    return OBJECTIVES[cfg.stage](space, cfg.metric, runs_root, parent, cfg.prune_monitor, say)


def _open(cfg: TuneConfig, url: str, direction: str, index: int):
    return studymod.open_study(cfg.study, studymod.open_storage(url), direction, cfg.sampler, cfg.pruner,
                               cfg.n_startup_trials, cfg.n_warmup_steps, cfg.seed + index)


def worker(cfg_data: dict, index: int, url: str, runs_root: str, parent: str | None, ready=None) -> None:
    """A spawned worker process: the same study, its own sampler seed; a user error exits with status 2."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rm_lab.runs import RUNS_ENV

    os.environ[RUNS_ENV] = runs_root
    try:
        cfg = cfgmod.build(TuneConfig, cfg_data, "tune config")
        sp = search_space(cfg)
        obj = _objective(cfg, sp, Path(runs_root), parent, say=lambda m: print(f"[worker {index}] {m}", flush=True))
        study = _open(cfg, url, obj.direction, index)
        if ready is not None:
            ready.put(index)
        studymod.optimize(study, obj, cfg.n_trials)
    except ConfigError as e:
        print(f"error: [worker {index}] {' '.join(str(e).split())}", file=sys.stderr, flush=True)
        sys.exit(2)


def tune(cfg: TuneConfig, space: spacemod.SearchSpace, run_dir: Path, runs_root: Path, parent: str | None,
         say: Callable[[str], None] = print) -> dict:
    """Run the study to `n_trials` with `cfg.workers` processes; write best.yaml and study.json into run_dir."""
    url = storage_url(cfg, runs_root)
    obj = _objective(cfg, space, runs_root, parent, say)  # resolves the metric (and loads the data once)
    study = _open(cfg, url, obj.direction, 0)
    if cfg.enqueue_base and not study.get_trials(deepcopy=False):
        base = space.base_values()
        study.enqueue_trial(base, skip_if_exists=True)
        drawn = [k for k in space.dists if k not in base]
        if drawn:
            say(f"note: trial 0 (the base config) draws {drawn}: the base has no value for them inside their "
                f"ranges (set them in `fixed` to compare with the default)")
    say(f"study '{cfg.study}' ({studymod.redact(url)}): {obj.metric} ({obj.direction}), "
        f"{len(study.get_trials(deepcopy=False))} trials so far, target {cfg.n_trials}, {cfg.workers} worker(s)")
    data = dataclasses.asdict(dataclasses.replace(cfg, metric=obj.metric))
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(data, i, url, str(runs_root), parent, ready), name=f"tune-worker-{i}")
             for i in range(1, cfg.workers)]
    for p in procs:
        p.start()
    try:
        # the enqueued base trial runs here while the workers start: two processes popping one waiting trial
        # of an SQLite study can both claim it (no row locks there)
        if any(t.state.name == "WAITING" for t in study.get_trials(deepcopy=False)):
            study.optimize(obj, n_trials=1, gc_after_trial=True)
        _wait_ready(procs, ready)
        studymod.optimize(study, obj, cfg.n_trials)
    finally:
        for p in procs:
            p.join()
    codes = [p.exitcode for p in procs]
    if any(codes):
        bad = [i + 1 for i, c in enumerate(codes) if c]
        raise (ConfigError if all(codes[i - 1] == 2 for i in bad) else RuntimeError)(
            f"tune: worker(s) {bad} failed (exit status {[codes[i - 1] for i in bad]}; see their messages above)")
    best = export.write_best(run_dir / export.BEST_FILE, study, space, obj.metric, cfg.stage)
    summary = export.write_summary(run_dir / export.SUMMARY_FILE, study, obj.metric, studymod.redact(url), cfg.stage,
                                   cfg.seed)
    summary["best_config"] = str(best) if best else None
    return summary


def _wait_ready(procs: list, ready, timeout_s: float = 900) -> None:
    """Start trials once every spawned worker has its data and study (they import and load slower than this
    process, which has both), so the first trials are shared; a worker that exits early is not waited for."""
    import queue
    import time

    waiting, t0 = {p.name for p in procs}, time.time()
    while waiting and time.time() - t0 < timeout_s:
        try:
            waiting.discard(f"tune-worker-{ready.get(timeout=1)}")
        except queue.Empty:
            waiting -= {p.name for p in procs if not p.is_alive()}
