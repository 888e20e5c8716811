"""Character instructions of the simulated world (`character:` namespace)."""

from __future__ import annotations

import re

from rm_lab.evaluate.instruction_base import Checker, Kwarg
from rm_lab.features.style import LIST_LINE_RE, count_emoji  # one definition of each


def _end_with_question(r, kw, _p):
    s = r.rstrip()
    return s.endswith("?")


def has_list(text: str) -> bool:
    return LIST_LINE_RE.search(text) is not None


def _no_lists(r, kw, _p):
    return not has_list(r)


def _max_emoji(r, kw, _p):
    return count_emoji(r) <= kw["max"]


def _stay_in_character(r, kw, _p):
    return any(re.search(r"(?<!\w)" + re.escape(k.strip()) + r"(?!\w)", r, flags=re.IGNORECASE)
               for k in kw["keywords"])


CHECKERS: tuple[Checker, ...] = (
    Checker("character:end_with_question", "The reply's last non-space character is '?'.",
            _end_with_question),
    Checker("character:no_lists", "No markdown bullet or numbered list lines.", _no_lists),
    Checker("character:max_emoji", "At most `max` emoji (a ZWJ sequence or a flag counts once).",
            _max_emoji, (Kwarg("max", "int", min=0),)),
    Checker("character:stay_in_character",
            "At least one of the character's keywords appears as a whole word (case-insensitive).",
            _stay_in_character, (Kwarg("keywords", "str_list"),)),
)
