"""The pairwise preference model: reads both replies at once and gives P(A more engaging than B).

g(a, b) = f(a, b) - f(b, a) with f an MLP over [e_a, e_b, e_a - e_b, style_a - style_b], so
g(b, a) = -g(a, b) and P(A>B) = 1 - P(B>A) holds exactly, for any weights. Reading both replies lets it
weigh one reply against the other (not just two independent scores), which is why win rates use it
beside the pointwise model.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rm_lab.reward.model import check_finite


class PairwiseNet(nn.Module):
    def __init__(self, emb_dim: int, n_style: int, hidden: int = 256, n_layers: int = 2, dropout: float = 0.1):
        super().__init__()
        self.register_buffer("style_std", torch.ones(n_style))
        layers: list[nn.Module] = []
        d = 4 * emb_dim + n_style
        for _ in range(n_layers):
            layers += [nn.Linear(d, hidden), nn.GELU(), nn.Dropout(dropout)]
            d = hidden
        self.f = nn.Sequential(*layers, nn.Linear(d, 1))

    def set_style_stats(self, style: np.ndarray) -> None:
        # a column with no spread in training carries no information: it reads as 0 on any row (infinite
        # scale), not as (x - mean) / tiny times an untrained weight when another source varies it
        std = torch.as_tensor(style.std(0), dtype=torch.float32)
        self.style_std.copy_(torch.where(std > 1e-6, std.clamp(min=1e-3), torch.full_like(std, float("inf"))))

    def _f(self, ea, sa, eb, sb):
        ds = (sa - sb) / self.style_std
        return self.f(torch.cat([ea, eb, ea - eb, ea * eb, ds], dim=-1)).squeeze(-1)

    def forward(self, ea, sa, eb, sb) -> torch.Tensor:
        """Logit of P(A > B); antisymmetric in (A, B)."""
        return self._f(ea, sa, eb, sb) - self._f(eb, sb, ea, sa)

    @torch.inference_mode()
    def prob(self, ea, sa, eb, sb, batch_size: int = 64) -> np.ndarray:
        t = lambda x: torch.tensor(np.asarray(x), dtype=torch.float32)  # noqa: E731
        ea, sa, eb, sb = t(ea), t(sa), t(eb), t(sb)
        out = [torch.sigmoid(self(ea[i:i + batch_size], sa[i:i + batch_size], eb[i:i + batch_size],
                                  sb[i:i + batch_size])).numpy() for i in range(0, len(ea), batch_size)]
        return np.concatenate(out) if out else np.zeros(0, np.float32)


class PairwiseLit(L.LightningModule):
    """Trains PairwiseNet on (chosen, rejected) pairs; each pair is shown in a random order."""

    def __init__(self, net: PairwiseNet, lr: float = 1e-3, weight_decay: float = 1e-4, seed: int = 0):
        super().__init__()
        self.net, self.lr, self.weight_decay, self.seed = net, lr, weight_decay, seed

    def _loss(self, batch):
        logit = self.net(batch["ea"], batch["sa"], batch["eb"], batch["sb"])
        y = batch["a_wins"]
        return F.binary_cross_entropy_with_logits(logit, y), ((logit > 0).float() == y).float().mean()

    def training_step(self, batch, batch_idx):
        torch.manual_seed(self.seed * 100_003 + self.global_step + 7)  # resumable dropout draws
        loss, acc = self._loss(batch)
        check_finite(loss, {"pairwise": loss}, f"epoch {self.current_epoch}, step {self.global_step} of the "
                     "pairwise model", f"lr={self.lr:g}")
        self.log("train/pair_loss", loss, on_epoch=True, on_step=False, batch_size=len(batch["a_wins"]))
        return loss

    def validation_step(self, batch, batch_idx):
        loss, acc = self._loss(batch)
        check_finite(loss, {"pairwise": loss}, f"validation of the pairwise model after epoch {self.current_epoch}",
                     f"lr={self.lr:g}")
        self.log("val/pair_loss", loss, batch_size=len(batch["a_wins"]))
        self.log("val/pairwise_acc", acc, batch_size=len(batch["a_wins"]))

    def configure_optimizers(self):
        return torch.optim.AdamW(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
