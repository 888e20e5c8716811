"""Reward-model data: canonical records -> one table of (context, reply) items with masked labels,
plus preference pairs that point into it.

Every head is stored as aggregated binomial counts (n trials, k successes) so logged rows, repeated
(context, reply) rows and pre-aggregated data share one loss; a head with n == 0 on a row is masked.
Only canonical columns are read: the world's hidden `truth_*` columns never reach training.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rm_lab import io
from rm_lab.config import ConfigError
from rm_lab.features.style import FEATURES, style_frame
from rm_lab.schema import RecordError, Records

BINARY_HEADS = ("continue", "thumb_up", "thumb_down", "regenerate", "followed", "violation")
COUNT_HEADS = ("depth",)
ITEM_HEADS = BINARY_HEADS + COUNT_HEADS
ALL_HEADS = ("preference",) + ITEM_HEADS
LABEL_KINDS = ("interaction", "preference", "steer_label")
RECORD_KINDS = ("character", "context") + LABEL_KINDS

# which record kind (and column) feeds each head: used to name what is missing in errors
HEAD_SOURCE = {"preference": "preference (chosen/rejected)", "continue": "interaction.continued",
               "thumb_up": "interaction.thumb", "thumb_down": "interaction.thumb",
               "regenerate": "interaction.regenerated", "depth": "interaction.depth",
               "followed": "steer_label.followed", "violation": "steer_label.violation"}


# ----------------------------------------------------------------------------------------------
# reading records

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
                          f"{[k + '.parquet' for k in LABEL_KINDS]} (interaction/preference/steer_label)")
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
    """Unique (context, reply) items with per-head counts, and pairs indexing into the items."""

    items: pd.DataFrame  # context_id, response, <head>_n, <head>_k for every item head
    pairs: pd.DataFrame  # chosen (item row), rejected (item row), margin, context_id
    heads: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def label_counts(self) -> dict[str, int]:
        out = {"preference": len(self.pairs)}
        for h in ITEM_HEADS:
            out[h] = int((self.items[f"{h}_n"] > 0).sum())
        return out

    def subset(self, context_ids) -> "RewardData":
        """Items and pairs of the given contexts (pairs re-indexed)."""
        keep = self.items["context_id"].isin(set(context_ids)).to_numpy()
        new_index = np.full(len(self.items), -1)
        new_index[keep] = np.arange(keep.sum())
        pairs = self.pairs[self.pairs["context_id"].isin(set(context_ids))].copy()
        pairs["chosen"] = new_index[pairs["chosen"].to_numpy()]
        pairs["rejected"] = new_index[pairs["rejected"].to_numpy()]
        return RewardData(self.items[keep].reset_index(drop=True), pairs.reset_index(drop=True), list(self.heads))


def build_reward_data(records: Records, heads: list[str] | None = None, aggregate: bool = True) -> RewardData:
    """Assemble items, labels and pairs; check that every requested head has labels."""
    rows: list[pd.DataFrame] = []
    if "interaction" in records:
        it = records["interaction"]
        n = len(it)
        lab = pd.DataFrame({"context_id": it["context_id"].to_numpy(), "response": it["response"].to_numpy()})
        cont = it["continued"].astype(float).to_numpy()
        lab["continue_n"], lab["continue_k"] = 1.0, cont
        thumb = pd.to_numeric(it["thumb"], errors="coerce").to_numpy(float) if "thumb" in it else np.full(n, np.nan)
        has_t = ~np.isnan(thumb)
        lab["thumb_up_n"], lab["thumb_up_k"] = has_t.astype(float), np.where(has_t, thumb == 1, 0).astype(float)
        lab["thumb_down_n"], lab["thumb_down_k"] = has_t.astype(float), np.where(has_t, thumb == -1, 0).astype(float)
        regen = (pd.to_numeric(it["regenerated"].astype("float64"), errors="coerce").to_numpy()
                 if "regenerated" in it else np.full(n, np.nan))
        has_r = ~np.isnan(regen)
        lab["regenerate_n"], lab["regenerate_k"] = has_r.astype(float), np.where(has_r, regen, 0.0)
        depth = pd.to_numeric(it["depth"], errors="coerce").to_numpy(float) if "depth" in it else np.full(n, np.nan)
        has_d = ~np.isnan(depth)
        lab["depth_n"], lab["depth_k"] = has_d.astype(float), np.where(has_d, depth, 0.0)
        rows.append(lab)
    if "steer_label" in records:
        st = records["steer_label"]
        lab = pd.DataFrame({"context_id": st["context_id"].to_numpy(), "response": st["response"].to_numpy()})
        lab["followed_n"], lab["followed_k"] = 1.0, st["followed"].astype(float).to_numpy()
        lab["violation_n"], lab["violation_k"] = 1.0, st["violation"].astype(float).to_numpy()
        rows.append(lab)
    if "preference" in records:
        pr = records["preference"]
        for col in ("chosen", "rejected"):
            rows.append(pd.DataFrame({"context_id": pr["context_id"].to_numpy(), "response": pr[col].to_numpy()}))
    if not rows:
        raise ConfigError("no label records: need interaction, preference or steer_label records")
    count_cols = [f"{h}_{s}" for h in ITEM_HEADS for s in ("n", "k")]
    allrows = pd.concat(rows, ignore_index=True)
    for c in count_cols:
        allrows[c] = allrows[c].fillna(0.0).astype(float) if c in allrows else 0.0
    allrows = allrows[["context_id", "response", *count_cols]]
    if aggregate:
        items = allrows.groupby(["context_id", "response"], sort=False, as_index=False)[count_cols].sum()
    else:  # keep logged rows apart; pairs still need one row per (context, reply)
        labelled = allrows[allrows[[f"{h}_n" for h in ITEM_HEADS]].sum(axis=1) > 0]
        unl = allrows.drop(labelled.index).drop_duplicates(["context_id", "response"])
        unl = unl[~unl.set_index(["context_id", "response"]).index.isin(
            labelled.set_index(["context_id", "response"]).index)]
        items = pd.concat([labelled, unl], ignore_index=True)

    if "preference" in records:
        pr = records["preference"]
        first = {}
        for i, key in enumerate(zip(items["context_id"], items["response"])):
            first.setdefault(key, i)
        margin = (pd.to_numeric(pr["margin"], errors="coerce").fillna(0.0).to_numpy(float)
                  if "margin" in pr else np.zeros(len(pr)))
        pairs = pd.DataFrame({
            "chosen": [first[k] for k in zip(pr["context_id"], pr["chosen"])],
            "rejected": [first[k] for k in zip(pr["context_id"], pr["rejected"])],
            "margin": margin, "context_id": pr["context_id"].to_numpy()})
        pairs = pairs[pairs["chosen"] != pairs["rejected"]].reset_index(drop=True)
    else:
        pairs = pd.DataFrame({"chosen": pd.Series(dtype=int), "rejected": pd.Series(dtype=int),
                              "margin": pd.Series(dtype=float), "context_id": pd.Series(dtype=object)})
    data = RewardData(items, pairs)
    counts = data.label_counts()
    if heads is None:
        heads = [h for h in ALL_HEADS if counts[h] > 0]
    unknown = [h for h in heads if h not in ALL_HEADS]
    if unknown:
        raise ConfigError(f"heads: unknown {unknown}; known heads: {list(ALL_HEADS)}")
    empty = [h for h in heads if counts[h] == 0]
    if empty:
        raise ConfigError(f"heads: {empty} asked for but the data has no labels for "
                          f"{', '.join(f'{h} (from {HEAD_SOURCE[h]})' for h in empty)}; "
                          f"labelled heads: {[h for h in ALL_HEADS if counts[h] > 0]}")
    if not heads:
        raise ConfigError("no labels: the records carry no label for any head "
                          f"({', '.join(f'{h} from {HEAD_SOURCE[h]}' for h in ALL_HEADS)})")
    data.heads = list(heads)
    return data


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
    """Held-out contexts by a seeded hash, so the split does not depend on row order.

    `groups` (context -> group key, e.g. its character) holds out whole groups: the contexts of one
    dialogue or one character then never sit on both sides."""
    ids = sorted(set(context_ids))
    if val_fraction <= 0:
        return ids, []

    def u(c: str) -> float:
        key = str(groups.get(c, c)) if groups is not None else c
        h = hashlib.sha1(f"{seed}:{key}".encode()).digest()
        return int.from_bytes(h[:8], "big") / 2 ** 64

    val = [c for c in ids if u(c) < val_fraction]
    train = [c for c in ids if u(c) >= val_fraction]
    return train, val


__all__ = ["FEATURES", "RewardData", "build_reward_data", "format_inputs", "item_inputs", "read_record_folder",
           "context_groups", "split_contexts", "style_matrix", "character_card", "history_text", "ALL_HEADS", "ITEM_HEADS",
           "BINARY_HEADS", "COUNT_HEADS"]
