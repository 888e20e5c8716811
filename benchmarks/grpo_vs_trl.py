"""GRPO step time: ours (`train-policy --method grpo`'s Lightning objective) vs TRL's `GRPOTrainer`.

Same model (the packaged SmolLM2-135M-Instruct, float32), same prompts (world contexts rendered with the
character card as the system prompt through the chat template), same batch (P prompts x G samples), same
LoRA (r=16, alpha=32 on q/k/v/o), same sampling (temperature 0.8, top-p 1, max new tokens T, stop at EOS),
same loss (dapo, epsilon 0.2, beta 0: no reference forward, TRL's default), same lr, one update per
generation, same reward function (a dense length reward, so neither side skips a tied group), and
TRL without gradient checkpointing (its default is on; off is its fastest setting). Each side runs
1 warm-up step and S timed steps; a step is generation + scoring + forward + backward + optimizer.
Also reported: the share of our step spent generating.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/grpo_vs_trl.py [--prompts 4] [--group 4]
        [--tokens 32] [--steps 3] [--out benchmarks/grpo_vs_trl.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from rm_lab.policy.rewards import RewardScores, component_metrics, group_ids  # noqa: E402
from rm_lab.world.characters import make_characters  # noqa: E402
from rm_lab.world.contexts import make_contexts  # noqa: E402

WORDS_TARGET = 12


def length_reward(replies) -> np.ndarray:
    """-|words - 12|: dense, so groups rarely tie."""
    return -np.abs(np.array([len(str(r).split()) for r in replies], float) - WORDS_TARGET)


class LengthReward:
    """`length_reward` in the shape GRPOObjective reads (`.score` -> RewardScores)."""

    cfg = type("Cfg", (), {"heads": {}})()

    def score(self, contexts, replies, characters, finished=None) -> RewardScores:
        total = length_reward(replies)
        return RewardScores(total, {"length": total}, component_metrics("length", total, group_ids(contexts)))


def prompts(n: int):
    chars = make_characters(6, seed=0)
    ctx = make_contexts(chars, n, 0.5, seed=11, prefix="bench").reset_index(drop=True)
    return ctx, chars


def ours(args, n_prompts: int) -> dict:
    import lightning as L
    from torch.utils.data import DataLoader

    from rm_lab.models import load_policy
    from rm_lab.policy import trainer as tr
    from rm_lab.policy.objectives import grpo_train as gt

    ctx, chars = prompts(n_prompts)
    cfg = tr.TrainPolicyConfig(method="grpo", reward_heads={}, length_penalty=1.0, group_size=args.group,
                               batch_size=args.prompts, max_completion_tokens=args.tokens, temperature=0.8,
                               top_p=1.0, beta=0.0, loss_type="dapo", lr=5e-4, lora_r=16, lora_alpha=32, seed=0)
    tok, model = load_policy(None)
    L.seed_everything(0, verbose=False)
    model, ref = tr.trainable_with_reference(cfg, model, needs_reference=False, say=lambda m: None)
    obj = gt.build_objective(cfg, tok, model, gt.PromptSet(ctx, chars, "bench"), LengthReward())
    marks: list[tuple[float, float]] = []

    class Timed(tr.PolicyModule):
        def on_train_batch_start(self, batch, batch_idx):
            self._t0 = time.perf_counter()

        def on_train_batch_end(self, outputs, batch, batch_idx):
            marks.append((self._t0, time.perf_counter()))

    module = Timed(model, obj, cfg.lr, reference=ref)
    loader = DataLoader(list(range(n_prompts)), batch_size=args.prompts, shuffle=False, collate_fn=obj.collate)
    trainer = L.Trainer(max_steps=1 + args.steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, loader)
    steps = [b - a for a, b in marks][1:]
    gen = [s["generate_s"] for s in obj.steps][1:]
    return {"step_s": steps, "generate_s": gen, "median_step_s": statistics.median(steps),
            "generation_share": sum(gen) / sum(steps)}


def trl_side(args, n_prompts: int) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rm_lab.models import load_policy
    from rm_lab.policy.prompts import conversations

    ctx, chars = prompts(n_prompts)
    tok, model = load_policy(None)
    tok.padding_side = "left"
    data = Dataset.from_dict({"prompt": conversations(ctx, chars)})
    marks: list[tuple[float, float]] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            marks.append((self.t0, time.perf_counter()))

    def reward(prompts, completions, **kw):
        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        return length_reward(texts).tolist()

    with tempfile.TemporaryDirectory() as out:
        targs = GRPOConfig(output_dir=out, per_device_train_batch_size=args.prompts * args.group,
                           num_generations=args.group, max_completion_length=args.tokens, temperature=0.8, top_p=1.0,
                           beta=0.0, loss_type="dapo", epsilon=0.2, learning_rate=5e-4, max_steps=1 + args.steps,
                           use_cpu=True, bf16=False, gradient_checkpointing=False, report_to=[], save_strategy="no",
                           logging_steps=1, seed=0, shuffle_dataset=False, dataloader_num_workers=0,
                           disable_tqdm=True)
        lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                          task_type="CAUSAL_LM")
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=targs, processing_class=tok, train_dataset=data,
                              peft_config=lora, callbacks=[Timer()])
        trainer.train()
    steps = [b - a for a, b in marks][1:]
    return {"step_s": steps, "median_step_s": statistics.median(steps)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).with_name("grpo_vs_trl.json")))
    args = ap.parse_args()
    n_prompts = args.prompts * (1 + args.steps)
    t0 = time.time()
    a = ours(args, n_prompts)
    b = trl_side(args, n_prompts)
    res = {"settings": vars(args) | {"threads": torch.get_num_threads(), "torch": torch.__version__,
                                     "machine": platform.machine(), "cpus": os.cpu_count()},
           "ours": a, "trl": b, "ratio_ours_over_trl": a["median_step_s"] / b["median_step_s"],
           "seconds": round(time.time() - t0, 1)}
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(f"ours: median step {a['median_step_s']:.2f} s ({100 * a['generation_share']:.0f}% generating); "
          f"TRL GRPOTrainer: {b['median_step_s']:.2f} s; ours / TRL = {res['ratio_ours_over_trl']:.2f}x")


if __name__ == "__main__":
    main()
