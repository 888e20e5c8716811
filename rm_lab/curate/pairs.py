"""The paper's pair filter: drop preference pairs whose replies differ a lot in length or emoji.

If chosen replies are systematically longer or carry more emoji, a reward model learns length and
emoji instead of engagement, and the policy then inflates them (the paper's emoji spike). Keeping
only pairs that are comparable on these surface features makes the preference signal come from
content. Length is compared as a ratio of word counts (longer / max(shorter, 1)); emoji as an
absolute difference of counts, since a ratio is undefined when one side has none. Both use the
definitions in `rm_lab.features.style`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rm_lab.features.style import WORD_RE, count_emoji


def pair_filter(preferences: pd.DataFrame, max_length_ratio: float = 2.0,
                max_emoji_diff: int = 2) -> tuple[np.ndarray, dict]:
    """Keep-mask over preference rows and counts of what was dropped and why.

    `max_length_ratio <= 0` or `max_emoji_diff < 0` turns that check off. A pair exactly at the
    limit is kept.
    """
    a, b = preferences["chosen"].tolist(), preferences["rejected"].tolist()
    la = np.array([len(WORD_RE.findall(t)) for t in a])
    lb = np.array([len(WORD_RE.findall(t)) for t in b])
    ea = np.array([count_emoji(t) for t in a])
    eb = np.array([count_emoji(t) for t in b])
    ratio = np.maximum(la, lb) / np.maximum(np.minimum(la, lb), 1)
    too_long = ratio > max_length_ratio if max_length_ratio > 0 else np.zeros(len(a), bool)
    too_emoji = np.abs(ea - eb) > max_emoji_diff if max_emoji_diff >= 0 else np.zeros(len(a), bool)
    keep = ~(too_long | too_emoji)
    chosen_longer = la > lb
    report = {
        "n_before": int(len(a)), "n_after": int(keep.sum()), "removed": int((~keep).sum()),
        "dropped_length_only": int((too_long & ~too_emoji).sum()),
        "dropped_emoji_only": int((too_emoji & ~too_long).sum()),
        "dropped_both": int((too_long & too_emoji).sum()),
        "max_length_ratio": max_length_ratio, "max_emoji_diff": max_emoji_diff,
        # how lopsided the data were before and after: the surface cues a reward model could learn
        "chosen_longer_share_before": float(chosen_longer.mean()) if len(a) else float("nan"),
        "chosen_longer_share_after": float(chosen_longer[keep].mean()) if keep.any() else float("nan"),
        "mean_emoji_diff_before": float((ea - eb).mean()) if len(a) else float("nan"),
        "mean_emoji_diff_after": float((ea - eb)[keep].mean()) if keep.any() else float("nan"),
    }
    return keep, report
