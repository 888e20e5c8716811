"""Training time to the same held-out pairwise accuracy: rm_lab's frozen-backbone reward model vs TRL's
`RewardTrainer`, on the same simulated-world preference pairs and the same all-MiniLM-L6-v2 backbone,
side by side in one run on one machine.

Why: on a CPU the encoder pass dominates. rm_lab encodes every distinct text once (a cold embedding
cache, counted in its time) and trains only the heads; TRL fine-tunes the whole encoder every step.
Each side reads the same records its own way: rm_lab its shipped inputs (`rm_lab.reward.inputs`: the
reply, the user's last turn and the context encoded apart), TRL the one `[CHAR] .. [CTX] .. [REPLY] ..`
text per reply of `rm_lab.reward.data.format_inputs` (a sequence classifier reads one text). Both
are evaluated on the same held-out contexts (`split_contexts`), and count from before the model is
loaded. TRL's own evaluation time is excluded from its clock (rm_lab's is not). The target is the best
accuracy both reach: min(best rm_lab, best TRL); each side's time is when it first reaches it.

Run: .venv/bin/python benchmarks/rm_vs_trl.py [--pairs 400] [--trl-epochs 2] [--eval-every 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lightning as L  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from rm_lab.models import encoder_path, load_encoder  # noqa: E402
from rm_lab.reward.data import format_inputs, item_inputs, split_contexts  # noqa: E402
from rm_lab.reward.train import TrainRMConfig, train_reward_model  # noqa: E402
from rm_lab.schema import Records  # noqa: E402
from rm_lab.world.simulate import WorldConfig, simulate  # noqa: E402

MAX_LENGTH = 256
VAL_FRACTION = 0.2


def world_pairs(n: int, seed: int) -> Records:
    recs = simulate(WorldConfig(n_contexts=1, n_preference_contexts=n, seed=seed))
    pref = recs["preference"][["context_id", "chosen", "rejected", "source", "margin"]]
    ctx = recs["context"][recs["context"]["context_id"].isin(set(pref["context_id"]))]
    return Records({"character": recs["character"], "context": ctx.reset_index(drop=True),
                    "preference": pref.reset_index(drop=True)})


class Clock(L.Callback):
    """(seconds since t0, held-out pairwise accuracy) after every epoch."""

    def __init__(self, t0: float):
        self.t0, self.curve = t0, []

    def on_validation_epoch_end(self, trainer, pl_module):
        acc = trainer.callback_metrics.get("val/pair_acc")
        if acc is not None:
            self.curve.append((time.perf_counter() - self.t0, float(acc)))


def run_rm_lab(recs: Records, seed: int, epochs: int) -> list[tuple[float, float]]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainRMConfig(heads=["preference"], train_mode="frozen", pairwise=False, epochs=epochs, seed=seed,
                            val_fraction=VAL_FRACTION, max_length=MAX_LENGTH, cache_dir=str(Path(tmp) / "cold"))
        t0 = time.perf_counter()
        clock = Clock(t0)
        train_reward_model(cfg, Path(tmp) / "run", records=recs, callbacks=[clock], say=lambda *_: None)
    return clock.curve


def pair_texts(recs: Records, tok) -> dict[str, list[str]]:
    pref = recs["preference"]
    out = {}
    for side in ("chosen", "rejected"):
        cards, hists, _ = item_inputs(pref["context_id"].tolist(), pref[side].tolist(), recs["context"],
                                      recs["character"])
        out[side] = format_inputs(cards, hists, pref[side].tolist(), tok, MAX_LENGTH, 96, 128)
    return out


def run_trl(recs: Records, seed: int, epochs: int, eval_every: int, batch_size: int) -> list[tuple[float, float]]:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, TrainerCallback
    from trl import RewardConfig, RewardTrainer

    t0 = time.perf_counter()
    tok, _ = load_encoder()
    texts = pair_texts(recs, tok)
    _, val_ctx = split_contexts(recs["preference"]["context_id"], VAL_FRACTION, seed)
    is_val = recs["preference"]["context_id"].isin(set(val_ctx)).to_numpy()
    ids = {s: tok(texts[s], truncation=True, max_length=MAX_LENGTH)["input_ids"] for s in texts}
    train = Dataset.from_dict({"chosen_ids": [x for x, v in zip(ids["chosen"], is_val) if not v],
                               "rejected_ids": [x for x, v in zip(ids["rejected"], is_val) if not v]})
    val = {s: [t for t, v in zip(texts[s], is_val) if v] for s in texts}
    model = AutoModelForSequenceClassification.from_pretrained(str(encoder_path()), num_labels=1)
    curve: list[tuple[float, float]] = []
    paused = [0.0]

    @torch.inference_mode()
    def accuracy(m) -> float:
        was = m.training
        m.eval()
        sc = {}
        for s in val:
            outs = []
            for i in range(0, len(val[s]), 64):
                b = tok(val[s][i:i + 64], truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt")
                outs.append(m(**b).logits.squeeze(-1))
            sc[s] = torch.cat(outs).numpy()
        m.train(was)
        return float(np.mean(sc["chosen"] > sc["rejected"]))  # strict, as rm_lab's val/pair_acc

    class Eval(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step % eval_every == 0 or state.global_step == state.max_steps:
                t_in = time.perf_counter()
                t_train = t_in - t0 - paused[0]
                curve.append((t_train, accuracy(model)))
                paused[0] += time.perf_counter() - t_in

    with tempfile.TemporaryDirectory() as tmp:
        args = RewardConfig(output_dir=tmp, per_device_train_batch_size=batch_size, num_train_epochs=epochs,
                            seed=seed, bf16=False, gradient_checkpointing=False, save_strategy="no",
                            report_to=[], logging_steps=10_000, use_cpu=True, disable_tqdm=True,
                            dataloader_num_workers=0)
        trainer = RewardTrainer(model=model, args=args, train_dataset=train, processing_class=tok,
                                callbacks=[Eval()])
        trainer.train()
    return curve


def first_reach(curve, target: float) -> float | None:
    return next((t for t, a in curve if a >= target), None)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=400, help="world preference pairs (20%% of contexts held out)")
    p.add_argument("--rm-epochs", type=int, default=30)
    p.add_argument("--trl-epochs", type=int, default=2)
    p.add_argument("--trl-batch-size", type=int, default=16)
    p.add_argument("--eval-every", type=int, default=5, help="TRL steps between held-out evaluations")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    import trl

    recs = world_pairs(a.pairs, a.seed)
    n_val = len(split_contexts(recs["preference"]["context_id"], VAL_FRACTION, a.seed)[1])
    rm = run_rm_lab(recs, a.seed, a.rm_epochs)
    tr = run_trl(recs, a.seed, a.trl_epochs, a.eval_every, a.trl_batch_size)
    best_rm, best_trl = max(x for _, x in rm), max(x for _, x in tr)
    target = min(best_rm, best_trl)
    t_rm, t_trl = first_reach(rm, target), first_reach(tr, target)
    print(f"{len(recs['preference'])} world pairs ({n_val} held-out contexts), MiniLM-L6 backbone, max_length "
          f"{MAX_LENGTH}; torch {torch.__version__}, trl {trl.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.machine()} CPython {platform.python_version()}, {os.cpu_count()} cores")
    print("rm_lab frozen (s, acc): " + ", ".join(f"({t:.0f}, {x:.3f})" for t, x in rm))
    print("TRL RewardTrainer (s, acc): " + ", ".join(f"({t:.0f}, {x:.3f})" for t, x in tr))
    print(f"best held-out pairwise accuracy: rm_lab {best_rm:.3f} (after {rm[-1][0]:.0f}s, {len(rm)} epochs), "
          f"TRL {best_trl:.3f} (after {tr[-1][0]:.0f}s of training)")
    ratio = t_trl / t_rm if t_rm and t_trl else float("nan")
    print(f"target {target:.3f}: rm_lab reaches it at {t_rm:.1f}s, TRL at {t_trl:.1f}s -> rm_lab {ratio:.1f}x faster "
          f"(target >= 3)")
    return {"rm_lab": rm, "trl": tr, "target": target, "t_rm": t_rm, "t_trl": t_trl, "ratio": ratio}


if __name__ == "__main__":
    main()
