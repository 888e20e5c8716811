"""Real-data figures of the reward stage, produced the way a user produces them.

Each dataset goes through `ingest` (canonical records, read back from the ingest folder), a TrainRMConfig
(configs/train_rm.yaml plus the `key=value` settings below), `train_reward_model` on each fold's training
side and `RewardModel.score` on its held-out side (`rm_lab.reward.crossval`: folds by query or dialogue).
The baselines (`rm_lab.reward.text_baselines`) are fitted on the same training folds.

- Predictive Engagement: 5 folds by query; Spearman of the `engaging` head's expected rating with every
  human_score, beside the authors' Eng_Score_MeanPooling on the same rows.
- ConvAI2: 5 folds by dialogue; fold-mean AUC of thumb up and continue (bot turns of data_intermediate.json)
  and of rating >= 4 and persona match (per dialogue: the mean log-odds of its bot turns).

Run: .venv/bin/python pipelines/rm_realdata.py [--pe | --convai2 [--keep-other]] [--folds 5] [--seed 0]
     [--only-folds 0 ..] [--limit N] [--work DIR] [--pe-rm key=value ..] [--convai2-rm key=value ..]
Writes reports/reward_realdata.md and reports/reward_realdata.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rm_lab import config as cfgmod, sources  # noqa: E402
from rm_lab.commands.ingest import IngestConfig, ingest  # noqa: E402
from rm_lab.io import write_json, write_text  # noqa: E402
from rm_lab.reward.crossval import context_folds, cross_validate, fold_metric, log_odds, mean_by  # noqa: E402
from rm_lab.reward.data import read_record_folder  # noqa: E402
from rm_lab.reward.folds import leak_report  # noqa: E402
from rm_lab.reward.text_baselines import cross_fit  # noqa: E402
from rm_lab.reward.train import TrainRMConfig  # noqa: E402

COMMAND = ".venv/bin/python pipelines/rm_realdata.py"
PE_PEER = "Eng_Score_MeanPooling"
INTERMEDIATE = "data_intermediate.json"
# the settings beyond configs/train_rm.yaml, per dataset. PE: the shipped defaults (keep_best picks the epoch by
# the held-out loss of the graded `engaging` head, monitor=auto); beside them the settings of the figures before
# the user path: every training row, the last of 40 epochs (val_fraction=0). No figure reads the pairwise model.
# ConvAI2: ~350 training thumbs support only linear heads with strong shrinkage, chosen by the head refit on
# folds of whole training dialogues (AUC). balance=source_file: each logged file weighs alike (rm_lab.reward.multisource).
PE_RM, PE_ALT = ["pairwise=false"], ["val_fraction=0", "epochs=40", "pairwise=false"]
CONVAI2_RM = PE_ALT + ["n_layers=0", "head_refit=true", "refit_metric=auc", "val_split=conversation", "balance=source_file"]
# ConvAI2 figures: their names and the RM output each reads
TASKS = {"thumb_up": "p(thumb up)", "continue": "p(continue)", "rating": "rating >= 4",
         "persona": "persona match"}
OUTPUT = {"thumb_up": "p_thumb_up", "continue": "p_continue", "rating": "rating_p_ge_4",
          "persona": "p_persona_match"}


def ingested(source: str, root: Path, limit: int | None, file: str | None = None):
    """`rm_lab ingest SOURCE PATH` into the runs folder, read back as a user's `train-rm data=` reads it."""
    path = root / sources.FOLDERS[source]
    run, _ = ingest(source, path / file if file else path, IngestConfig(limit=limit))
    return read_record_folder(run.path)


def run_pe(a, root: Path, work: Path) -> dict:
    recs = ingested("predictive-engagement", root, a.limit)
    cfg = cfgmod.load(TrainRMConfig, "train_rm", PE_RM + a.pe_rm)
    lab = recs["label"]
    ev = lab[lab["name"] == "engaging"].reset_index(drop=True)
    peer = sources.load("predictive-engagement", root / "predictive_engagement", a.limit)["engagement"]
    ev = ev.merge(peer[["source_row", PE_PEER]], on="source_row", how="left", validate="one_to_one")
    items = ev[["context_id", "response"]].drop_duplicates().reset_index(drop=True)
    kw = dict(k=a.folds, seed=a.seed, by="context", only=a.only_folds, say=print, reuse=bool(a.work))
    out, fold, info = cross_validate(cfg, recs, items, work / "pe", **kw)
    scores = {"ours": out["engaging"], "ours_bt": out.get("score")}
    if a.shipped:
        alt = cfgmod.load(TrainRMConfig, "train_rm", PE_ALT + a.pe_rm)
        scores["every_row"] = cross_validate(alt, recs, items, work / "pe_every_row", **kw)[0]["engaging"]
    items = items.assign(fold=fold.to_numpy(), **{c: v.to_numpy() for c, v in scores.items() if v is not None})
    ev = ev.merge(items, on=["context_id", "response"])
    run = sorted(set(ev["fold"])) if a.only_folds is None else a.only_folds
    ev = ev.assign(**cross_fit(ev["response"], ev["value"], ev["fold"], "graded", folds=run))
    cols = {"ours": "**rm_lab `engaging`** (expected rating)", "ours_bt": "rm_lab BT preference score",
            "every_row": f"rm_lab `engaging`, every training row, the last of 40 epochs ({' '.join(PE_ALT)})",
            PE_PEER: f"peer: `{PE_PEER}` (Ghazarian et al. 2020)", "length": "baseline: reply length (ridge)",
            "tfidf": "baseline: TF-IDF + ridge"}
    return {"settings": PE_RM + a.pe_rm, "rows": int(ev["fold"].isin(run).sum()),
            "queries": int(ev.loc[ev["fold"].isin(run), "context_id"].nunique()), "columns": cols,
            "spearman": {c: fold_metric(ev["value"], ev[c], ev["fold"], "spearman", run)
                         for c in cols if c in ev and ev[c].notna().any()},
            "leaks": leak_report(ev, ["context_id"]), "folds": info}


def convai2_tasks(recs) -> dict[str, pd.DataFrame]:
    """Which rows each figure reads and its 0/1 label."""
    it, lab = recs["interaction"], recs["label"]
    inter = it[it["source_file"] == INTERMEDIATE]
    return {"thumb_up": inter[inter["thumb"].notna()].assign(y=lambda d: (d["thumb"] == 1).astype(float)),
            "continue": inter.assign(y=inter["continued"].astype(float)),
            "rating": lab[lab["name"] == "rating"].assign(y=lambda d: (d["value"] >= 4).astype(float)),
            "persona": lab[lab["name"] == "persona_match"].assign(y=lambda d: (d["value"] == 1).astype(float))}


def convai2_figures(recs, scored: pd.DataFrame, run: list[int], tasks) -> dict:
    """AUC of each task's rows, ours next to the baselines fitted on the same training folds."""
    dialogue = recs["context"].drop_duplicates("context_id").set_index("context_id")["conversation_id"]
    res = {}
    for task, rows in convai2_tasks(recs).items():
        if task not in tasks or task not in scored or not len(rows):
            continue
        ev = rows[["context_id", "response", "y"]].merge(scored[["context_id", "response", "fold", task]],
                                                         on=["context_id", "response"])
        ev = ev.assign(ours=log_odds(ev[task]), dialogue=ev["context_id"].map(dialogue).to_numpy(),
                       **cross_fit(ev["response"], ev["y"], ev["fold"], "binary", folds=run))
        unit = "dialogue" if task in ("rating", "persona") else "bot turn"
        if unit == "dialogue":  # one prediction per dialogue: the mean log-odds of its bot turns
            ev = mean_by(ev, "dialogue", ["ours", "length", "tfidf"])
        ev = ev[ev["fold"].isin(run)]
        res[task] = {"unit": unit, "n": len(ev), "positive_rate": float(ev["y"].mean()),
                     "auc": {c: fold_metric(ev["y"], ev[c], ev["fold"], "auc", run) for c in ("ours", "length", "tfidf")},
                     "leaks": leak_report(ev, ["dialogue"])}
    return res


def run_convai2(a, root: Path, work: Path) -> dict:
    """One model per fold on every ConvAI2 record; then, for the two labels of data_intermediate.json, one
    trained on that file's ingest alone (its own bots and logging; the figures before the user path were
    trained so), scored on the same dialogue folds."""
    recs = ingested("convai2", root, a.limit)
    cfg = cfgmod.load(TrainRMConfig, "train_rm", CONVAI2_RM + a.convai2_rm)
    res = {"settings": CONVAI2_RM + a.convai2_rm, "refit": []}
    fold_of = context_folds(recs["context"], a.folds, a.seed, "conversation")  # the dialogue folds of both parts
    for part, records, tasks in (("all", recs, TASKS), ("intermediate", None, ("thumb_up", "continue"))):
        records = records or ingested("convai2", root, a.limit, INTERMEDIATE)
        items = records["interaction"][["context_id", "response"]].drop_duplicates().reset_index(drop=True)
        out, fold, info = cross_validate(cfg, records, items, work / f"convai2-{part}", a.folds, a.seed,
                                         only=a.only_folds, fold_of=fold_of, say=print, reuse=bool(a.work))
        scored = items.assign(fold=fold.to_numpy(), **{k: out[v].to_numpy() for k, v in OUTPUT.items() if v in out})
        run = sorted(set(scored["fold"])) if a.only_folds is None else a.only_folds
        res[part] = convai2_figures(records, scored, run, tasks)
        res["refit"] += [{"part": part, "fold": i["fold"], **r} for i in info for r in i["refit"]]
    return res


def _f(x) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.3f}"


def render(res: dict) -> str:
    a = res["args"]
    out = ["# Reward models on real data", "", f"Generated by `{res['command']}`", "",
           "Every figure goes the user's way: `rm_lab ingest` writes canonical records, `train-rm`'s library call "
           "(`TrainRMConfig` from `configs/train_rm.yaml` + the settings named below) trains on each fold's training "
           "side, `RewardModel.score` scores its held-out side (`rm_lab.reward.crossval`). Baselines "
           "(`rm_lab.reward.text_baselines`) read the reply only and are fitted on the same training folds. "
           f"{a['folds']} folds, seed {a['seed']}.", ""]
    if "pe" in res:
        pe = res["pe"]
        out += ["## Predictive Engagement: Spearman with `human_score`", "",
                *([f"(This section: `{pe['command']}`.)", ""] if "command" in pe else []),
                f"{pe['rows']} ratings ({pe['queries']} queries), folds by query. Settings: "
                f"{pe['settings'] or 'the shipped defaults'}; heads: every head the ingested records label (the "
                "ordinal `engaging` rating, the binary `engaged` judgement of the utterance set, BT pairs of replies "
                "to one query). The peer is the authors' score on the same rows.", "",
                "| score | Spearman, pooled out of fold | mean over folds |", "| --- | --- | --- |"]
        out += [f"| {name} | {_f(pe['spearman'][c]['pooled'])} | {_f(pe['spearman'][c]['fold_mean'])} |"
                for c, name in pe["columns"].items() if c in pe["spearman"]]
        out += ["", "Per fold (ours / peer / length / TF-IDF): " + "; ".join(
            f"{f}: " + " / ".join(_f(pe["spearman"][c]["per_fold"][f]) for c in ("ours", PE_PEER, "length", "tfidf"))
            for f in pe["spearman"]["ours"]["per_fold"]), "",
            f"Leak check (values in more than one fold): {pe['leaks']}.", ""]
    if "convai2" in res:
        c2 = res["convai2"]
        rows = [(f"{TASKS[t]} (`{OUTPUT[t]}`)", "all files", r) for t, r in c2["all"].items()]
        rows += [(f"{TASKS[t]} (`{OUTPUT[t]}`)", f"`{INTERMEDIATE}` only", r) for t, r in c2["intermediate"].items()]
        out += ["## ConvAI2: AUC", "", *([f"(This section: `{c2['command']}`.)", ""] if "command" in c2 else []),
                f"Folds by dialogue (the same for every row); one model per fold with every head the ingested records "
                f"label. Settings: {c2['settings']}. Thumbs and continue are scored per bot turn of `{INTERMEDIATE}`, "
                "by the model trained on every file and by one trained on that file's ingest alone (its own bots and "
                "logging; the figures before the user path trained these two labels so); rating and persona match per "
                "dialogue (the mean log-odds of its bot turns, the same for all three columns).", "",
                "| label | trained on | unit | n | positive rate | **rm_lab** | length only | TF-IDF + LR | "
                "rm_lab beats both |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, part, r in rows:
            m = {c: r["auc"][c]["fold_mean"] for c in ("ours", "length", "tfidf")}
            p = {c: r["auc"][c]["pooled"] for c in m}
            out.append(f"| {name} | {part} | {r['unit']} | {r['n']} | {r['positive_rate']:.3f} | "
                       f"**{_f(m['ours'])}** ({_f(p['ours'])}) | {_f(m['length'])} ({_f(p['length'])}) | "
                       f"{_f(m['tfidf'])} ({_f(p['tfidf'])}) | {'yes' if m['ours'] > max(m['length'], m['tfidf']) else 'NO'} |")
        out += ["", "Cells: AUC averaged over folds (pooled out-of-fold AUC in brackets). Baselines are fitted on the "
                "rows of the same label in the training folds.", "",
                "Per fold AUC (rm_lab / length / TF-IDF): " + "; ".join(
                    f"{name}, {part}: " + ", ".join(
                        "/".join(_f(r["auc"][c]["per_fold"][f]) for c in ("ours", "length", "tfidf"))
                        for f in r["auc"]["ours"]["per_fold"]) for name, part, r in rows), "",
                "Rating and persona match are judgements of the whole dialogue; the conversation features of its bot "
                "turns tell the model how long it was, a signal the reply-only baselines cannot see.", ""]
        if c2["refit"]:
            out += ["Head refit, C chosen per fold (standardised inputs; smaller is stronger shrinkage): " + "; ".join(
                f"{h} ({part}): " + ", ".join(f"{r['C']:.0e}" for r in c2["refit"] if (r["part"], r["head"]) == (part, h))
                for part, h in dict.fromkeys((r["part"], r["head"]) for r in c2["refit"])) + ".", ""]
        out += ["Leak check (dialogues in more than one fold): " + "; ".join(
            f"{name}, {part}: {r['leaks']['dialogue']}" for name, part, r in rows) + ".", ""]
    return "\n".join(out) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pe", action="store_true", help="Predictive Engagement only")
    p.add_argument("--convai2", action="store_true", help="ConvAI2 only")
    p.add_argument("--data", default=None, help="the shared data root (default $RM_LAB_DATA or ../shared/data)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only-folds", type=int, nargs="*", default=None, help="run these folds only")
    p.add_argument("--limit", type=int, default=None, help="ingest only the first N source units (quick runs)")
    p.add_argument("--pe-rm", nargs="*", default=[], metavar="KEY=VALUE", help="train-rm settings for PE")
    p.add_argument("--convai2-rm", nargs="*", default=[], metavar="KEY=VALUE", help="train-rm settings for ConvAI2")
    p.add_argument("--no-shipped", dest="shipped", action="store_false", help="skip the PE run on every training row")
    p.add_argument("--runs", default=None, help="runs folder of the ingest and train runs (default: a temp folder)")
    p.add_argument("--work", help="keep each fold's model here; a finished one is reloaded, not retrained")
    p.add_argument("--out-md", default=str(ROOT / "reports" / "reward_realdata.md"))
    p.add_argument("--out-json", default=str(ROOT / "reports" / "reward_realdata.json"))
    p.add_argument("--keep-other", action="store_true", help="keep the other dataset's section of --out-json")
    a = p.parse_args(argv)
    root = sources.data_root(a.data)
    if not root.is_dir():
        raise SystemExit(f"error: data folder {root} is missing (pass --data or set RM_LAB_DATA)")
    argv = sys.argv[1:] if argv is None else list(argv)
    res = {"command": " ".join([COMMAND, *argv]), "args": {"folds": a.folds, "seed": a.seed, "limit": a.limit,
                                                          "only_folds": a.only_folds}}
    with tempfile.TemporaryDirectory(prefix="rm_realdata-") as tmp:
        os.environ["RM_LAB_RUNS"] = a.runs or str(Path(tmp) / "runs")
        work = Path(a.work) if a.work else Path(tmp) / "work"
        if a.pe or not a.convai2:
            res["pe"] = run_pe(a, root, work)
        if a.convai2 or not a.pe:
            res["convai2"] = run_convai2(a, root, work)
    if a.keep_other and Path(a.out_json).is_file():
        old = json.loads(Path(a.out_json).read_text())
        for part in ("pe", "convai2"):
            if part not in res and part in old:
                res[part] = {**old[part], "command": old[part].get("command", old["command"])}
    write_json(Path(a.out_json), res)
    write_text(Path(a.out_md), render(res))
    print(render(res))


if __name__ == "__main__":
    main()
