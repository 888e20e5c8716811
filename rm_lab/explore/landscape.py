"""The Landscape page: a trained reward model over the records it was trained on.

The (context, reply) rows of the training records are scored by the model and projected to 2-D by PCA
of the very features the model's heads read (its encoder views, through its embedding cache), so the
map shows what the model sees. Each point carries every head's output, the ensemble's spread and, for
a simulated world, the hidden truth (`rm_lab.world.engagement.score_replies`). `style_sweep` edits
replies along one style feature (`rm_lab.explore.edits`) and sets the model's score change next to the
truth's, with the share of training replies near each level: where that share is small the model
extrapolates (the paper's "local map" is trusted only near the data it was drawn from).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rm_lab.config import ConfigError
from rm_lab.explore import cache, paths

TRUTH = "truth"
UNCERTAINTY = "uncertainty"
# What the page asks for by default, so `rm_lab explore --prepare` fills exactly the entries it reads
MAX_POINTS = 10_000  # replies on the map
SWEEP_REPLIES = 32  # replies edited per style sweep
PREVIEW_POINTS = 1_000  # a cold page first draws a sample this size (seconds), then the full map


@dataclass
class Landscape:
    """What the Landscape page shows (points aligned with `contexts`).

    The model and the training records are loaded only when something needs them (a style sweep not in
    the explorer's cache): a map read back from the cache opens without importing torch or Lightning,
    which alone costs seconds to tens of seconds on a loaded machine."""

    folder: Path
    points: pd.DataFrame  # context_id, response, origin, x, y, <outputs>, uncertainty?, truth?
    explained: list[float] = field(default_factory=list)  # PCA explained-variance ratio of x, y
    info: dict = field(default_factory=dict)  # data, n_points, n_members, heads, inputs, outputs, map_key
    root: Path | None = None  # the runs folder (where the training records are looked up)
    _model: Any = field(default=None, repr=False)  # rm_lab.reward.model.RewardModel, loaded on first use
    _records: tuple | None = field(default=None, repr=False)  # (contexts aligned with points, characters, population)
    _style: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def model(self):
        """The run's RewardModel (loaded on first use)."""
        if self._model is None:
            self._model = load_model(self.root or self.folder.parent.parent, self.folder)
        return self._model

    def _loaded_records(self) -> tuple:
        if self._records is None:
            records, population, _ = training_records(self.root or self.folder.parent.parent, self.folder)
            ctx = _context_index(records)
            self._records = (ctx.loc[self.points["context_id"]].reset_index(), records["character"], population)
        return self._records

    @property
    def contexts(self) -> pd.DataFrame:
        """One context row per point (from the training records, read on first use)."""
        return self._loaded_records()[0]

    @property
    def characters(self) -> pd.DataFrame:
        return self._loaded_records()[1]

    @property
    def population(self):
        """The simulated world's Population (its hidden truth), or None for real data."""
        if not self.info.get("simulated_world", True) and self._records is None:
            return None
        return self._loaded_records()[2]

    @property
    def style(self) -> pd.DataFrame:
        """Style features of the map's replies (computed once: every sweep reads them)."""
        if self._style is None:
            from rm_lab.features.style import style_frame

            self._style = style_frame(self.points["response"])
        return self._style

    @property
    def outputs(self) -> list[str]:
        """The model's outputs, as recorded with the map (no model load needed)."""
        outs = self.info.get("outputs")
        return list(outs) if outs is not None else self.model.outputs()

    @property
    def colours(self) -> list[str]:
        """What the map can be coloured by: the score first, each head's output, uncertainty, truth."""
        outs = [o for o in self.outputs if o in self.points.columns]
        extra = [c for c in (UNCERTAINTY, TRUTH) if c in self.points.columns]
        return outs + extra


def _context_index(records) -> pd.DataFrame:
    ctx = records["context"].assign(context_id=records["context"]["context_id"].astype(str))
    return ctx.drop_duplicates("context_id").set_index("context_id")


def train_run(root: str | Path, folder: str | Path) -> Path:
    """A finished train-rm run folder under the runs folder."""
    from rm_lab.reward import store

    full = paths.run_folder(root, folder, "reward-model run")
    if not (store.TrainRun(full).model_config.is_file() and store.TrainRun(full).model.is_file()):
        raise ConfigError(f"'{folder}' holds no finished reward model (needs {store.MODEL_CONFIG} and "
                          f"{store.MODEL}); pick a finished train-rm run")
    return full


def train_runs(root: str | Path) -> list[Path]:
    """Finished train-rm run folders, newest first."""
    from rm_lab.reward import store

    return [p for p in paths.folders_of_kind(root, ("train-rm",)) if store.TrainRun(p).model_config.is_file()]


def _cache_dir(folder: Path, cfg: dict) -> Path:
    from rm_lab.reward.embed_cache import default_cache_root

    c = cfg.get("cache_dir")
    return folder / "embed_cache" if c == "run" else (Path(c) if c else default_cache_root())


def training_records(root: str | Path, folder: Path):
    """(Records, Population or None, where) of the data a train-rm run was trained on; the data folders
    must lie under the runs folder (an on-the-fly world is simulated again from its config)."""
    from rm_lab import config as cfgmod
    from rm_lab.reward.data import merge_sources, read_sources
    from rm_lab.runs import load_run_config
    from rm_lab.world.simulate import WorldConfig, simulate

    cfg = load_run_config(folder)
    data = cfg.get("data")
    if not data:
        wc = cfgmod.build(WorldConfig, dict(cfg.get("world") or {}), f"{folder}/config.yaml: world")
        return simulate(wc), wc.population(), "the on-the-fly world of its config"
    folders = [data] if isinstance(data, str) else list(data)
    resolved = [paths.run_folder(root, f, "training data (train-rm config `data`)") for f in folders]
    records = merge_sources(read_sources([str(f) for f in resolved]))
    population = None
    if len(resolved) == 1 and (resolved[0] / "config.yaml").is_file():
        raw = load_run_config(resolved[0])
        if "interaction" in records and "truth_engagement" in records["interaction"].columns:
            try:
                population = cfgmod.build(WorldConfig, raw, str(resolved[0] / "config.yaml")).population()
            except ConfigError:
                population = None  # not a simulate run: no hidden truth
    return records, population, ", ".join(map(str, resolved))


def _items(records, max_points: int, seed: int) -> pd.DataFrame:
    """Unique (context_id, response) rows of the interactions and both sides of the preferences."""
    parts = []
    if "interaction" in records:
        it = records["interaction"]
        parts.append(pd.DataFrame({"context_id": it["context_id"].astype(str), "response": it["response"].astype(str),
                                   "origin": "interaction"}))
    if "preference" in records:
        pr = records["preference"]
        for side in ("chosen", "rejected"):
            parts.append(pd.DataFrame({"context_id": pr["context_id"].astype(str),
                                       "response": pr[side].astype(str), "origin": f"preference ({side})"}))
    if not parts:
        raise ConfigError("the training records hold no interactions or preferences to place on the map")
    items = pd.concat(parts, ignore_index=True).drop_duplicates(["context_id", "response"]).reset_index(drop=True)
    if len(items) > max_points:
        items = items.sample(max_points, random_state=seed).reset_index(drop=True)
    return items


def _project(feats: np.ndarray, seed: int) -> tuple[np.ndarray, list[float]]:
    from sklearn.decomposition import PCA

    feats = np.asarray(feats, float)
    k = min(2, feats.shape[0], feats.shape[1])
    xy = np.zeros((len(feats), 2))
    if k == 0 or len(feats) < 2:
        return xy, [0.0, 0.0]
    pca = PCA(n_components=k, random_state=seed)
    xy[:, :k] = pca.fit_transform(feats)
    ratio = list(map(float, pca.explained_variance_ratio_)) + [0.0] * (2 - k)
    return xy, ratio


class ReadOnlyCache:
    """An embedding cache the explorer reads but never writes (edited replies are embedded, not stored)."""

    def __init__(self, cache):
        self.cache = cache

    def get(self, texts, compute):
        found = self.cache.lookup(texts)
        todo = [i for i, v in enumerate(found) if v is None]
        if todo:
            for i, v in zip(todo, np.asarray(compute([texts[i] for i in todo]), np.float32)):
                found[i] = v
        return np.stack(found) if found else np.zeros((0, 0), np.float32)


def load_model(root: str | Path, folder: str | Path):
    """The run's RewardModel, as the library loads it (safetensors + JSON), reading its embedding cache."""
    from rm_lab.reward.model import RewardModel
    from rm_lab.runs import load_run_config

    full = train_run(root, folder)
    rm = RewardModel.load(full, _cache_dir(full, load_run_config(full)))
    if rm.cache is not None:
        rm.cache = ReadOnlyCache(rm.cache)
    return rm


def _map_key(full: Path, resolved: list[Path], max_points: int, seed: int) -> str:
    """What a scored map depends on: the model files, the data files (paths, sizes, mtimes), the settings."""
    files = [full / n for n in ("model.safetensors", "rm_config.json")]
    files += sorted(p for d in resolved for p in d.glob("*.parquet"))
    files += sorted(p for d in resolved for p in d.glob("*.jsonl"))
    return cache.key(files, max_points, seed, "v2")


def map_cache_dir() -> Path:
    """Scored maps are kept in the explorer's cache (`rm_lab.explore.cache`), never in the run folders."""
    return cache.cache_dir()


def _map_entry(root: str | Path, folder: str | Path, max_points: int, seed: int) -> tuple[Path, Path, list[Path], str]:
    full = train_run(root, folder)
    data = load_run_config_data(root, full)
    key = _map_key(full, data, max_points, seed)
    return full, map_cache_dir() / f"{key}.parquet", data, key


def is_prepared(root: str | Path, folder: str | Path, max_points: int = MAX_POINTS, seed: int = 0) -> bool:
    """Whether this map is in the explorer's cache (reading it back takes well under a second; scoring it
    takes a model load and one pass over the replies: about a minute for 10,000 on a loaded machine)."""
    _, cached, _, _ = _map_entry(root, folder, max_points, seed)
    return cached.is_file() and cached.with_suffix(".json").is_file()


def load_landscape(root: str | Path, folder: str | Path, max_points: int = MAX_POINTS, seed: int = 0,
                   model=None, cache: bool = True) -> Landscape:
    """Score and project up to `max_points` training replies of a train-rm run; the scored map is cached
    (Parquet + JSON, keyed by the model's and the data's files) so a folder reopens without rescoring and
    without loading the model."""
    from rm_lab import io

    full, cached, data, key = _map_entry(root, folder, max_points, seed)
    if cache and cached.is_file() and cached.with_suffix(".json").is_file():
        try:
            pts = pd.read_parquet(cached)
            meta = json.loads(cached.with_suffix(".json").read_text(encoding="utf-8"))
            return Landscape(full, pts, meta["explained"], meta["info"], Path(root), _model=model)
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry: score the map again (and overwrite it)
    rm = model if model is not None else load_model(root, full)
    records, population, where = training_records(root, full)
    ctx = _context_index(records)
    chars = records["character"]
    items = _items(records, max_points, seed)
    known = items["context_id"].isin(ctx.index)
    items = items[known].reset_index(drop=True)
    if items.empty:
        raise ConfigError(f"{where}: no reply whose context is in context records")
    rows = ctx.loc[items["context_id"]].reset_index()
    texts, style = rm.item_texts(rows, items["response"].tolist(), chars)
    feats = rm.member_features(texts)
    scores = rm.score_features(feats, style)
    xy, ratio = _project(feats[0] if isinstance(feats, list) else feats, seed)
    pts = items.assign(x=xy[:, 0], y=xy[:, 1])
    for k, v in scores.items():
        pts[k] = v
    if "score_std" in scores:
        pts[UNCERTAINTY] = scores["score_std"]
    if population is not None:
        from rm_lab.world.engagement import score_replies

        pts[TRUTH] = score_replies(items["response"].tolist(), rows, chars, population).true_engagement
    info = {"data": where, "n_points": int(len(pts)), "n_members": len(rm.members), "heads": rm.heads,
            "inputs": list(rm.cfg.inputs), "outputs": rm.outputs(), "simulated_world": population is not None,
            "map_key": key if cache else None}
    if cache:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            with io.atomic_path(cached) as tmp:
                pts.to_parquet(tmp, index=False)
            io.write_json(cached.with_suffix(".json"), {"explained": ratio, "info": info})
        except OSError:
            info["map_key"] = None  # a read-only cache: the map is scored again next time
    return Landscape(full, pts, ratio, info, Path(root), _model=rm, _records=(rows, chars, population))


def load_run_config_data(root: str | Path, folder: Path) -> list[Path]:
    """The data folders a train-rm run names (none for an on-the-fly world), checked to lie under root."""
    from rm_lab.runs import load_run_config

    data = load_run_config(folder).get("data")
    if not data:
        return []
    return [paths.run_folder(root, f, "training data (train-rm config `data`)")
            for f in ([data] if isinstance(data, str) else list(data))]


def heads_summary(land: Landscape) -> pd.DataFrame:
    """Per output: mean, sd and (with the truth) Spearman with the truth over the map's points."""
    out = []
    truth = land.points[TRUTH].rank().to_numpy(float) if TRUTH in land.points else None
    for c in land.colours:
        v = land.points[c].to_numpy(float)
        row = {"output": c, "mean": float(np.mean(v)), "sd": float(np.std(v))}
        if truth is not None and c != TRUTH and np.std(v) > 0:
            # Spearman = Pearson of the (average-tie) ranks; not scipy.stats, whose import alone costs seconds
            row["spearman_vs_truth"] = float(np.corrcoef(land.points[c].rank().to_numpy(float), truth)[0, 1])
        out.append(row)
    return pd.DataFrame(out)


def _sweep_path(land: Landscape, edit: str, levels: list[int], n_replies: int, seed: int, output: str) -> Path | None:
    """Where a sweep of a cached map is kept (None: the map itself is not cached)."""
    import hashlib

    key = land.info.get("map_key")
    if not key:
        return None
    h = hashlib.sha1(f"{key}|{edit}|{levels}|{n_replies}|{seed}|{output}|sweep-v1".encode()).hexdigest()[:20]
    return map_cache_dir() / "sweeps" / f"{h}.parquet"


def sweep_is_prepared(land: Landscape, edit: str, levels: list[int], n_replies: int = SWEEP_REPLIES, seed: int = 0,
                      output: str = "score") -> bool:
    """Whether this sweep of a cached map is in the explorer's cache."""
    path = _sweep_path(land, edit, [int(v) for v in levels], n_replies, seed, output)
    return path is not None and path.is_file()


def page_sweeps() -> list[tuple[str, list[int]]]:
    """The sweeps the page draws before any slider is moved: every style edit over all its levels."""
    from rm_lab.explore.edits import EDITS

    return [(edit, list(levels)) for edit, (_, _, levels) in EDITS.items()]


def style_sweep(land: Landscape, edit: str, levels: list[int] | None = None, n_replies: int = SWEEP_REPLIES,
                seed: int = 0, output: str = "score", cache: bool = True) -> pd.DataFrame:
    """Per level of one style edit: the model's mean `output` and the truth over `n_replies` edited replies,
    their mean change from the unedited replies, the ensemble spread, and the share of training replies
    at that level (`train_share`; near 0 = the model extrapolates there). A sweep of a cached map is kept
    beside it, so reopening the page neither loads the model nor scores the edited replies again."""
    from rm_lab.explore.edits import EDITS

    if edit not in EDITS:
        raise ConfigError(f"style edit '{edit}': expected one of {sorted(EDITS)}")
    fn, feature, default = EDITS[edit]
    levels = [int(v) for v in (levels if levels is not None else default)]
    if not levels:
        raise ConfigError("style sweep: give at least one level")
    if output not in land.points.columns:
        raise ConfigError(f"output '{output}': expected one of {land.outputs}")
    path = _sweep_path(land, edit, levels, n_replies, seed, output) if cache else None
    if path is not None and path.is_file():
        try:
            return pd.read_parquet(path)
        except (OSError, ValueError):
            pass  # damaged: computed again below
    out = _sweep(land, fn, feature, levels, n_replies, seed, output)
    if path is not None:
        from rm_lab import io

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with io.atomic_path(path) as tmp:
                out.to_parquet(tmp, index=False)
        except OSError:
            pass  # a read-only cache: computed again next time
    return out


def _sweep(land: Landscape, fn, feature: str, levels: list[int], n_replies: int, seed: int,
           output: str) -> pd.DataFrame:
    from rm_lab.features.style import style_frame

    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(land.points), size=min(n_replies, len(land.points)), replace=False))
    replies = land.points["response"].iloc[idx].tolist()
    rows = land.contexts.iloc[idx].reset_index(drop=True)
    base_score = land.points[output].to_numpy(float)[idx]
    world = land.population is not None
    if world:
        from rm_lab.world.engagement import score_replies

        base_truth = land.points[TRUTH].to_numpy(float)[idx]
    train_feat = land.style[feature].to_numpy(float)
    step = np.diff(sorted(set(levels))).min() / 2 if len(set(levels)) > 1 else 0.5
    out = []
    for lv in levels:
        edited = [fn(r, lv) for r in replies]
        sc = land.model.score(rows, edited, land.characters)
        s = np.asarray(sc[output], float)
        row = {"level": lv, "feature": feature, "feature_mean": float(style_frame(edited)[feature].mean()),
               "score": float(s.mean()), "score_change": float((s - base_score).mean()),
               "train_share": float(np.mean(np.abs(train_feat - lv) <= step)), "n": len(edited)}
        if f"{output}_std" in sc:
            row["ensemble_sd"] = float(np.mean(sc[f"{output}_std"]))
        if world:
            t = score_replies(edited, rows, land.characters, land.population).true_engagement
            row["truth"], row["truth_change"] = float(t.mean()), float((t - base_truth).mean())
        out.append(row)
    return pd.DataFrame(out)


def neighbours(land: Landscape, i: int, k: int = 5) -> pd.DataFrame:
    """The k replies nearest to point i on the map (what the model places next to it)."""
    if not 0 <= i < len(land.points):
        raise ConfigError(f"point {i}: expected 0..{len(land.points) - 1}")
    p = land.points
    d = np.hypot(p["x"] - p["x"].iloc[i], p["y"] - p["y"].iloc[i])
    cols = ["context_id", "response"] + land.colours
    return p.assign(distance=d).nsmallest(k + 1, "distance")[cols + ["distance"]].reset_index(drop=True)
