"""GPU path check for a lent CUDA machine: the reward model's Lightning training on CUDA.

Trains the default multi-head reward model on the seeded world (as pipelines/rm_world_figures.py
does on CPU) in two modes: frozen backbone (embeddings computed once on the GPU) and full
fine-tuning of MiniLM in bf16-mixed precision, then scores the held-out contexts against the
hidden engagement. Prints seconds per mode and the figures, and writes them as JSON.

    python benchmarks/gpu_check.py --backbone DIR --out OUT [--epochs 30] [--full-epochs 4]
    python benchmarks/gpu_check.py --rollout --rm-scoring --skip-rm --out OUT
        # hf vs vllm rollouts on CUDA (goal >= 5x; vLLM compiled, CUDA graphs) and RM scoring on CUDA
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from rm_lab.reward.evaluate import EvalRMConfig, evaluate_reward_model  # noqa: E402
from rm_lab.reward.model import RewardModel  # noqa: E402
from rm_lab.reward.train import TrainRMConfig, train_reward_model  # noqa: E402
from rm_lab.world.simulate import WorldConfig, simulate  # noqa: E402


def one(name, records, wc, out: Path, cache: Path, **train) -> dict:
    run_dir = out / name
    cfg = TrainRMConfig(seed=0, cache_dir=str(cache), pairwise=False, **train)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    train_reward_model(cfg, run_dir, records=records, say=lambda m: print(f"[{name}] {m}", flush=True))
    t_train = time.time() - t0
    rm = RewardModel.load(run_dir, cache_dir=cache)
    ecfg = EvalRMConfig(model=str(run_dir), split="heldout", min_truth_gap=0.1, n_counterfactual=0,
                        counterfactuals=[], seed=0)
    m = evaluate_reward_model(ecfg, run_dir / "eval", say=lambda s: None, rm=rm, records=records, world_cfg=wc)
    res = {"mode": name, "train_seconds": round(t_train, 1),
           "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else None,
           "metrics": {k: v for k, v in _flat(m).items() if "spearman" in k or "accuracy" in k}}
    print(json.dumps(res, indent=1), flush=True)
    return res


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)):
            out[f"{prefix}{k}"] = v
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default=None)
    ap.add_argument("--out", default="runs/gpu-check")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--full-epochs", type=int, default=4)
    ap.add_argument("--n", type=int, default=2000, help="interaction and preference contexts")
    ap.add_argument("--rollout", action="store_true",
                    help="also benchmarks/rollout_engines.py on CUDA: hf vs vllm (needs the CUDA `vllm` package)")
    ap.add_argument("--rm-scoring", action="store_true",
                    help="also benchmarks/rm_scoring_throughput.py --device cuda (the best-of-N scoring workload)")
    ap.add_argument("--skip-rm", action="store_true", help="skip the reward-model modes (e.g. only --rollout)")
    a = ap.parse_args()
    out = Path(a.out)
    print("cuda:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-",
          "torch", torch.__version__, flush=True)
    if a.rollout:  # vLLM spawns workers: this runs under the script's `if __name__ == "__main__":`
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from rollout_engines import main as rollout

        out.mkdir(parents=True, exist_ok=True)
        cuda = torch.cuda.is_available()
        rollout(["--device", "cuda" if cuda else "cpu", "--engines", "hf", "vllm", "--repeats", "3",
                 "--hf-batch-rows", "64", "128", "256", *(["--vllm-compile"] if cuda else []),
                 "--out", str(out / "rollout_engines.json")])
    if a.rm_scoring:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from rm_scoring_throughput import main as rm_scoring

        out.mkdir(parents=True, exist_ok=True)
        res = rm_scoring(["--device", "cuda" if torch.cuda.is_available() else "cpu"])
        (out / "rm_scoring_throughput.json").write_text(json.dumps(res, indent=1, default=str))
    if a.skip_rm:
        return
    wc = WorldConfig(seed=0, n_contexts=a.n, n_preference_contexts=a.n)
    records = simulate(wc)
    gpu = dict(accelerator="gpu", devices=1) if torch.cuda.is_available() else {}
    results = [
        one("frozen", records, wc, out, out / "cache", backbone=a.backbone, epochs=a.epochs, **gpu),
        one("full-bf16", records, wc, out, out / "cache", backbone=a.backbone, epochs=a.full_epochs,
            train_mode="full", precision="bf16-mixed" if gpu else "32-true", batch_size=32, **gpu),
    ]
    (out / "gpu_check.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
