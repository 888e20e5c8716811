"""Style-artifact features of a reply: the surface signals the paper tracks in every checkpoint.

The MiniLM tokenizer cannot see emoji or line breaks, so these features are computed from raw text
and fed to reward models beside the encoder; the simulated world's hidden engagement function and
the style-artifact reports read the same features, so there is one definition of "emoji rate" or
"wall of text" in the project.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

# Pictographic emoji blocks (incl. regional indicators, misc symbols, dingbats). An emoji is one
# pictograph with its modifiers (skin tones, variation selectors, keycap, tags); a ZWJ sequence
# (family, profession) and a pair of regional indicators (a flag) count once.
_PICTO = ("\U0001F000-\U0001F3FA\U0001F400-\U0001FAFF\u2600-\u27BF\u2B05-\u2B07\u2B1B\u2B1C\u2B50\u2B55")
_RI = "\U0001F1E6-\U0001F1FF"
_MOD = "\U0001F3FB-\U0001F3FF\uFE0E\uFE0F\u20E3\U000E0020-\U000E007F"
EMOJI_RE = re.compile(f"[{_RI}][{_RI}]|[{_PICTO}][{_MOD}]*(?:\u200d[{_PICTO}][{_MOD}]*)*")
WORD_RE = re.compile(r"[A-Za-z0-9']+")
SENTENCE_END_RE = re.compile(r"[.!?]+(?:\s|$)")
LIST_LINE_RE = re.compile(r"(?m)^[ \t]*(?:[-*+\u2022\u2023\u25aa\u25e6]|\d{1,3}[.)])[ \t]+\S")
I_FEEL_RE = re.compile(r"\bI (?:feel|am feeling|'m feeling)\b", re.IGNORECASE)
REFUSAL_RE = re.compile(
    r"\b(?:I can(?:not|'t) (?:help|do|assist|provide)|I'm (?:not able|unable) to|I won't be able to|"
    r"I must decline|I'm sorry, but I can)", re.IGNORECASE)
PREACHY_RE = re.compile(
    r"\b(?:it(?:'s| is) important to (?:remember|note)|you should always|remember that|"
    r"please be mindful|always be respectful|it is crucial to|we must all)", re.IGNORECASE)

WALL_OF_TEXT_WORDS = 120  # a single paragraph longer than this reads as a wall of text

FEATURES: tuple[str, ...] = (
    "n_words", "log_words", "n_sentences", "n_emoji", "has_emoji", "emoji_per_100w", "n_questions",
    "ends_with_question", "n_list_lines", "has_list", "n_paragraphs", "wall_of_text", "n_i_feel",
    "refusal", "preachy", "n_exclaims", "you_rate", "persona_hits",
)


def count_emoji(text: str) -> int:
    """Emoji as a reader sees them: a flag, a skin-toned thumb or a ZWJ family is one."""
    return len(EMOJI_RE.findall(text))


def style_features(text: str, keywords: Sequence[str] | None = None) -> dict[str, float]:
    """Style features of one reply; `keywords` are the character's in-character words."""
    words = WORD_RE.findall(text)
    n_words = len(words)
    n_emoji = count_emoji(text)
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    longest_par = max((len(WORD_RE.findall(p)) for p in paragraphs), default=0)
    n_list = len(LIST_LINE_RE.findall(text))
    stripped = EMOJI_RE.sub("", text).rstrip()
    lower = [w.lower() for w in words]
    hits = 0
    if keywords:
        kw = {k.lower() for k in keywords}
        hits = sum(1 for w in lower if w in kw)
    return {
        "n_words": float(n_words),
        "log_words": float(np.log1p(n_words)),
        "n_sentences": float(max(1, len(SENTENCE_END_RE.findall(text + " "))) if text.strip() else 0),
        "n_emoji": float(n_emoji),
        "has_emoji": float(n_emoji > 0),
        "emoji_per_100w": 100.0 * n_emoji / max(n_words, 1),
        "n_questions": float(text.count("?")),
        "ends_with_question": float(stripped.endswith("?")),
        "n_list_lines": float(n_list),
        "has_list": float(n_list >= 2),
        "n_paragraphs": float(len(paragraphs)),
        "wall_of_text": float(longest_par > WALL_OF_TEXT_WORDS and n_list < 2),
        "n_i_feel": float(len(I_FEEL_RE.findall(text))),
        "refusal": float(bool(REFUSAL_RE.search(text))),
        "preachy": float(bool(PREACHY_RE.search(text))),
        "n_exclaims": float(text.count("!")),
        "you_rate": sum(1 for w in lower if w in ("you", "your", "you're")) / max(n_words, 1),
        "persona_hits": float(hits),
    }


def style_frame(texts: Iterable[str], keywords: Iterable[Sequence[str] | None] | None = None) -> pd.DataFrame:
    """Feature frame for many replies (columns in FEATURES order)."""
    texts = list(texts)
    kws = list(keywords) if keywords is not None else [None] * len(texts)
    if len(kws) != len(texts):
        raise ValueError(f"style_frame: {len(texts)} texts but {len(kws)} keyword lists")
    rows = [style_features(t, k) for t, k in zip(texts, kws)]
    return pd.DataFrame(rows, columns=list(FEATURES))


# The artifact subset the paper tracks across checkpoints (reported as rates/means).
ARTIFACTS: tuple[str, ...] = ("n_words", "has_emoji", "n_emoji", "has_list", "wall_of_text", "preachy",
                              "n_i_feel", "refusal", "ends_with_question")
