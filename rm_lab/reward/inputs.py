"""What the reward model reads: encoder embeddings of several views of a (context, reply), assembled
into one input vector for the heads.

Views (`inputs` in train-rm's config), in the order they are concatenated:

- `joint`: one embedding of `[CHAR] card [CTX] conversation [REPLY] reply` (encoded per reply);
- `context`: the same text without the reply (the character card and the conversation so far);
- `reply`: the reply alone;
- `product`: context ⊙ reply, elementwise, so a small head can read their agreement dimension by dimension;
- `relevance`: cosine(user's last turn, reply) and cosine(context, reply): is the reply on topic?
- `conversation`: where the reply sits in the conversation (log turns so far, log user turns, log words
  of the history and of the user's last turn, first-turn flag); no encoder pass, these join the
  standardised style features.

Why views rather than the one joint embedding: a mean-pooled embedding of the concatenated text hides
whether the reply answers what the user said (on Predictive Engagement the joint model scored 0.31
Spearman, the same network with the relevance cosine 0.49); and a best-of-N or rejection-sampling
step scores many replies per context, so with context and reply encoded apart each context (and
each user turn) is encoded once per call, not once per reply. The default is `reply`, `relevance`,
`conversation`: the card and the conversation reach the heads through the cosines and the
conversation features, the reply through its own embedding.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from rm_lab.config import ConfigError

VIEWS = ("joint", "context", "reply", "product", "relevance", "conversation")
# measured best on the simulated world (Spearman 0.897 vs 0.875 with context + product added) and on
# ConvAI2 (reports/reward_realdata.md); the context and product views add 768 inputs that small data overfit
DEFAULT_INPUTS = ("reply", "relevance", "conversation")
TEXT_VIEWS = ("joint", "context", "reply", "turn")  # what the encoder reads
N_RELEVANCE = 2
_NEEDS = {"joint": ("joint",), "context": ("context",), "reply": ("reply",), "product": ("context", "reply"),
          "relevance": ("context", "reply", "turn"), "conversation": ()}
CONVERSATION_FEATURES = ("conv_log_turns", "conv_log_user_turns", "conv_log_history_words", "conv_log_user_words",
                         "conv_first_turn")


def check_inputs(inputs: Sequence[str]) -> list[str]:
    inputs = list(inputs)
    unknown = [v for v in inputs if v not in VIEWS]
    if unknown or not inputs:
        raise ConfigError(f"inputs: {inputs or '[]'} {'has unknown ' + str(unknown) if unknown else 'is empty'}; "
                          f"choose from {list(VIEWS)} (default {list(DEFAULT_INPUTS)})")
    return [v for v in VIEWS if v in inputs]  # canonical order: the weights depend on it


def text_views(inputs: Sequence[str]) -> list[str]:
    """The texts the encoder must read for these inputs."""
    need = {t for v in inputs for t in _NEEDS[v]}
    return [t for t in TEXT_VIEWS if t in need]


def input_dim(emb_dim: int, inputs: Sequence[str]) -> int:
    """Width of the embedding side (the tabular side is `tabular_names`)."""
    return sum(N_RELEVANCE if v == "relevance" else 0 if v == "conversation" else emb_dim for v in inputs)


def tabular_names(inputs: Sequence[str]) -> list[str]:
    """The standardised tabular columns: the style features, then the conversation features if asked for."""
    from rm_lab.features.style import FEATURES

    return list(FEATURES) + (list(CONVERSATION_FEATURES) if "conversation" in inputs else [])


def conversation_features(history) -> list[float]:
    turns = [t for t in (history if history is not None else []) if isinstance(t, dict)]
    users = [t for t in turns if t.get("role") == "user"]
    words = lambda s: len(str(s or "").split())  # noqa: E731
    return [float(np.log1p(len(turns))), float(np.log1p(len(users))),
            float(np.log1p(sum(words(t.get("content")) for t in turns))), float(np.log1p(words(last_user_turn(turns)))),
            float(len(users) <= 1)]


def assemble(emb: dict[str, torch.Tensor], inputs: Sequence[str]) -> torch.Tensor:
    """One input row per item from L2-normalised view embeddings (cosines are dot products)."""
    parts = []
    for v in inputs:
        if v == "product":
            parts.append(emb["context"] * emb["reply"])
        elif v == "conversation":
            continue
        elif v == "relevance":
            parts.append(torch.stack([(emb["turn"] * emb["reply"]).sum(-1),
                                      (emb["context"] * emb["reply"]).sum(-1)], dim=-1))
        else:
            parts.append(emb[v])
    return torch.cat(parts, dim=-1)


def assemble_np(emb: dict[str, np.ndarray], inputs: Sequence[str]) -> np.ndarray:
    return assemble({k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in emb.items()},
                    inputs).numpy()


def last_user_turn(history) -> str:
    for t in reversed(list(history if history is not None else [])):
        if isinstance(t, dict) and t.get("role") == "user":
            return str(t.get("content") or "")
    return ""


@dataclass
class ItemTexts:
    """Encoder texts of each item, per text view. Contexts and user turns are stored once per
    context (`*_index` maps items to them), so a reply set sharing contexts encodes each context once."""

    views: list[str]
    reply: list[str]
    joint: list[str] | None
    context: list[str]
    turn: list[str]
    context_index: np.ndarray
    conversation: np.ndarray | None = None  # (n_contexts, len(CONVERSATION_FEATURES)) when asked for

    def __len__(self) -> int:
        return len(self.reply)

    def per_item(self, view: str) -> list[str]:
        if view in ("context", "turn"):
            u = getattr(self, view)
            return [u[i] for i in self.context_index]
        return list(getattr(self, view))

    def tabular(self, style: np.ndarray) -> np.ndarray:
        """The style matrix, with the conversation features of each item's context appended if asked for."""
        if self.conversation is None:
            return np.asarray(style, np.float32)
        return np.c_[style, self.conversation[self.context_index]].astype(np.float32)

    def unique_texts(self) -> list[str]:
        """Every distinct text any needed view reads (one encoder call can embed them all)."""
        out: dict[str, None] = {}
        for v in self.views:
            out.update(dict.fromkeys(getattr(self, v)))
        return list(out)

    def digest(self) -> str:
        h = hashlib.sha1("|".join(self.views).encode())
        for v in self.views:
            for t in self.per_item(v):
                h.update(t.encode("utf-8", "surrogatepass") + b"\x1e")
        return h.hexdigest()


class _TextMemo:
    """Formatted context texts by (tokenizer, budgets, card, history), least recently used dropped first.

    Why: the context view's text is cut to a token budget, which tokenises the whole conversation so far; on
    ConvAI2 (a context per bot turn, histories up to ~20 turns) that was a quarter of a cross-validation fold,
    and every fold's training side and every scoring call formats the same contexts again."""

    def __init__(self, size: int = 200_000):
        from collections import OrderedDict

        self.size, self.store = size, OrderedDict()

    def get(self, keys: list, compute: Callable[[list[int]], list[str]]) -> list[str]:
        todo = [i for i, k in enumerate(keys) if k not in self.store]
        if todo:
            for i, text in zip(todo, compute(todo)):
                self.store[keys[i]] = text
        out = []
        for k in keys:
            self.store.move_to_end(k)
            out.append(self.store[k])
        while len(self.store) > self.size:
            self.store.popitem(last=False)
        return out


_CONTEXT_TEXTS = _TextMemo()


def tokenizer_key(tokenizer) -> tuple | None:
    """What identifies a tokenizer's cuts: its source folder, class and vocabulary size (None: no folder, e.g.
    a stand-in built in code; its texts are not memoised)."""
    path = getattr(tokenizer, "name_or_path", None)
    if not path:
        return None
    return (str(path), type(tokenizer).__name__, getattr(tokenizer, "vocab_size", None))


def context_texts(cards: list[str], hists: list[str], tokenizer, max_length: int, card_max_tokens: int) -> list[str]:
    """The context view's text of each (card, history): `format_inputs` without a reply, memoised."""
    from rm_lab.reward.data import format_inputs

    def compute(idx: list[int]) -> list[str]:
        return format_inputs([cards[i] for i in idx], [hists[i] for i in idx], [""] * len(idx), tokenizer,
                             max_length, card_max_tokens, 0)

    tk = tokenizer_key(tokenizer)
    if tk is None:
        return compute(list(range(len(cards))))
    return _CONTEXT_TEXTS.get([(tk, max_length, card_max_tokens, c, h) for c, h in zip(cards, hists)], compute)


def item_texts(context_ids, replies, contexts: pd.DataFrame, characters: pd.DataFrame, tokenizer,
               inputs: Sequence[str], max_length: int = 256, card_max_tokens: int = 96,
               reply_max_tokens: int = 128) -> tuple[ItemTexts, list]:
    """Texts of every needed view, and each item's character keywords (for the style features)."""
    from rm_lab.reward.data import format_inputs, item_inputs

    views = text_views(inputs)
    context_ids, replies = [str(c) for c in context_ids], [str(r) for r in replies]
    uniq = list(dict.fromkeys(context_ids))
    pos = {c: i for i, c in enumerate(uniq)}
    cards, hists, kws_u = item_inputs(uniq, [""] * len(uniq), contexts, characters)
    kw_of = dict(zip(uniq, kws_u))
    joint = None
    if "joint" in views:
        cards_i = [cards[pos[c]] for c in context_ids]
        hists_i = [hists[pos[c]] for c in context_ids]
        joint = format_inputs(cards_i, hists_i, replies, tokenizer, max_length, card_max_tokens, reply_max_tokens)
    ctx_texts = context_texts(cards, hists, tokenizer, max_length, card_max_tokens) if "context" in views else []
    hist_col = contexts.drop_duplicates("context_id").set_index("context_id").loc[uniq, "history"]
    turns = [last_user_turn(h) for h in hist_col] if "turn" in views else []
    conv = None
    if "conversation" in inputs:
        conv = np.array([conversation_features(h) for h in hist_col], np.float32).reshape(len(uniq), -1)
    texts = ItemTexts(views, replies, joint, ctx_texts, turns, np.array([pos[c] for c in context_ids], dtype=np.int64),
                      conv)
    return texts, [kw_of[c] for c in context_ids]


def embed_views(texts: ItemTexts, embed_fn: Callable[[list[str]], np.ndarray]) -> dict[str, np.ndarray]:
    """Per-item embeddings of each text view, every distinct text encoded once in one call."""
    uniq = texts.unique_texts()
    pos = {t: i for i, t in enumerate(uniq)}
    emb = np.asarray(embed_fn(uniq), dtype=np.float32) if uniq else np.zeros((0, 0), np.float32)
    out = {}
    for v in texts.views:
        u = getattr(texts, v)
        rows = emb[[pos[t] for t in u]] if u else np.zeros((0, emb.shape[1] if emb.ndim == 2 else 0), np.float32)
        out[v] = rows[texts.context_index] if v in ("context", "turn") else rows
    return out


def features(texts: ItemTexts, embed_fn: Callable[[list[str]], np.ndarray], inputs: Sequence[str]) -> np.ndarray:
    """The assembled (n_items, input_dim) matrix the heads read."""
    return assemble_np(embed_views(texts, embed_fn), inputs)


def token_views(texts: ItemTexts, tokenizer, max_length: int) -> dict[str, list[list[int]]]:
    """Per-item token ids of each text view, for training with gradients through the encoder."""
    out = {}
    for v in texts.views:
        u = getattr(texts, v)
        ids = tokenizer(list(u), truncation=True, max_length=max_length)["input_ids"] if u else []
        out[v] = [ids[i] for i in texts.context_index] if v in ("context", "turn") else ids
    return out

