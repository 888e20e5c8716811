"""Rollout throughput of the generation engines: `vllm` vs `hf` at its best batching, best-of-N.

Why: best-of-N, rejection sampling and GRPO spend most of their time sampling; the engine bounds how
many candidates a flywheel generation can afford. The workload is the issue's: best-of-8 on 32
simulated-world prompts x 64 new tokens with SmolLM2-135M in float32 (16,384 tokens), EOS ignored so
every engine generates exactly the same number of tokens.

Both engines stay up and the timed runs alternate between them (`--repeats` rounds, the order flipped
every round), so a machine that other jobs load slows both alike; the median per engine is reported, with
the load average at each run. `--threads T` gives both engines T threads (torch's pool here, the vLLM-CPU
worker's OpenMP pool, unpinned).

Reported per engine: tokens/s (median over the rounds), the engine's start seconds (paid once per job),
and the share of this machine's measured fp32 matmul throughput the rollout reaches (model FLOPs per
generated token: 2 x the matmul parameters + the attention over the context, as nanoGPT's MFU). The hf
engine is first probed at several batch sizes (`--hf-batch-rows`) with 16 new tokens; the full run
uses the fastest (one value, e.g. `--hf-batch-rows 128`, skips the probe). Then best-of-8 end to end (generate with EOS + score the 8 replies with the reward
model, random heads over the packaged MiniLM unless `--reward-model RUN_DIR`): replies/s.

vLLM spawns workers: this script creates it under `if __name__ == "__main__":`. On CPU set nothing:
the engine sets VLLM_CPU_NUM_OF_RESERVED_CPU=0.

Run: .venv/bin/python benchmarks/rollout_engines.py [--engines hf vllm] [--prompts 32] [--n 8]
     [--new-tokens 64] [--hf-batch-rows 64 128 256] [--repeats 3] [--threads T] [--device cpu|cuda]
     [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
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
sys.path.insert(0, str(ROOT / "benchmarks"))


def matmul_gflops(device: str = "cpu", size: int = 1024, seconds: float = 3.0) -> float:
    """Measured fp32 GEMM throughput (GFLOP/s) with torch's current thread settings."""
    import torch

    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    for _ in range(3):
        a @ b
    best = 0.0
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        if device != "cpu":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(5):
            a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        best = max(best, 5 * 2 * size ** 3 / (time.perf_counter() - t0) / 1e9)
    return best


def flops_per_token(config, mean_context: float) -> float:
    """2 x matmul parameters (the LM head included, tied or not) + attention scores and values."""
    h, L = config.hidden_size, config.num_hidden_layers
    heads, kv = config.num_attention_heads, getattr(config, "num_key_value_heads", config.num_attention_heads)
    hd = getattr(config, "head_dim", None) or h // heads
    inter, V = config.intermediate_size, config.vocab_size
    per_layer = h * heads * hd + 2 * h * kv * hd + heads * hd * h + 3 * h * inter
    matmul_params = L * per_layer + h * V
    attention = L * 2 * 2 * heads * hd * mean_context
    return 2 * matmul_params + attention


def workload(n_prompts: int, seed: int = 0):
    from rm_lab.policy.prompts import conversations
    from rm_lab.world.characters import make_characters
    from rm_lab.world.contexts import make_contexts

    chars = make_characters(8, seed=seed)
    ctx = make_contexts(chars, n_prompts, traffic_share_user=1.0, seed=seed + 1, prefix="bench")
    return ctx, chars, conversations(ctx, chars)


def time_generate(engine, convs, cfg, repeats: int) -> tuple[float, list]:
    best, groups = float("inf"), None
    for r in range(repeats):
        t0 = time.perf_counter()
        groups = engine.generate(convs, cfg.with_(seed=r))
        best = min(best, time.perf_counter() - t0)
    return best, groups


def load_reward_model(path: str | None, ctx, chars):
    if path:
        from rm_lab.reward.model import RewardModel

        return RewardModel.load(path)
    from rm_scoring_throughput import build_model, texts_of  # a random-head model over the packaged MiniLM

    from rm_lab.models import encoder_path, load_encoder
    from rm_lab.reward.data import style_matrix
    from rm_lab.reward.inputs import DEFAULT_INPUTS

    tok, enc = load_encoder()
    inputs = list(DEFAULT_INPUTS)
    probe = ["Ahoy matey, what a day at sea!"] * len(ctx)
    texts, kws = texts_of(ctx, probe, chars, tok, inputs)
    return build_model(tok, enc, texts.tabular(style_matrix(probe, kws)), 0, encoder_path(), inputs)


def end_to_end(engine, ctx, chars, convs, n: int, new_tokens: int, rm) -> dict:
    """Best-of-n as a job does it: sample with EOS, score every reply, keep the best per prompt."""
    import numpy as np

    from rm_lab.policy.base import GenerationConfig, flatten, repeat_rows

    cfg = GenerationConfig(n=n, max_new_tokens=new_tokens, temperature=0.8, top_p=0.95, seed=11)
    t0 = time.perf_counter()
    groups = engine.generate(convs, cfg)
    t_gen = time.perf_counter() - t0
    replies = [c.text or "..." for c in flatten(groups)]
    t1 = time.perf_counter()
    scores = rm.score(repeat_rows(ctx, n), replies, chars)["score"].reshape(len(ctx), n)
    t_score = time.perf_counter() - t1
    best = scores.argmax(1)
    return {"replies": len(replies), "generate_s": round(t_gen, 2), "score_s": round(t_score, 2),
            "replies_per_s": round(len(replies) / (t_gen + t_score), 2),
            "finished_share": round(float(np.mean([c.finished for c in flatten(groups)])), 3),
            "mean_best_score": round(float(scores[np.arange(len(ctx)), best].mean()), 4)}


def _threads_env(threads: int, vllm_bind: str | None) -> None:
    """One thread count for both engines, set before torch starts its pools: torch's intra-op threads in
    this process (hf) and the vLLM-CPU worker's OpenMP threads. vLLM otherwise pins its worker to the
    cores it picks (`VLLM_CPU_OMP_THREADS_BIND=auto`) while hf floats; `nobind` lets both float alike."""
    if threads:
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[k] = str(threads)
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", vllm_bind or "nobind")
    elif vllm_bind:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = vllm_bind


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engines", nargs="+", default=["hf", "vllm"], choices=["hf", "vllm"])
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--hf-batch-rows", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--repeats", type=int, default=3, help="timed rounds; the engines alternate within each round "
                                                          "(order flipped every round) and medians are reported")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for both engines (0: each engine's default)")
    p.add_argument("--vllm-bind", default=None, help="VLLM_CPU_OMP_THREADS_BIND (default with --threads: nobind)")
    p.add_argument("--vllm-compile", action="store_true", help="torch.compile vLLM's model (minutes of warm-up "
                                                                  "on a busy CPU; default: eager)")
    p.add_argument("--model", default=None, help="a causal-LM folder (default: the packaged SmolLM2)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--reward-model", default=None, help="a train-rm run folder (default: random heads)")
    p.add_argument("--no-end-to-end", action="store_true")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    _threads_env(a.threads, a.vllm_bind)

    import statistics

    import torch

    from rm_lab.models import policy_folder
    from rm_lab.policy.base import EngineConfig, GenerationConfig
    from rm_lab.policy.engines import load_engine
    from rm_lab.policy.engines.common import encode_prompts

    if a.threads:
        torch.set_num_threads(a.threads)
    load_before = os.getloadavg()
    folder = str(policy_folder(a.model))
    ctx, chars, convs = workload(a.prompts)
    cfg = GenerationConfig(n=a.n, max_new_tokens=a.new_tokens, temperature=0.8, top_p=1.0, stop_at_eos=False)
    n_tokens = a.prompts * a.n * a.new_tokens
    gflops = [matmul_gflops(a.device)]
    res: dict = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                             "torch_threads": torch.get_num_threads(), "device": a.device,
                             "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                             "vllm_cpu_omp_threads_bind": os.environ.get("VLLM_CPU_OMP_THREADS_BIND"),
                             "loadavg_before": [round(x, 2) for x in load_before]},
                 "workload": {"prompts": a.prompts, "n": a.n, "new_tokens": a.new_tokens, "tokens": n_tokens,
                              "model": folder, "dtype": a.dtype, "repeats": a.repeats,
                              "vllm_compile": a.vllm_compile},
                 "engines": {}}
    rm = None if a.no_end_to_end else load_reward_model(a.reward_model, ctx, chars)
    engines, info = {}, {}
    try:
        for name in a.engines:  # both stay up: the rounds alternate between them
            t0 = time.perf_counter()
            engines[name] = load_engine(EngineConfig(engine=name, model=folder, dtype=a.dtype, device=a.device,
                                                     threads=a.threads, compile=a.vllm_compile))
            start_s = time.perf_counter() - t0
            lengths = [len(ids) for ids in encode_prompts(engines[name].tokenizer, convs)]
            info[name] = {"start_s": round(start_s, 1), "mean_ctx": sum(lengths) / len(lengths) + a.new_tokens / 2,
                          "runs": []}
            print(f"[{name}] started in {start_s:.1f} s", flush=True)
        if "hf" in engines and len(a.hf_batch_rows) == 1:  # a batching measured before: no probe
            engines["hf"].batch_rows = a.hf_batch_rows[0]
            info["hf"].update(batch_rows=a.hf_batch_rows[0])
        elif "hf" in engines:
            eng, probe = engines["hf"], {}
            for rows in a.hf_batch_rows:
                eng.batch_rows = rows
                s, _ = time_generate(eng, convs, cfg.with_(max_new_tokens=16), 1)
                probe[rows] = round(a.prompts * a.n * 16 / s, 1)
                print(f"[hf] batch_rows={rows}: {probe[rows]} tokens/s (16-token probe, load {_load()})", flush=True)
            eng.batch_rows = max(probe, key=probe.get)
            info["hf"].update(batch_probe_tokens_per_s=probe, batch_rows=eng.batch_rows)
        order = list(engines)
        for r in range(a.repeats):
            for name in (order if r % 2 == 0 else order[::-1]):
                load0 = _load()
                secs, groups = time_generate(engines[name], convs, cfg.with_(seed=r), 1)
                got = sum(c.n_tokens for g in groups for c in g)
                info[name]["runs"].append({"round": r, "seconds": round(secs, 1), "tokens": got,
                                           "tokens_per_s": round(got / secs, 1), "load_before": load0,
                                           "load_after": _load()})
                print(f"[{name}] round {r}: {got} tokens in {secs:.1f} s = {got / secs:.1f} tokens/s "
                      f"(load {load0} -> {_load()})", flush=True)
                if a.out:  # a run stopped early still leaves its finished rounds
                    Path(a.out + ".partial").write_text(json.dumps({**res, "engines": info}, indent=1, default=str))
        gflops.append(matmul_gflops(a.device))
        peak = statistics.median(gflops)
        res["machine"]["matmul_fp32_gflops"] = round(peak, 1)
        res["machine"]["matmul_fp32_gflops_runs"] = [round(g, 1) for g in gflops]
        for name, eng in engines.items():
            out = info[name]
            tps = statistics.median(x["tokens_per_s"] for x in out["runs"])
            conf = eng.model.config if name == "hf" else _hf_config(folder)
            out.update(tokens_per_s=round(tps, 1),
                       matmul_share=round(tps * flops_per_token(conf, out.pop("mean_ctx")) / (peak * 1e9), 3))
            print(f"[{name}] median {tps:.1f} tokens/s, {out['matmul_share']:.1%} of the fp32 matmul peak "
                  f"({peak:.0f} GFLOP/s)", flush=True)
        if rm is not None:
            for name in order:
                e2e = end_to_end(engines[name], ctx, chars, convs, a.n, a.new_tokens, rm)
                info[name]["best_of_n_end_to_end"] = {**e2e, "load": _load()}
                print(f"[{name}] best-of-{a.n} end to end: {info[name]['best_of_n_end_to_end']}", flush=True)
    finally:
        for eng in engines.values():
            eng.close()
    res["engines"] = info
    if "hf" in info and "vllm" in info:
        res["vllm_over_hf"] = round(info["vllm"]["tokens_per_s"] / info["hf"]["tokens_per_s"], 2)
        paired = [v["tokens_per_s"] / h["tokens_per_s"] for v, h in zip(info["vllm"]["runs"], info["hf"]["runs"])]
        res["vllm_over_hf_per_round"] = [round(x, 2) for x in paired]
        if all("best_of_n_end_to_end" in info[k] for k in ("hf", "vllm")):
            res["vllm_over_hf_end_to_end"] = round(info["vllm"]["best_of_n_end_to_end"]["replies_per_s"]
                                                   / info["hf"]["best_of_n_end_to_end"]["replies_per_s"], 2)
    load_after = os.getloadavg()
    res["machine"]["loadavg_after"] = [round(x, 2) for x in load_after]
    busy = max(load_before[0], load_after[0]) > 1.5 * (os.cpu_count() or 1)
    res["idle_machine"] = not busy
    if busy:
        print(f"note: the machine was shared (load {load_before[0]:.1f} -> {load_after[0]:.1f} on "
              f"{os.cpu_count()} cores): absolute rates are low; the engines alternated, so the ratio holds "
              f"better than the rates", flush=True)
    print(json.dumps(res, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(res, indent=1))
    return res


def _hf_config(folder: str):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(folder, local_files_only=True)


if __name__ == "__main__":
    main()
