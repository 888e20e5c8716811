"""Head refit: each binary head's last layer re-solved as an L2-regularised logistic regression on the
trunk's output, with the penalty chosen by grouped cross-validation on the training side.

Why: a head trained by Adam inside a multi-task batch sees its few labelled rows a handful per batch
(ConvAI2: 439 thumbs among 2,191 bot turns), so it ends wherever the noisy steps leave it, at a
shrinkage nobody chose. A convex refit on standardised trunk features, with the penalty picked by
held-out log loss or AUC on whole groups (contexts, characters, or conversations so no dialogue sits on
both sides), gives the head the shrinkage its label count supports. The network is unchanged: the
scaler is folded into the head's `Linear` weights, so scoring, ensembles and checkpoints work as before. With `n_layers=0` (no trunk)
the refit is exactly a cross-validated logistic regression on the model's inputs.

Ensembles: with several members each member refits on a bootstrap resample of the groups (seeded),
so the members' spread remains an uncertainty instead of collapsing to one convex optimum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_CS = tuple(float(c) for c in np.logspace(-6, 2, 17))
METRICS = ("log_loss", "auc")


@dataclass
class RefitResult:
    head: str
    C: float
    cv: dict  # held-out log loss and AUC at the chosen C
    n_rows: int
    n_groups: int

    def to_json(self) -> dict:
        return {"head": self.head, "C": self.C, **{f"cv_{k}": round(v, 6) for k, v in self.cv.items()},
                "n_rows": self.n_rows, "n_groups": self.n_groups}


def binomial_rows(n: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row index, label, weight): each item with n trials and k successes as a weighted positive and negative."""
    idx = np.flatnonzero(n > 0)
    pos, neg = k[idx], n[idx] - k[idx]
    rows = np.r_[idx[pos > 0], idx[neg > 0]]
    y = np.r_[np.ones(int((pos > 0).sum())), np.zeros(int((neg > 0).sum()))]
    w = np.r_[pos[pos > 0], neg[neg > 0]].astype(np.float64)
    return rows, y, w


def _model(C: float, seed: int, warm: bool = False):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=2000, random_state=seed, warm_start=warm)


def _weighted_log_loss(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-(w * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum() / w.sum())


def choose_c(X: np.ndarray, y: np.ndarray, w: np.ndarray, groups: np.ndarray, Cs=DEFAULT_CS, n_folds: int = 5,
             seed: int = 0, metric: str = "log_loss", patience: int = 3) -> tuple[float | None, dict]:
    """The C with the best held-out score over seeded group folds (`rm_lab.reward.folds`): the lowest
    weighted log loss, or the highest mean fold AUC (`metric="auc"`, for a head used to rank replies; it
    favours strong shrinkage, whose probabilities sit near the base rate until calibrated). Returns (C, {"log_loss", "auc"} at that C), or
    (None, {}) when no fold's training side holds both classes.

    The path runs from the strongest shrinkage up, each fold's fit warm-started from its previous C, and
    stops `patience` grid steps after the last improvement (the weakly penalised fits are the slow ones)."""
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    from rm_lab.reward.folds import kfold_splits

    if metric not in METRICS:
        raise ValueError(f"refit metric {metric!r}: expected one of {METRICS}")
    Cs = sorted(Cs)
    folds = []
    for tr, te in kfold_splits(groups, n_folds, seed):
        if len(np.unique(y[tr])) < 2:
            continue
        sc = StandardScaler().fit(X[tr], sample_weight=w[tr])
        folds.append((sc.transform(X[tr]), y[tr], w[tr], sc.transform(X[te]), y[te], w[te],
                      _model(Cs[0], seed, warm=True)))
    if not folds:
        return None, {}
    if not any(len(np.unique(f[4])) == 2 for f in folds):
        metric = "log_loss"  # no held-out side has both classes: AUC is undefined on every fold
    w_total = sum(f[5].sum() for f in folds)
    best, best_cv, since = None, None, 0
    for C in Cs:
        loss, aucs = 0.0, []
        for a, ya, wa, b, yb, wb, m in folds:
            p = m.set_params(C=C).fit(a, ya, sample_weight=wa).predict_proba(b)[:, 1]
            loss += _weighted_log_loss(p, yb, wb) * wb.sum()
            if len(np.unique(yb)) == 2:
                aucs.append(roc_auc_score(yb, p, sample_weight=wb))
        cv = {"log_loss": float(loss / w_total), "auc": float(np.mean(aucs)) if aucs else float("nan")}
        # strict improvement only: ties keep the smaller C (the stronger shrinkage)
        better = best is None or (cv["log_loss"] < best_cv["log_loss"] if metric == "log_loss"
                                  else round(cv["auc"], 6) > round(best_cv["auc"], 6))
        if better:
            best, best_cv, since = C, cv, 0
        else:
            since += 1
            if since >= patience:
                break
    return float(best), best_cv


@torch.no_grad()
def trunk_output(net, emb: np.ndarray, style: np.ndarray, batch_size: int = 4096, head: str | None = None
                 ) -> np.ndarray:
    """`RewardNet.features` in eval mode (no dropout), batched, as numpy (`head`: what that head reads)."""
    was = net.training
    net.eval()
    kw = {"head": head} if head is not None else {}
    out = [net.features(torch.as_tensor(emb[i:i + batch_size], dtype=torch.float32),
                        torch.as_tensor(style[i:i + batch_size], dtype=torch.float32), **kw).numpy()
           for i in range(0, len(emb), batch_size)]
    net.train(was)
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def refit_heads(net, heads: list[str], emb: np.ndarray, style: np.ndarray, counts: dict[str, np.ndarray],
                groups: np.ndarray, Cs=DEFAULT_CS, n_folds: int = 5, seed: int = 0, bootstrap: bool = False,
                metric: str = "log_loss") -> list[RefitResult]:
    """Refit `heads` of `net` in place on training rows (emb/style aligned with counts[f"{h}_n"/"_k"]).

    A head whose rows hold one class, or fewer than two groups, or no group fold with both classes on its
    training side, keeps its trained weights."""
    from sklearn.preprocessing import StandardScaler

    per_head = hasattr(net, "head_style_mean")  # RewardNet: each head reads its own standardisation
    H = None if per_head else trunk_output(net, emb, style).astype(np.float64)
    groups = np.asarray(groups).astype(str)
    rng = np.random.default_rng(seed)
    results = []
    not_binomial = [h for h in heads if h in getattr(net, "specs", {}) and net.specs[h].likelihood != "binomial"]
    if not_binomial:  # the refit is a logistic regression: only heads with a binomial likelihood have one
        raise ValueError(f"head refit: {not_binomial} are not binomial heads "
                         f"({', '.join(net.specs[h].likelihood for h in not_binomial)})")
    for h in heads:
        rows, y, w = binomial_rows(counts[f"{h}_n"], counts[f"{h}_k"])
        g = groups[rows]
        if bootstrap and len(rows):
            uniq = np.unique(g)
            draw = rng.choice(uniq, size=len(uniq), replace=True)
            mult = dict(zip(*np.unique(draw, return_counts=True)))
            w = w * np.array([mult.get(x, 0) for x in g], np.float64)
            keep = w > 0
            rows, y, w, g = rows[keep], y[keep], w[keep], g[keep]
        if len(np.unique(y)) < 2 or len(np.unique(g)) < 2:
            continue
        X = (trunk_output(net, emb[rows], style[rows], head=h) if per_head else H[rows]).astype(np.float64)
        C, cv = choose_c(X, y, w, g, Cs, n_folds, seed, metric)
        if C is None:
            continue
        sc = StandardScaler().fit(X, sample_weight=w)
        m = _model(C, seed).fit(sc.transform(X), y, sample_weight=w)
        scale = np.where(sc.scale_ > 0, sc.scale_, 1.0)
        coef = m.coef_[0] / scale
        bias = float(m.intercept_[0] - (coef * sc.mean_).sum())
        lin = net.heads[h]
        lin.weight.data.copy_(torch.as_tensor(coef[None, :], dtype=lin.weight.dtype))
        lin.bias.data.fill_(bias)
        results.append(RefitResult(h, C, cv, len(rows), len(np.unique(g))))
    return results
