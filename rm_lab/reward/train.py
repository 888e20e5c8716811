"""`train-rm`: fit the multi-head reward model (optionally an ensemble) and the pairwise model.

Frozen backbone (the CPU default): every (context, reply) is encoded once into the embedding cache and
only the heads train, in seconds. `top_k` / `full` fine-tune encoder layers per member. Each member
checkpoints every epoch (Lightning `.ckpt` in checkpoints/m<k>/); a killed or stopped run resumes from
`last.ckpt` and, because data order and dropout depend only on (seed, epoch), ends where an
uninterrupted run would. SIGINT/SIGTERM stop training at the next batch or epoch boundary
(`rm_lab.jobs`). Final weights are safetensors next to `rm_config.json`; the folder's files are named
and read in `rm_lab.reward.store`, checkpoints never with code-running unpickling.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from rm_lab import io, jobs
from rm_lab.config import MAX_SEED, ConfigError, check_fields, param
from rm_lab.reward.data import (RewardData, Source, build_reward_data, context_groups, merge_sources, read_sources,
                                split_contexts, style_matrix, context_fingerprints)
from rm_lab.reward.heads import SOURCE_SEP
from rm_lab.reward.embed_cache import EmbeddingCache, backbone_key, default_cache_root
from rm_lab.reward.inputs import (DEFAULT_INPUTS, ItemTexts, check_inputs, features, input_dim, item_texts,
                                  tabular_names, token_views)
from rm_lab.reward.model import (GRADED, GRADED_LOSS, RewardLit, RewardNet, RMConfig, backbone_folder, load_backbone,
                                 set_trainable)
from rm_lab.reward.pairwise import PairwiseLit, PairwiseNet
from rm_lab.reward import store
from rm_lab.reward.refit import METRICS as REFIT_METRICS
from rm_lab.reward.threads import single_thread
from rm_lab.schema import RecordError, Records


ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "tpu", "auto")
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_notebook", "fsdp", "deepspeed", "single_device")
PRECISIONS = ("64-true", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64", "32", "16", "bf16")


@dataclass
class TrainRMConfig:
    """train-rm: data, backbone, heads and optimisation (configs/train_rm.yaml)."""

    data: str | list[str] | None = param(
        None, doc="a folder of <kind>.parquet/.jsonl records, or a list of folders (one model, a shared trunk, a head "
        "per source where two sources label the same head); null: simulate `world`")
    world: dict = param({}, doc="WorldConfig keys for an on-the-fly world (when data is null)",
                        schema="rm_lab.world.simulate:WorldConfig")
    heads: list[str] | dict | None = param(
        None, doc="null: every head the data has labels for (built-in or declared by the data); a list: these heads; "
        "a mapping: declare heads on top of those, e.g. {engaging: {column: human_score, kind: ordinal, levels: 5}} "
        "(rm_lab.reward.heads; false leaves a head out)")
    backbone: str | None = param(None, doc="a local HF encoder folder; null: packaged all-MiniLM-L6-v2")
    train_mode: Literal["frozen", "top_k", "full"] = param(
        "frozen", doc="frozen: cached embeddings, heads only; top_k: also the top encoder layers; full: all")
    inputs: list[str] = param(list(DEFAULT_INPUTS), doc="what the heads read (rm_lab.reward.inputs)",
                              choices="rm_lab.reward.inputs:VIEWS", min_len=1)
    unfreeze_top_k: int = param(2, doc="encoder layers fine-tuned in train_mode=top_k", ge=1, le=1000)
    max_length: int = param(256, doc="tokens of the joint card + conversation + reply text", ge=16, le=8192)
    card_max_tokens: int = param(96, doc="tokens kept of the character card", ge=0, le=8192)
    reply_max_tokens: int = param(128, doc="tokens kept of the reply", ge=1, le=8192)
    hidden: int = param(256, doc="width of the heads' trunk", ge=1, le=65_536)
    n_layers: int = param(2, doc="hidden layers of the trunk (0: linear heads on the inputs)", ge=0, le=64)
    dropout: float = param(0.1, doc="dropout in the trunk", ge=0, lt=1)
    skip: bool = param(False, doc="the heads also read the trunk's inputs: each head a linear model of the inputs "
                       "plus a read of the shared trunk (needs n_layers >= 1; rm_lab.reward.model.RewardNet)")
    lr: float = param(1e-3, doc="learning rate of the heads (AdamW)", gt=0, le=10)
    encoder_lr: float = param(2e-5, doc="learning rate of fine-tuned encoder layers", gt=0, le=1)
    weight_decay: float = param(1e-4, doc="AdamW weight decay", ge=0, le=10)
    batch_size: int = param(64, doc="training rows per batch", ge=1, le=65_536)
    epochs: int = param(30, doc="training epochs per ensemble member", ge=1, le=100_000)
    seed: int = param(0, doc="seed of the split, the data order, dropout and initial weights", ge=0, le=MAX_SEED)
    n_ensemble: int = param(1, doc="ensemble members (their spread is score_std)", ge=1, le=1000)
    val_fraction: float = param(0.2, doc="share of groups held out for validation", ge=0, lt=1)
    val_split: Literal["context", "character", "conversation"] = param(
        "context", doc="what is held out whole: contexts, characters, or conversations (context.conversation_id; "
        "each context without one is its own conversation), so correlated turns never sit on both sides")
    keep_best: bool = param(True, doc="final weights from the epoch with the lowest held-out `monitor` loss "
                            "(needs val_fraction > 0)")
    early_stopping: int = param(0, doc="stop after this many epochs without a lower held-out `monitor` loss "
                                "(0: run every epoch)", ge=0, le=100_000)
    monitor: str = param("auto", doc="the held-out loss keep_best and early_stopping watch: auto = the NLL per "
                         "graded rating (ordinal and gaussian heads, val/loss/graded) when the model trains one, else "
                         "loss; loss = the weighted sum over every head (val/loss); a trained head's name (e.g. engaging, continue@convai2) = that "
                         "head's own loss (val/loss/<head>), when the other heads overfit earlier")
    head_refit: bool = param(False, doc="re-solve each binary head as a logistic regression on the trunk output "
                             "(rm_lab.reward.refit), the L2 penalty chosen over refit_folds folds of the val_split "
                             "groups by refit_metric")
    refit_folds: int = param(5, doc="folds of the head refit's penalty search", ge=2, le=100)
    refit_metric: Literal["log_loss", "auc"] = param("log_loss", doc="held-out metric of the head refit",
                                                     choices=REFIT_METRICS)
    loss_weights: dict[str, float] = param({}, doc="head -> weight of its loss (default 1; a head's name also "
                                           "weighs its per-source heads)", ge=0, le=1e6)
    aggregate: bool = param(True, doc="merge repeated (context, reply) rows into binomial counts")
    source_batches: Literal["per_source", "mixed"] = param(
        "per_source", doc="several data folders: per_source = each batch from one source, cut as it would be "
        "alone, so every head takes the steps it would alone (rm_lab.reward.multisource); mixed = rows of all "
        "sources shuffled together")
    balance: str | None = param(None, doc="a record column (e.g. source_file, or _source for the data folders) "
                                "whose every value holds the same total count of each head's labels; null: each "
                                "label counts once")
    pairwise: bool = param(True, doc="also train the pairwise model (reads both replies)")
    pairwise_epochs: int = param(10, doc="training epochs of the pairwise model", ge=1, le=100_000)
    pairwise_hidden: int = param(256, doc="width of the pairwise model", ge=1, le=65_536)
    cache_dir: str | None = param(None, doc="embedding cache; null: shared ($RM_LAB_CACHE/embeddings); "
                                  "\"run\": in the run folder")
    embed_batch_size: int = param(64, doc="texts encoded per batch when filling the cache", ge=1, le=65_536)
    progress: bool = param(False, doc="show Lightning's progress bar")
    # scale-out: the same Lightning modules on GPUs or several machines
    accelerator: str = param("cpu", doc="Lightning accelerator", choices=ACCELERATORS)
    devices: int = param(1, doc="devices per machine", ge=1, le=4096)
    num_nodes: int = param(1, doc="machines", ge=1, le=4096)
    strategy: str = param("auto", doc="Lightning strategy (ddp, fsdp on several devices)", choices=STRATEGIES)
    precision: str = param("32-true", doc="Lightning precision, e.g. bf16-mixed on GPUs", choices=PRECISIONS)

    def __post_init__(self):
        check_fields(self)
        if self.early_stopping and self.val_fraction == 0:
            raise ValueError("early_stopping needs held-out contexts: set val_fraction > 0")
        self.inputs = check_inputs(self.inputs)
        if self.skip and self.n_layers == 0:
            raise ValueError("skip=true reads the inputs beside the trunk's output: it needs n_layers >= 1")
        if self.head_refit and self.train_mode != "frozen":
            raise ValueError("head_refit needs train_mode=frozen (it refits the heads on the cached features)")
        check_monitor_name(self.monitor, self.heads)
        if self.monitor not in (TOTAL_LOSS, AUTO) and self.val_fraction == 0:
            raise ValueError(f"monitor={self.monitor} watches a held-out loss: set val_fraction > 0")


# ----------------------------------------------------------------------------------------------
# what keep_best and early stopping watch

TOTAL_LOSS = "loss"  # `monitor` value of the summed held-out loss
# `monitor` value of the default: the graded heads' held-out NLL when there are any. Why: on Predictive Engagement
# the summed loss reached its minimum at epoch 2-4, where the pairwise BT head starts to overfit, while the rating
# head's own loss fell until epoch 7-12; the epoch picked by the summed loss gave Spearman 0.345 with the human
# ratings, by the rating head's 0.488 (5 folds by query, reports/reward_realdata.md). Graded human ratings are the
# labels closest to what an engagement score is checked against; data without them keeps the summed loss.
AUTO = "auto"
_MONITOR_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(" + re.escape(SOURCE_SEP) + r"[A-Za-z0-9_.\-]+)?$")


def check_monitor_name(monitor: str, heads) -> None:
    """Config-time check of `monitor`: "loss" or a head name; when `heads` lists the heads, one of them."""
    if monitor in (TOTAL_LOSS, AUTO):
        return
    if not _MONITOR_NAME.match(monitor):
        raise ValueError(f"monitor={monitor!r}: expected 'loss' or a head name (letters, digits and _, "
                         f"optionally {SOURCE_SEP}source)")
    if isinstance(heads, list) and monitor not in heads and monitor.split(SOURCE_SEP)[0] not in heads:
        raise ValueError(f"monitor={monitor!r}: not among the heads trained (heads={heads}); use monitor=loss "
                         f"or one of them")


def _monitor_text(key: str) -> str:
    return {"val/loss": "", GRADED_LOSS: "graded-rating "}.get(key, key.removeprefix("val/loss/") + " ")


def monitor_key(monitor: str, heads: list[str], val: RewardData) -> str:
    """The logged metric `monitor` names (rm_lab.reward.model.RewardLit logs `val/loss/<head>` per head), once
    the trained heads are known: a head that is not trained, or has no held-out labels, is a ConfigError."""
    if monitor == AUTO:
        counts = val.label_counts()
        graded = [h for h in heads if val.spec(h).likelihood in GRADED and counts[h] > 0]
        return GRADED_LOSS if graded else "val/loss"
    if monitor == TOTAL_LOSS:
        return "val/loss"
    if monitor not in heads:
        raise ConfigError(f"monitor={monitor!r}: no trained head of that name; trained heads: {heads} "
                          f"(or monitor=loss, the summed loss)")
    if val.label_counts()[monitor] == 0:
        raise ConfigError(f"monitor={monitor!r}: the held-out contexts have no {monitor} labels; raise val_fraction, "
                          f"or use monitor=loss")
    return f"val/loss/{monitor}"


# ----------------------------------------------------------------------------------------------
# batches

class EpochSampler(Sampler):
    """A permutation that depends only on (seed, epoch); Lightning calls set_epoch each epoch."""

    def __init__(self, n: int, seed: int, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())


class UnitCollator:
    """Units are pairs (first n_pairs) then labelled items; a batch is their items + labels + pair index."""

    def __init__(self, data: RewardData, feats, style: np.ndarray, heads: list[str], pad_id: int = 0):
        self.data, self.heads, self.pad_id = data, heads, pad_id
        self.feats = feats  # (N, D) float tensor of assembled features, or {text view: token-id lists}
        self.style = torch.tensor(np.asarray(style), dtype=torch.float32)
        self.rows = data.items["feat_row"].to_numpy()
        pairwise = any(data.spec(h).is_pairwise for h in heads)
        self.pairs = data.pairs[["chosen", "rejected"]].to_numpy() if pairwise else np.zeros((0, 2), int)
        self.margin = data.pairs["margin"].to_numpy(np.float32) if pairwise else np.zeros(0, np.float32)
        self.item_heads = [h for h in heads if not data.spec(h).is_pairwise]
        labelled = np.zeros(len(data.items), bool)
        for h in self.item_heads:
            if not data.spec(h).is_set:  # arm_mean heads: an experiment's replies are one unit (self.sets)
                labelled |= data.items[f"{h}_n"].to_numpy() > 0
        # grouped heads (arm_logit): the labelled items of one context (the arms of one experiment) are one
        # unit, so a batch always holds every arm its likelihood compares
        grouped = np.zeros(len(data.items), bool)
        for h in self.item_heads:
            if data.spec(h).is_grouped:
                grouped |= data.items[f"{h}_n"].to_numpy() > 0
        self.members: dict[int, list[int]] = {}
        self.ctx = data.items["context_id"].to_numpy(object)
        if grouped.any():
            by_ctx: dict = {}
            for i in np.flatnonzero(grouped):
                by_ctx.setdefault(self.ctx[i], []).append(int(i))
            self.members = {m[0]: m for m in by_ctx.values()}
            labelled &= ~grouped | np.isin(np.arange(len(data.items)), list(self.members))
        self.labelled = np.flatnonzero(labelled)
        from rm_lab.reward.arm_mean import SetBatches

        self.sets = SetBatches(data, heads)
        self.counts = {c: data.items[c].to_numpy(np.float32) for h in self.item_heads for c in data.spec(h).columns()}

    @property
    def n_units(self) -> int:
        return len(self.pairs) + len(self.labelled) + self.sets.n_units

    def __call__(self, units: list[int]) -> dict:
        n_pairs = len(self.pairs)
        order: dict[int, int] = {}
        labelled_items: set[int] = set()
        pc, pr, pm, set_units = [], [], [], []
        for u in units:
            if u < n_pairs:
                c, r = self.pairs[u]
                pc.append(order.setdefault(int(c), len(order)))
                pr.append(order.setdefault(int(r), len(order)))
                pm.append(self.margin[u])
            elif u >= n_pairs + len(self.labelled):  # an experiment of the arm_mean heads: all its arms' replies
                set_units.append(u - n_pairs - len(self.labelled))
                for it in self.sets.items(set_units[-1]):
                    order.setdefault(it, len(order))
            else:
                lead = int(self.labelled[u - n_pairs])
                for it in self.members.get(lead, (lead,)):
                    order.setdefault(it, len(order))
                    labelled_items.add(it)
        items = np.fromiter(order.keys(), int, len(order))
        rows = self.rows[items]
        rows = torch.from_numpy(rows)  # a tensor index: indexing by a numpy array is ~10x slower
        batch = {"style": self.style[rows], "pair_c": torch.tensor(pc, dtype=torch.long),
                 "pair_r": torch.tensor(pr, dtype=torch.long), "pair_margin": torch.tensor(pm, dtype=torch.float32)}
        own = torch.tensor([it in labelled_items for it in items], dtype=torch.float32)
        for c, v in self.counts.items():  # labels count once per epoch: only for the item's own unit
            batch[c] = torch.as_tensor(v[items]) * own
        if self.members:  # each item's experiment (context) within the batch, for the arm_logit likelihood
            from rm_lab.reward.arm_logit import group_codes

            batch["group"] = torch.as_tensor(group_codes(self.ctx[items]))
        if self.sets.n_units:
            batch.update(self.sets.batch(set_units, order))
        if isinstance(self.feats, torch.Tensor):
            batch["emb"] = self.feats[rows]
        else:
            for view, tokens in self.feats.items():
                seqs = [tokens[r] for r in rows.tolist()]
                width = max(len(s) for s in seqs)
                ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(seqs), width), dtype=torch.long)
                for i, s in enumerate(seqs):
                    ids[i, :len(s)] = torch.tensor(s)
                    mask[i, :len(s)] = 1
                batch[f"ids_{view}"], batch[f"mask_{view}"] = ids, mask
        return batch


def unit_loader(collator: UnitCollator, batch_size: int, seed: int, shuffle: bool) -> DataLoader:
    return DataLoader(list(range(collator.n_units)), batch_size=batch_size,
                      sampler=EpochSampler(collator.n_units, seed, shuffle), collate_fn=collator, num_workers=0)


class History(L.Callback):
    """Per-epoch metrics in a JSON file that survives a resume (later epochs are replaced)."""

    def __init__(self, member: store.MemberFiles):
        self.member = member
        self.rows = store.read_history(member)

    def on_train_epoch_end(self, trainer, pl_module):
        ep = trainer.current_epoch
        row = {"epoch": ep, **{k: round(float(v), 6) for k, v in trainer.callback_metrics.items()}}
        self.rows = [r for r in self.rows if r["epoch"] < ep] + [row]
        store.write_history(self.member, self.rows)


# ----------------------------------------------------------------------------------------------
# training

def load_records(cfg: TrainRMConfig, say: Callable[[str], None] = print) -> Records | list[Source]:
    """The records of `data` (one Source per folder), or a world simulated from `world`."""
    if cfg.data:
        sources = read_sources(cfg.data)
        if len(sources) > 1:
            say("sources: " + ", ".join(f"{s.name} ({s.folder})" for s in sources))
        return sources
    from rm_lab import config as cfgmod
    from rm_lab.world.simulate import WorldConfig, simulate

    wc = cfgmod.build(WorldConfig, dict(cfg.world), "world")
    say(f"simulating a world: {wc.n_contexts} interaction contexts, {wc.n_preference_contexts} preference contexts")
    return simulate(wc)


@dataclass
class Prepared:
    data: RewardData
    texts: ItemTexts
    style: np.ndarray
    tokenizer: object
    encoder: object
    key: str
    cache: EmbeddingCache
    train_ctx: list[str]
    val_ctx: list[str]
    groups: dict | None  # context -> its character or conversation (val_split), held out and refitted as a whole
    base_feats: np.ndarray | None = None  # assembled inputs from the untrained encoder (frozen / pairwise)
    records: Records | None = None  # every source's records in one bundle (contexts and characters merged)
    loss_weights: dict = dataclasses.field(default_factory=dict)  # per trained head
    monitor: str = "val/loss"  # the held-out metric keep_best and early stopping watch (monitor_key)


def head_loss_weights(weights: dict, heads: list[str]) -> dict[str, float]:
    """`loss_weights` per trained head: a key names a head, or a head name whose per-source heads it weighs."""
    out, unknown = {}, []
    for key, w in weights.items():
        hit = [h for h in heads if h == key or h.split(SOURCE_SEP)[0] == key]
        if not hit:
            unknown.append(key)
        out.update({h: float(w) for h in hit if h not in out or h == key})
    if unknown:
        raise ConfigError(f"loss_weights: no trained head named {unknown}; heads: {heads}")
    return out


def prepare(cfg: TrainRMConfig, records: Records | list[Source], cache_root: Path, say=print) -> Prepared:
    data = build_reward_data(records, cfg.heads, cfg.aggregate)
    records = merge_sources(records) if isinstance(records, list) else records
    weights = head_loss_weights(cfg.loss_weights, data.heads)
    if len(data.items) == 0:
        raise RecordError(str(cfg.data), None, None, "0 items", "at least one (context, reply) with a label")
    if cfg.balance:
        from rm_lab.reward.multisource import balance_labels

        balanced = balance_labels(data.items, data.specs, records, cfg.balance)
        say(f"balance={cfg.balance}: label weights " + ("; ".join(
            f"{h}: " + ", ".join(f"{v} x{f:.3g}" for v, f in fs.items()) for h, fs in balanced.items()) or "none"))
    data.items["feat_row"] = np.arange(len(data.items))
    groups = context_groups(records["context"], cfg.val_split)
    train_ctx, val_ctx = split_contexts(data.items["context_id"], cfg.val_fraction, cfg.seed, groups)
    if not train_ctx:
        raise ConfigError(f"val_fraction={cfg.val_fraction} leaves no training contexts")
    monitor = monitor_key(cfg.monitor, data.heads, data.subset(val_ctx))
    tok, enc = load_backbone(cfg.backbone)
    key = backbone_key(backbone_folder(cfg.backbone), cfg.max_length)
    texts, kws = item_texts(data.items["context_id"].tolist(), data.items["response"].tolist(), records["context"],
                            records["character"], tok, cfg.inputs, cfg.max_length, cfg.card_max_tokens,
                            cfg.reply_max_tokens)
    style = texts.tabular(style_matrix(data.items["response"], kws))
    prep = Prepared(data, texts, style, tok, enc, key, EmbeddingCache(cache_root, key), train_ctx, val_ctx, groups,
                    records=records, loss_weights=weights, monitor=monitor)
    if cfg.train_mode == "frozen" or cfg.pairwise:  # the untrained encoder's features
        from rm_lab.models import embed

        if cfg.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
            enc = enc.to("cuda")  # encode once on the GPU; training moves its own copy
        t0 = time.time()
        fn = lambda t: embed(t, tok, enc, cfg.embed_batch_size, cfg.max_length)  # noqa: E731
        prep.base_feats = features(texts, lambda t: prep.cache.get(t, fn), cfg.inputs)
        say(f"embedded {len(texts.unique_texts())} distinct texts ({', '.join(texts.views)}) for {len(texts)} items "
            f"in {time.time() - t0:.1f}s (cache {prep.cache.dir})")
    return prep


def _trainer(cfg: TrainRMConfig, epochs: int, member: store.MemberFiles, callbacks: list,
             monitor: str | None = None) -> L.Trainer:
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    ckpt_dir = member.dir
    ckpt = ModelCheckpoint(dirpath=str(ckpt_dir), filename="epoch{epoch:03d}", auto_insert_metric_name=False,
                           save_top_k=-1, every_n_epochs=1, save_last=True)
    if monitor and cfg.early_stopping:
        callbacks = [*callbacks, EarlyStopping(monitor=monitor, patience=cfg.early_stopping, mode="min")]
    return L.Trainer(max_epochs=epochs, accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
                     strategy=cfg.strategy, precision=cfg.precision, logger=False,
                     enable_progress_bar=cfg.progress, enable_model_summary=False, num_sanity_val_steps=0,
                     callbacks=[ckpt, History(member), *callbacks, jobs.lightning_callback()],
                     default_root_dir=str(ckpt_dir))


def _fit(trainer: L.Trainer, lit: L.LightningModule, member: store.MemberFiles, **loaders) -> None:
    """Fit, resuming from last.ckpt when there is one: verified first to hold tensors and plain values only,
    and loaded by Lightning with weights_only=True too, so no checkpoint can run code."""
    jobs.lightning_fit(trainer, lit, ckpt_path=store.checked_resume_path(member), weights_only=True, **loaders)


def _restore_best(lit: L.LightningModule, member: store.MemberFiles, monitor: str) -> int | None:
    """Load the weights of the best held-out epoch into `lit` (the checkpoint of every epoch is kept)."""
    ep = store.best_epoch(member, monitor)
    if ep is None:
        return None
    path = member.epoch(ep)
    if not path.exists():
        raise store.RunFolderError(f"keep_best: {path} is missing (the run folder lost its per-epoch checkpoints); "
                                   f"train into a new folder")
    lit.load_state_dict(store.load_checkpoint(path)["state_dict"])
    return ep


def train_member(cfg: TrainRMConfig, prep: Prepared, k: int, run_dir: Path, callbacks: list | None = None,
                 say=print) -> tuple[RewardNet, object, dict]:
    """Train (or resume, or reload a finished) member k; returns (net, encoder or None, last metrics)."""
    seed = cfg.seed + k
    member = store.TrainRun(run_dir).member(k)
    heads = prep.data.heads
    L.seed_everything(seed, workers=True, verbose=False)
    net = RewardNet(input_dim(int(prep.encoder.config.hidden_size), cfg.inputs), [prep.data.spec(h) for h in heads],
                    prep.style.shape[1], cfg.hidden, cfg.n_layers, cfg.dropout, cfg.skip, init_seed=seed)
    train = prep.data.subset(prep.train_ctx)
    from rm_lab.reward import multisource

    train_rows = train.items["feat_row"].to_numpy()
    net.set_style_stats(prep.style[train_rows])
    sources = multisource.context_sources(prep.records["context"]) if prep.records is not None else None
    if sources:  # a head that one source labels reads its inputs standardised as in that source's own model
        for h, own in multisource.single_source_heads(train, sources).items():
            net.set_head_style_stats(h, prep.style[train_rows[own]])
    net.init_heads(train.items)
    encoder = None
    if cfg.train_mode != "frozen":
        encoder = copy.deepcopy(prep.encoder)
        n_train = set_trainable(encoder, cfg.train_mode, cfg.unfreeze_top_k)
        say(f"member {k}: {n_train:,} trainable encoder parameters ({cfg.train_mode})")
        encoder.train()
    lit = RewardLit(net, encoder, cfg.lr, cfg.encoder_lr, cfg.weight_decay, prep.loss_weights, seed, cfg.inputs)
    if member.final.exists() and member.history.exists() and not store.finished(member, cfg.epochs):
        member.final.unlink()  # asked for more epochs than this member has: train on from last.ckpt
    if member.final.exists():
        store.load_member(member, net, encoder)
        hist = store.read_history(member)
        metrics = dict(hist[-1]) if hist else {}
        refit = store.read_refit(member)
        if refit is not None:
            metrics["refit"] = refit
        return net, encoder, metrics
    if isinstance(prep.base_feats, np.ndarray) and cfg.train_mode == "frozen":
        feats = torch.tensor(prep.base_feats)
    else:
        feats = token_views(prep.texts, prep.tokenizer, cfg.max_length)
    tr = UnitCollator(train, feats, prep.style, heads, prep.tokenizer.pad_token_id or 0)
    if tr.n_units == 0:
        raise RecordError(str(cfg.data), None, None, "0 training rows",
                          f"labelled rows for heads {heads} in the training split")
    val = prep.data.subset(prep.val_ctx)
    va = UnitCollator(val, feats, prep.style, heads, prep.tokenizer.pad_token_id or 0)
    trainer = _trainer(cfg, cfg.epochs, member, callbacks or [], prep.monitor if va.n_units else None)
    if sources and cfg.source_batches == "per_source":  # several data folders: batches of one source each
        batches = multisource.SourceBatches(multisource.unit_sources(tr, sources), cfg.batch_size, seed)
        train_dl = DataLoader(list(range(tr.n_units)), batch_sampler=batches, collate_fn=tr, num_workers=0)
    else:
        train_dl = unit_loader(tr, cfg.batch_size, seed, True)
    if member.last.exists():
        say(f"member {k}: resuming from {member.last}")
    small_ops = cfg.train_mode == "frozen"  # heads over cached embeddings: one thread (rm_lab.reward.threads)
    with single_thread(small_ops):
        _fit(trainer, lit, member, train_dataloaders=train_dl,
             val_dataloaders=unit_loader(va, 256, seed, False) if va.n_units else None)
    if trainer.should_stop and trainer.current_epoch < cfg.epochs:
        store.mark_stopped_early(member, trainer.current_epoch)
    jobs.safe_point()
    best = _restore_best(lit, member, prep.monitor) if cfg.keep_best and va.n_units else None
    with single_thread():
        refit = _refit(cfg, prep, train, net, k) if cfg.head_refit else None
    if refit is not None:  # before final.safetensors: a finished member always has its refit record
        store.write_refit(member, refit)
    store.save_member(member, net, encoder)
    metrics = {k2: float(v) for k2, v in trainer.callback_metrics.items()}
    metrics["epochs_done"] = trainer.current_epoch
    if best is not None:
        metrics["best_epoch"] = best
        say(f"member {k}: kept epoch {best} (lowest held-out {_monitor_text(prep.monitor)}"
            f"loss)")
    if refit is not None:
        metrics["refit"] = refit
        say(f"member {k}: refitted " + (", ".join(f"{r['head']} (C={r['C']:.3g})" for r in refit) or "no head"))
    return net, encoder, metrics


def _refit(cfg: TrainRMConfig, prep: Prepared, train: RewardData, net: RewardNet, k: int) -> list[dict]:
    """`head_refit`: the binary heads re-solved on the member's training rows (rm_lab.reward.refit)."""
    from rm_lab.reward.refit import refit_heads

    rows = train.items["feat_row"].to_numpy()
    ctx = train.items["context_id"].astype(str).to_numpy()
    groups = np.array([str(prep.groups.get(c, c)) for c in ctx]) if prep.groups else ctx
    heads = [h for h in prep.data.heads if prep.data.spec(h).likelihood == "binomial"]
    counts = {f"{h}_{s}": train.items[f"{h}_{s}"].to_numpy(np.float64) for h in heads for s in ("n", "k")}
    res = refit_heads(net, heads, prep.base_feats[rows], prep.style[rows], counts, groups,
                      n_folds=cfg.refit_folds, seed=cfg.seed + k, bootstrap=cfg.n_ensemble > 1,
                      metric=cfg.refit_metric)
    return [r.to_json() for r in res]


def train_pairwise(cfg: TrainRMConfig, prep: Prepared, run_dir: Path, say=print) -> tuple[PairwiseNet, dict]:
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    emb = torch.tensor(prep.base_feats)
    style = torch.tensor(prep.style)
    net = PairwiseNet(emb.shape[1], style.shape[1], cfg.pairwise_hidden, cfg.n_layers, cfg.dropout)

    def loader(d: RewardData, shuffle: bool):
        rows = d.items["feat_row"].to_numpy()
        c, r = rows[d.pairs["chosen"].to_numpy()], rows[d.pairs["rejected"].to_numpy()]

        def collate(idx):
            idx = np.asarray(idx)
            ci, ri = torch.from_numpy(c[idx]), torch.from_numpy(r[idx])  # tensor indices: fast gathers
            return {"ea": emb[ci], "sa": style[ci], "eb": emb[ri], "sb": style[ri],
                    "a_wins": torch.ones(len(idx))}
        return DataLoader(list(range(len(c))), batch_size=cfg.batch_size, sampler=EpochSampler(len(c), cfg.seed, shuffle),
                          collate_fn=collate)

    train, val = prep.data.subset(prep.train_ctx), prep.data.subset(prep.val_ctx)
    net.set_style_stats(prep.style[train.items["feat_row"].to_numpy()])
    lit = PairwiseLit(net, cfg.lr, cfg.weight_decay, cfg.seed)
    member = store.TrainRun(run_dir).pairwise_member
    trainer = _trainer(cfg, cfg.pairwise_epochs, member, [], "val/pair_loss" if len(val.pairs) else None)
    with single_thread():  # a small MLP over cached embeddings (rm_lab.reward.threads)
        _fit(trainer, lit, member, train_dataloaders=loader(train, True),
             val_dataloaders=loader(val, False) if len(val.pairs) else None)
    jobs.safe_point()
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.keep_best and len(val.pairs):
        metrics["best_epoch"] = _restore_best(lit, member, "val/pair_loss")
    return net, metrics


# settings that change where or how fast a run goes, not what it learns
# (epochs may grow on resume: a finished member then trains on from its last checkpoint)
_NOT_IDENTITY = ("progress", "cache_dir", "embed_batch_size", "accelerator", "devices", "num_nodes", "strategy",
                 "epochs", "pairwise_epochs", "early_stopping")
# settings added after run folders existed: recorded only when not at this default, so an older folder's
# identity (which lacks them) still matches a resume with the default
_IDENTITY_SINCE = {"monitor": (TOTAL_LOSS, AUTO), "skip": (False,), "balance": (None,),
                   "source_batches": ("per_source", "mixed")}  # recorded in _claim_run_dir with several sources  # auto is loss on data without graded heads


PATH_KEYS = ("data", "backbone", "cache_dir")  # folders named in the config ("run" for cache_dir is no path)


def with_absolute_paths(cfg: TrainRMConfig) -> TrainRMConfig:
    """The config with its relative folders made absolute: what a new run records in config.yaml, so that
    `train-rm --resume` from another working folder (`--resume .` inside the run) reads the same files."""
    def absolute(v):
        if isinstance(v, list):
            return [absolute(x) for x in v]
        return str(Path(v).expanduser().absolute()) if isinstance(v, str) and v and v != "run" else v

    return dataclasses.replace(cfg, **{k: absolute(getattr(cfg, k)) for k in PATH_KEYS})


def _claim_run_dir(cfg: TrainRMConfig, prep: Prepared, run_dir: Path) -> None:
    """Checkpoints in run_dir are resumed only by the same config on the same data, never silently reused."""
    ident = {k: v for k, v in dataclasses.asdict(cfg).items()
             if k not in _NOT_IDENTITY and not (k in _IDENTITY_SINCE and v in _IDENTITY_SINCE[k])}
    ident["data_sha1"] = prep.texts.digest()
    from rm_lab.reward.multisource import context_sources

    records = getattr(prep, "records", None)
    if records is not None and context_sources(records.frames.get("context")):  # batches matter with >1 source
        ident["source_batches"] = cfg.source_batches
    ident = json.loads(json.dumps(ident, default=str))
    path = store.TrainRun(run_dir).identity
    if path.exists():
        old = store.read_json(path, "the run's training identity")
        diff = sorted(k for k in set(old) | set(ident) if old.get(k) != ident.get(k))
        if diff:
            raise ConfigError(f"{run_dir} holds a reward model trained with other settings or data "
                              f"(differs in {diff}); resume it with the same config, or train into a new folder")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        io.write_json(path, ident)


def train_reward_model(cfg: TrainRMConfig, run_dir: str | Path, records: Records | None = None,
                       callbacks: list | None = None, say: Callable[[str], None] = print) -> dict:
    """Train every member (resuming what a killed run left) and write the model files into run_dir.

    Inside a `rm_lab.jobs.Job`, SIGINT/SIGTERM stop training at the next batch or epoch boundary
    (`jobs.Stopped`), leaving each member's last finished epoch in last.ckpt for a resume."""
    run = store.TrainRun(Path(run_dir))
    t0 = time.time()
    records = records if records is not None else load_records(cfg, say)
    cache_root = run.embed_cache if cfg.cache_dir == "run" else (
        Path(cfg.cache_dir) if cfg.cache_dir else default_cache_root())
    prep = prepare(cfg, records, cache_root, say)
    with jobs.deferred():
        _claim_run_dir(cfg, prep, run.root)
        store.begin_training(run)
        io.write_json(run.split, {"seed": cfg.seed, "val_fraction": cfg.val_fraction,
                                  "heldout_contexts": prep.val_ctx,  # and their content, for eval-rm to check
                                  "heldout_fingerprints": context_fingerprints(
                                      prep.records["context"], prep.records["character"], prep.val_ctx)})
        counts = prep.data.label_counts()
        say(f"{len(prep.data.items)} items, labels per head: {counts}; heads {prep.data.heads}")
        members, member_metrics = [], []
        for k in range(cfg.n_ensemble):
            jobs.safe_point()
            net, encoder, m = train_member(cfg, prep, k, run.root, callbacks, say)
            members.append((net, encoder))
            member_metrics.append(m)
            say(f"member {k}: " + ", ".join(f"{a}={b:.4f}" for a, b in sorted(m.items()) if a.startswith("val/")))
        pair_cfg, pair_metrics = None, {}
        if cfg.pairwise and "preference" in prep.data.heads:
            jobs.safe_point()
            pnet, pair_metrics = train_pairwise(cfg, prep, run.root, say)
            pair_cfg = {"hidden": cfg.pairwise_hidden, "n_layers": cfg.n_layers, "dropout": cfg.dropout}
            store.save_pairwise(run, pnet)
            say("pairwise: " + ", ".join(f"{a}={b:.4f}" for a, b in sorted(pair_metrics.items())))
        rmc = RMConfig(backbone=str(backbone_folder(cfg.backbone).resolve()) if cfg.backbone else None,
                       backbone_key=prep.key, train_mode=cfg.train_mode, heads=prep.data.heads,
                       emb_dim=int(prep.encoder.config.hidden_size), hidden=cfg.hidden, n_layers=cfg.n_layers,
                       dropout=cfg.dropout, max_length=cfg.max_length, card_max_tokens=cfg.card_max_tokens,
                       reply_max_tokens=cfg.reply_max_tokens, n_members=cfg.n_ensemble,
                       seeds=[cfg.seed + k for k in range(cfg.n_ensemble)],
                       style_features=tabular_names(cfg.inputs), pairwise=pair_cfg, inputs=list(cfg.inputs), skip=cfg.skip,
                       head_specs={h: prep.data.spec(h).to_json() for h in prep.data.heads})
        jobs.safe_point()
        store.save_model(run, members)
        store.write_model_config(run, rmc.to_json())  # last: the model is complete
    metrics = {"n_items": len(prep.data.items), "labels": counts, "heads": prep.data.heads,
               "n_train_contexts": len(prep.train_ctx), "n_val_contexts": len(prep.val_ctx),
               "members": member_metrics, "pairwise": pair_metrics, "seconds": round(time.time() - t0, 2)}
    return metrics
