"""Embedding cache for frozen-backbone training: an encoder pass is the only slow step on CPU.

Keys are sha1(backbone key + text); the backbone key hashes the encoder folder, its config and
weight sizes and the pooling/max_length, so a different backbone never reads stale vectors. Each
`get` that computes new vectors writes them as one new shard file, atomically (temp + rename), so a
killed job leaves either a whole shard or none, and concurrent writers never clobber each other.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from rm_lab.io import atomic_path

POOLING = "mean-l2"


def backbone_key(folder: str | Path, max_length: int) -> str:
    folder = Path(folder).resolve()
    h = hashlib.sha1(f"{folder}|{max_length}|{POOLING}".encode())
    cfg = folder / "config.json"
    if cfg.is_file():
        h.update(cfg.read_bytes())
    for p in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        h.update(f"{p.name}:{p.stat().st_size}".encode())
    return f"{folder.name}-{h.hexdigest()[:12]}"


def default_cache_root() -> Path:
    from rm_lab.models import cache_root

    return cache_root() / "embeddings"


class EmbeddingCache:
    def __init__(self, root: str | Path, key: str):
        self.dir = Path(root) / key
        self.key = key
        self._mem: dict[str, np.ndarray] = {}
        self._loaded: set[str] = set()

    def _hash(self, text: str) -> str:
        return hashlib.sha1(f"{self.key}\0{text}".encode("utf-8", "surrogatepass")).hexdigest()

    def _load(self) -> None:
        if not self.dir.is_dir():
            return
        for p in sorted(self.dir.glob("shard-*.npz")):
            if p.name in self._loaded:
                continue
            with np.load(p) as z:
                for k, v in zip(z["keys"], z["emb"]):
                    self._mem[str(k)] = v
            self._loaded.add(p.name)

    def lookup(self, texts: Sequence[str]) -> list[np.ndarray | None]:
        """The cached embedding of each of `texts` (None where not cached); reads shards, never writes."""
        self._load()
        return [self._mem.get(self._hash(t)) for t in texts]

    def get(self, texts: Sequence[str], compute: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        """Embeddings of `texts` (in order); computes and stores only the ones not cached yet."""
        self._load()
        keys = [self._hash(t) for t in texts]
        todo = list(dict.fromkeys(k for k in keys if k not in self._mem))
        if todo:
            first = {}
            for k, t in zip(keys, texts):
                first.setdefault(k, t)
            new = np.asarray(compute([first[k] for k in todo]), dtype=np.float32)
            for k, v in zip(todo, new):
                self._mem[k] = v
            self.dir.mkdir(parents=True, exist_ok=True)
            name = f"shard-{os.getpid()}-{secrets.token_hex(6)}.npz"
            with atomic_path(self.dir / name) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, keys=np.array(todo, dtype="U40"), emb=new)
            self._loaded.add(name)
        if not keys:
            return np.zeros((0, 0), np.float32)
        return np.stack([self._mem[k] for k in keys])
