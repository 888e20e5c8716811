"""The A/B-arm likelihood of chat policies (`arm_mean` heads): an arm of a past test is the set of replies its
policy wrote, and the arm's measured breadth or depth labels the whole set.

Per-reply signals (a continue, a thumb) say which reply a user liked; an A/B test says which policy moved a
metric. The head scores each reply (eta_i) and reads an arm through the mean of its replies' scores, so

    d_a = mean_{i in arm a} eta_i - mean_{i in control c(a)} eta_i

is the predicted log lift of arm a over the control of its experiment, and the measured log lift
y_a = log(m_a / m_c) (m: breadth or depth) is Gaussian around it with its sampling variance
v_a = (se_a / m_a)^2 + (se_c / m_c)^2 (delta method, independent arms) plus a learned misfit variance tau^2:

    nll_a = 0.5 [(y_a - d_a)^2 / (v_a + tau^2) + log(2 pi (v_a + tau^2))],

so each arm weighs by the inverse of its variance (a big, precise test counts more) and tau^2 absorbs what a
finite sample of contexts and the map from mean score to lift cannot explain (a random-effects meta-analysis
over past tests). Only differences within an experiment enter: the control is the reference, so the head
learns what text wins, not which experiment ran on busier days. The gradient reaches every reply of both
arms (d nll / d eta_i = -(y - d) / (v + tau^2) / |a| for i in a, the opposite share for the control's).
Arms sampled on the same contexts (the world's simulator does this) cancel the contexts' own difficulty.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pandas as pd
import torch

from rm_lab.schema import RecordError

LOG_2PI = math.log(2 * math.pi)
INIT_TAU = 0.05  # starting misfit sd on the log-lift scale (a 5% lift)
# the membership table of one arm_mean head (RewardData.sets[head]): one row per (reply, arm)
SET_COLUMNS = ("context_id", "response", "experiment", "arm", "is_control", "y", "v")


# ----------------------------------------------------------------------------------------------
# the likelihood

def arm_mean_nll(eta: torch.Tensor, item: torch.Tensor, arm: torch.Tensor, ctrl: torch.Tensor, y: torch.Tensor,
                 v: torch.Tensor, log_tau: torch.Tensor) -> torch.Tensor:
    """Mean per treatment arm of the Gaussian NLL of its measured log lift given the mean of its scores.

    eta: (N,) per-reply scores of the batch's items; item, arm: (M,) membership rows (item position, arm
    code); ctrl: (A,) the control's arm code of each arm (-1 for a control); y, v: (A,) measured log lift
    and its sampling variance (ignored on controls); log_tau: the misfit sd's log."""
    n_arms = int(ctrl.numel())
    treat = ctrl >= 0
    if n_arms == 0 or not bool(treat.any()):
        return eta.sum() * 0.0 + log_tau * 0.0
    sums = eta.new_zeros(n_arms).index_add(0, arm, eta[item])
    counts = eta.new_zeros(n_arms).index_add(0, arm, torch.ones_like(eta[item]))
    mean = sums / counts.clamp(min=1.0)
    d = mean[treat] - mean[ctrl[treat]]
    var = v[treat].to(eta.dtype) + torch.exp(2 * log_tau)
    nll = 0.5 * ((y[treat].to(eta.dtype) - d) ** 2 / var + torch.log(var) + LOG_2PI)
    return nll.mean()


def arm_mean_nll_np(pred_log_lift, log_lift, var, tau: float) -> float:
    """The same NLL from per-arm predictions (float64), for held-out scoring."""
    d, y, v = (np.asarray(a, np.float64) for a in (pred_log_lift, log_lift, var))
    if not len(d):
        return float("nan")
    tot = v + tau ** 2
    return float(np.mean(0.5 * ((y - d) ** 2 / tot + np.log(tot) + LOG_2PI)))


# ----------------------------------------------------------------------------------------------
# labels from arm_reply_set records

def set_values(spec, frame: pd.DataFrame | None, path: str | None,
               rownum: Callable[[int], int] = lambda i: i) -> pd.DataFrame:
    """(row, context_id, response, value, se, experiment_id, arm, is_control) of the validated arm_reply_set
    rows that train `spec` (value: the arm's measured `spec.col`, se its standard error); arms without that
    measure (a depth left null) carry no label. A measure <= 0 has no log lift: a RecordError."""
    cols = ("row", "context_id", "response", "value", "se", "experiment_id", "arm", "is_control")
    empty = pd.DataFrame({c: pd.Series(dtype=float if c in ("row", "value", "se") else object) for c in cols})
    se_col = f"{spec.col}_se"
    if frame is None or not len(frame) or spec.col not in frame.columns or se_col not in frame.columns:
        return empty
    val = pd.to_numeric(frame[spec.col], errors="coerce").to_numpy(float)
    se = pd.to_numeric(frame[se_col], errors="coerce").to_numpy(float)
    keep = ~np.isnan(val)
    if spec.source is not None and "_source" in frame.columns:
        keep &= frame["_source"].to_numpy() == spec.source
    pos = np.flatnonzero(keep)
    if not len(pos):
        return empty
    bad = ~(val[pos] > 0) | ~(se[pos] > 0)
    if bad.any():
        i = int(pos[np.flatnonzero(bad)[0]])
        field = spec.col if not val[i] > 0 else se_col
        raise RecordError(path, rownum(i), field, frame[field].iloc[i],
                          f"a measured {spec.col} > 0 with a standard error > 0 (the log lift of the arm_mean head "
                          f"'{spec.name}')")
    return pd.DataFrame({"row": pos, "context_id": frame["context_id"].to_numpy(object)[pos],
                         "response": frame["response"].to_numpy(object)[pos], "value": val[pos], "se": se[pos],
                         "experiment_id": frame["experiment_id"].astype(str).to_numpy(object)[pos],
                         "arm": frame["arm"].astype(str).to_numpy(object)[pos],
                         "is_control": frame["is_control"].to_numpy(bool)[pos]})


def arm_targets(rows: pd.DataFrame, prefix: str = "") -> pd.DataFrame:
    """Membership rows (SET_COLUMNS) from `set_values` rows: each treatment arm's measured log lift over its
    control and that lift's sampling variance; `prefix` keeps two sources' experiment ids apart."""
    if not len(rows):
        return pd.DataFrame({c: pd.Series(dtype=object) for c in SET_COLUMNS})
    exp = prefix + rows["experiment_id"].astype(str)
    arms = pd.DataFrame({"experiment": exp, "arm": rows["arm"].to_numpy(object), "value": rows["value"].to_numpy(),
                         "se": rows["se"].to_numpy(), "is_control": rows["is_control"].to_numpy(bool)})
    arms = arms.drop_duplicates(["experiment", "arm"])
    ctrl = arms[arms["is_control"]].set_index("experiment")
    arms = arms[arms["experiment"].isin(ctrl.index)]  # an experiment whose control lacks the measure: no lifts
    mc = ctrl.loc[arms["experiment"], "value"].to_numpy(float)
    sc = ctrl.loc[arms["experiment"], "se"].to_numpy(float)
    m, s = arms["value"].to_numpy(float), arms["se"].to_numpy(float)
    treat = ~arms["is_control"].to_numpy(bool)
    arms = arms.assign(y=np.where(treat, np.log(m / mc), np.nan),
                       v=np.where(treat, (s / m) ** 2 + (sc / mc) ** 2, np.nan))
    out = pd.DataFrame({"context_id": rows["context_id"].to_numpy(object), "response": rows["response"].to_numpy(object),
                        "experiment": exp.to_numpy(object), "arm": rows["arm"].to_numpy(object)})
    out = out.merge(arms[["experiment", "arm", "is_control", "y", "v"]], on=["experiment", "arm"], how="inner")
    return out[list(SET_COLUMNS)]


def set_blocks(source, resolved) -> tuple[list[pd.DataFrame], dict[str, pd.DataFrame]]:
    """Item rows (context_id, response, `<head>_n` = 1 per membership) of one source's arm_reply_set records
    for each arm_mean head, and the heads' membership tables (RewardData.sets)."""
    blocks, sets = [], {}
    for spec, hits in resolved:
        if not spec.is_set:
            continue
        for src, rows in hits:
            if src is not source or rows is None or not len(rows):
                continue
            members = arm_targets(rows, prefix=f"{source.name}/")
            t = pd.DataFrame({"context_id": members["context_id"].to_numpy(object),
                              "response": members["response"].to_numpy(object), "_logged": True,
                              f"{spec.name}_n": np.ones(len(members))})
            blocks.append(t)
            sets[spec.name] = pd.concat([sets[spec.name], members], ignore_index=True) if spec.name in sets else members
    return blocks, sets


# ----------------------------------------------------------------------------------------------
# per-arm predictions

def arm_predictions(members: pd.DataFrame, eta: np.ndarray, item_of: Callable[[str, str], int]) -> pd.DataFrame:
    """Per treatment arm: (experiment, arm, n_replies, pred_log_lift = mean score - control's mean score,
    log_lift, var). `eta` is per item; `item_of(context_id, response)` its position (or -1: not scored)."""
    pos = np.array([item_of(c, r) for c, r in zip(members["context_id"], members["response"])], dtype=np.int64)
    m = members.assign(score=np.where(pos >= 0, np.asarray(eta, float)[np.maximum(pos, 0)], np.nan))
    m = m[pos >= 0]
    g = m.groupby(["experiment", "arm"], sort=False).agg(mean=("score", "mean"), n_replies=("score", "size"),
                                                          is_control=("is_control", "first"), y=("y", "first"),
                                                          v=("v", "first")).reset_index()
    ctrl = g[g["is_control"]].set_index("experiment")["mean"]
    t = g[~g["is_control"] & g["experiment"].isin(ctrl.index)]
    return pd.DataFrame({"experiment": t["experiment"].to_numpy(object), "arm": t["arm"].to_numpy(object),
                         "n_replies": t["n_replies"].to_numpy(int),
                         "pred_log_lift": t["mean"].to_numpy(float) - ctrl.loc[t["experiment"]].to_numpy(float),
                         "log_lift": t["y"].to_numpy(float), "var": t["v"].to_numpy(float)})


def lift_agreement(pred, measured, truth=None) -> dict:
    """How predicted arm lifts agree with measured (and true) ones: Spearman, sign agreement, RMSE."""
    from scipy.stats import spearmanr

    pred, measured = np.asarray(pred, float), np.asarray(measured, float)
    out: dict = {"n_arms": int(len(pred))}
    pairs = [("measured", measured)] + ([("true", np.asarray(truth, float))] if truth is not None else [])
    for name, y in pairs:
        ok = len(pred) >= 3 and np.std(pred) > 0 and np.std(y) > 0
        out[f"spearman_{name}"] = float(spearmanr(pred, y)[0]) if ok else float("nan")
        out[f"sign_agreement_{name}"] = float(np.mean(np.sign(pred) == np.sign(y))) if len(pred) else float("nan")
    return out


def set_report(members: pd.DataFrame, items: pd.DataFrame, eta: np.ndarray, tau: float | None = None) -> dict:
    """eval-rm's view of an arm_mean head on held-out replies: predicted vs measured log lifts of the
    treatment arms (Spearman, sign agreement, RMSE) and, with the head's tau, its NLL per arm."""
    first: dict = {}
    for i, key in enumerate(zip(items["context_id"], items["response"])):
        first.setdefault(key, i)
    p = arm_predictions(members, eta, lambda c, r: first.get((c, r), -1))
    out = {"likelihood": "arm_mean", "n_experiments": int(p["experiment"].nunique()),
           **lift_agreement(p["pred_log_lift"], p["log_lift"]),
           "rmse_log_lift": float(np.sqrt(np.mean((p["pred_log_lift"] - p["log_lift"]) ** 2))) if len(p) else
           float("nan"), "median_replies_per_arm": float(p["n_replies"].median()) if len(p) else 0.0}
    if tau is not None:
        out["tau"] = float(tau)
        out["nll_per_arm"] = arm_mean_nll_np(p["pred_log_lift"], p["log_lift"], p["var"], tau)
    return out


def predicted_arm_lifts(model, records, outputs) -> pd.DataFrame:
    """A reward model's predicted log lift of every treatment arm of arm_reply_set `records` (with its
    contexts and characters): per output, the mean over the arm's replies minus the control's mean.
    Columns: experiment_id, arm, n_replies, and `pred_<output>` per output."""
    rows = records["arm_reply_set"]
    ctx = records["context"].drop_duplicates("context_id").set_index("context_id").loc[rows["context_id"]]
    scores = model.score(ctx.reset_index(), rows["response"].tolist(), records["character"])
    out = None
    for o in outputs:
        if o not in scores:
            raise KeyError(f"output {o!r} not among the model's outputs {sorted(scores)}")
        df = rows.assign(score=np.asarray(scores[o], float))
        g = df.groupby(["experiment_id", "arm"], sort=False).agg(mean=("score", "mean"), n_replies=("score", "size"),
                                                                 is_control=("is_control", "first")).reset_index()
        c = g[g["is_control"]].set_index("experiment_id")["mean"]
        t = g[~g["is_control"]].reset_index(drop=True)
        t[f"pred_{o}"] = t["mean"].to_numpy() - c.loc[t["experiment_id"]].to_numpy()
        t = t.drop(columns=["mean", "is_control"])
        out = t if out is None else out.merge(t.drop(columns=["n_replies"]), on=["experiment_id", "arm"])
    return out


# ----------------------------------------------------------------------------------------------
# batches: one unit per experiment, holding every reply of its arms

class SetBatches:
    """The experiments of a RewardData's arm_mean heads as training units (train.UnitCollator adds them):
    a unit brings all replies of all arms of one experiment into the batch, and `batch` lays out the
    membership and per-arm tensors `head_loss` reads (`<head>.item`, `.arm`, `.ctrl`, `.y`, `.v`)."""

    def __init__(self, data, heads):
        self.heads = [h for h in heads if data.spec(h).is_set and h in getattr(data, "sets", {})]
        first: dict = {}
        for i, key in enumerate(zip(data.items["context_id"], data.items["response"])):
            first.setdefault(key, i)
        self.tables: dict[str, dict] = {}
        exps: dict = {}
        for h in self.heads:
            m = data.sets[h]
            pos = np.array([first.get(k, -1) for k in zip(m["context_id"], m["response"])], dtype=np.int64)
            m = m.assign(item=pos)[pos >= 0]
            key = m["experiment"].astype(str) + "\x00" + m["arm"].astype(str)
            arm_code, arm_keys = pd.factorize(key, sort=False)
            arms = m.assign(code=arm_code).drop_duplicates("code").sort_values("code")
            ctrl_code = arms[arms["is_control"]].set_index("experiment")["code"]
            ctrl = np.array([-1 if c else int(ctrl_code.get(e, -2)) for e, c in
                             zip(arms["experiment"], arms["is_control"])], dtype=np.int64)
            ok = ctrl != -2  # a treatment arm whose control has no reply in this split cannot be compared
            ctrl[~ok] = -1
            exp_of_arm = arms["experiment"].to_numpy(object)
            treat_exps = set(exp_of_arm[ctrl >= 0])
            self.tables[h] = {"item": m["item"].to_numpy(np.int64), "arm": arm_code.astype(np.int64),
                              "ctrl": ctrl, "y": np.nan_to_num(arms["y"].to_numpy(float)),
                              "v": np.nan_to_num(arms["v"].to_numpy(float), nan=1.0),
                              "exp_of_arm": exp_of_arm, "valid": ok & (ctrl >= 0)}
            for e in treat_exps:
                exps.setdefault(e, set())
            for e, it in zip(m["experiment"].to_numpy(object), m["item"].to_numpy(np.int64)):
                if e in exps:
                    exps[e].add(int(it))
        self.experiments = list(exps)
        self.unit_items = [sorted(exps[e]) for e in self.experiments]

    @property
    def n_units(self) -> int:
        return len(self.experiments)

    def items(self, unit: int) -> list[int]:
        return self.unit_items[unit]

    def batch(self, units: list[int], order: dict[int, int]) -> dict[str, torch.Tensor]:
        """Membership and arm tensors of the batch's experiments (`order`: item -> its batch position)."""
        chosen = {self.experiments[u] for u in units}
        out: dict[str, torch.Tensor] = {}
        for h, t in self.tables.items():
            arm_in = np.array([e in chosen for e in t["exp_of_arm"]], bool)
            local = np.full(len(arm_in), -1, np.int64)
            local[arm_in] = np.arange(int(arm_in.sum()))
            mem = arm_in[t["arm"]]
            ctrl = t["ctrl"][arm_in]
            ctrl = np.where(ctrl >= 0, local[np.maximum(ctrl, 0)], -1)
            out[f"{h}.item"] = torch.as_tensor([order[int(i)] for i in t["item"][mem]], dtype=torch.long)
            out[f"{h}.arm"] = torch.as_tensor(local[t["arm"][mem]], dtype=torch.long)
            out[f"{h}.ctrl"] = torch.as_tensor(ctrl, dtype=torch.long)
            out[f"{h}.y"] = torch.as_tensor(t["y"][arm_in], dtype=torch.float32)
            out[f"{h}.v"] = torch.as_tensor(t["v"][arm_in], dtype=torch.float32)
        return out


def set_loss(name: str, eta: torch.Tensor, batch: dict, log_tau: torch.Tensor) -> torch.Tensor | None:
    """`head_loss` of an arm_mean head: None when the batch holds no comparable arm of it."""
    ctrl = batch.get(f"{name}.ctrl")
    if ctrl is None or not bool((ctrl >= 0).any()):
        return None
    return arm_mean_nll(eta, batch[f"{name}.item"], batch[f"{name}.arm"], ctrl, batch[f"{name}.y"],
                        batch[f"{name}.v"], log_tau)


def n_arms(name: str, batch: dict) -> int:
    """Treatment arms of the batch (what an arm_mean head's batch loss is a mean over)."""
    ctrl = batch.get(f"{name}.ctrl")
    return 0 if ctrl is None else int((ctrl >= 0).sum())


__all__ = ["SET_COLUMNS", "SetBatches", "arm_mean_nll", "arm_mean_nll_np", "arm_predictions", "arm_targets",
           "lift_agreement", "n_arms", "predicted_arm_lifts", "set_blocks", "set_loss", "set_report", "set_values"]
