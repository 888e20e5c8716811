"""What a character says about itself, and when a reply contradicts what it said earlier (world v2).

Characters state small facts in the history ("My favourite season is autumn.", "I have a dog named
Biscuit."); the hidden engagement function reads claims of the same shapes from a reply and from the
character's earlier turns, and counts a contradiction when one key gets two values. The patterns are
the ordinary English forms, so LLM replies are read the same way as scripted ones.
"""

from __future__ import annotations

import re
import zlib
from functools import lru_cache

import numpy as np

from rm_lab.world.topics import stem

FAVOURITES: dict[str, tuple[str, ...]] = {
    "season": ("spring", "summer", "autumn", "winter"),
    "colour": ("red", "blue", "green", "yellow", "purple", "orange"),
    "drink": ("tea", "coffee", "cocoa", "lemonade", "water", "juice"),
    "place": ("mountains", "beach", "city", "forest", "desert", "river"),
}
PETS = ("dog", "cat", "parrot", "turtle", "rabbit", "goat")
PET_NAMES = ("Biscuit", "Pepper", "Nugget", "Luna", "Mochi", "Pickle")

_FAV_RE = re.compile(r"\bmy (?:absolute |very )?favou?rite (season|colou?r|drink|place) (?:is|has always been|"
                     r"will always be|was always) (?:the |a |an )?([a-z]+)", re.IGNORECASE)
_PET_RE = re.compile(rf"\bI (?:have|own|live with) an? ({'|'.join(PETS)}) (?:named|called) ([A-Za-z]+)",
                     re.IGNORECASE)
_NO_PET_RE = re.compile(rf"\bI (?:don't|do not|never) (?:have|had|own|owned) (?:an? |any )?({'|'.join(PETS)})s?\b",
                        re.IGNORECASE)
_OPINION_RE = re.compile(r"\bI (love|adore|enjoy|really like|hate|dislike|can't stand|cannot stand|don't like|"
                         r"do not like) (?:the |my |a |an )?([a-z]+)", re.IGNORECASE)
_NEGATIVE = {"hate", "dislike", "can't stand", "cannot stand", "don't like", "do not like"}


def claims(text: str) -> dict[tuple[str, str], str]:
    """Facts a text asserts about its speaker: (kind, key) -> value."""
    out: dict[tuple[str, str], str] = {}
    for slot, value in _FAV_RE.findall(text or ""):
        out[("favourite", "colour" if slot.lower().startswith("colo") else slot.lower())] = value.lower()
    for animal, name in _PET_RE.findall(text or ""):
        out[("pet", animal.lower())] = name.lower()
    for animal in _NO_PET_RE.findall(text or ""):
        out[("pet", animal.lower())] = "<none>"
    for verb, obj in _OPINION_RE.findall(text or ""):
        out[("opinion", stem(obj))] = "negative" if verb.lower() in _NEGATIVE else "positive"
    return out


def said_facts(earlier: list[str]) -> dict[tuple[str, str], str]:
    """The facts asserted over a speaker's earlier turns, the latest value of each key winning."""
    said: dict[tuple[str, str], str] = {}
    for t in earlier:
        said.update(claims(t))
    return said


def contradictions(reply: str, earlier: list[str]) -> int:
    """Keys the reply asserts with a value other than the one the character asserted earlier."""
    said = said_facts(earlier)
    return sum(1 for k, v in claims(reply).items() if k in said and said[k] != v)


def character_facts(character_id: str) -> dict[tuple[str, str], str]:
    """A character's stable facts (the same in every context), seeded by its id."""
    return dict(_facts(str(character_id)))


@lru_cache(maxsize=4096)
def _facts(character_id: str) -> tuple:
    rng = np.random.default_rng(zlib.crc32(character_id.encode()))
    facts = {("favourite", slot): str(rng.choice(vals)) for slot, vals in FAVOURITES.items()}
    facts[("pet", str(rng.choice(PETS)))] = str(rng.choice(PET_NAMES)).lower()
    return tuple(facts.items())


def statement(key: tuple[str, str], value: str) -> str:
    """The sentence that asserts one fact (what `claims` reads back)."""
    kind, k = key
    if kind == "favourite":
        return f"My favourite {k} is {value}."
    if kind == "pet":
        return f"I don't have a {k}." if value == "<none>" else f"I have a {k} named {value.capitalize()}."
    return f"I {'love' if value == 'positive' else 'hate'} {k}."


def other_value(key: tuple[str, str], value: str, rng: np.random.Generator) -> str:
    """A value that contradicts `value` for `key`."""
    kind, k = key
    if kind == "favourite":
        return str(rng.choice([v for v in FAVOURITES[k] if v != value]))
    if kind == "pet":
        return "<none>" if value != "<none>" else str(rng.choice(PET_NAMES)).lower()
    return "negative" if value == "positive" else "positive"
