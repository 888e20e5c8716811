"""Scoring throughput (replies/s) of rm_lab's batched reward-model scorer, side by side in one run with
(a) a plain per-reply Hugging Face loop and (b) sentence-transformers `encode` plus the same head.

Why: best-of-N and rejection sampling score many replies per prompt, so the scorer's speed bounds the
flywheel. All three read the same replies, the same packaged all-MiniLM-L6-v2 and the same heads, on the
same machine in one process, and each starts from the same (context, reply) rows: building the
`[CHAR] .. [CTX] .. [REPLY] ..` text and the style features is inside every timing. The embedding cache
is off: every reply is encoded.
Weights of the heads are random (throughput does not depend on them); the outputs are checked to agree.

Run: .venv/bin/python benchmarks/rm_scoring_throughput.py [--n 512] [--repeats 3] [--batch-size 64]
     [--backbone DIR (a local copy of the encoder; default: the packaged one)] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from rm_lab.features.style import FEATURES  # noqa: E402
from rm_lab.models import encoder_path, load_encoder  # noqa: E402
from rm_lab.reward.data import item_inputs, format_inputs, style_matrix  # noqa: E402
from rm_lab.reward.embed_cache import backbone_key  # noqa: E402
from rm_lab.reward.model import RewardModel, RewardNet, RMConfig  # noqa: E402
from rm_lab.world.simulate import WorldConfig, simulate  # noqa: E402

HEADS = ["preference", "continue", "thumb_up"]
MAX_LENGTH = 256


def world_replies(n: int, seed: int):
    recs = simulate(WorldConfig(n_contexts=n, n_preference_contexts=1, seed=seed))
    it = recs["interaction"].iloc[:n]
    ctx = recs["context"].set_index("context_id").loc[it["context_id"]].reset_index()
    return ctx, it["response"].tolist(), recs["character"]


def build_model(tok, enc, style: np.ndarray, seed: int, folder: Path) -> RewardModel:
    torch.manual_seed(seed)
    net = RewardNet(int(enc.config.hidden_size), HEADS)
    net.set_style_stats(style)
    cfg = RMConfig(backbone=None, backbone_key=backbone_key(folder, MAX_LENGTH), train_mode="frozen",
                   heads=HEADS, emb_dim=int(enc.config.hidden_size), hidden=256, n_layers=2, dropout=0.1,
                   max_length=MAX_LENGTH, card_max_tokens=96, reply_max_tokens=128, n_members=1, seeds=[seed],
                   style_features=list(FEATURES))
    return RewardModel(cfg, [net], tok, [enc])


def inputs(ctx, replies, chars, tok):
    cards, hists, kws = item_inputs(ctx["context_id"].tolist(), replies, ctx, chars)
    return format_inputs(cards, hists, replies, tok, MAX_LENGTH, 96, 128), kws


@torch.inference_mode()
def hf_loop(ctx, replies, chars, tok, enc, net) -> np.ndarray:
    """The textbook loop: one reply at a time through tokenizer, encoder, pooling and head."""
    texts, keywords = inputs(ctx, replies, chars, tok)
    device = next(enc.parameters()).device
    out = []
    for text, reply, kw in zip(texts, replies, keywords):
        batch = tok(text, truncation=True, max_length=MAX_LENGTH, return_tensors="pt").to(device)
        h = enc(**batch).last_hidden_state
        m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
        e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=1).cpu()
        st = torch.from_numpy(style_matrix([reply], [kw]).copy())
        out.append(net(e, st)["preference"].item())
    return np.array(out)


@torch.inference_mode()
def st_encode(st_model, ctx, replies, chars, tok, net, batch_size: int) -> np.ndarray:
    texts, keywords = inputs(ctx, replies, chars, tok)
    e = st_model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_tensor=True,
                        show_progress_bar=False).float().cpu()
    st = torch.as_tensor(style_matrix(replies, keywords))
    return torch.cat([net(e[i:i + batch_size], st[i:i + batch_size])["preference"]
                      for i in range(0, len(texts), batch_size)]).numpy()


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=512, help="replies to score")
    p.add_argument("--repeats", type=int, default=3, help="best of this many runs per method")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backbone", default=None, help="a local copy of all-MiniLM-L6-v2 (default: the packaged one)")
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    from sentence_transformers import SentenceTransformer

    folder = Path(a.backbone) if a.backbone else encoder_path()
    ctx, replies, chars = world_replies(a.n, a.seed)
    tok, enc = load_encoder(a.backbone)
    enc = enc.float().to(a.device).eval()  # a carried float16 copy is scored in float32 like the packaged one
    texts, kws = inputs(ctx, replies, chars, tok)
    model = build_model(tok, enc, style_matrix(replies, kws), a.seed, folder)
    net = model.members[0]
    st_model = SentenceTransformer(str(folder), device=a.device).float()
    st_model.max_seq_length = MAX_LENGTH
    n_tokens = sum(len(x) for x in tok(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"])

    runs = {"rm_lab batched scorer": lambda: model.score(ctx, replies, chars, batch_size=a.batch_size)["score"],
            "plain HF per-reply loop": lambda: hf_loop(ctx, replies, chars, tok, enc, net),
            "sentence-transformers encode + same head": lambda: st_encode(st_model, ctx, replies, chars, tok, net,
                                                                          a.batch_size)}
    best = {k: float("inf") for k in runs}
    outs = {}
    for _ in range(a.repeats):  # interleaved, so a slow spell on a shared machine hits every method
        for name, fn in runs.items():
            s, outs[name] = timed(fn)
            best[name] = min(best[name], s)
    ref = outs["rm_lab batched scorer"]
    agree = {k: float(np.max(np.abs(v - ref))) for k, v in outs.items()}
    rate = {k: a.n / s for k, s in best.items()}
    ours = rate["rm_lab batched scorer"]
    dev = torch.cuda.get_device_name(0) if a.device.startswith("cuda") else "CPU"
    print(f"{dev}: {a.n} replies ({n_tokens / a.n:.0f} tokens each on average, max_length {MAX_LENGTH}), batch size "
          f"{a.batch_size}, best of {a.repeats}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.machine()} CPython {platform.python_version()}, {os.cpu_count()} cores")
    print(f"{'method':45s} {'seconds':>8s} {'replies/s':>10s} {'rm_lab ratio':>13s} {'max |score diff|':>17s}")
    for k in runs:
        print(f"{k:45s} {best[k]:8.2f} {rate[k]:10.1f} {ours / rate[k]:12.2f}x {agree[k]:17.2e}")
    ratios = {"vs_hf_loop": ours / rate["plain HF per-reply loop"],
              "vs_sentence_transformers": ours / rate["sentence-transformers encode + same head"]}
    print(f"ratios: rm_lab / HF loop = {ratios['vs_hf_loop']:.2f}x (target >= 5), rm_lab / sentence-transformers = "
          f"{ratios['vs_sentence_transformers']:.2f}x (target >= 1)")
    return {"replies_per_s": rate, "seconds": best, "ratios": ratios, "max_abs_diff": agree}


if __name__ == "__main__":
    main()
