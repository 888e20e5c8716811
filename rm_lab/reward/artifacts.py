"""Style-artifact reports: how much a reward model's scores follow surface features.

The paper's emoji spike (+238% in two generations) came from a reward model that had learned a
style artifact. Two views catch that early: the rank correlation of each artifact with each head's
score (observational), and the mean score change of a counterfactual edit such as appending one
emoji (interventional), which can be set next to the simulated world's true causal effect
(`rm_lab.world.engagement.true_emoji_effect`). Preference pairs get the same artifacts as rates in
chosen vs rejected replies, since a reward model learns whatever the chosen side has more of.
Features come from `rm_lab.features.style` only.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from rm_lab.features.style import ARTIFACTS, style_frame
from rm_lab.reward.metrics import spearman

BINARY_ARTIFACTS = tuple(a for a in ARTIFACTS if a in ("has_emoji", "has_list", "wall_of_text", "preachy",
                                                       "refusal", "ends_with_question"))

# Counterfactual edits: each appends one artifact to a reply (the emoji edit matches true_emoji_effect).
COUNTERFACTUALS: dict[str, Callable[[str], str]] = {
    "append_emoji": lambda r: r + " 😊",
    "append_question": lambda r: r + " What do you think?",
    "append_preachy": lambda r: r + " It's important to remember that everyone is different.",
    "append_i_feel": lambda r: r + " I feel really happy about that.",
}


def _scores(scores: Mapping[str, Sequence[float]], n: int) -> dict[str, np.ndarray]:
    out = {}
    for head, s in scores.items():
        a = np.asarray(s, dtype=float)
        if a.shape != (n,):
            raise ValueError(f"scores['{head}']: expected {n} values (one per text), got shape {a.shape}")
        out[head] = a
    return out


def preference_artifacts(preferences: pd.DataFrame) -> dict:
    """Artifact means in chosen vs rejected replies, and who wins when exactly one side has it."""
    for col in ("chosen", "rejected"):
        if col not in preferences.columns:
            raise ValueError(f"preferences: missing column '{col}'")
    fc = style_frame(preferences["chosen"])
    fr = style_frame(preferences["rejected"])
    out: dict = {"n_pairs": int(len(preferences)), "chosen": {}, "rejected": {}, "diff": {},
                 "chosen_share_when_differs": {}, "n_differs": {}}
    for a in ARTIFACTS:
        c, r = fc[a].to_numpy(), fr[a].to_numpy()
        out["chosen"][a] = float(c.mean()) if len(c) else math.nan
        out["rejected"][a] = float(r.mean()) if len(r) else math.nan
        out["diff"][a] = out["chosen"][a] - out["rejected"][a]
        if a in BINARY_ARTIFACTS:
            differs = (c > 0) != (r > 0)
            out["n_differs"][a] = int(differs.sum())
            out["chosen_share_when_differs"][a] = float((c[differs] > 0).mean()) if differs.any() else math.nan
    return out


def style_artifact_report(texts: Iterable[str], scores: Mapping[str, Sequence[float]],
                          keywords: Iterable[Sequence[str] | None] | None = None,
                          preferences: pd.DataFrame | None = None) -> dict:
    """Spearman of each artifact with each head's score, score gaps, and preference-pair rates.

    `scores` maps a head name to one score per text. Returns {"n", "artifacts", "means",
    "correlations": {head: {artifact: rho}}, "score_gap": {head: {binary artifact: mean score with
    minus without}}, and "preferences" (see `preference_artifacts`) when pairs are given}.
    """
    texts = list(texts)
    feats = style_frame(texts, keywords)
    sc = _scores(scores, len(texts))
    rep: dict = {"n": len(texts), "artifacts": list(ARTIFACTS),
                 "means": {a: float(feats[a].mean()) if len(feats) else math.nan for a in ARTIFACTS},
                 "correlations": {}, "score_gap": {}}
    for head, s in sc.items():
        rep["correlations"][head] = {a: spearman(feats[a].to_numpy(), s) for a in ARTIFACTS}
        gaps = {}
        for a in BINARY_ARTIFACTS:
            on = feats[a].to_numpy() > 0
            gaps[a] = float(s[on].mean() - s[~on].mean()) if on.any() and (~on).any() else math.nan
        rep["score_gap"][head] = gaps
    if preferences is not None:
        rep["preferences"] = preference_artifacts(preferences)
    return rep


def learned_effect(score_fn: Callable[[list[str]], Sequence[float]], texts: Iterable[str],
                   transform: Callable[[str], str]) -> float:
    """Mean change of `score_fn` when every text is edited by `transform` (a counterfactual effect)."""
    texts = list(texts)
    if not texts:
        return math.nan
    before = np.asarray(score_fn(texts), float)
    after = np.asarray(score_fn([transform(t) for t in texts]), float)
    if before.shape != (len(texts),) or after.shape != (len(texts),):
        raise ValueError("score_fn must return one score per text")
    return float(np.mean(after - before))


def effect_table(score_fns: Mapping[str, Callable[[list[str]], Sequence[float]]], texts: Iterable[str],
                 transforms: Mapping[str, Callable[[str], str]] | None = None,
                 truth: Mapping[str, float] | None = None) -> dict:
    """{edit: {head: learned effect, ..., "truth": world effect if known}} for each counterfactual edit."""
    texts = list(texts)
    transforms = COUNTERFACTUALS if transforms is None else transforms
    out: dict = {}
    for name, tf in transforms.items():
        row = {head: learned_effect(fn, texts, tf) for head, fn in score_fns.items()}
        if truth and name in truth:
            row["truth"] = float(truth[name])
        out[name] = row
    return out


# ----------------------------------------------------------------------------------------------
# rendering

def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{float(v):.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render_artifact_report(report: dict, effects: dict | None = None) -> str:
    """Markdown: artifact means and score correlations per head, preference rates, counterfactuals."""
    parts = [f"## Style artifacts ({report['n']} replies)\n"]
    heads = list(report["correlations"])
    header = ["artifact", "mean"] + [f"ρ({h})" for h in heads] + [f"gap({h})" for h in heads]
    rows = []
    for a in report["artifacts"]:
        row = [a, _fmt(report["means"][a])]
        row += [_fmt(report["correlations"][h][a]) for h in heads]
        row += [_fmt(report["score_gap"][h].get(a)) if a in report["score_gap"][h] else "" for h in heads]
        rows.append(row)
    parts.append(_table(header, rows))
    parts.append("\nρ: Spearman correlation with the head's score; gap: mean score with the artifact "
                 "minus without.\n")
    pref = report.get("preferences")
    if pref:
        parts.append(f"\n### Preference pairs ({pref['n_pairs']})\n")
        rows = [[a, _fmt(pref["chosen"][a]), _fmt(pref["rejected"][a]), _fmt(pref["diff"][a]),
                 _fmt(pref["chosen_share_when_differs"].get(a)), str(pref["n_differs"].get(a, ""))]
                for a in report["artifacts"]]
        parts.append(_table(["artifact", "chosen", "rejected", "diff", "chosen has it (when one does)",
                             "pairs differing"], rows))
        parts.append("")
    if effects:
        cols = sorted({k for row in effects.values() for k in row}, key=lambda k: (k == "truth", k))
        parts.append("\n### Counterfactual edits (mean score change)\n")
        parts.append(_table(["edit"] + cols, [[e] + [_fmt(row.get(c)) for c in cols] for e, row in effects.items()]))
        parts.append("")
    return "\n".join(parts) + "\n"
