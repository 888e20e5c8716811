"""The multi-head reward model: encoder views of the (context, reply) (see `rm_lab.reward.inputs`) next
to standardised style features, a shared MLP trunk, and one linear head per signal.

Heads: `preference` (a Bradley-Terry score), binary user-signal and steerability heads trained with a
binomial likelihood on (n, k) counts, and `depth` with a Poisson likelihood. A row carries only the
labels it has; each head's loss is averaged over the trials present in the batch (masked), so mixing
preference pairs, logged interactions and steer labels in one batch is exact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import lightning as L
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from rm_lab.config import ConfigError
from rm_lab.reward.data import BINARY_HEADS, FEATURES, style_matrix
from rm_lab.reward.inputs import assemble, features, input_dim, item_texts

OUTPUT_NAMES = {"preference": "score", "depth": "depth", **{h: f"p_{h}" for h in BINARY_HEADS}}


# ----------------------------------------------------------------------------------------------
# losses

def bt_loss(s_chosen: torch.Tensor, s_rejected: torch.Tensor, margin: torch.Tensor | None = None) -> torch.Tensor:
    """Bradley-Terry: -log sigmoid(s_c - s_r - margin), averaged over pairs."""
    d = s_chosen - s_rejected
    if margin is not None:
        d = d - margin
    return -F.logsigmoid(d).mean()


def binomial_nll(logit: torch.Tensor, k: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Per-trial negative log-likelihood of k successes in n trials; rows with n == 0 are masked."""
    total = n.sum()
    if total <= 0:
        return logit.sum() * 0.0
    nll = -(k * F.logsigmoid(logit) + (n - k) * F.logsigmoid(-logit))
    return torch.where(n > 0, nll, torch.zeros_like(nll)).sum() / total


def poisson_nll(log_rate: torch.Tensor, y: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Per-trial Poisson NLL (without the log y! constant) of a total count y over n trials."""
    total = n.sum()
    if total <= 0:
        return log_rate.sum() * 0.0
    mask = n > 0
    log_mu = log_rate + torch.log(n.clamp(min=1e-12))
    nll = torch.where(mask, torch.exp(log_mu) - y * log_mu, torch.zeros_like(log_mu))
    return nll.sum() / total


def multitask_loss(out: dict[str, torch.Tensor], batch: dict, weights: dict[str, float] | None = None
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of the losses of every head present in `out` that has labels in the batch."""
    weights = weights or {}
    parts: dict[str, torch.Tensor] = {}
    for head, pred in out.items():
        if head == "preference":
            if batch["pair_c"].numel():
                parts[head] = bt_loss(pred[batch["pair_c"]], pred[batch["pair_r"]], batch["pair_margin"])
        elif head == "depth":
            if batch["depth_n"].sum() > 0:
                parts[head] = poisson_nll(pred, batch["depth_k"], batch["depth_n"])
        elif batch[f"{head}_n"].sum() > 0:
            parts[head] = binomial_nll(pred, batch[f"{head}_k"], batch[f"{head}_n"])
    if not parts:
        anchor = next(iter(out.values()))
        return anchor.sum() * 0.0, parts
    total = sum(weights.get(h, 1.0) * v for h, v in parts.items())
    return total, parts


# ----------------------------------------------------------------------------------------------
# networks

class RewardNet(nn.Module):
    """Heads over [assembled encoder views, standardised style features]."""

    def __init__(self, in_dim: int, heads: Sequence[str], n_style: int = len(FEATURES), hidden: int = 256,
                 n_layers: int = 2, dropout: float = 0.1):
        super().__init__()
        self.heads_order = list(heads)
        self.register_buffer("style_mean", torch.zeros(n_style))
        self.register_buffer("style_std", torch.ones(n_style))
        layers: list[nn.Module] = []
        d = in_dim + n_style
        for _ in range(n_layers):
            layers += [nn.Linear(d, hidden), nn.GELU(), nn.Dropout(dropout)]
            d = hidden
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({h: nn.Linear(d, 1) for h in heads})

    def set_style_stats(self, style: np.ndarray) -> None:
        self.style_mean.copy_(torch.as_tensor(style.mean(0), dtype=torch.float32))
        self.style_std.copy_(torch.as_tensor(style.std(0), dtype=torch.float32).clamp(min=1e-3))

    def features(self, emb: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """What every head reads: the trunk over [inputs, standardised tabular features]."""
        return self.trunk(torch.cat([emb, (style - self.style_mean) / self.style_std], dim=-1))

    def forward(self, emb: torch.Tensor, style: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(emb, style)
        return {name: head(h).squeeze(-1) for name, head in self.heads.items()}


def mean_pool(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The pooling of `rm_lab.models.embed` (masked mean, L2-normalised), with gradients."""
    tok = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.float()
    mask = attention_mask.unsqueeze(-1).to(tok.dtype)
    pooled = (tok * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return F.normalize(pooled, p=2, dim=1)


def encoder_layers(model) -> nn.ModuleList:
    for path in ("encoder.layer", "layers", "transformer.layer", "encoder.layers"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        if isinstance(obj, nn.ModuleList):
            return obj
    raise ConfigError(f"train_mode=top_k: cannot find the transformer layers of {type(model).__name__}")


def set_trainable(model, mode: str, top_k: int = 0) -> int:
    """Freeze the encoder, unfreeze its top k layers, or all of it; returns trainable parameters."""
    for p in model.parameters():
        p.requires_grad_(mode == "full")
    if mode == "top_k":
        layers = encoder_layers(model)
        if not 1 <= top_k <= len(layers):
            raise ConfigError(f"unfreeze_top_k={top_k}: the encoder has {len(layers)} layers")
        for layer in layers[len(layers) - top_k:]:
            for p in layer.parameters():
                p.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ----------------------------------------------------------------------------------------------
# Lightning

class RewardLit(L.LightningModule):
    """Trains one RewardNet (and, unless frozen, the encoder) on mixed pair/item batches."""

    def __init__(self, net: RewardNet, encoder=None, lr: float = 1e-3, encoder_lr: float = 2e-5,
                 weight_decay: float = 1e-4, loss_weights: dict | None = None, seed: int = 0,
                 inputs: Sequence[str] = ("joint",)):
        super().__init__()
        self.net = net
        self.inputs = list(inputs)
        self.encoder = encoder  # None in frozen mode: batches then carry cached embeddings
        self.lr, self.encoder_lr, self.weight_decay = lr, encoder_lr, weight_decay
        self.loss_weights = dict(loss_weights or {})
        self.seed = seed

    def embed_batch(self, batch: dict) -> torch.Tensor:
        if "emb" in batch:  # frozen encoder: the collator carries the assembled cached features
            return batch["emb"]
        views = {k[4:]: mean_pool(self.encoder, batch[k], batch["mask_" + k[4:]]) for k in batch if k.startswith("ids_")}
        return assemble(views, self.inputs)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        return self.net(self.embed_batch(batch), batch["style"])

    def training_step(self, batch, batch_idx):
        # dropout draws depend only on (seed, step): a run resumed from a checkpoint replays
        # exactly the steps an uninterrupted run would have taken
        torch.manual_seed(self.seed * 100_003 + self.global_step)
        loss, parts = multitask_loss(self(batch), batch, self.loss_weights)
        bs = int(batch["style"].shape[0])
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=bs)
        for h, v in parts.items():
            self.log(f"train/{h}", v, on_step=False, on_epoch=True, batch_size=bs)
        return loss

    def validation_step(self, batch, batch_idx):
        out = self(batch)
        loss, parts = multitask_loss(out, batch, self.loss_weights)
        bs = int(batch["style"].shape[0])
        self.log("val/loss", loss, on_epoch=True, batch_size=bs)
        for h, v in parts.items():
            self.log(f"val/{h}", v, on_epoch=True, batch_size=bs)
        if "preference" in out and batch["pair_c"].numel():
            s = out["preference"]
            acc = (s[batch["pair_c"]] > s[batch["pair_r"]]).float().mean()
            self.log("val/pair_acc", acc, on_epoch=True, batch_size=int(batch["pair_c"].numel()))

    def configure_optimizers(self):
        groups = [{"params": list(self.net.parameters()), "lr": self.lr}]
        if self.encoder is not None:
            enc = [p for p in self.encoder.parameters() if p.requires_grad]
            if enc:
                groups.append({"params": enc, "lr": self.encoder_lr})
        return torch.optim.AdamW(groups, weight_decay=self.weight_decay)


# ----------------------------------------------------------------------------------------------
# inference

def load_backbone(path: str | None):
    """(tokenizer, encoder) with a clear ConfigError for a bad path."""
    from rm_lab.models import ModelPackageMissing, load_encoder

    try:
        return load_encoder(path)
    except (FileNotFoundError, OSError, ValueError, ModelPackageMissing) as e:
        raise ConfigError(f"backbone: cannot load encoder '{path or 'packaged all-MiniLM-L6-v2'}': {e}") from None


def backbone_folder(path: str | None) -> Path:
    from rm_lab.models import encoder_path

    return Path(path) if path else encoder_path()


@dataclass
class RMConfig:
    """What `RewardModel.load` needs besides the weights (written as rm_config.json)."""

    backbone: str | None
    backbone_key: str
    train_mode: str
    heads: list[str]
    emb_dim: int
    hidden: int
    n_layers: int
    dropout: float
    max_length: int
    card_max_tokens: int
    reply_max_tokens: int
    n_members: int
    seeds: list[int]
    style_features: list[str]
    pairwise: dict | None = None  # {"hidden": .., "n_layers": ..} when a pairwise model was trained
    inputs: list[str] = field(default_factory=lambda: ["joint"])  # encoder views (rm_lab.reward.inputs)

    @property
    def in_dim(self) -> int:
        return input_dim(self.emb_dim, self.inputs)

    def to_json(self) -> dict:
        return dict(self.__dict__)


class RewardModel:
    """A trained reward model (one member or an ensemble), ready to score (context, reply) rows."""

    def __init__(self, cfg: RMConfig, members: list[RewardNet], tokenizer, encoders: list, pairwise=None,
                 cache=None):
        self.cfg, self.members, self.tokenizer, self.encoders = cfg, members, tokenizer, encoders
        self.pairwise = pairwise
        self.cache = cache  # optional EmbeddingCache for the frozen encoder
        self._base = None  # the untrained encoder, loaded when a fine-tuned model's pairwise model needs it
        for m in members:
            m.eval()
        for e in encoders:
            e.eval()
        if pairwise is not None:
            pairwise.eval()

    @property
    def heads(self) -> list[str]:
        return list(self.cfg.heads)

    @classmethod
    def load(cls, run_dir: str | Path, cache_dir: str | Path | None = None) -> "RewardModel":
        from safetensors.torch import load_file

        from rm_lab.reward.embed_cache import EmbeddingCache

        run_dir = Path(run_dir)
        cfg_path, w_path = run_dir / "rm_config.json", run_dir / "model.safetensors"
        if not cfg_path.is_file() or not w_path.is_file():
            raise ConfigError(f"model: '{run_dir}' is not a train-rm run folder (needs rm_config.json and "
                              f"model.safetensors)")
        raw = json.loads(cfg_path.read_text())
        raw.pop("format", None)  # written by models trained before `inputs` existed
        cfg = RMConfig(**raw)
        state = load_file(str(w_path))
        tok, base = load_backbone(cfg.backbone)
        members, encoders = [], []
        for k in range(cfg.n_members):
            net = RewardNet(cfg.in_dim, cfg.heads, len(cfg.style_features), cfg.hidden, cfg.n_layers, cfg.dropout)
            net.load_state_dict({n[len(f"m{k}.net."):]: v for n, v in state.items() if n.startswith(f"m{k}.net.")})
            members.append(net)
            if cfg.train_mode != "frozen":
                import copy

                enc = copy.deepcopy(base)
                enc.load_state_dict({n[len(f"m{k}.encoder."):]: v for n, v in state.items()
                                     if n.startswith(f"m{k}.encoder.")})
                encoders.append(enc)
        if cfg.train_mode == "frozen":
            encoders = [base]
        pairwise = None
        if cfg.pairwise and (run_dir / "pairwise.safetensors").is_file():
            from rm_lab.reward.pairwise import PairwiseNet

            pairwise = PairwiseNet(cfg.in_dim, len(cfg.style_features), **cfg.pairwise)
            pairwise.load_state_dict(load_file(str(run_dir / "pairwise.safetensors")))
        cache = EmbeddingCache(cache_dir, cfg.backbone_key) if cache_dir and cfg.train_mode == "frozen" else None
        return cls(cfg, members, tok, encoders, pairwise, cache)

    # -- features
    def item_texts(self, contexts: pd.DataFrame, replies: Sequence[str], characters: pd.DataFrame):
        """Encoder texts per view and style matrix for rows of `contexts` aligned with `replies`."""
        replies = [str(r) for r in replies]
        if len(replies) != len(contexts):
            raise ValueError(f"score: {len(replies)} replies for {len(contexts)} context rows")
        missing = [c for c in ("context_id", "character_id", "history") if c not in contexts.columns]
        if missing:
            raise ConfigError(f"score: contexts need columns {missing} (one context row per reply)")
        texts, kws = item_texts(contexts["context_id"].tolist(), replies, contexts, characters, self.tokenizer,
                                self.cfg.inputs, self.cfg.max_length, self.cfg.card_max_tokens,
                                self.cfg.reply_max_tokens)
        return texts, texts.tabular(style_matrix(replies, kws))

    def features(self, texts, member: int = 0, batch_size: int = 64, base: bool = False) -> np.ndarray:
        """Assembled inputs of the heads; `base`: from the untrained encoder (the pairwise model's)."""
        from rm_lab.models import embed

        frozen = self.cfg.train_mode == "frozen"
        if base and not frozen:
            if self._base is None:
                self._base = load_backbone(self.cfg.backbone)[1]
            enc = self._base
        else:
            enc = self.encoders[0 if frozen else member]
        fn = lambda t: embed(t, self.tokenizer, enc, batch_size=batch_size, max_length=self.cfg.max_length)  # noqa: E731
        if self.cache is not None:  # only a frozen encoder has one
            return features(texts, lambda t: self.cache.get(t, fn), self.cfg.inputs)
        return features(texts, fn, self.cfg.inputs)

    def member_features(self, texts, batch_size: int = 64):
        """One feature matrix (frozen encoder), or one per member (each trained its own encoder)."""
        if self.cfg.train_mode == "frozen":
            return self.features(texts, 0, batch_size)
        return [self.features(texts, k, batch_size) for k in range(len(self.members))]

    @torch.inference_mode()
    def score_features(self, feats: list[np.ndarray] | np.ndarray, style: np.ndarray, batch_size: int = 64
                       ) -> dict[str, np.ndarray]:
        """Heads from precomputed features (one array, or one per member for trained encoders)."""
        per_member: list[dict[str, np.ndarray]] = []
        st = torch.tensor(np.asarray(style), dtype=torch.float32)
        for k, net in enumerate(self.members):
            e = feats[k] if isinstance(feats, list) else feats
            e = torch.tensor(np.asarray(e), dtype=torch.float32)
            outs: dict[str, list[np.ndarray]] = {h: [] for h in net.heads_order}
            for i in range(0, len(st), batch_size):
                o = net(e[i:i + batch_size], st[i:i + batch_size])
                for h, v in o.items():
                    outs[h].append(v.numpy())
            per_member.append({h: _transform(h, np.concatenate(v) if v else np.zeros(0, np.float32))
                               for h, v in outs.items()})
        result = {}
        for h in self.heads:
            stack = np.stack([m[h] for m in per_member])
            name = OUTPUT_NAMES[h]
            result[name] = stack.mean(0)
            if len(self.members) > 1:
                result[f"{name}_std"] = stack.std(0)
        return result

    def score(self, contexts: pd.DataFrame, replies: Sequence[str], characters: pd.DataFrame,
              batch_size: int = 64) -> dict[str, np.ndarray]:
        """Per reply: `score` (pointwise BT), `p_<signal>`, `depth`; `<name>_std` across an ensemble."""
        texts, style = self.item_texts(contexts, replies, characters)
        return self.score_features(self.member_features(texts, batch_size), style, batch_size)

    @torch.inference_mode()
    def compare(self, contexts: pd.DataFrame, replies_a: Sequence[str], replies_b: Sequence[str],
                characters: pd.DataFrame, batch_size: int = 64) -> np.ndarray:
        """P(reply A more engaging than reply B) from the pairwise model."""
        if self.pairwise is None:
            raise ConfigError("this reward model has no pairwise model (train with pairwise=true)")
        ta, sa = self.item_texts(contexts, replies_a, characters)
        tb, sb = self.item_texts(contexts, replies_b, characters)
        ea, eb = self.features(ta, 0, batch_size, base=True), self.features(tb, 0, batch_size, base=True)
        return self.pairwise.prob(ea, sa, eb, sb, batch_size)


def _transform(head: str, logits: np.ndarray) -> np.ndarray:
    if head == "preference":
        return logits
    if head == "depth":
        return np.exp(logits)
    return 1.0 / (1.0 + np.exp(-logits))
