"""Identifier scrubbing: replace emails, phone numbers, @handles and URLs by placeholder tokens.

Logged traffic must not carry identifiers into training data (DESIGN.md, "Data consolidation").
Replacement (not deletion) keeps the sentence shape, so a reward model still sees that a link or a
handle was there. Order matters: URLs first (a URL may contain '@'), then emails (an email contains
what looks like a handle), then phones, then handles. Patterns favour recall on the usual formats
and stay off dates, times, prices and plain counts; bare domains without "www." or a scheme, and
street addresses, are not detected.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Callable

import pandas as pd

PLACEHOLDERS = {"url": "[URL]", "email": "[EMAIL]", "phone": "[PHONE]", "handle": "[HANDLE]"}

URL_RE = re.compile(r"(?i)\b(?:https?://|www\.)[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]}]")
EMAIL_RE = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
PHONE_RES = (
    # international: +CC then 2-5 groups, 8-15 digits in all (checked below)
    re.compile(r"(?<![\w+])\+\d{1,3}(?:[\s.-]?\(?\d{1,4}\)?){2,5}(?!\w)"),
    # North American style: (555) 123-4567, 555-123-4567, 555.123.4567, 5551234567
    re.compile(r"(?<![\w(])(?:\(\d{3}\)\s?|\d{3}[\s.-]?)\d{3}[\s.-]?\d{4}(?![\w])"),
    # local 7-digit with a dash: 555-1234
    re.compile(r"(?<![\w-])\d{3}-\d{4}(?![\w-])"),
)
HANDLE_RE = re.compile(r"(?<![\w@/.])@[A-Za-z0-9_](?:[A-Za-z0-9_.]{0,28}[A-Za-z0-9_])?(?![\w@])")


def _phone_ok(match: str) -> bool:
    digits = sum(c.isdigit() for c in match)
    return 7 <= digits <= 15


def scrub_text(text: str) -> tuple[str, Counter]:
    """The text with identifiers replaced, and how many of each kind were replaced."""
    counts: Counter = Counter()

    def sub(regex: re.Pattern, kind: str, s: str, ok: Callable[[str], bool] | None = None) -> str:
        def repl(m: re.Match) -> str:
            if ok is not None and not ok(m.group(0)):
                return m.group(0)
            counts[kind] += 1
            return PLACEHOLDERS[kind]

        return regex.sub(repl, s)

    out = sub(URL_RE, "url", text)
    out = sub(EMAIL_RE, "email", out)
    for rx in PHONE_RES:
        out = sub(rx, "phone", out, _phone_ok)
    out = sub(HANDLE_RE, "handle", out)
    return out, counts


def _scrub_column(values, counts: Counter) -> tuple[list, int]:
    out, changed = [], 0
    for v in values:
        if isinstance(v, str):
            new, c = scrub_text(v)
            counts.update(c)
            changed += new != v
            out.append(new)
        else:
            out.append(v)
    return out, changed


def _scrub_history(values, counts: Counter) -> tuple[list, int]:
    out, changed = [], 0
    for hist in values:
        new_hist, row_changed = [], False
        for turn in hist or []:
            content = turn.get("content") if isinstance(turn, dict) else None
            if isinstance(content, str):
                new, c = scrub_text(content)
                counts.update(c)
                if new != content:
                    row_changed = True
                    turn = {**turn, "content": new}
            new_hist.append(turn)
        changed += row_changed
        out.append(new_hist)
    return out, changed


# The free-text fields of each record kind that can carry user identifiers.
SCRUB_FIELDS: dict[str, tuple[str, ...]] = {
    "context": ("history",),
    "interaction": ("response",),
    "preference": ("chosen", "rejected"),
    "steer_label": ("response",),
}


def scrub_frames(frames: dict[str, pd.DataFrame]) -> tuple[dict[str, pd.DataFrame], dict]:
    """Scrub every free-text field of every record frame; report counts per kind and per field."""
    out = dict(frames)
    total: Counter = Counter()
    by_field: dict[str, dict] = {}
    rows_changed: dict[str, int] = {}
    for kind, cols in SCRUB_FIELDS.items():
        if kind not in frames:
            continue
        df = frames[kind].copy()
        for col in cols:
            if col not in df.columns:
                continue
            c: Counter = Counter()
            values, changed = (_scrub_history if col == "history" else _scrub_column)(df[col].tolist(), c)
            df[col] = values
            total.update(c)
            by_field[f"{kind}.{col}"] = {**{k: c.get(k, 0) for k in PLACEHOLDERS}, "rows_changed": changed}
            rows_changed[f"{kind}.{col}"] = changed
        out[kind] = df
    report = {"replaced": {k: total.get(k, 0) for k in PLACEHOLDERS}, "by_field": by_field,
              "total_replaced": int(sum(total.values()))}
    return out, report
