"""New logs from the world: what users did after a policy's replies, as canonical records.

Between generations the reward model is a local map around the policies that wrote its data. When the
policy moves, the map must be redrawn where it now is: the new replies are shown to simulated users
(the same population `simulate` draws from, so the same hidden engagement and, when planted, the same
emoji confound) and their signals are logged as interactions and steer labels, exactly as `simulate`
logs the scripted policies' replies (`rm_lab.world.simulate.user_signals`). `merge_logs` joins log
folders into one bundle for a reward-model refresh (train-rm on a list of folders would give each
folder its own head instead).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from rm_lab import io
from rm_lab.schema import Records, validate_frame

KINDS = ("character", "context", "interaction", "preference", "steer_label")
_IDS = {"character": ["character_id"], "context": ["context_id"]}


def population(world_version: int = 2, spurious_emoji: bool = False):
    from rm_lab.world.engagement import Population

    return Population(world_version=world_version, spurious_emoji=spurious_emoji)


def log_replies(replies: Sequence[str], contexts: pd.DataFrame, characters: pd.DataFrame, policy: str,
                seed: int, world_version: int = 2, spurious_emoji: bool = False) -> Records:
    """One logged interaction per (context, reply) with fresh users' signals, plus the steer labels."""
    from rm_lab.world.characters import HARD_INSTRUCTIONS
    from rm_lab.world.engagement import SEGMENTS, score_replies
    from rm_lab.world.simulate import user_signals

    replies = [str(r) for r in replies]
    contexts = contexts.reset_index(drop=True)
    if len(replies) != len(contexts):
        raise ValueError(f"log_replies: {len(replies)} replies for {len(contexts)} contexts")
    pop = population(world_version, spurious_emoji)
    rng = np.random.default_rng(seed)
    n = len(contexts)
    seg = rng.choice(len(SEGMENTS), size=n, p=np.array(pop.shares))
    u = rng.normal(0.0, pop.latent_sd, n)
    scored = score_replies(replies, contexts, characters, pop)
    inter = pd.DataFrame({"context_id": contexts["context_id"].astype(str), "response": replies, "policy": policy,
                          **user_signals(scored, seg, u, pop, rng)})
    steer = pd.DataFrame([{"context_id": cid, "response": r, "instruction_id": iid, "followed": bool(ok),
                           "violation": (not ok) and iid in HARD_INSTRUCTIONS}
                          for cid, r, ids, fol in zip(contexts["context_id"], replies, scored.instruction_ids,
                                                      scored.followed) for iid, ok in zip(ids, fol)],
                         columns=["context_id", "response", "instruction_id", "followed", "violation"])
    chars = characters[characters["character_id"].isin(set(contexts["character_id"]))].reset_index(drop=True)
    return Records({"character": validate_frame(chars, "character"),
                    "context": validate_frame(contexts, "context"),
                    "interaction": validate_frame(inter, "interaction"),
                    "steer_label": validate_frame(steer, "steer_label")})


def write_records(records: Records, folder: str | Path) -> Path:
    folder = Path(folder)
    for name, df in records.frames.items():
        io.write_records(df, folder / f"{name}.parquet", name)
    return folder


def merge_logs(folders: Sequence[str | Path]) -> Records:
    """Every record of the folders in one bundle; a character or context in several folders is kept once."""
    parts: dict[str, list[pd.DataFrame]] = {}
    for folder in folders:
        recs = io.read_record_folder(folder, kinds=KINDS)
        for k in KINDS:
            if k in recs:
                parts.setdefault(k, []).append(recs[k])
    frames = {}
    for k, dfs in parts.items():
        df = pd.concat(dfs, ignore_index=True)
        if k in _IDS:
            df = df.drop_duplicates(_IDS[k], keep="first")
        frames[k] = validate_frame(df.reset_index(drop=True), k)
    return Records(frames)
