"""Predictive Engagement (Ghazarian et al. 2020): human engagement ratings of single replies.

No user behaviour was logged here, so no `continued` is invented. The ratings are canonical `label`
records that `train-rm` reads by name, with the heads they train declared in `head` records:
- `label` `engaging`: each annotator's 1-5 human_score of a (query, response), scale 1-5; its head
  `engaging` is ordinal with 5 levels (a cumulative logit: the rating is an order, not a count).
- `label` `engaged`: the 0/1 judgement of humanAMT_engscores_utt.csv (other queries, other raters);
  its head `engaged` is binomial.
- `preference`: two replies to one query whose mean ratings differ make a pair (source `human`: the
  raters' own ratings ordered them), so the pointwise score (the RL reward) learns from them too.
The source frames stay beside them:
- `engagement` (Eng_Scores_queries_gen_gtruth_replies.csv): one row per rating, context_id, query,
  response, human_score (1–5, float), the peer model scores (Ruber_Unref_Score, CTX_Unref_Score,
  Eng_Score_MeanPooling, Eng_Score_MaxPooling), pair_id (same query+response; each pair is rated by
  several annotators) and annotator (0, 1, ... within a pair, in file order).
- `engagement_utt` (humanAMT_engscores_utt.csv): id, context_id, query, response, engaged (0/1 -> bool).
  Its empty replies are kept: annotators rated the bot saying nothing (as not engaging).
- `context`: one per distinct query, history = [the user's query], traffic `user`, character
  `predictive-engagement` (the repliers are unnamed systems and people).
Numbers are parsed from text, so quoted values with trailing newlines are fine.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rm_lab.schema import CHARACTER, CONTEXT, HEAD, LABEL, PREFERENCE, RecordError, Records, validate_frame
from rm_lab.sources._common import dropped_frame, files_in, load_csv, number_cell, stable_id, text_cell

CHARACTER_ID = "predictive-engagement"
SCORES = ["query", "response", "human_score"]
PEERS = ["Ruber_Unref_Score", "CTX_Unref_Score", "Eng_Score_MeanPooling", "Eng_Score_MaxPooling"]
UTT = ["id", "query", "reply", "label"]
SOURCE = "predictive-engagement"
# the heads these labels train (rm_lab.reward.heads), written as `head` records
HEADS = [
    {"name": "engaging", "kind": "ordinal", "record": "label", "column": "engaging", "levels": 5, "min": 1.0,
     "doc": "an annotator's 1-5 engagement rating of the reply (Predictive Engagement human_score)"},
    {"name": "engaged", "kind": "binomial", "record": "label", "column": "engaged",
     "doc": "an AMT worker judged the reply engaging (Predictive Engagement utterance set, 0/1)"},
]


def context_id(query: str) -> str:
    return "pe:" + stable_id(query, n=12)


def _scores(path: Path, limit: int | None) -> pd.DataFrame:
    header, rows = load_csv(path, SCORES)
    peers = [c for c in PEERS if c in header]
    out, seen = [], {}
    for r, d in rows[:limit]:
        q = text_cell(path, r, "query", d["query"])
        resp = text_cell(path, r, "response", d["response"])
        rec = {"context_id": context_id(q), "query": q, "response": resp,
               "human_score": float(number_cell(path, r, "human_score", d["human_score"], lo=1, hi=5))}
        for c in peers:
            rec[c] = number_cell(path, r, c, d[c])
        pair = stable_id(q, resp, n=12)
        rec["pair_id"] = pair
        rec["annotator"] = seen.get(pair, 0)
        seen[pair] = rec["annotator"] + 1
        rec["source_row"] = r
        out.append(rec)
    return pd.DataFrame(out)


def _utt(path: Path, limit: int | None) -> pd.DataFrame:
    _, rows = load_csv(path, UTT)
    out, ids = [], {}
    for r, d in rows[:limit]:
        i = number_cell(path, r, "id", d["id"], integer=True)
        if i in ids:
            raise RecordError(str(path), r, "id", i, f"a unique id (also on row {ids[i]})")
        ids[i] = r
        q = text_cell(path, r, "query", d["query"])
        out.append({"id": i, "context_id": context_id(q), "query": q,
                    "response": text_cell(path, r, "reply", d["reply"], nonempty=False),
                    "engaged": bool(number_cell(path, r, "label", d["label"], integer=True, lo=0, hi=1)),
                    "source_row": r})
    return pd.DataFrame(out)


def load(path: str | Path, limit: int | None = None) -> Records:
    """Load the folder or one of its CSV files (recognised by their columns); `limit` = first N rows per file."""
    frames: dict[str, pd.DataFrame] = {}
    for f in files_in(Path(path), ["*.csv"], "Predictive Engagement CSV files"):
        header, _ = load_csv(f, [])
        if "human_score" in header or "response" in header:
            name, df = "engagement", _scores(f, limit)
        elif "label" in header or "reply" in header:
            name, df = "engagement_utt", _utt(f, limit)
        else:
            raise RecordError(str(f), 1, "human_score", "missing column",
                              f"a 'human_score' (ratings) or 'label' (utterance) column; found {header}")
        df["source_file"] = f.name
        frames[name] = pd.concat([frames[name], df], ignore_index=True) if name in frames else df
    queries = pd.concat([df[["context_id", "query"]] for df in frames.values()]).drop_duplicates("context_id")
    context = pd.DataFrame({"context_id": queries["context_id"].tolist(), "character_id": CHARACTER_ID,
                            "history": [[{"role": "user", "content": q}] for q in queries["query"]],
                            "traffic": "user", "prompt_type": "single_turn"})
    character = pd.DataFrame([{"character_id": CHARACTER_ID, "name": "Predictive Engagement repliers",
                               "persona": [], "instructions": []}])
    canonical = {"character": validate_frame(character, CHARACTER, str(path)),
                 "context": validate_frame(context, CONTEXT, str(path))}
    labels = _labels(frames)
    used = set(labels["name"])
    canonical["label"] = validate_frame(labels, LABEL, str(path))
    canonical["head"] = validate_frame(pd.DataFrame([h for h in HEADS if h["name"] in used]), HEAD, str(path))
    if "engagement" in frames:
        pairs = rating_pairs(frames["engagement"])
        if len(pairs):
            canonical["preference"] = validate_frame(pairs, PREFERENCE, str(path))
    return Records({**canonical, **frames, "dropped": dropped_frame([])})


def _labels(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The ratings as canonical `label` records (one per rating), with the file and row they came from."""
    parts = []
    if "engagement" in frames:
        e = frames["engagement"]
        parts.append(pd.DataFrame({"context_id": e["context_id"], "response": e["response"], "name": "engaging",
                                   "value": e["human_score"].astype(float), "scale_min": 1.0, "scale_max": 5.0,
                                   "source": SOURCE, "source_file": e["source_file"], "source_row": e["source_row"]}))
    if "engagement_utt" in frames:
        u = frames["engagement_utt"]
        parts.append(pd.DataFrame({"context_id": u["context_id"], "response": u["response"], "name": "engaged",
                                   "value": u["engaged"].astype(float), "scale_min": 0.0, "scale_max": 1.0,
                                   "source": SOURCE, "source_file": u["source_file"], "source_row": u["source_row"]}))
    return pd.concat(parts, ignore_index=True)


def rating_pairs(engagement: pd.DataFrame) -> pd.DataFrame:
    """Preference pairs from ratings: of two replies to one query, the one with the higher mean human_score is
    chosen (ties make no pair); `margin` is left null, `mean_chosen` / `mean_rejected` keep the evidence."""
    means = engagement.groupby(["context_id", "response"], sort=True, as_index=False)["human_score"].mean()
    rows = []
    for cid, g in means.groupby("context_id", sort=True):
        g = g.sort_values(["human_score", "response"], ascending=[False, True]).to_numpy()
        for a in range(len(g)):
            for b in range(a + 1, len(g)):
                if g[a][2] > g[b][2]:
                    rows.append({"context_id": cid, "chosen": g[a][1], "rejected": g[b][1], "source": "human",
                                 "mean_chosen": float(g[a][2]), "mean_rejected": float(g[b][2])})
    return pd.DataFrame(rows, columns=["context_id", "chosen", "rejected", "source", "mean_chosen", "mean_rejected"])
