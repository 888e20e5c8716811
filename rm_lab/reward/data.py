"""Reward-model data: canonical records (of one or several sources) -> one table of (context, reply)
items with masked labels, plus preference pairs that point into it.

Every head (an entry of `rm_lab.reward.heads`) is stored as summable statistics (binomial: n trials and
k successes; ordinal: counts per level; ...), so logged rows, repeated (context, reply) rows and
pre-aggregated data share one loss; a head with n == 0 on a row is masked. Several sources (record
folders) train one model: their contexts and characters are merged (an id that two sources use for
different things is an error), and a head that two sources both label becomes one head per source
(`continue@convai2`), so each source's labels supervise only its own heads.
Only canonical columns are read: the world's hidden `truth_*` columns never reach training.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from rm_lab import io
from rm_lab.config import ConfigError
from rm_lab.features.style import FEATURES, style_frame
from rm_lab.reward.heads import (ARM_RECORD, SET_RECORD, BUILTIN, SOURCE_SEP, HeadSpec, declarations_from_records, declare, label_names,
                                 label_values, parse_config_heads)
from rm_lab.schema import RecordError, Records, check_keys, check_references

# record kinds whose rows label a (context, reply), in the order their items are laid out
ITEM_LABEL_KINDS = ("interaction", "steer_label", "label")
# ab_arm: A/B arms with a text (experiment_id = the context, text = the reply), read by arm_logit heads
# arm_reply_set: past A/B arms as the replies their policies wrote, read by arm_mean heads (rm_lab.reward.arm_mean)
LABEL_KINDS = ("interaction", "preference", "steer_label", "label", "ab_arm", "arm_reply_set")
RECORD_KINDS = ("character", "context", "head") + LABEL_KINDS


# ----------------------------------------------------------------------------------------------
# reading records

@dataclass
class Source:
    """One records folder (or in-memory bundle) of a training set, with the name its heads are known by."""

    name: str
    records: Records
    folder: str | None = None

    def path(self, kind: str) -> str | None:
        """The file the `kind` frame was read from (for error messages)."""
        if kind in self.records:
            p = self.records[kind].attrs.get("path")
            if p:
                return p
        return self.folder

    def rownum(self, kind: str):
        lines = self.records[kind].attrs.get("line_numbers") if kind in self.records else None
        return (lambda i: lines[i]) if lines is not None and len(lines) == len(self.records[kind]) else (lambda i: i)


def read_record_folder(folder: str | Path) -> Records:
    """Read `<kind>.parquet` / `<kind>.jsonl` files of a run folder (simulate, ingest, curate)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"data: folder '{folder}' does not exist")
    frames = io.read_record_folder(folder, RECORD_KINDS).frames
    for kind in ("character", "context"):
        if kind not in frames:
            raise RecordError(str(folder), None, None, f"files {sorted(p.name for p in folder.iterdir())}",
                              f"a {kind}.parquet or {kind}.jsonl file (reward-model inputs need it)")
    if not any(k in frames for k in LABEL_KINDS):
        raise ConfigError(f"data '{folder}': no label records: expected at least one of "
                          f"{[k + '.parquet' for k in LABEL_KINDS]} (interaction/preference/steer_label/label/ab_arm)")
    for kind, df in frames.items():
        for ext in (".parquet", ".jsonl"):
            if (folder / f"{kind}{ext}").exists():
                df.attrs["path"] = str(folder / f"{kind}{ext}")
                break
    return Records(frames)


def source_name(folder: str | Path) -> str:
    """What a records folder is called in head names: the source an `ingest` run read, else the folder's name."""
    folder = Path(folder)
    name = None
    report = folder / "report.json"
    if report.is_file():
        try:
            name = json.loads(report.read_text()).get("source")
        except (ValueError, AttributeError):
            name = None
    name = name if isinstance(name, str) and name and name != "records" else folder.resolve().name
    name = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "data"
    return name if name[0].isalpha() else f"s_{name}"


def read_sources(data: str | Path | Sequence[str | Path]) -> list[Source]:
    """One Source per records folder of `data` (a folder or a list of folders), each frame tagged `_source`."""
    folders = [data] if isinstance(data, (str, Path)) else list(data)
    if not folders:
        raise ConfigError("data: an empty list of record folders")
    sources: list[Source] = []
    seen: dict[str, int] = {}
    for f in folders:
        rec = read_record_folder(f)
        name = source_name(f)
        if name in seen:  # two folders of one dataset: number them, never merge their heads silently
            seen[name] += 1
            name = f"{name}_{seen[name]}"
        else:
            seen[name] = 1
        for df in rec.frames.values():
            df["_source"] = name
        sources.append(Source(name, rec, str(f)))
    return sources


def _canonical(df: pd.DataFrame, cols: list[str]) -> list[str]:
    return [json.dumps([row.get(c) for c in cols], default=str, sort_keys=True)
            for row in df[[c for c in cols if c in df.columns]].to_dict("records")]


def merge_sources(sources: Sequence[Source]) -> Records:
    """One bundle of several sources' records. A context or character id that two sources use for different
    records is a RecordError naming both (ids must not collide silently); the same record in both is one."""
    if len(sources) == 1:
        return sources[0].records
    frames: dict[str, pd.DataFrame] = {}
    keys = {"context": ("context_id", ["character_id", "history", "traffic"]),
            "character": ("character_id", ["name", "persona", "instructions"])}
    for kind in sorted({k for s in sources for k in s.records.frames}):
        parts = [(s, s.records[kind]) for s in sources if kind in s.records]
        if kind in keys:
            key, cols = keys[kind]
            first: dict[str, tuple[Source, int, str]] = {}
            keep_parts = []
            for s, df in parts:
                canon = _canonical(df, cols)
                keep = np.ones(len(df), bool)
                for i, (k, c) in enumerate(zip(df[key].astype(str), canon)):
                    if k in first:
                        s0, r0, c0 = first[k]
                        if s0 is not s and c0 != c:
                            raise RecordError(s.path(kind), s.rownum(kind)(i), key, k,
                                              f"an id not used by source '{s0.name}' for a different {kind} "
                                              f"({s0.path(kind)}, row {s0.rownum(kind)(r0)}): ids of two sources "
                                              f"must not collide (rename one source's ids)")
                        keep[i] = s0 is s
                    else:
                        first[k] = (s, i, c)
                keep_parts.append(df[keep])
            frames[kind] = pd.concat(keep_parts, ignore_index=True)
        else:
            frames[kind] = pd.concat([df for _, df in parts], ignore_index=True)
    return Records(frames)


# ----------------------------------------------------------------------------------------------
# formatting the encoder input

def character_card(row) -> str:
    """Name, persona and rendered instructions: what a character's reply is judged against."""
    persona = " ".join(str(p) for p in (row["persona"] if row["persona"] is not None else []))
    rules = []
    for ins in row["instructions"] if row["instructions"] is not None else []:
        if isinstance(ins, dict):
            iid = str(ins.get("instruction_id", "")).split(":")[-1].replace("_", " ")
            kw = ins.get("kwargs") or {}
            args = ", ".join(f"{k}={', '.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                             for k, v in kw.items() if k != "keywords")
            rules.append(f"{iid} ({args})" if args else iid)
        else:
            rules.append(str(ins))
    card = f"{row['name']}. {persona}"
    return card + (f" Rules: {'; '.join(rules)}." if rules else "")


def history_text(history) -> str:
    return " | ".join(f"{t['role']}: {t['content']}" for t in (history or []))


def _fit(tokenizer, texts: list[str], max_tokens: int, keep: str) -> list[str]:
    """Cut each text to `max_tokens` tokens, keeping the end (`keep='right'`) or the start."""
    if max_tokens <= 0:
        return [""] * len(texts)
    toks = tokenizer(texts, add_special_tokens=False)["input_ids"]
    out = []
    for t, ids in zip(texts, toks):
        if len(ids) <= max_tokens:
            out.append(t)
        else:
            ids = ids[-max_tokens:] if keep == "right" else ids[:max_tokens]
            out.append(tokenizer.decode(ids))
    return out


MARKERS = ("[CHAR]", "[CTX]", "[REPLY]")


def format_inputs(cards: list[str], histories: list[str], replies: list[str], tokenizer,
                  max_length: int = 256, card_max_tokens: int = 96, reply_max_tokens: int = 128) -> list[str]:
    """`[CHAR] card [CTX] conversation [REPLY] reply`, the conversation cut from the left to fit.

    The card and the reply get fixed token budgets; the conversation gets what is left, keeping its
    most recent turns, so the encoder always sees who speaks and the whole start of the reply.
    """
    cards = _fit(tokenizer, list(cards), card_max_tokens, "left")
    replies = _fit(tokenizer, list(replies), reply_max_tokens, "left")
    marker_len = len(tokenizer(" ".join(MARKERS), add_special_tokens=False)["input_ids"])
    c_len = [len(x) for x in tokenizer(cards, add_special_tokens=False)["input_ids"]]
    r_len = [len(x) for x in tokenizer(replies, add_special_tokens=False)["input_ids"]]
    out = []
    hist_ids = tokenizer(list(histories), add_special_tokens=False)["input_ids"]
    for c, h, r, cl, rl, hid in zip(cards, histories, replies, c_len, r_len, hist_ids):
        budget = max_length - 2 - marker_len - cl - rl
        text = f"[CHAR] {c} [CTX] {h} [REPLY] {r}"
        while len(hid) > budget:  # decoded cuts can re-tokenise a little longer: cut until it fits
            h = tokenizer.decode(hid[-budget:]) if budget > 0 else ""
            text = f"[CHAR] {c} [CTX] {h} [REPLY] {r}"
            over = len(tokenizer(text)["input_ids"]) - max_length
            if over <= 0 or budget <= 0:
                break
            budget -= over
        out.append(text)
    return out


def item_inputs(context_ids, replies, contexts: pd.DataFrame, characters: pd.DataFrame):
    """Card, history text and character keywords for each (context_id, reply)."""
    ctx = contexts.drop_duplicates("context_id").set_index("context_id")
    missing = [c for c in dict.fromkeys(context_ids) if c not in ctx.index]
    if missing:
        raise RecordError(None, None, "context_id", missing[0],
                          f"a context_id present in the context records ({len(missing)} unknown)")
    chars = characters.drop_duplicates("character_id").set_index("character_id")
    cids = ctx.loc[list(context_ids), "character_id"].tolist()
    unknown = [c for c in dict.fromkeys(cids) if c not in chars.index]
    if unknown:
        raise RecordError(None, None, "character_id", unknown[0], "a character_id present in the character records")
    cards_by_id = {cid: character_card(chars.loc[cid].to_dict())
                   for cid in dict.fromkeys(cids)}
    kw_col = chars["keywords"] if "keywords" in chars.columns else pd.Series(dtype=object)
    keywords = [kw_col.get(cid) if cid in kw_col.index else None for cid in cids]
    keywords = [k if isinstance(k, (list, tuple, np.ndarray)) else None for k in keywords]
    cards = [cards_by_id[c] for c in cids]
    hists = [history_text(h) for h in ctx.loc[list(context_ids), "history"]]
    return cards, hists, keywords


def style_matrix(replies, keywords) -> np.ndarray:
    return style_frame(list(replies), list(keywords)).to_numpy(np.float32)


# ----------------------------------------------------------------------------------------------
# the training table

@dataclass
class RewardData:
    """Unique (context, reply) items with per-head statistics, and pairs indexing into the items."""

    items: pd.DataFrame  # context_id, response, and each item head's statistic columns (HeadSpec.columns)
    pairs: pd.DataFrame  # chosen (item row), rejected (item row), margin, context_id
    heads: list[str] = field(default_factory=list)
    specs: dict[str, HeadSpec] = field(default_factory=dict)  # head -> its registry entry
    # arm_mean head -> its (reply, arm) membership rows with each arm's measured lift (rm_lab.reward.arm_mean)
    sets: dict[str, pd.DataFrame] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def spec(self, head: str) -> HeadSpec:
        return self.specs.get(head) or BUILTIN[head]

    def item_heads(self) -> list[str]:
        """The heads trained on items (every head but the pairwise Bradley-Terry one)."""
        return [h for h in self.heads if not self.spec(h).is_pairwise]

    def label_counts(self) -> dict[str, int]:
        """Labelled items per head (pairs for the Bradley-Terry head)."""
        return {h: len(self.pairs) if self.spec(h).is_pairwise else int((self.items[f"{h}_n"] > 0).sum())
                for h in self.heads}

    def subset(self, context_ids) -> "RewardData":
        """Items and pairs of the given contexts (pairs re-indexed)."""
        keep = self.items["context_id"].isin(set(context_ids)).to_numpy()
        new_index = np.full(len(self.items), -1)
        new_index[keep] = np.arange(keep.sum())
        pairs = self.pairs[self.pairs["context_id"].isin(set(context_ids))].copy()
        pairs["chosen"] = new_index[pairs["chosen"].to_numpy()]
        pairs["rejected"] = new_index[pairs["rejected"].to_numpy()]
        ids = set(context_ids)
        sets = {h: m[m["context_id"].isin(ids)].reset_index(drop=True) for h, m in self.sets.items()}
        return RewardData(self.items[keep].reset_index(drop=True), pairs.reset_index(drop=True), list(self.heads),
                          dict(self.specs), sets)


def _as_sources(records: Records | Sequence[Source]) -> list[Source]:
    return [Source("data", records)] if isinstance(records, Records) else list(records)


def _catalogue(src: Source, decls: dict[str, dict | None]) -> dict[str, HeadSpec]:
    """The heads one source can train: the built-in ones, its own `head` records, then the config's declarations."""
    cat = dict(BUILTIN)
    if "head" in src.records:
        cat.update(declarations_from_records(src.records["head"], src.path("head")))
    for name, d in decls.items():
        if d is not None:
            cat[name] = declare(name, d, "heads", cat.get(name))
    return cat


def _hits(spec: HeadSpec, src: Source) -> tuple[int, pd.DataFrame | None]:
    """(number of labels, the label rows) of `spec` in one source; pairs for the Bradley-Terry head."""
    if spec.is_pairwise:
        return (len(src.records["preference"]) if "preference" in src.records else 0), None
    frame = src.records[spec.record] if spec.record in src.records else None
    rows = label_values(spec, frame, src.path(spec.record), src.rownum(spec.record))
    return len(rows), rows


def _no_labels(specs: Sequence[HeadSpec], sources: Sequence[Source], declared: bool,
               labelled: Sequence[str]) -> ConfigError:
    """The error for heads asked for (or declared) whose labels no source holds: where each was looked for,
    what is there instead, and which heads do have labels."""
    parts = []
    for spec in specs:
        found = []
        for s in sources:
            frame = s.records[spec.record] if spec.record in s.records else None
            if frame is None:
                found.append(f"{s.folder or 'the data'} has no {spec.record} records")
            elif spec.record == "label":
                found.append(f"{s.path('label') or 'label records'}: field 'name' holds {label_names(frame)}")
            else:
                found.append(f"{s.path(spec.record) or spec.record + ' records'}: no values in field '{spec.col}'")
        parts.append(f"{spec.name} ({spec.likelihood}, from {spec.describe()}: {'; '.join(found)})")
    names = [s.name for s in specs]
    what = "declared" if declared else "asked for"
    return ConfigError(f"heads: {names} {what} but the data has no labels for {', '.join(parts)}; "
                       f"labelled heads: {list(labelled)}")


def resolve_heads(records: Records | Sequence[Source], heads=None) -> list[tuple[HeadSpec, list]]:
    """The heads to train and, per head, its label rows per source: [(spec, [(source, rows)])].

    `heads`: None (every head the data labels), a list of names, or a mapping of declarations
    (`rm_lab.reward.heads.parse_config_heads`), or a list of HeadSpec (a trained model's: heads without
    labels in these records are left out, never an error)."""
    sources = _as_sources(records)
    if isinstance(heads, (list, tuple)) and heads and all(isinstance(h, HeadSpec) for h in heads):
        out = []
        for spec in heads:
            hits = []
            for s in sources:  # a head of one source reads only that source's records (folders are named)
                if spec.source is not None and s.folder is not None and s.name != spec.source:
                    continue
                n, rows = _hits(spec, s)
                if n:
                    hits.append((s, rows))
            if hits:
                out.append((spec, hits))
        return out
    asked, decls, excluded = parse_config_heads(heads)
    cats = [_catalogue(s, decls) for s in sources]
    order: list[str] = list(dict.fromkeys(n for c in cats for n in c))
    found: dict[str, list[tuple[Source, HeadSpec, pd.DataFrame | None]]] = {}
    for s, cat in zip(sources, cats):
        for name, spec in cat.items():
            n, rows = _hits(spec, s)
            if n:
                found.setdefault(name, []).append((s, spec, rows))
    # one head per (name, source) when several sources label the same item head
    expanded: dict[str, list[tuple[HeadSpec, list]]] = {}
    for name in order:
        hits = found.get(name)
        if not hits:
            continue
        spec = hits[0][1]
        if spec.is_pairwise or len(hits) == 1:
            expanded[name] = [(spec, [(s, r) for s, _, r in hits])]
        else:
            expanded[name] = [(replace(sp, name=f"{name}{SOURCE_SEP}{s.name}", source=s.name,
                                       output=f"{sp.out}{SOURCE_SEP}{s.name}"), [(s, r)]) for s, sp, r in hits]
    final_names = {sp.name: (sp, h) for v in expanded.values() for sp, h in v}
    labelled = list(final_names)
    spec_named = lambda h: next(c[h] for c in cats if h in c)  # noqa: E731
    if asked is not None:
        unknown = [h for h in asked if h not in order and h not in final_names]
        if unknown:
            raise ConfigError(f"heads: unknown {unknown}; known heads: {order} (declare a new one as a mapping, "
                              f"e.g. heads: {{{unknown[0]}: {{kind: ordinal, levels: 5}}}})")
        empty = [h for h in asked if h not in expanded and h not in final_names]
        if empty:
            raise _no_labels([spec_named(h) for h in empty], sources, False, labelled)
        picked = [x for h in asked for x in (expanded[h] if h in expanded else [final_names[h]])]
        return list({sp.name: (sp, hh) for sp, hh in picked}.values())
    for name, d in decls.items():
        if name not in order:
            raise ConfigError(f"heads.{name}: not a built-in head nor one the data declares; declare it with a kind "
                              f"(e.g. {{kind: ordinal, levels: 5, column: <label name>}}); known heads: {order}")
    empty = [n for n in decls if n not in expanded]
    if empty:
        raise _no_labels([spec_named(n) for n in empty], sources, any(decls[n] is not None for n in empty), labelled)
    unknown = [h for h in excluded if h not in order]
    if unknown:
        raise ConfigError(f"heads: cannot leave out unknown {unknown}; known heads: {order}")
    return [x for name, v in expanded.items() if name not in excluded for x in v]


def labelled_heads(records: Records | Sequence[Source]) -> list[str]:
    """The heads the records carry labels for (built-in or declared by the data)."""
    return [spec.name for spec, _ in resolve_heads(records, None)]


def build_reward_data(records: Records | Sequence[Source], heads=None, aggregate: bool = True) -> RewardData:
    """Assemble items, labels and pairs (of one bundle or several sources); check that every requested head
    has labels. `heads` as in `resolve_heads`."""
    sources = _as_sources(records)
    for s in sources:
        for kind in ("character", "context"):  # records handed over in memory are checked like files
            if kind in s.records:
                check_keys(s.records[kind], kind)
        check_references(s.records.frames, s.folder)  # within each source: a label of a missing context
    given_specs = isinstance(heads, (list, tuple)) and heads and all(isinstance(h, HeadSpec) for h in heads)
    resolved = resolve_heads(sources, heads)
    item_specs = [sp for sp, _ in resolved if not sp.is_pairwise]
    blocks: list[pd.DataFrame] = []
    pair_frames: list[pd.DataFrame] = []
    sets: dict[str, pd.DataFrame] = {}
    for s in sources:
        for kind in ITEM_LABEL_KINDS:
            if kind not in s.records:
                continue
            f = s.records[kind]
            t = pd.DataFrame({"context_id": f["context_id"].to_numpy(), "response": f["response"].to_numpy(),
                              "_logged": True})
            for spec, hits in resolved:
                if spec.is_pairwise or spec.record != kind:
                    continue
                for src, rows in hits:
                    if src is not s:
                        continue
                    pos = rows["row"].to_numpy()
                    for c, v in spec.row_stats(rows["value"].to_numpy()).items():
                        col = np.zeros(len(f))
                        col[pos] = v
                        t[c] = col
            blocks.append(t)
        if ARM_RECORD in s.records:
            blocks.extend(_arm_blocks(s, resolved))
        if SET_RECORD in s.records:
            from rm_lab.reward.arm_mean import set_blocks

            b, st = set_blocks(s, resolved)
            blocks.extend(b)
            for h, m in st.items():
                sets[h] = pd.concat([sets[h], m], ignore_index=True) if h in sets else m
        if "preference" in s.records:
            pr = s.records["preference"]
            for col in ("chosen", "rejected"):
                blocks.append(pd.DataFrame({"context_id": pr["context_id"].to_numpy(), "response": pr[col].to_numpy(),
                                            "_logged": False}))
            pair_frames.append(pr)
    if not blocks:
        raise ConfigError("no label records: need interaction, preference, steer_label or label records")
    sum_cols = [c for sp in item_specs for c in sp.sum_columns()]
    allrows = pd.concat(blocks, ignore_index=True)
    for c in sum_cols:
        allrows[c] = allrows[c].fillna(0.0).astype(float) if c in allrows else 0.0
    if aggregate:
        items = allrows.groupby(["context_id", "response"], sort=False, as_index=False)[sum_cols].sum()
    else:  # keep logged rows (interaction, steer_label, label) apart; pairs still need one row per (context, reply)
        logged = allrows["_logged"].to_numpy(bool)
        labelled = allrows[logged]
        unl = allrows[~logged].drop_duplicates(["context_id", "response"])
        unl = unl[~unl.set_index(["context_id", "response"]).index.isin(
            labelled.set_index(["context_id", "response"]).index)]
        items = pd.concat([labelled, unl], ignore_index=True)[["context_id", "response", *sum_cols]]
    for sp in item_specs:
        sp.finish(items)

    if pair_frames:
        first = {}
        for i, key in enumerate(zip(items["context_id"], items["response"])):
            first.setdefault(key, i)
        parts = []
        for pr in pair_frames:
            margin = (pd.to_numeric(pr["margin"], errors="coerce").fillna(0.0).to_numpy(float)
                      if "margin" in pr else np.zeros(len(pr)))
            parts.append(pd.DataFrame({
                "chosen": np.array([first[k] for k in zip(pr["context_id"], pr["chosen"])], dtype=np.int64),
                "rejected": np.array([first[k] for k in zip(pr["context_id"], pr["rejected"])], dtype=np.int64),
                "margin": margin, "context_id": pr["context_id"].to_numpy()}))
        pairs = pd.concat(parts, ignore_index=True)
        pairs = pairs[pairs["chosen"] != pairs["rejected"]].reset_index(drop=True)
    else:
        pairs = pd.DataFrame({"chosen": pd.Series(dtype=int), "rejected": pd.Series(dtype=int),
                              "margin": pd.Series(dtype=float), "context_id": pd.Series(dtype=object)})
    specs = {sp.name: sp for sp, _ in resolved}
    if "preference" in specs and not len(pairs) and not given_specs:
        raise _no_labels([specs["preference"]], sources, False, [h for h in specs if h != "preference"])
    if not specs and not given_specs:
        raise ConfigError("no labels: the records carry no label for any head "
                          f"({', '.join(f'{h} from {s.describe()}' for h, s in BUILTIN.items())}, or declared heads "
                          f"over label records)")
    return RewardData(items, pairs, list(specs), specs, sets)

def _arm_blocks(s: Source, resolved) -> list[pd.DataFrame]:
    """Items of the ab_arm records of one source: (experiment_id, arm text) with each arm_logit head's
    impressions and clicks; every experiment must be a context record (its arms are replies to it)."""
    arms = s.records[ARM_RECORD]
    out = []
    ctx = set(s.records["context"]["context_id"].astype(str)) if "context" in s.records else set()
    for spec, hits in resolved:
        if spec.record != ARM_RECORD:
            continue
        for src, rows in hits:
            if src is not s or not len(rows):
                continue
            missing = ~rows["context_id"].isin(ctx).to_numpy()
            if missing.any():
                i = int(rows["row"].to_numpy()[np.flatnonzero(missing)[0]])
                raise RecordError(s.path(ARM_RECORD), s.rownum(ARM_RECORD)(i), "experiment_id",
                                  arms["experiment_id"].iloc[i],
                                  "an experiment_id that is a context_id of the context records (the arms of an "
                                  f"experiment are replies to one context; {int(missing.sum())} arm rows lack one)")
            t = pd.DataFrame({"context_id": rows["context_id"].to_numpy(object),
                              "response": rows["response"].to_numpy(object), "_logged": True})
            for c, v in spec.row_stats(rows["value"].to_numpy(), rows["trials"].to_numpy()).items():
                t[c] = v
            out.append(t)
    return out


def context_groups(contexts: pd.DataFrame, by: str) -> dict | None:
    """context -> the unit held out whole: None (each context), its character, or its conversation."""
    if by == "context":
        return None
    if by == "character":
        return dict(zip(contexts["context_id"], contexts["character_id"]))
    if by == "conversation":
        conv = contexts["conversation_id"] if "conversation_id" in contexts.columns else pd.Series(None, index=contexts.index)
        return {c: (str(v) if pd.notna(v) else c) for c, v in zip(contexts["context_id"], conv)}
    raise ConfigError(f"val_split={by!r}: expected 'context', 'character' or 'conversation'")


def split_contexts(context_ids, val_fraction: float, seed: int, groups: dict | None = None
                   ) -> tuple[list[str], list[str]]:
    """Held-out contexts by a seeded hash of their group (`rm_lab.reward.folds.holdout_groups`), so the
    split does not depend on row order.

    `groups` (context -> group key, e.g. its character) holds out whole groups: the contexts of one
    dialogue or one character then never sit on both sides."""
    from rm_lab.reward.folds import holdout_groups

    ids = sorted(set(context_ids))
    key = (lambda c: str(groups.get(c, c))) if groups is not None else str
    held = holdout_groups(map(key, ids), val_fraction, seed)
    return [c for c in ids if key(c) not in held], [c for c in ids if key(c) in held]


def context_fingerprints(contexts: pd.DataFrame, characters: pd.DataFrame, ids) -> dict[str, str]:
    """A content hash per context id: its character, history and traffic, and that character's card
    (name, persona, instructions, keywords), i.e. what the model reads besides the reply. A held-out
    split is checked by these, so another world whose ids collide with the held-out ones is refused."""
    import hashlib
    import json

    def plain(v):
        if isinstance(v, (list, tuple, np.ndarray)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, np.generic):
            return v.item()
        return None if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA else v

    ctx = contexts.drop_duplicates("context_id").set_index("context_id")
    chars = characters.drop_duplicates("character_id").set_index("character_id")
    card_cols = [c for c in ("name", "persona", "instructions", "keywords") if c in chars.columns]
    out = {}
    for cid in ids:
        if cid not in ctx.index:
            continue
        row = ctx.loc[cid]
        char = chars.loc[row["character_id"]] if row["character_id"] in chars.index else None
        content = {"character_id": row["character_id"], "history": plain(row["history"]), "traffic": row["traffic"],
                   "character": None if char is None else {c: plain(char[c]) for c in card_cols}}
        text = json.dumps(plain(content), sort_keys=True, ensure_ascii=False)
        out[cid] = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return out


def check_heldout_content(split: dict, records: Records, source: str | None, say=print) -> None:
    """Refuse records whose contexts under the model's held-out ids differ in content from the ones it
    held out (split.json `heldout_fingerprints`): scoring them as held out would be a false claim."""
    expected = split.get("heldout_fingerprints")
    if expected is None:
        say("note: split.json has no content fingerprints (a model from an older rm_lab): held-out "
            "contexts are matched by id only")
        return
    ctx = records["context"]
    got = context_fingerprints(ctx, records["character"], [c for c in expected if c in set(ctx["context_id"])])
    differ = [c for c, h in got.items() if h != expected[c]]
    if differ:
        pos = int(np.flatnonzero(ctx["context_id"].to_numpy() == differ[0])[0])
        lines = ctx.attrs.get("line_numbers")
        raise RecordError(source, lines[pos] if lines else pos, "context_id", differ[0],
                          f"the content the model held out under this id; {len(differ)} of the {len(got)} "
                          "held-out ids found here name other contexts (another world or data set whose ids "
                          "collide with the model's): evaluate them with split=all, or give the model's own data")


__all__ = ["FEATURES", "RewardData", "Source", "build_reward_data", "format_inputs", "item_inputs",
           "merge_sources", "read_record_folder", "read_sources", "resolve_heads", "context_groups", "split_contexts",
           "style_matrix", "character_card", "history_text", "LABEL_KINDS", "RECORD_KINDS"]
