"""ConvAI2 human–bot chats: bot turns become interactions with real user signals, and the users'
judgements of the whole dialogue become labels.

What each field is, and where it goes:
- `evaluation_score` on a bot turn (data_intermediate.json) is the user's thumb on that reply, given as
  the chat went on: a user signal of one reply -> `interaction.thumb` (1 -> 1, 0 -> -1, null -> null).
- Whether (and how often) the human wrote again after a bot turn is what the user did next ->
  `interaction.continued` / `interaction.depth`.
- `eval_score` (1-5) is the user's rating of the whole dialogue, asked once it ended; `profile_match`
  (0/1; '' -> null) says whether the user, shown the bot's profile and another one, picked the bot's:
  judgements of the dialogue, not behaviour and not one instruction's verdict. They become `label`
  records `rating` (scale 1-5) and `persona_match` (0/1) on every bot turn of the dialogue (the turns'
  contexts share the dialogue's `conversation_id`, so a split by conversation keeps them together),
  with `head` records declaring `rating` ordinal (5 levels) and `persona_match` binomial. They are also
  kept as columns on the interactions (provenance).

Rules:
- Every bot turn is an interaction; its context is the dialogue before it (human -> `user`,
  bot -> `assistant`), traffic `user`. `continued` = a human turn comes later in the dialogue;
  `depth` = how many human turns come later.
- Who is the bot: `sender_class` when every turn has one (data_intermediate.json). The exports have no
  roles: when a bot profile is given, the participant whose content words (stop words removed) overlap
  the bot profile more, minus their overlap with the user profile, is the bot; ties and dialogues
  without a profile default to participant2. On data_intermediate.json, whose roles are known, this
  rule picks the true bot in 281 of 291 dialogues (the 140 ties default correctly).
- A dialogue with no bot turn yields no interaction; it is listed in `dropped`, never lost silently.
- Characters are the distinct bot profiles (id = content hash); dialogues without a profile share
  the character `convai2:no-profile`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from rm_lab.schema import CHARACTER, CONTEXT, HEAD, INTERACTION, LABEL, RecordError, Records, validate_frame
from rm_lab.sources._common import (dropped_frame, files_in, load_json_list, need, number_cell,
                                    stable_id, text_cell)

NO_PROFILE = "convai2:no-profile"
SOURCE = "convai2"
# the dialogue-level judgements as labels: (interaction column, label name, scale) and the heads they train
LABELS = (("eval_score", "rating", 1.0, 5.0), ("profile_match", "persona_match", 0.0, 1.0))
HEADS = [
    {"name": "rating", "kind": "ordinal", "record": "label", "column": "rating", "levels": 5, "min": 1.0,
     "doc": "the user's 1-5 rating of the dialogue the reply was part of (ConvAI2 eval_score)"},
    {"name": "persona_match", "kind": "binomial", "record": "label", "column": "persona_match",
     "doc": "the user picked the bot's own profile after the dialogue (ConvAI2 profile_match)"},
]
_WORD = re.compile(r"[a-z0-9']+")
_STOP: frozenset[str] | None = None


def _stop() -> frozenset[str]:
    global _STOP
    if _STOP is None:
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        _STOP = frozenset(ENGLISH_STOP_WORDS)
    return _STOP


def _words(texts: list[str]) -> set[str]:
    return {w for t in texts for w in _WORD.findall(t.lower())} - _stop()


def persona_keywords(persona: list[str]) -> list[str]:
    """The persona's content words (stop words and words under 3 letters removed): the character's
    keywords, so the `persona_hits` style feature counts them in a reply."""
    return sorted(w for w in _words(persona) if len(w) > 2 and not w[0].isdigit())


def _profile(path: Path, row: int, d: dict, key: str) -> list[str] | None:
    v = d.get(key)
    if v is None:
        return None
    if not isinstance(v, list):
        raise RecordError(str(path), row, key, v, "a list of persona sentences")
    return [text_cell(path, row, f"{key}[{i}]", s) for i, s in enumerate(v)] or None


def _eval_score(path: Path, row: int, d: dict) -> int | None:
    v = need(path, row, d, "eval_score")
    return number_cell(path, row, "eval_score", v, integer=True, lo=1, hi=5, nullable=True)


def _profile_match(path: Path, row: int, d: dict) -> int | None:
    v = need(path, row, d, "profile_match")
    if v == "" or v is None:
        return None
    return number_cell(path, row, "profile_match", v, integer=True, lo=0, hi=1)


def load(path: str | Path, limit: int | None = None) -> Records:
    """Load data_intermediate.json and the exports (a file or the convai2 folder); `limit` = first N dialogues."""
    files = files_in(Path(path), ["*.json"], "ConvAI2 JSON dialogue files")
    chars: dict[str, dict] = {}
    contexts, inters, dialogues, dropped = [], [], [], []
    taken = 0
    for f in files:
        data = load_json_list(f)
        for row, d in enumerate(data):
            if limit is not None and taken >= limit:
                break
            taken += 1
            _dialogue(f, row, d, chars, contexts, inters, dialogues, dropped)
    if not inters:
        raise RecordError(str(path), None, "dialog", "no bot turns", "at least one bot turn in the dialogues")
    character = validate_frame(pd.DataFrame(list(chars.values())), CHARACTER, str(path))
    context = validate_frame(pd.DataFrame(contexts), CONTEXT, str(path))
    inter = pd.DataFrame(inters)
    for c in ("thumb", "eval_score", "profile_match", "turn_id"):
        inter[c] = pd.array(inter[c].tolist(), dtype="Int64")
    interaction = validate_frame(inter, INTERACTION, str(path))
    dlg = pd.DataFrame(dialogues)
    for c in ("eval_score", "profile_match"):
        dlg[c] = pd.array(dlg[c].tolist(), dtype="Int64")
    frames = {"character": character, "context": context, "interaction": interaction}
    labels = dialogue_labels(interaction)
    if len(labels):
        frames["label"] = validate_frame(labels, LABEL, str(path))
        used = set(labels["name"])
        frames["head"] = validate_frame(pd.DataFrame([h for h in HEADS if h["name"] in used]), HEAD, str(path))
    return Records({**frames, "dialogues": dlg, "dropped": dropped_frame(dropped)})


def dialogue_labels(interaction: pd.DataFrame) -> pd.DataFrame:
    """`rating` and `persona_match` labels on each bot turn of the dialogues that have them."""
    parts = []
    for col, name, lo, hi in LABELS:
        rows = interaction[interaction[col].notna()]
        parts.append(pd.DataFrame({"context_id": rows["context_id"], "response": rows["response"], "name": name,
                                   "value": rows[col].astype(float), "scale_min": lo, "scale_max": hi,
                                   "source": SOURCE, "dialogue_id": rows["dialogue_id"],
                                   "source_file": rows["source_file"]}))
    return pd.concat(parts, ignore_index=True)


def _dialogue(f: Path, row: int, d: dict, chars, contexts, inters, dialogues, dropped) -> None:
    if not isinstance(d, dict):
        raise RecordError(str(f), row, None, d, "a dialogue object")
    turns = need(f, row, d, "dialog")
    if not isinstance(turns, list):
        raise RecordError(str(f), row, "dialog", turns, "a list of turns")
    dialogue_id = d.get("dialog_id")
    if dialogue_id is None:
        dialogue_id = f"{f.stem}-{row}"
    else:
        dialogue_id = text_cell(f, row, "dialog_id", dialogue_id)
    eval_score = _eval_score(f, row, d)
    profile_match = _profile_match(f, row, d)
    bot_profile = _profile(f, row, d, "bot_profile")
    user_profile = _profile(f, row, d, "user_profile")

    parsed = []
    for i, t in enumerate(turns):
        where = f"dialog[{i}]"
        sender = text_cell(f, row, f"{where}.sender", need(f, row, t, "sender", where))
        text = text_cell(f, row, f"{where}.text", need(f, row, t, "text", where))
        tid = number_cell(f, row, f"{where}.id", t.get("id", i), integer=True)
        cls = t.get("sender_class")
        if cls is not None and cls not in ("Human", "Bot"):
            raise RecordError(str(f), row, f"{where}.sender_class", cls, "'Human' or 'Bot'")
        score = t.get("evaluation_score")
        if score is not None:
            score = number_cell(f, row, f"{where}.evaluation_score", score, integer=True, lo=0, hi=1)
            if cls == "Human":
                raise RecordError(str(f), row, f"{where}.evaluation_score", score, "null on a Human turn")
        parsed.append((tid, sender, text, cls, score))

    senders = {p[1] for p in parsed}
    scores = {}
    if parsed and all(p[3] is not None for p in parsed):
        bot_senders = {p[1] for p in parsed if p[3] == "Bot"}
        rule = "sender_class"
        is_bot = [p[3] == "Bot" for p in parsed]
        bot = ",".join(sorted(bot_senders)) or None
    else:
        if any(p[3] is not None for p in parsed):
            i = next(i for i, p in enumerate(parsed) if p[3] is None)
            raise RecordError(str(f), row, f"dialog[{i}].sender_class", None,
                              "a sender_class on every turn or on none")
        unknown = senders - {"participant1", "participant2"}
        if unknown:
            i = next(i for i, p in enumerate(parsed) if p[1] in unknown)
            raise RecordError(str(f), row, f"dialog[{i}].sender", parsed[i][1], "'participant1' or 'participant2'")
        bot, rule = "participant2", "default_participant2"
        if bot_profile:
            prof = _words(bot_profile)
            uprof = _words(user_profile or [])
            for p in ("participant1", "participant2"):
                ws = _words([t[2] for t in parsed if t[1] == p])
                scores[p] = len(ws & prof) - len(ws & uprof)
            rule = "profile_overlap"
            if scores["participant1"] > scores["participant2"]:
                bot = "participant1"
        is_bot = [p[1] == bot for p in parsed]

    character_id = NO_PROFILE
    if bot_profile:
        character_id = "convai2:" + stable_id(*bot_profile)
        chars.setdefault(character_id, {"character_id": character_id, "name": f"ConvAI2 persona {character_id[8:]}",
                                        "persona": bot_profile, "instructions": [],
                                        "keywords": persona_keywords(bot_profile)})
    else:
        chars.setdefault(NO_PROFILE, {"character_id": NO_PROFILE, "name": "ConvAI2 bot without a profile",
                                      "persona": [], "instructions": [], "keywords": []})
    policy = None
    p2 = d.get("participant2_id")
    p1 = d.get("participant1_id")
    for pid in (p1, p2):
        if isinstance(pid, dict) and pid.get("class") == "Bot" and isinstance(pid.get("user_id"), str):
            policy = pid["user_id"]
    policy = policy or f"convai2:{f.stem}"

    n_bot = 0
    n_thumbs = 0
    human_after = [0] * (len(parsed) + 1)
    for i in range(len(parsed) - 1, -1, -1):
        human_after[i] = human_after[i + 1] + (0 if is_bot[i] else 1)
    history: list[dict] = []
    for i, (tid, sender, text, cls, score) in enumerate(parsed):
        if is_bot[i]:
            n_bot += 1
            context_id = f"convai2:{dialogue_id}:{tid}"
            contexts.append({"context_id": context_id, "character_id": character_id, "history": list(history),
                             "traffic": "user", "prompt_type": "persona_chat",
                             "conversation_id": dialogue_id})
            thumb = None if score is None else (1 if score == 1 else -1)
            n_thumbs += thumb is not None
            later = human_after[i + 1]
            inters.append({"context_id": context_id, "response": text, "policy": policy,
                           "continued": later > 0, "thumb": thumb, "depth": float(later),
                           "eval_score": eval_score, "profile_match": profile_match,
                           "dialogue_id": dialogue_id, "turn_id": tid, "character_id": character_id,
                           "bot_sender": sender, "source_file": f.name})
        history.append({"role": "assistant" if is_bot[i] else "user", "content": text})

    dialogues.append({"dialogue_id": dialogue_id, "source_file": f.name, "source_row": row,
                      "n_turns": len(parsed), "n_bot_turns": n_bot, "n_thumbs": n_thumbs,
                      "bot_sender": bot, "bot_rule": rule, "overlap_p1": scores.get("participant1"),
                      "overlap_p2": scores.get("participant2"), "has_profile": bool(bot_profile),
                      "eval_score": eval_score, "profile_match": profile_match, "character_id": character_id})
    if n_bot == 0:
        dropped.append({"source_file": f.name, "row": row,
                        "reason": "no bot turn" if parsed else "empty dialogue"})
