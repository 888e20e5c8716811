"""Chat prompts for a policy: the character card as the system prompt, then the context's history.

The system prompt is always given, because SmolLM2's chat template inserts its own default system
prompt ("You are a helpful AI assistant named SmolLM...") when none is — which would talk over the
character. Instructions are rendered as plain imperative sentences a small instruct model can follow.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from rm_lab.schema import RecordError


def _words(v: Any) -> str:
    items = [str(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
    return ", ".join(f'"{x}"' for x in items)


def _relation(kw: dict, key: str = "relation") -> str:
    return "fewer than" if str(kw.get(key, "less than")) == "less than" else "at least"


_RENDER = {
    "character:stay_in_character": lambda kw: "Stay in character.",
    "character:max_emoji": lambda kw: (f"Use at most {kw.get('max', 0)} emoji." if kw.get("max", 0)
                                       else "Do not use emoji."),
    "character:end_with_question": lambda kw: "End your reply with a question.",
    "character:no_lists": lambda kw: "Do not use lists.",
    "length_constraints:number_words": lambda kw: f"Answer in {_relation(kw)} {kw.get('num_words')} words.",
    "length_constraints:number_sentences": lambda kw: f"Answer in {_relation(kw)} {kw.get('num_sentences')} sentences.",
    "keywords:forbidden_words": lambda kw: f"Never say the words {_words(kw.get('forbidden_words', []))}.",
    "keywords:existence": lambda kw: f"Include the words {_words(kw.get('keywords', []))}.",
    "punctuation:no_comma": lambda kw: "Do not use commas.",
    "change_case:english_lowercase": lambda kw: "Write only in lowercase letters.",
    "change_case:english_capital": lambda kw: "Write only in capital letters.",
    "startend:end_checker": lambda kw: f"End your reply with the exact phrase \"{kw.get('end_phrase')}\".",
    "detectable_content:postscript": lambda kw: f"Add a postscript starting with {kw.get('postscript_marker')}.",
}


def instruction_text(ins: Any) -> str:
    """One instruction as a sentence: a known id rendered, another id as its checker's description."""
    if not isinstance(ins, dict):
        return str(ins).strip()
    iid = str(ins.get("instruction_id", ""))
    kw = ins.get("kwargs") or {}
    if iid in _RENDER:
        return _RENDER[iid](kw)
    try:
        from rm_lab.evaluate.instructions import get_checker

        desc = get_checker(iid).description
    except Exception:  # an id this version has no checker for: still tell the model
        desc = iid.split(":")[-1].replace("_", " ").capitalize() + "."
    args = "; ".join(f"{k}: {', '.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                     for k, v in kw.items())
    return f"{desc} ({args})" if args else desc


def system_prompt(character) -> str:
    """The character card: persona sentences, then the instructions as rules."""
    persona = [str(p).strip() for p in (character["persona"] if character["persona"] is not None else [])]
    rules = [instruction_text(i) for i in (character["instructions"] if character["instructions"] is not None else [])]
    text = " ".join(p for p in persona if p)
    if not text:
        text = f"You are {character['name']}."
    rules = [r for r in rules if r]
    return text + ("\nRules: " + " ".join(rules) if rules else "")


def conversation(context, character) -> list[dict]:
    """[system = card, *history]: the messages a chat template renders for one context."""
    history = context["history"] if context["history"] is not None else []
    msgs = [{"role": "system", "content": system_prompt(character)}]
    for t in history:
        msgs.append({"role": str(t["role"]), "content": str(t["content"])})
    return msgs


def conversations(contexts: pd.DataFrame, characters: pd.DataFrame) -> list[list[dict]]:
    """One conversation per context row; a context naming an unknown character, or with no history,
    is a RecordError naming the row."""
    chars = {str(r["character_id"]): r for _, r in characters.iterrows()}
    out = []
    for i, (_, ctx) in enumerate(contexts.iterrows()):
        cid = str(ctx["character_id"])
        if cid not in chars:
            raise RecordError("contexts", i + 1, "character_id", cid,
                              f"a character_id of the characters ({len(chars)} known)")
        hist = ctx["history"]
        if hist is None or len(hist) == 0:
            raise RecordError("contexts", i + 1, "history", hist, "at least one turn to reply to")
        out.append(conversation(ctx, chars[cid]))
    return out
