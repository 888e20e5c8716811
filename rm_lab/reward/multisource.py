"""Training on several sources at once: batches of one source each, and labels balanced across sources.

Why batches of one source: a head is supervised by one source's rows only (a per-source head, or a
head only one source labels), and each head's loss is a mean over its labels in the batch. With rows of
every source shuffled together, a small source (Predictive Engagement's 1,800 ratings beside ConvAI2's
22,000 bot turns) gets a few rows in every batch of the large one: its heads take ~10x more optimiser
steps per epoch than when trained alone, each on a handful of rows (measured: PE Spearman 0.418 alone,
0.362 in the mix, `--limit 400` fold 0 of reports/reward_transfer_limit400.md, before this). With
`source_batches=per_source` each source's units are shuffled and cut into batches as they would be
alone, and the batches of all sources are interleaved in a seeded order that keeps each source's own
order (MT-DNN's task sampling): every head takes the steps it would take alone, and the shared trunk
learns from every batch. With the per-name initial weights and per-head input standardisation of
`RewardNet` (`single_source_heads`), a head that one source labels then fits exactly as in that source's
own model when the heads are linear (n_layers=0); only a shared trunk can change it.

Why balance labels: one head fed by several logging setups (ConvAI2's `continue` from
data_intermediate.json's 2,191 bot turns and from the exports' 19,858) is fitted to the largest, and
what predicts a label can differ between setups (on ConvAI2 the turn position predicts `continue` with
AUC 0.68 in the intermediate file and 0.46 in the exports). `balance=<column>` (a column of the head's
records, e.g. `source_file`, or `_source` for the data folders) scales each item's label counts so that
every value of the column holds the same total count of that head's labels (their mean): each setup
shapes the head alike, and every likelihood (binomial, ordinal, gaussian, counts) reads the scaled
counts, the head refit included.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from rm_lab.config import ConfigError

SOURCE_COLUMN = "_source"  # the data folder a record came from (rm_lab.reward.data.read_sources)
SOURCE_BATCHES = ("per_source", "mixed")
DEAL_STREAM = 5  # the stream of the order the sources' batches are dealt in (apart from their permutations)


def context_sources(contexts: pd.DataFrame | None) -> dict[str, str] | None:
    """context_id -> its source (data folder), or None when the records are one source."""
    if contexts is None or SOURCE_COLUMN not in contexts.columns:
        return None
    ctx = contexts.drop_duplicates("context_id")
    m = dict(zip(ctx["context_id"].astype(str), ctx[SOURCE_COLUMN].astype(str)))
    return m if len(set(m.values())) > 1 else None


class SourceBatches:
    """A batch sampler over units: each batch holds the units of one source, each source's units are
    permuted and cut as `EpochSampler` + DataLoader would cut them alone, and the batches of all sources
    are dealt in a seeded order. Depends only on (seed, epoch), like `EpochSampler`, so a resumed run
    replays the same batches; Lightning's `set_epoch` reaches it through `.sampler`."""

    def __init__(self, unit_source: np.ndarray, batch_size: int, seed: int, shuffle: bool = True):
        self.batch_size, self.seed, self.shuffle, self.epoch = batch_size, seed, shuffle, 0
        src = np.asarray(unit_source).astype(str)
        self.groups = [np.flatnonzero(src == s) for s in sorted(set(src.tolist()))]
        self.sampler = self  # where Lightning looks for set_epoch on a batch sampler

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """Each source's permutation from its own generator, seeded as `EpochSampler` seeds it alone, and
        cut as alone; then the sources dealt in a seeded order that keeps each source's batches in their
        own order (another generator). So a source's heads see the batches of its single-source run, in
        the same order, whichever other sources the model has."""
        per: list[list[list[int]]] = []
        for units in self.groups:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = units[torch.randperm(len(units), generator=g).numpy()] if self.shuffle else units
            per.append([order[i:i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size)])
        if not self.shuffle:
            return [b for batches in per for b in batches]
        turns = np.concatenate([np.full(len(b), i) for i, b in enumerate(per)]) if per else np.zeros(0, int)
        turns = np.random.default_rng([self.seed, self.epoch, DEAL_STREAM]).permutation(turns)
        nxt = [iter(b) for b in per]
        return [next(nxt[i]) for i in turns.tolist()]

    def __iter__(self):
        return iter(self.batches())

    def __len__(self) -> int:
        return sum(-(-len(u) // self.batch_size) for u in self.groups)


def single_source_heads(data, sources: dict[str, str]) -> dict[str, np.ndarray]:
    """Head -> a mask of `data.items` holding its source's items, for each head whose labels (items with
    counts, or preference pairs) all come from one of several sources: that head's inputs are standardised
    by its source's items, as in the source's own model (`RewardNet.set_head_style_stats`)."""
    item_src = data.items["context_id"].astype(str).map(sources).to_numpy(object)
    out = {}
    for h in data.heads:
        spec = data.spec(h)
        if spec.is_pairwise:
            labelled = data.pairs["context_id"].astype(str).map(sources).to_numpy(object)
        else:
            labelled = item_src[data.items[f"{h}_n"].to_numpy(float) > 0]
        names = {v for v in labelled.tolist() if isinstance(v, str)}
        if len(names) == 1:
            out[h] = item_src == names.pop()
    return out


def unit_sources(collator, sources: dict[str, str]) -> np.ndarray:
    """The source of each unit of a `train.UnitCollator` (pairs first, then labelled items): its context's."""
    ctx = collator.data.items["context_id"].astype(str).to_numpy()
    pair_ctx = (collator.data.pairs["context_id"].astype(str).to_numpy()[:len(collator.pairs)]
                if len(collator.pairs) else np.zeros(0, object))
    units = np.r_[pair_ctx, ctx[collator.labelled]]
    out = np.array([sources.get(c, "") for c in units], dtype=object)
    rest = collator.n_units - len(out)  # units over several items (the experiments of arm_mean heads)
    return np.r_[out, np.full(rest, "", dtype=object)] if rest > 0 else out


def balance_labels(items: pd.DataFrame, specs: dict, records, column: str) -> dict[str, dict[str, float]]:
    """`balance=<column>`: scale each item head's label counts in `items` (in place) so that every value of
    `column` (read from the records the head's labels come from) holds the same total count of that head's
    labels, the mean over the values. Returns {head: {value: factor}} for the heads with more than one value.

    An item takes the value of the first record row of its (context_id, response); items without one keep
    their counts. A column that no trained head's records carry is a ConfigError."""
    found, out = False, {}
    keys = pd.MultiIndex.from_arrays([items["context_id"].astype(str), items["response"].astype(str)])
    for name, spec in specs.items():
        if spec.is_pairwise or spec.is_grouped or getattr(spec, "is_set", False):
            continue  # pairs carry no counts; the arms of one experiment are one unit
        frame = records.frames.get(spec.record) if hasattr(records, "frames") else None
        if frame is None or column not in frame.columns:
            continue
        found = True
        if spec.record == "label" and "name" in frame.columns:  # label records hold several heads' rows
            frame = frame[frame["name"].astype(str) == spec.col]
        first = frame.drop_duplicates(["context_id", "response"])
        lookup = pd.Series(first[column].astype(str).to_numpy(),
                           index=pd.MultiIndex.from_arrays([first["context_id"].astype(str),
                                                            first["response"].astype(str)]))
        value = lookup.reindex(keys).to_numpy(object)
        n = items[f"{name}_n"].to_numpy(float)
        has = (n > 0) & pd.notna(value)
        totals = pd.Series(n[has]).groupby(value[has]).sum()
        totals = totals[totals > 0]
        if len(totals) < 2:
            continue
        factor = {str(v): float(totals.mean() / t) for v, t in totals.items()}
        f = np.array([factor.get(v, 1.0) if isinstance(v, str) else 1.0 for v in value])
        for c in spec.columns():
            if c.endswith("_mean"):
                continue  # a mean is not a count: it stays (its n and m2 scale)
            items[c] = items[c].to_numpy(float) * f
        out[name] = factor
    if not found:
        heads = [h for h, s in specs.items() if not s.is_pairwise]
        raise ConfigError(f"balance={column!r}: no record of the trained heads {heads} has a column {column!r} "
                          f"(e.g. source_file, or {SOURCE_COLUMN} for the data folders); use balance=null")
    return out


__all__ = ["SOURCE_BATCHES", "SOURCE_COLUMN", "SourceBatches", "balance_labels", "context_sources",
           "single_source_heads", "unit_sources"]
