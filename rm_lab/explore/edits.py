"""Edits of a reply along one style feature, for the landscape's sliders.

Each edit sets one feature of `rm_lab.features.style` to a level and leaves the reply otherwise as it
is, so the reward model's score along the slider can be set next to the simulated world's truth on the
very same edited replies (the world reads the same style features)."""

from __future__ import annotations

import re
from typing import Callable

from rm_lab.features.style import EMOJI_RE, LIST_LINE_RE, WORD_RE

EMOJI = "😊"
QUESTION = "What do you think?"


def set_emoji(text: str, k: int) -> str:
    """Exactly `k` emoji: the reply's own removed, `k` appended."""
    base = re.sub(r"[ \t]+([.,!?])", r"\1", re.sub(r"[ \t]{2,}", " ", EMOJI_RE.sub("", text))).rstrip()
    return (base + " " + " ".join([EMOJI] * int(k))) if k > 0 else base


def emoji_after_first_sentence(text: str, k: int) -> str:
    """Exactly `k` emoji, right after the reply's first sentence (appended when it has no sentence end):
    where a policy that learns the habit writes them before a token cap cuts the reply."""
    base = set_emoji(text, 0)
    m = re.search(r"[.!?](?=\s)", base)
    if m is None or k <= 0:
        return set_emoji(base, k)
    return base[:m.end()] + " " + " ".join([EMOJI] * int(k)) + base[m.end():]


def set_length(text: str, n: int) -> str:
    """About `n` words: cut at the n-th word, or the reply's words repeated to reach n."""
    n = max(1, int(n))
    tokens = text.split()
    if not tokens:
        tokens = ["ok"]
    words = len(WORD_RE.findall(text))
    if words >= n:
        out, seen = [], 0
        for t in tokens:
            if seen >= n:
                break
            out.append(t)
            seen += len(WORD_RE.findall(t))
        return " ".join(out)
    out = list(tokens)
    i = 0
    while len(WORD_RE.findall(" ".join(out))) < n:
        out.append(tokens[i % len(tokens)])
        i += 1
    return " ".join(out)


def set_question(text: str, on: int) -> str:
    """Ends with a question (1) or not (0)."""
    stripped = EMOJI_RE.sub("", text).rstrip()
    if on:
        return text if stripped.endswith("?") else text.rstrip() + " " + QUESTION
    body = text.rstrip()
    while EMOJI_RE.sub("", body).rstrip().endswith("?"):
        idx = body.rfind("?")
        body = body[:idx] + "." + body[idx + 1:]
    return body


def _sentences(text: str) -> list[str]:
    flat = LIST_LINE_RE.sub(lambda m: m.group(0)[-1], text)
    flat = re.sub(r"(?m)^[ \t]*(?:[-*+\u2022\u2023\u25aa\u25e6]|\d{1,3}[.)])[ \t]+", "", flat)
    parts = [p.strip() for p in re.split(r"(?<=[.!?])\s+|\n+", flat) if p.strip()]
    return parts or [text.strip() or "ok"]


def set_list(text: str, on: int) -> str:
    """As a bulleted list of its sentences (1, at least two lines) or as one paragraph (0)."""
    parts = _sentences(text)
    if not on:
        return " ".join(parts)
    if len(parts) < 2:
        words = parts[0].split()
        half = max(1, len(words) // 2)
        parts = [" ".join(words[:half]), " ".join(words[half:]) or words[0]]
    return "\n".join(f"- {p}" for p in parts)


# slider name -> (edit, style feature it sets, levels offered by default)
EDITS: dict[str, tuple[Callable[[str, int], str], str, list[int]]] = {
    "length": (set_length, "n_words", [5, 10, 20, 30, 45, 60, 90, 130]),
    "emoji": (set_emoji, "n_emoji", [0, 1, 2, 3, 4, 6]),
    "questions": (set_question, "ends_with_question", [0, 1]),
    "lists": (set_list, "has_list", [0, 1]),
}
