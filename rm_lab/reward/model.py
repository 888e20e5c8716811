"""The multi-head reward model: encoder views of the (context, reply) (see `rm_lab.reward.inputs`) next
to standardised style features, a shared MLP trunk, and one linear head per signal.

Heads are entries of the registry (`rm_lab.reward.heads`): `preference` (a Bradley-Terry score, the RL
reward), binary user-signal and steerability heads trained with a binomial likelihood on (n, k) counts,
`depth` with a Poisson likelihood, and declared heads: ordinal (cumulative logit over K-1 ordered
cut-points), gaussian (learned or fixed scale) and negative-binomial counts. A row carries only the
labels it has; each head's loss is averaged over the observations present in the batch (masked), so
mixing preference pairs, logged interactions, steer labels and graded labels in one batch is exact. All
heads read one shared trunk, so every head's labels shape the features the pointwise score reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import lightning as L
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from rm_lab import config as cfgmod
from rm_lab.config import ConfigError, param
from rm_lab.reward.data import FEATURES, style_matrix
from rm_lab.reward.heads import HeadSpec, spec_of
from rm_lab.reward.inputs import assemble, features, input_dim, item_texts


# ----------------------------------------------------------------------------------------------
# losses

GRADED = ("ordinal", "gaussian")  # likelihoods of graded ratings and continuous targets
GRADED_LOSS = "val/loss/graded"  # held-out NLL per graded label, pooled over those heads (train-rm monitor=auto)

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


def negbin_nll(log_mu: torch.Tensor, log_alpha: torch.Tensor, y: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Per-observation NB2 NLL (without log y!) of a total count y over n draws (mean mu, variance
    mu + alpha mu^2 each): the total of n such draws is negative binomial with size n/alpha and mean n mu."""
    total = n.sum()
    if total <= 0:
        return log_mu.sum() * 0.0 + log_alpha.sum() * 0.0
    mask = n > 0
    n_safe = torch.where(mask, n, torch.ones_like(n))
    log_r = -log_alpha  # size of one draw
    size = n_safe * torch.exp(log_r)
    log_denom = torch.logaddexp(log_r.expand_as(log_mu), log_mu)  # log(r + mu)
    ll = (torch.lgamma(y + size) - torch.lgamma(size) + size * (log_r - log_denom) + y * (log_mu - log_denom))
    return -torch.where(mask, ll, torch.zeros_like(ll)).sum() / total


def ordered_cuts(raw: torch.Tensor) -> torch.Tensor:
    """K-1 increasing cut-points from free parameters: the first one, then softplus steps (always > 0)."""
    return torch.cat([raw[:1], raw[:1] + torch.cumsum(F.softplus(raw[1:]), 0)])


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate near 0 and for large |x| (Maechler 2012)."""
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def ordinal_log_probs(eta: torch.Tensor, cuts: torch.Tensor) -> torch.Tensor:
    """(N, K) log P(Y = j) of the cumulative logit model P(Y <= j) = sigmoid(cut_j - eta).

    P(Y = j) = sigmoid(cut_j - eta) * sigmoid(eta - cut_{j-1}) * (1 - exp(cut_{j-1} - cut_j)), each factor
    in log space, so no probability is formed by subtracting two close numbers."""
    a = cuts[None, :] - eta[:, None]  # (N, K-1)
    zero = eta.new_zeros(eta.shape[0], 1)
    upper = torch.cat([F.logsigmoid(a), zero], 1)  # the top level has no upper cut
    lower = torch.cat([zero, F.logsigmoid(-a)], 1)  # the bottom level has no lower cut
    z1 = cuts.new_zeros(1)
    gap = torch.cat([z1, _log1mexp(cuts[:-1] - cuts[1:]), z1])
    return upper + lower + gap[None, :]


def ordinal_nll(eta: torch.Tensor, cuts: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Per-rating NLL of `counts` (N, K: ratings of each item at each level); rows without ratings are masked."""
    total = counts.sum()
    if total <= 0:
        return eta.sum() * 0.0 + cuts.sum() * 0.0
    lp = ordinal_log_probs(eta, cuts)
    return -torch.where(counts > 0, counts * lp, torch.zeros_like(lp)).sum() / total


def gaussian_nll(z: torch.Tensor, log_sigma: torch.Tensor, n: torch.Tensor, mean: torch.Tensor, m2: torch.Tensor,
                 loc: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
    """Per-value Gaussian NLL (without the log 2 pi constant) on the standardised target (y - loc) / spread.

    An item with n values of mean `mean` and within-item sum of squares `m2` contributes
    n log sigma + (m2 / spread^2 + n (mean' - z)^2) / (2 sigma^2), exactly the sum over its values."""
    total = n.sum()
    if total <= 0:
        return z.sum() * 0.0 + log_sigma.sum() * 0.0
    mask = n > 0
    mean_s = (mean - loc) / spread
    sse = m2 / spread ** 2 + n * (mean_s - z) ** 2
    nll = n * log_sigma + sse / (2 * torch.exp(2 * log_sigma))
    return torch.where(mask, nll, torch.zeros_like(nll)).sum() / total


def head_loss(spec: HeadSpec, pred: torch.Tensor, batch: dict, params: dict[str, torch.Tensor]
              ) -> torch.Tensor | None:
    """The loss of one head on a batch, by its likelihood; None when the batch has no label for it."""
    name = spec.name
    if spec.is_pairwise:
        if not batch["pair_c"].numel():
            return None
        return bt_loss(pred[batch["pair_c"]], pred[batch["pair_r"]], batch["pair_margin"])
    if spec.is_set:  # the batch holds every reply of its experiments' arms (rm_lab.reward.arm_mean.SetBatches)
        from rm_lab.reward.arm_mean import set_loss

        return set_loss(name, pred, batch, params["log_tau"])
    n = batch[f"{name}_n"]
    if not n.sum() > 0:
        return None
    if spec.likelihood == "binomial":
        return binomial_nll(pred, batch[f"{name}_k"], n)
    if spec.likelihood == "poisson":
        return poisson_nll(pred, batch[f"{name}_k"], n)
    if spec.likelihood == "negative_binomial":
        return negbin_nll(pred, params["log_alpha"], batch[f"{name}_k"], n)
    if spec.likelihood == "ordinal":
        counts = torch.stack([batch[f"{name}_c{j}"] for j in range(spec.levels)], 1).to(pred.dtype)
        return ordinal_nll(pred, params["cuts"], counts)
    if spec.likelihood == "gaussian":
        return gaussian_nll(pred, params["log_sigma"], n, batch[f"{name}_mean"], batch[f"{name}_m2"],
                            params["loc"], params["spread"])
    if spec.likelihood == "arm_logit":  # the batch holds every arm of its experiments (train.UnitCollator)
        from rm_lab.reward.arm_logit import arm_logit_nll

        return arm_logit_nll(pred, batch[f"{name}_k"], n, batch["group"])
    raise ConfigError(f"head {name!r}: no loss for likelihood {spec.likelihood!r}")


def label_weight(spec: HeadSpec, batch: dict) -> int:
    """What a head's batch loss is a mean over (pairs, or its label count `<head>_n`): the weight that makes
    the epoch mean of the logged per-batch losses the head's per-observation loss over the whole split."""
    if spec.is_pairwise:
        return int(batch["pair_c"].numel())
    if spec.is_set:  # a mean per treatment arm
        from rm_lab.reward.arm_mean import n_arms

        return n_arms(spec.name, batch)
    if spec.likelihood == "arm_logit":  # a mean per click (engaged user)
        return int(round(float((batch[f"{spec.name}_k"] * (batch[f"{spec.name}_n"] > 0)).sum())))
    return int(round(float(batch[f"{spec.name}_n"].sum())))


def multitask_loss(out: dict[str, torch.Tensor], batch: dict, weights: dict[str, float] | None = None,
                   net: "RewardNet | None" = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of the losses of every head present in `out` that has labels in the batch.

    `net` gives the heads' registry entries and extra parameters (cut-points, scales); without it the
    heads are the built-in ones."""
    weights = weights or {}
    parts: dict[str, torch.Tensor] = {}
    for head, pred in out.items():
        spec = spec_of(head, net.specs if net is not None else None)
        v = head_loss(spec, pred, batch, net.head_params(head) if net is not None else {})
        if v is not None:
            parts[head] = v
    if not parts:
        anchor = next(iter(out.values()))
        return anchor.sum() * 0.0, parts
    total = sum(weights.get(h, 1.0) * v for h, v in parts.items())
    return total, parts


class NonFiniteLoss(ConfigError):
    """A loss turned NaN or infinite: training stops rather than write a model of NaNs."""


def check_finite(loss: torch.Tensor, parts: dict[str, torch.Tensor], where: str, lrs: str) -> None:
    """Raise NonFiniteLoss naming the heads whose loss is not finite (one sync per step)."""
    if bool(torch.isfinite(loss)):
        return
    bad = [f"{h}={float(v.detach()):g}" for h, v in parts.items() if not bool(torch.isfinite(v))]
    raise NonFiniteLoss(f"training diverged at {where}: the {', '.join(bad) if bad else f'total={float(loss.detach()):g}'} "
                        f"loss is not finite ({lrs}); use a smaller learning rate (e.g. lr=1e-3) or smaller "
                        f"loss_weights")


# ----------------------------------------------------------------------------------------------
# networks

class HeadParams(nn.Module):
    """A head's parameters beside its linear predictor: ordinal cut-points, a gaussian head's target
    standardisation (buffers) and scale, a negative-binomial head's dispersion."""

    def __init__(self, spec: HeadSpec):
        super().__init__()
        self.spec = spec
        if spec.likelihood == "ordinal":
            self.raw_cuts = nn.Parameter(torch.zeros(spec.levels - 1))
        elif spec.likelihood == "gaussian":
            self.register_buffer("loc", torch.zeros(()))
            self.register_buffer("spread", torch.ones(()))
            if spec.scale is None:
                self.log_sigma = nn.Parameter(torch.zeros(()))
        elif spec.likelihood == "negative_binomial":
            self.log_alpha = nn.Parameter(torch.zeros(()))
        elif spec.likelihood == "arm_mean":  # the misfit sd of measured log lifts around the mean scores
            from rm_lab.reward.arm_mean import INIT_TAU

            self.log_tau = nn.Parameter(torch.tensor(float(np.log(INIT_TAU))))

    def values(self) -> dict[str, torch.Tensor]:
        s = self.spec
        if s.likelihood == "arm_mean":
            return {"log_tau": self.log_tau}
        if s.likelihood == "ordinal":
            return {"cuts": ordered_cuts(self.raw_cuts)}
        if s.likelihood == "gaussian":
            log_sigma = self.log_sigma if s.scale is None else torch.log(s.scale / self.spread)
            return {"loc": self.loc, "spread": self.spread, "log_sigma": log_sigma}
        return {"log_alpha": self.log_alpha}

    @torch.no_grad()
    def init_from(self, items: pd.DataFrame) -> None:
        """Start at the training labels' marginal: ordinal cut-points at the logits of the cumulative level
        shares, a gaussian target standardised by its mean and standard deviation."""
        s = self.spec
        if s.likelihood == "ordinal":
            counts = np.array([items[f"{s.name}_c{j}"].to_numpy(float).sum() for j in range(s.levels)]) + 0.5
            cum = np.clip(np.cumsum(counts)[:-1] / counts.sum(), 1e-4, 1 - 1e-4)
            theta = np.log(cum / (1 - cum))
            steps = np.maximum(np.diff(theta), 1e-2)
            raw = np.r_[theta[0], np.log(np.expm1(steps))]
            self.raw_cuts.copy_(torch.as_tensor(raw, dtype=self.raw_cuts.dtype))
        elif s.likelihood == "gaussian":
            n = items[f"{s.name}_n"].to_numpy(float)
            if n.sum() <= 0:
                return
            mean, m2 = items[f"{s.name}_mean"].to_numpy(float), items[f"{s.name}_m2"].to_numpy(float)
            loc = float((n * mean).sum() / n.sum())
            var = float((m2.sum() + (n * (mean - loc) ** 2).sum()) / n.sum())
            self.loc.fill_(loc)
            self.spread.fill_(max(var, 1e-12) ** 0.5)


class RewardNet(nn.Module):
    """Heads over [assembled encoder views, standardised style features]: one shared trunk, one linear
    predictor per head (ordinal heads without a bias: their cut-points hold it), plus `extras`.

    `skip`: every head reads the trunk's output and the standardised inputs. Why: the transfer design
    keeps linear heads (n_layers=0, few source-specific degrees of freedom), which share nothing between
    sources; with a skip, each source's head keeps that linear model and also reads features that the
    labels of every source shaped (trained on several sources at once, `data=[a, b]`).

    Why per-head style statistics and per-name initial weights (`init_seed`): a head whose labels come from
    one source of a multi-source model should start, and read its inputs, as it would in that source's own
    model, so adding a source changes no other head's fit except through the shared trunk (with
    `n_layers=0`, not at all: tests/test_multisource_heads.py). Each head's inputs are standardised by its
    own row of `head_style_mean/std` (by default the pooled `style_mean/std`; `set_head_style_stats`). With
    `init_seed` (train-rm passes the member's seed) a head's starting weights depend on nothing else: over a
    trunk they are drawn from a generator seeded by (init_seed, its name), not from the global stream the
    heads before it consumed; linear heads on the fixed inputs (n_layers=0) start at zero, the marginal
    model their bias and cut-points start at, so their fit (a GLM fitted by Adam from the null model, a
    shrinkage towards it) depends on no random draw at all."""

    def __init__(self, in_dim: int, heads: Sequence[str | HeadSpec], n_style: int = len(FEATURES), hidden: int = 256,
                 n_layers: int = 2, dropout: float = 0.1, skip: bool = False, init_seed: int | None = None):
        super().__init__()
        if skip and n_layers == 0:
            raise ConfigError("skip=true: the heads read the inputs beside the trunk's output, so it needs a trunk "
                              "(n_layers >= 1)")
        self.skip = skip
        self.trunk_only = n_layers > 0 and not skip  # the heads read the trunk's output only
        specs = [h if isinstance(h, HeadSpec) else spec_of(h) for h in heads]
        self.specs = {s.name: s for s in specs}
        self.heads_order = list(self.specs)
        heads = self.heads_order
        self.register_buffer("style_mean", torch.zeros(n_style))
        self.register_buffer("style_std", torch.ones(n_style))
        # each head's standardisation of the style features (row i: heads_order[i]); the pooled one unless set
        self.register_buffer("head_style_mean", torch.zeros(len(heads), n_style))
        self.register_buffer("head_style_std", torch.ones(len(heads), n_style))
        self.register_load_state_dict_pre_hook(_pooled_head_stats)  # models saved before the per-head rows
        layers: list[nn.Module] = []
        d = in_dim + n_style
        for _ in range(n_layers):
            layers += [nn.Linear(d, hidden), nn.GELU(), nn.Dropout(dropout)]
            d = hidden
        self.trunk = nn.Sequential(*layers)
        if skip:  # each head: its own linear model of the inputs plus a linear read of the shared trunk
            d += in_dim + n_style
        self.heads = nn.ModuleDict({h: nn.Linear(d, 1, bias=self.specs[h].likelihood != "ordinal") for h in heads})
        if init_seed is not None:
            for h, lin in self.heads.items():
                if n_layers == 0:
                    nn.init.zeros_(lin.weight)
                    if lin.bias is not None:
                        nn.init.zeros_(lin.bias)
                else:
                    _name_seeded_init(lin, init_seed, h)
        self.extras = nn.ModuleDict({h: HeadParams(s) for h, s in self.specs.items()
                                     if s.likelihood in ("ordinal", "gaussian", "negative_binomial", "arm_mean")})

    def head_params(self, head: str) -> dict[str, torch.Tensor]:
        """The extra parameters of a head (cut-points, scale, dispersion); {} for the others."""
        return self.extras[head].values() if head in self.extras else {}

    def init_heads(self, items: pd.DataFrame) -> None:
        """Set the declared heads' starting cut-points / standardisation from the training items."""
        for p in self.extras.values():
            p.init_from(items)

    def set_style_stats(self, style: np.ndarray) -> None:
        """The pooled standardisation (the trunk's, and every head's until `set_head_style_stats`)."""
        mean, std = _style_stats(style)
        self.style_mean.copy_(mean)
        self.style_std.copy_(std)
        self.head_style_mean.copy_(mean.expand_as(self.head_style_mean))
        self.head_style_std.copy_(std.expand_as(self.head_style_std))

    def set_head_style_stats(self, head: str, style: np.ndarray) -> None:
        """Standardise the style features that `head` reads (directly: n_layers=0 or skip) by these rows
        (in a multi-source model: the rows of the head's own source, as in its single-source model)."""
        i = self.heads_order.index(head)
        mean, std = _style_stats(style)
        self.head_style_mean[i].copy_(mean)
        self.head_style_std[i].copy_(std)

    def _z(self, emb: torch.Tensor, style: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        return torch.cat([emb, (style - mean) / std], dim=-1)

    def features(self, emb: torch.Tensor, style: torch.Tensor, head: str | None = None) -> torch.Tensor:
        """What the heads read: the trunk over [inputs, standardised tabular features] (with `skip`, beside
        those inputs themselves); `head`: what that head reads (its own standardisation of the inputs it
        reads directly; the trunk always reads the pooled one)."""
        z = self._z(emb, style, self.style_mean, self.style_std)
        i = None if head is None or self.trunk_only else self.heads_order.index(head)
        zh = z if i is None else self._z(emb, style, self.head_style_mean[i], self.head_style_std[i])
        if self.skip:
            return torch.cat([self.trunk(z), zh], dim=-1)
        return self.trunk(z) if self.trunk_only else zh

    def forward(self, emb: torch.Tensor, style: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self._z(emb, style, self.style_mean, self.style_std)
        t = self.trunk(z)
        if self.trunk_only:  # every head reads the trunk only
            return {name: head(t).squeeze(-1) for name, head in self.heads.items()}
        pooled = torch.cat([t, z], dim=-1) if self.skip else z
        out, seen = {}, []  # heads with the same standardisation share one feature tensor
        for i, (name, head) in enumerate(self.heads.items()):
            m, s = self.head_style_mean[i], self.head_style_std[i]
            if torch.equal(m, self.style_mean) and torch.equal(s, self.style_std):
                h = pooled
            else:
                h = next((x for mm, ss, x in seen if torch.equal(mm, m) and torch.equal(ss, s)), None)
                if h is None:
                    zh = self._z(emb, style, m, s)
                    h = torch.cat([t, zh], dim=-1) if self.skip else zh
                    seen.append((m, s, h))
            out[name] = head(h).squeeze(-1)
        return out


def _style_stats(style: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of style rows. A column with no spread carries no information: it reads as 0 on any row
    (infinite scale), not as (x - mean) / tiny times an untrained weight when another source varies it."""
    mean = torch.as_tensor(style.mean(0), dtype=torch.float32)
    std = torch.as_tensor(style.std(0), dtype=torch.float32)
    return mean, torch.where(std > 1e-6, std.clamp(min=1e-3), torch.full_like(std, float("inf")))


def _pooled_head_stats(module, state_dict, prefix, *_args) -> None:
    """Load hook: a state saved before per-head standardisation gives every head the pooled one."""
    for name, pooled in (("head_style_mean", "style_mean"), ("head_style_std", "style_std")):
        if prefix + name not in state_dict and prefix + pooled in state_dict:
            state_dict[prefix + name] = state_dict[prefix + pooled].expand_as(getattr(module, name)).clone()


def _name_seeded_init(lin: nn.Linear, seed: int, name: str) -> None:
    """`nn.Linear`'s default initialisation (uniform within 1/sqrt(fan_in)), drawn from a generator seeded by
    (seed, head name): the same starting weights whichever other heads the model has. A per-source head
    (`continue@convai2`) starts as the head of its name does in that source's own model."""
    import zlib

    from rm_lab.reward.heads import SOURCE_SEP

    key = zlib.crc32(name.split(SOURCE_SEP)[0].encode())
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + key) % (2 ** 63))
    bound = 1.0 / math.sqrt(lin.in_features) if lin.in_features else 0.0
    with torch.no_grad():
        lin.weight.uniform_(-bound, bound, generator=g)
        if lin.bias is not None:
            lin.bias.uniform_(-bound, bound, generator=g)


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
        loss, parts = multitask_loss(self(batch), batch, self.loss_weights, self.net)
        check_finite(loss, parts, f"epoch {self.current_epoch}, step {self.global_step}", self._lrs())
        bs = int(batch["style"].shape[0])
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=bs)
        for h, v in parts.items():
            self.log(f"train/loss/{h}", v, on_step=False, on_epoch=True, batch_size=self._weight(h, batch))
        return loss

    def validation_step(self, batch, batch_idx):
        out = self(batch)
        loss, parts = multitask_loss(out, batch, self.loss_weights, self.net)
        check_finite(loss, parts, f"validation after epoch {self.current_epoch}", self._lrs())
        bs = int(batch["style"].shape[0])
        self.log("val/loss", loss, on_epoch=True, batch_size=bs)
        graded = [0.0, 0]
        for h, v in parts.items():  # val/loss/<head>: `monitor=<head>` (train-rm) selects the epoch by it
            w = self._weight(h, batch)
            self.log(f"val/loss/{h}", v, on_epoch=True, batch_size=w)
            if self.net.specs[h].likelihood in GRADED:
                graded = [graded[0] + v * w, graded[1] + w]
        if graded[1]:  # the epoch mean of this is the NLL per graded label over the whole held-out split
            self.log(GRADED_LOSS, graded[0] / graded[1], on_epoch=True, batch_size=graded[1])
        if "preference" in out and batch["pair_c"].numel():
            s = out["preference"]
            acc = (s[batch["pair_c"]] > s[batch["pair_r"]]).float().mean()
            self.log("val/pair_acc", acc, on_epoch=True, batch_size=int(batch["pair_c"].numel()))

    def _weight(self, head: str, batch: dict) -> int:
        return label_weight(spec_of(head, self.net.specs), batch)

    def _lrs(self) -> str:
        return f"lr={self.lr:g}" + (f", encoder_lr={self.encoder_lr:g}" if self.encoder is not None else "")

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

    # declared like a stage config, so a hand-edited or foreign rm_config.json is refused key by key on load
    backbone: str | None = param(doc="the encoder folder; null: the packaged MiniLM")
    backbone_key: str = param(doc="content key of the encoder (embedding cache)")
    train_mode: str = param(doc="how the encoder was trained", choices=("frozen", "top_k", "full"))
    heads: list[str] = param(doc="trained heads, in output order", min_len=1)
    emb_dim: int = param(doc="encoder hidden size", ge=1, le=65536)
    hidden: int = param(doc="trunk width", ge=1, le=65536)
    n_layers: int = param(doc="trunk layers", ge=0, le=64)
    dropout: float = param(doc="trunk dropout", ge=0, lt=1)
    max_length: int = param(doc="encoder tokens per text", ge=8, le=8192)
    card_max_tokens: int = param(doc="tokens of the character card", ge=0, le=8192)
    reply_max_tokens: int = param(doc="tokens of the reply", ge=0, le=8192)
    n_members: int = param(doc="ensemble members", ge=1, le=256)
    seeds: list[int] = param(doc="seed of each member", min_len=1)
    style_features: list[str] = param(doc="tabular inputs beside the encoder views")
    pairwise: dict | None = None  # {"hidden": .., "n_layers": ..} when a pairwise model was trained
    inputs: list[str] = field(default_factory=lambda: ["joint"])  # encoder views (rm_lab.reward.inputs)
    skip: bool = False  # heads also read the trunk's inputs (RewardNet); models trained before it have none
    # head name -> its registry entry (HeadSpec.to_json); models trained before declared heads have none and
    # their heads are the built-in ones
    head_specs: dict | None = None

    @property
    def in_dim(self) -> int:
        return input_dim(self.emb_dim, self.inputs)

    @property
    def specs(self) -> list[HeadSpec]:
        """The heads, rebuilt from `head_specs` (declared heads) or the registry (built-in heads)."""
        saved = self.head_specs or {}
        out = []
        for h in self.heads:
            if h in saved:
                out.append(HeadSpec.from_json(saved[h]))
                continue
            try:
                out.append(spec_of(h))
            except ConfigError:
                raise ConfigError(f"rm_config.json: head {h!r} is neither built in nor declared in head_specs "
                                  f"(a model from another rm_lab version?): retrain it with train-rm") from None
        return out

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

    @property
    def specs(self) -> dict[str, HeadSpec]:
        """Head name -> its registry entry (likelihood, labels, outputs)."""
        return dict(self.members[0].specs) if self.members else {s.name: s for s in self.cfg.specs}

    def outputs(self) -> list[str]:
        """The keys of `score` (without the ensemble's `_std` keys), head by head."""
        return [o for s in self.specs.values() for o in s.outputs()]

    @classmethod
    def load(cls, run_dir: str | Path, cache_dir: str | Path | None = None) -> "RewardModel":
        from rm_lab.reward import store
        from rm_lab.reward.embed_cache import EmbeddingCache

        run = store.TrainRun(Path(run_dir))
        if not run.model_config.is_file() or not run.model.is_file():
            from rm_lab.runs import run_status

            status = run_status(run.root)
            if store.is_train_run(run.root) or status:
                why = {"stopped": "its training was stopped", "failed": "its training failed",
                       "running": "its training is running or was killed"}.get(status, "its training has not finished")
                raise store.RunFolderError(f"model: '{run_dir}' holds no finished reward model ({why}: no "
                                           f"{store.MODEL_CONFIG} with {store.MODEL}); {run.resume_hint()}")
            raise ConfigError(f"model: '{run_dir}' is not a train-rm run folder (needs {store.MODEL_CONFIG} and "
                              f"{store.MODEL})")
        raw = store.read_model_config(run)
        raw.pop("format", None)  # written by models trained before `inputs` existed
        try:
            cfg = cfgmod.build(RMConfig, raw, str(run.model_config))
            if len(cfg.seeds) != cfg.n_members:
                raise ValueError(f"{len(cfg.seeds)} seeds for n_members={cfg.n_members}")
        except ConfigError as e:
            raise store.RunFolderError(f"{e}; {run.resume_hint()}") from None
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise store.RunFolderError(f"{run.model_config}: not the model config of this rm_lab version "
                                       f"({type(e).__name__}: {e}); {run.resume_hint()}") from None
        weights = store.ModelWeights(run)
        tok, base = load_backbone(cfg.backbone)
        members, encoders = [], []
        for k in range(cfg.n_members):
            net = RewardNet(cfg.in_dim, cfg.specs, len(cfg.style_features), cfg.hidden, cfg.n_layers, cfg.dropout,
                            cfg.skip)
            enc = None
            if cfg.train_mode != "frozen":
                import copy

                enc = copy.deepcopy(base)
                encoders.append(enc)
            weights.load_member(k, net, enc)
            members.append(net)
        if cfg.train_mode == "frozen":
            encoders = [base]
        pairwise = None
        if cfg.pairwise and run.pairwise.is_file():
            from rm_lab.reward.pairwise import PairwiseNet

            pairwise = PairwiseNet(cfg.in_dim, len(cfg.style_features), **cfg.pairwise)
            store.load_pairwise(run, pairwise)
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
            member: dict[str, np.ndarray] = {}
            for h, v in outs.items():
                params = {k2: p.detach().cpu().numpy() for k2, p in net.head_params(h).items()}
                member.update(net.specs[h].transform(np.concatenate(v) if v else np.zeros(0, np.float32), params))
            per_member.append(member)
        result = {}
        for name in per_member[0] if per_member else []:
            stack = np.stack([m[name] for m in per_member])
            result[name] = stack.mean(0)
            if len(self.members) > 1:
                result[f"{name}_std"] = stack.std(0)
        return result

    def score(self, contexts: pd.DataFrame, replies: Sequence[str], characters: pd.DataFrame,
              batch_size: int = 64) -> dict[str, np.ndarray]:
        """Per reply, every head's outputs (`outputs()`): `score` (pointwise BT), `p_<signal>`, `depth`, and
        declared heads' (an ordinal head: its expected level and `<name>_p_ge_<v>` = P(level >= v)); with an
        ensemble, `<output>_std` across the members."""
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
