"""Character instructions of the simulated world (`character:` namespace)."""

from __future__ import annotations

import re

from rm_lab.evaluate.instruction_base import Checker, Kwarg

# Pictographic emoji blocks. Modifiers (skin tones), variation selectors, ZWJ and keycap marks are
# not emoji on their own, and a ZWJ sequence (family, profession) counts once.
_EMOJI_RANGES = (
    (0x1F000, 0x1F0FF),  # mahjong, domino, playing cards
    (0x1F100, 0x1F1FF),  # enclosed alphanumerics incl. regional indicators
    (0x1F200, 0x1F2FF),
    (0x1F300, 0x1F5FF),  # symbols & pictographs
    (0x1F600, 0x1F64F),  # emoticons
    (0x1F680, 0x1F6FF),  # transport & map
    (0x1F700, 0x1F77F),
    (0x1F780, 0x1F7FF),  # geometric shapes extended
    (0x1F800, 0x1F8FF),
    (0x1F900, 0x1F9FF),  # supplemental symbols & pictographs
    (0x1FA00, 0x1FAFF),  # chess, symbols & pictographs extended-A
    (0x2600, 0x26FF),  # miscellaneous symbols (☀ ☺ ♥ ⚡)
    (0x2700, 0x27BF),  # dingbats (✂ ✅ ✨ ❤)
    (0x2B05, 0x2B07),  # ⬅ ⬆ ⬇
    (0x2B1B, 0x2B1C),  # ⬛ ⬜
    (0x2B50, 0x2B50),  # ⭐
    (0x2B55, 0x2B55),  # ⭕
)
_NOT_ALONE = {0x200D, 0xFE0F, 0xFE0E, 0x20E3} | set(range(0x1F3FB, 0x1F400)) | set(range(0xE0020, 0xE0080))


def _is_emoji(cp: int) -> bool:
    if cp in _NOT_ALONE:
        return False
    return any(lo <= cp <= hi for lo, hi in _EMOJI_RANGES)


def count_emoji(text: str) -> int:
    n = 0
    joined = False  # the previous code point was a ZWJ: the next pictograph extends the sequence
    regional = 0
    for ch in text:
        cp = ord(ch)
        if cp == 0x200D:
            joined = True
            continue
        if _is_emoji(cp):
            if 0x1F1E6 <= cp <= 0x1F1FF:  # two regional indicators make one flag
                regional += 1
                if regional % 2 == 0:
                    joined = False
                    continue
            else:
                regional = 0
            if not joined:
                n += 1
        elif cp not in _NOT_ALONE:
            regional = 0
        joined = False
    return n


def _end_with_question(r, kw, _p):
    s = r.rstrip()
    return s.endswith("?")


_LIST_LINE = re.compile(r"(?m)^[ \t]*(?:[-*+•‣▪◦]|\d{1,3}[.)])[ \t]+\S")


def has_list(text: str) -> bool:
    return _LIST_LINE.search(text) is not None


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
