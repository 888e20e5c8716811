"""Scoring throughput (replies/s) of rm_lab's batched reward-model scorer, side by side in one run with
(a) a plain per-reply Hugging Face loop and (b) sentence-transformers `encode` plus the same head.

Why: best-of-N and rejection sampling score N candidate replies per prompt, so the scorer's speed bounds
the flywheel. The workload is that: `--contexts` simulated-world contexts with `--per-context` candidate
replies each (written by the world's scripted policies). All methods read the same rows, the same
packaged all-MiniLM-L6-v2, the same model inputs (`rm_lab.reward.inputs`: context, reply, their
product, relevance cosines, by default) and the same heads, in one process; building the texts and the
style features is inside every timing. The embedding cache is off: every text is encoded.

- rm_lab: `RewardModel.score` (each distinct context and user turn encoded once per call, texts
  batched by token length);
- plain HF loop: per reply, tokenizer -> encoder -> mean pool for each text the reply's score needs,
  then the head, one reply at a time (no batching, no reuse across replies);
- sentence-transformers, two ways: `encode` of every row's texts (the direct port), and `encode` of
  exactly the distinct texts rm_lab encodes (the peer given rm_lab's de-duplication for free).
Weights of the heads are random (throughput does not depend on them); the outputs are checked to agree.

Run: .venv/bin/python benchmarks/rm_scoring_throughput.py [--contexts 64] [--per-context 8] [--repeats 3]
     [--batch-size 64] [--inputs joint] [--backbone DIR] [--device cuda]
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

from rm_lab.models import encoder_path, load_encoder  # noqa: E402
from rm_lab.reward.data import style_matrix  # noqa: E402
from rm_lab.reward.embed_cache import backbone_key  # noqa: E402
from rm_lab.reward.inputs import (DEFAULT_INPUTS, assemble, check_inputs, input_dim, item_texts,  # noqa: E402
                                  tabular_names)
from rm_lab.reward.model import RewardModel, RewardNet, RMConfig  # noqa: E402
from rm_lab.world.policies import PRESETS, ScriptedPolicy  # noqa: E402
from rm_lab.world.simulate import WorldConfig, simulate  # noqa: E402

HEADS = ["preference", "continue", "thumb_up"]
MAX_LENGTH = 256


def best_of_n_rows(n_contexts: int, per_context: int, seed: int):
    """`per_context` candidate replies for each of `n_contexts` contexts, from the scripted policies."""
    recs = simulate(WorldConfig(n_contexts=n_contexts, n_preference_contexts=1, seed=seed))
    ctx = recs["context"].drop_duplicates("context_id").iloc[:n_contexts].reset_index(drop=True)
    names = sorted(PRESETS)
    cands = [ScriptedPolicy.preset(names[j % len(names)]).respond(ctx, recs["character"], seed=seed + j)
             for j in range(per_context)]
    rows = ctx.loc[np.repeat(np.arange(len(ctx)), per_context)].reset_index(drop=True)
    replies = [cands[j][i] for i in range(len(ctx)) for j in range(per_context)]
    return rows, replies, recs["character"]


def build_model(tok, enc, style: np.ndarray, seed: int, folder: Path, inputs: list[str]) -> RewardModel:
    torch.manual_seed(seed)
    emb_dim = int(enc.config.hidden_size)
    net = RewardNet(input_dim(emb_dim, inputs), HEADS, len(tabular_names(inputs)))
    net.set_style_stats(style)
    cfg = RMConfig(backbone=None, backbone_key=backbone_key(folder, MAX_LENGTH), train_mode="frozen",
                   heads=HEADS, emb_dim=emb_dim, hidden=256, n_layers=2, dropout=0.1,
                   max_length=MAX_LENGTH, card_max_tokens=96, reply_max_tokens=128, n_members=1, seeds=[seed],
                   style_features=tabular_names(inputs), inputs=inputs)
    return RewardModel(cfg, [net], tok, [enc])


def texts_of(ctx, replies, chars, tok, inputs):
    return item_texts(ctx["context_id"].tolist(), replies, ctx, chars, tok, inputs, MAX_LENGTH, 96, 128)


@torch.inference_mode()
def hf_loop(ctx, replies, chars, tok, enc, net, inputs) -> np.ndarray:
    """The textbook loop: one reply at a time, every text it needs through tokenizer, encoder, pooling."""
    texts, keywords = texts_of(ctx, replies, chars, tok, inputs)
    per_view = {v: texts.per_item(v) for v in texts.views}
    device = next(enc.parameters()).device
    out = []
    for i, (reply, kw) in enumerate(zip(replies, keywords)):
        views = {}
        conv = texts.conversation[texts.context_index[i]][None] if texts.conversation is not None else None
        for v, col in per_view.items():
            batch = tok(col[i], truncation=True, max_length=MAX_LENGTH, return_tensors="pt").to(device)
            h = enc(**batch).last_hidden_state
            m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
            views[v] = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=1).cpu()
        st = style_matrix([reply], [kw])
        st = torch.from_numpy(np.c_[st, conv].astype(np.float32) if conv is not None else st.copy())
        out.append(net(assemble(views, inputs), st)["preference"].item())
    return np.array(out)


@torch.inference_mode()
def st_encode(st_model, ctx, replies, chars, tok, net, inputs, batch_size: int, distinct: bool) -> np.ndarray:
    """sentence-transformers `encode` + the same head: of every row's texts, or of the distinct ones."""
    texts, keywords = texts_of(ctx, replies, chars, tok, inputs)
    views = {}
    if distinct:
        uniq = texts.unique_texts()
        pos = {t: i for i, t in enumerate(uniq)}
        e = st_model.encode(uniq, batch_size=batch_size, normalize_embeddings=True, convert_to_tensor=True,
                            show_progress_bar=False).float().cpu()
        for v in texts.views:
            views[v] = e[[pos[t] for t in texts.per_item(v)]]
    else:
        for v in texts.views:
            views[v] = st_model.encode(texts.per_item(v), batch_size=batch_size, normalize_embeddings=True,
                                       convert_to_tensor=True, show_progress_bar=False).float().cpu()
    x = assemble(views, inputs)
    st = torch.as_tensor(texts.tabular(style_matrix(replies, keywords)))
    return torch.cat([net(x[i:i + batch_size], st[i:i + batch_size])["preference"]
                      for i in range(0, len(x), batch_size)]).numpy()


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contexts", type=int, default=64, help="distinct contexts (prompts)")
    p.add_argument("--per-context", type=int, default=8, help="candidate replies per context (best-of-N's N)")
    p.add_argument("--repeats", type=int, default=3, help="best of this many runs per method")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--inputs", nargs="+", default=list(DEFAULT_INPUTS), help="the model's encoder views")
    p.add_argument("--backbone", default=None, help="a local copy of all-MiniLM-L6-v2 (default: the packaged one)")
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    from sentence_transformers import SentenceTransformer

    inputs = check_inputs(a.inputs)
    folder = Path(a.backbone) if a.backbone else encoder_path()
    ctx, replies, chars = best_of_n_rows(a.contexts, a.per_context, a.seed)
    n = len(replies)
    tok, enc = load_encoder(a.backbone)
    enc = enc.float().to(a.device).eval()  # a carried float16 copy is scored in float32 like the packaged one
    texts, kws = texts_of(ctx, replies, chars, tok, inputs)
    model = build_model(tok, enc, texts.tabular(style_matrix(replies, kws)), a.seed, folder, inputs)
    net = model.members[0]
    st_model = SentenceTransformer(str(folder), device=a.device).float()
    st_model.max_seq_length = MAX_LENGTH
    tok_len = lambda t: sum(len(x) for x in tok(t, truncation=True, max_length=MAX_LENGTH)["input_ids"])  # noqa: E731
    per_row_tokens = sum(tok_len(texts.per_item(v)) for v in texts.views)
    distinct_tokens = tok_len(texts.unique_texts())

    runs = {"rm_lab batched scorer": lambda: model.score(ctx, replies, chars, batch_size=a.batch_size)["score"],
            "plain HF per-reply loop": lambda: hf_loop(ctx, replies, chars, tok, enc, net, inputs),
            "sentence-transformers encode (every row's texts) + same head":
                lambda: st_encode(st_model, ctx, replies, chars, tok, net, inputs, a.batch_size, False),
            "sentence-transformers encode (distinct texts) + same head":
                lambda: st_encode(st_model, ctx, replies, chars, tok, net, inputs, a.batch_size, True)}
    best = {k: float("inf") for k in runs}
    outs = {}
    for _ in range(a.repeats):  # interleaved, so a slow spell on a shared machine hits every method
        for name, fn in runs.items():
            s, outs[name] = timed(fn)
            best[name] = min(best[name], s)
    ref = outs["rm_lab batched scorer"]
    agree = {k: float(np.max(np.abs(v - ref))) for k, v in outs.items()}
    rate = {k: n / s for k, s in best.items()}
    ours = rate["rm_lab batched scorer"]
    dev = torch.cuda.get_device_name(0) if a.device.startswith("cuda") else "CPU"
    print(f"{dev}: {a.contexts} contexts x {a.per_context} replies = {n} replies; inputs {inputs}; encoder tokens "
          f"{per_row_tokens} per-row vs {distinct_tokens} distinct (max_length {MAX_LENGTH}); batch size "
          f"{a.batch_size}, best of {a.repeats}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.machine()} CPython {platform.python_version()}, {os.cpu_count()} cores")
    print(f"{'method':62s} {'seconds':>8s} {'replies/s':>10s} {'rm_lab ratio':>13s} {'max |score diff|':>17s}")
    for k in runs:
        print(f"{k:62s} {best[k]:8.2f} {rate[k]:10.1f} {ours / rate[k]:12.2f}x {agree[k]:17.2e}")
    ratios = {"vs_hf_loop": ours / rate["plain HF per-reply loop"],
              "vs_sentence_transformers": ours / rate["sentence-transformers encode (every row's texts) + same head"],
              "vs_sentence_transformers_distinct": ours / rate["sentence-transformers encode (distinct texts) + same head"]}
    print(f"ratios: rm_lab / HF loop = {ratios['vs_hf_loop']:.2f}x (target >= 5); rm_lab / sentence-transformers = "
          f"{ratios['vs_sentence_transformers']:.2f}x on every row's texts, "
          f"{ratios['vs_sentence_transformers_distinct']:.2f}x on the distinct texts (target >= 1)")
    return {"replies_per_s": rate, "seconds": best, "ratios": ratios, "max_abs_diff": agree,
            "tokens": {"per_row": per_row_tokens, "distinct": distinct_tokens}}


if __name__ == "__main__":
    main()
