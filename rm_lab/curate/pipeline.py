"""`curate`: scrub, de-duplicate, pair-filter and diversity-sample canonical records.

The unit of curation is an *item*: an interaction (a context and a reply), a preference pair (a
context and two replies), or a context that nothing else refers to (a bare prompt). Steps run in
this order, each on the survivors of the one before, and each reports what it removed and why:

1. scrub identifiers in every free-text field (nothing is removed);
2. drop exact and near duplicates within each item kind, comparing conversations of the same
   character (context turns + replies);
3. drop preference pairs too lopsided in length or emoji;
4. diversity-sample each kind named in `sample_size`, stratified by traffic to `traffic_mix`
   (a kind not named there is not sampled).

Then the records that hang off items follow them: a context is kept while a kept item refers to
it; a steer label is kept while its context is kept and, where the context has logged interactions,
while its reply is one of the kept ones. Characters and A/B arms pass through unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import pandas as pd

from rm_lab import io
from rm_lab.config import MAX_SEED, check_fields, param
from rm_lab.schema import TRAFFIC_SOURCES, RecordError, Records, drop_dangling

ITEM_KINDS = ("interaction", "preference", "context")


@dataclass
class CurateConfig:
    """What `rm_lab curate` does to a folder of canonical records."""

    input: str = param("", doc="a folder of <kind>.parquet/.jsonl files, or a run id under the runs root")
    seed: int = param(0, doc="seed of the MinHash permutations, clustering and sampling", ge=0, le=MAX_SEED)
    scrub: bool = param(True, doc="replace emails, phone numbers, @handles and URLs with placeholders")
    dedup: bool = param(True, doc="drop exact and near duplicates within each item kind")
    near_duplicate_threshold: float = param(0.8, doc="word-shingle Jaccard at or above which items are near copies",
                                            gt=0, le=1)
    shingle_words: int = param(3, doc="words per shingle for the near-duplicate Jaccard", ge=1, le=64)
    minhash_permutations: int = param(128, doc="MinHash permutations (LSH bands of 4)", ge=4, le=4096, multiple_of=4)
    pair_filter: bool = param(True, doc="drop preference pairs lopsided in length or emoji")
    max_length_ratio: float = param(2.0, doc="longer/shorter word count allowed in a pair (<= 0: no check)")
    max_emoji_diff: int = param(2, doc="emoji-count difference allowed in a pair (< 0: no check)")
    diversity: bool = param(True, doc="diversity-sample the kinds named in sample_size")
    sample_size: dict[str, int] = param({}, doc="item kind -> target size of the diversity sample",
                                        keys=ITEM_KINDS, ge=1)
    traffic_mix: dict[str, float] = param({}, doc="traffic -> share of the sample, e.g. {internal: 0.3, user: 0.7} "
                                          "({}: as is)", keys=TRAFFIC_SOURCES, ge=0, le=1)
    n_clusters: int = param(16, doc="embedding clusters the diversity sample spreads over", ge=1, le=100_000)
    embedding: Literal["auto", "minilm", "tfidf"] = param("auto", doc="auto: MiniLM if its package is installed, "
                                                          "else tfidf (TF-IDF + SVD)")
    tfidf_components: int = param(64, doc="SVD components of the TF-IDF embedding", ge=1, le=4096)

    def __post_init__(self):
        check_fields(self)
        if self.traffic_mix:
            total = sum(self.traffic_mix.values())
            if not math.isclose(total, 1.0, abs_tol=1e-6):
                raise ValueError(f"traffic_mix: shares must sum to 1, got {total}")
            self.traffic_mix = {k: float(v) for k, v in self.traffic_mix.items()}


# ----------------------------------------------------------------------------------------------
# input

def resolve_input(spec: str, runs_root: Path | None = None) -> Path:
    """A folder path, or a run id looked up as <runs root>/<kind>/<id>."""
    from rm_lab.runs import runs_root as default_root

    if not spec:
        raise RecordError(None, None, "input", spec, "input=FOLDER or input=RUN_ID (a folder of record files)")
    p = Path(spec)
    if p.is_dir():
        return p
    root = runs_root or default_root()
    matches = sorted(q for q in root.glob(f"*/{spec}") if q.is_dir()) if "/" not in spec else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise RecordError(None, None, "input", spec, f"one run, found {[str(m) for m in matches]}")
    raise RecordError(None, None, "input", spec, f"an existing folder or a run id under {root}")


def load_folder(folder: str | Path) -> Records:
    """Every canonical record file `<kind>.parquet` (or `.jsonl`) in a folder, validated."""
    return io.read_record_folder(folder)


# ----------------------------------------------------------------------------------------------
# items

def _history_text(h) -> str:
    return "\n".join(t.get("content", "") for t in (h or []) if isinstance(t, dict))


def _items(frames: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Per item kind: row index into its frame, context id, character, traffic, and the text compared."""
    ctx = frames.get("context")
    if ctx is not None:
        cinfo = ctx.drop_duplicates("context_id").set_index("context_id")
        hist = {cid: _history_text(h) for cid, h in zip(cinfo.index, cinfo["history"])}
        char = cinfo["character_id"].to_dict()
        traffic = cinfo["traffic"].to_dict()
    else:
        hist, char, traffic = {}, {}, {}
    out: dict[str, pd.DataFrame] = {}

    def frame(cids, texts, rows):
        return pd.DataFrame({"row": rows, "context_id": cids, "character_id": [char.get(c, "") for c in cids],
                             "traffic": [traffic.get(c) for c in cids], "text": texts})

    referenced: set[str] = set()
    if "interaction" in frames:
        df = frames["interaction"]
        cids = df["context_id"].tolist()
        referenced.update(cids)
        out["interaction"] = frame(cids, [hist.get(c, "") + "\n" + r for c, r in zip(cids, df["response"])],
                                   np.arange(len(df)))
    if "preference" in frames:
        df = frames["preference"]
        cids = df["context_id"].tolist()
        referenced.update(cids)
        out["preference"] = frame(cids, [hist.get(c, "") + "\n" + a + "\n" + b
                                         for c, a, b in zip(cids, df["chosen"], df["rejected"])], np.arange(len(df)))
    if ctx is not None:
        rows = np.flatnonzero(~ctx["context_id"].isin(referenced).to_numpy())
        if len(rows):
            cids = ctx["context_id"].iloc[rows].tolist()
            out["context"] = frame(cids, [hist.get(c, "") for c in cids], rows)
    return out


# ----------------------------------------------------------------------------------------------
# the pipeline

def curate(records: Records, cfg: CurateConfig, progress: Callable[[str], None] | None = None) -> tuple[Records, dict]:
    """Curated records and a report {input, output, steps: {scrub, dedup, pair_filter, diversity}, cascade}."""
    from rm_lab.curate.dedup import dedup_texts
    from rm_lab.curate.diversity import diversity_sample, embed_texts, load_minilm
    from rm_lab.curate.pairs import pair_filter
    from rm_lab.curate.scrub import scrub_frames

    say = progress or (lambda m: None)
    frames = dict(records.frames)
    report: dict = {"input": records.counts(), "steps": {}}

    if cfg.scrub:
        say("scrubbing identifiers")
        frames, report["steps"]["scrub"] = scrub_frames(frames)

    items = _items(frames)
    if cfg.dedup:
        report["steps"]["dedup"] = {}
        for kind, it in items.items():
            say(f"de-duplicating {kind}")
            keep, rep = dedup_texts(it["text"].tolist(), cfg.near_duplicate_threshold, cfg.shingle_words,
                                    cfg.minhash_permutations, cfg.seed, groups=it["character_id"].tolist())
            report["steps"]["dedup"][kind] = rep
            items[kind] = it[keep].reset_index(drop=True)

    if cfg.pair_filter and "preference" in items:
        say("filtering preference pairs")
        it = items["preference"]
        keep, rep = pair_filter(frames["preference"].iloc[it["row"].to_numpy()], cfg.max_length_ratio,
                                cfg.max_emoji_diff)
        report["steps"]["pair_filter"] = rep
        items["preference"] = it[keep].reset_index(drop=True)

    if cfg.diversity and cfg.sample_size:
        report["steps"]["diversity"] = {}
        encoder = None
        if cfg.embedding != "tfidf" and any(k in items for k in cfg.sample_size):
            say("loading the MiniLM encoder")
            encoder = load_minilm(required=cfg.embedding == "minilm")
        for kind, target in cfg.sample_size.items():
            if kind not in items:
                report["steps"]["diversity"][kind] = {"skipped": f"no {kind} items in the input"}
                continue
            it = items[kind]
            say(f"embedding {len(it)} {kind} items")
            method = "tfidf" if encoder is None else "minilm"
            emb, used = embed_texts(it["text"].tolist(), method, cfg.tfidf_components, cfg.seed, encoder)
            say(f"diversity-sampling {kind}")
            strata = it["traffic"].fillna("unknown").tolist()
            sel, rep = diversity_sample(emb, target, strata, cfg.traffic_mix or None, cfg.n_clusters, cfg.seed)
            rep["embedding"] = used
            report["steps"]["diversity"][kind] = rep
            items[kind] = it.iloc[sel].reset_index(drop=True)

    out, cascade = _assemble(frames, items)
    report["cascade"] = cascade
    report["output"] = {k: len(v) for k, v in out.items()}
    return Records(out), report


def _assemble(frames: dict[str, pd.DataFrame], items: dict[str, pd.DataFrame]) -> tuple[dict, dict]:
    out: dict[str, pd.DataFrame] = {}
    for kind in ("interaction", "preference"):
        if kind in frames:
            out[kind] = frames[kind].iloc[np.sort(items[kind]["row"].to_numpy())].reset_index(drop=True)
    cascade: dict[str, int] = {}
    kept_ctx: set[str] = set()
    for kind in ("interaction", "preference"):
        if kind in out:
            kept_ctx.update(out[kind]["context_id"])
    if "context" in frames:
        ctx = frames["context"]
        orphan_rows = set(items["context"]["row"].tolist()) if "context" in items else set()
        referenced = ctx["context_id"].isin(kept_ctx).to_numpy()
        orphan_kept = np.isin(np.arange(len(ctx)), np.array(sorted(orphan_rows), dtype=int))
        keep = referenced | orphan_kept
        out["context"] = ctx[keep].reset_index(drop=True)
        kept_ctx.update(out["context"]["context_id"])
        as_items = len(_orphans(frames)) - len(orphan_rows)
        cascade["context_removed_as_items"] = as_items
        cascade["context_removed_with_items"] = int((~keep).sum()) - as_items
    if "steer_label" in frames:
        st = frames["steer_label"]
        ok = st["context_id"].isin(kept_ctx).to_numpy().copy()
        if "interaction" in frames:
            logged = set(frames["interaction"]["context_id"])
            kept_pairs = set(zip(out["interaction"]["context_id"], out["interaction"]["response"]))
            follows = np.array([(c not in logged) or ((c, r) in kept_pairs)
                                for c, r in zip(st["context_id"], st["response"])], dtype=bool)
            ok &= follows
        out["steer_label"] = st[ok].reset_index(drop=True)
        cascade["steer_label_removed"] = int((~ok).sum())
    for kind in frames:
        if kind not in out:
            out[kind] = frames[kind]
    out, cut = drop_dangling(out)  # kinds passed through (label) follow their contexts, never dangle
    for kind, *_ in cut:
        cascade[f"{kind}_removed"] = cascade.get(f"{kind}_removed", 0) + 1
    return {k: out[k] for k in frames}, cascade


def _orphans(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    ctx = frames["context"]
    referenced = set()
    for kind in ("interaction", "preference"):
        if kind in frames:
            referenced.update(frames[kind]["context_id"])
    return ctx[~ctx["context_id"].isin(referenced)]
