"""One rejection-sampling SFT generation of SmolLM2 in the simulated world, judged by the world's hidden truth.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python pipelines/rejection_sft.py \
        [--out runs/rejection-sft] [--report reports/rejection_sft] [rm_run=runs/train-rm/<id>] [key=value ...]

Composition only (every step is a library stage, each writing its own folder under --out; a step whose
output is complete is reused, so a killed pipeline continues where it stopped):

1. `simulate` world v2 logs and `train-rm` the default reward model on them;
2. `rejection-sample`: SmolLM2 best-of-N on fresh user-traffic prompts, the reward model's pick kept as the
   SFT set (and best-of-N vs best-of-1 true engagement on the same contexts, with its interval);
3. `train-policy --method sft`: LoRA SFT of SmolLM2 on the picks;
4. `evaluate`: the SFT policy vs SmolLM2 on fresh contexts: win rates, artifacts, true engagement (and its
   style-only part), the simulated A/B lift with its interval next to the true lift.

The sizes below are the defaults (key=value overrides them, e.g. `sample.n_contexts=96`). The summary is
written to --out and, as the recorded run, to `--report`.md/.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rm_lab import config as cfgmod, io  # noqa: E402
from rm_lab.policy.evaluate import EvaluateConfig, evaluate_policies, render  # noqa: E402
from rm_lab.policy.objectives.rejection import RejectionConfig, rejection_sample  # noqa: E402
from rm_lab.policy.trainer import PolicyRun, TrainPolicyConfig, train_policy  # noqa: E402
from rm_lab.reward.train import TrainRMConfig, train_reward_model  # noqa: E402
from rm_lab.world.simulate import WorldConfig, simulate  # noqa: E402


WORLD = {"world_version": 2, "seed": 0, "n_contexts": 2000, "n_preference_contexts": 2000}  # the logs
RM = {"epochs": 20}  # train-rm keys of the reward model on them


@dataclass
class Pipeline:
    """The stage configs of the pipeline (each is its stage's own dataclass; override any key dotted)."""

    world: dict = field(default_factory=lambda: dict(WORLD))
    rm: dict = field(default_factory=lambda: dict(RM))
    sample: dict = field(default_factory=lambda: {"n_contexts": 64, "n": 8, "max_new_tokens": 48, "world_seed": 100,
                                                  "world_version": 2, "temperature": 0.8})
    sft: dict = field(default_factory=lambda: {"epochs": 3, "lr": 1e-3, "lora_r": 16, "batch_size": 8})
    evaluate: dict = field(default_factory=lambda: {"n_contexts": 64, "world_version": 2, "world_seed": 7,
                                                    "max_new_tokens": 48})
    rm_run: str | None = None  # reuse a finished train-rm run instead of steps 1


def step(out: Path, name: str, timings: dict):
    """A step's folder and whether it is already done (its done.json)."""
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder, (folder / "done.json").is_file()


def done(folder: Path, timings: dict, name: str, t0: float, extra: dict | None = None) -> None:
    timings[name] = round(time.time() - t0, 1)
    io.write_json(folder / "done.json", {"seconds": timings[name], **(extra or {})})


def world_and_reward_model(world: dict, rm: dict, rm_run: str | None, out: Path, timings: dict, say) -> Path:
    """The reward model's run folder: `rm_run` as given, or world v2 logs simulated and `train-rm` on them."""
    if rm_run:
        return Path(rm_run)
    logs, ok = step(out, "simulate", timings)
    if not ok:
        t0 = time.time()
        for kind, df in simulate(cfgmod.build(WorldConfig, world)).frames.items():
            io.write_records(df, logs / f"{kind}.parquet", kind)
        done(logs, timings, "simulate", t0)
    rm_dir, ok = step(out, "train-rm", timings)
    if not ok:
        t0 = time.time()
        train_reward_model(cfgmod.build(TrainRMConfig, {**rm, "data": str(logs.resolve())}), rm_dir, say=say)
        done(rm_dir, timings, "train-rm", t0)
    return rm_dir


def evaluate_step(evaluate: dict, rm_dir: Path, new_policy: Path, name: str, out: Path, timings: dict, say):
    """`evaluate` of the new policy against packaged SmolLM2 (its folder and report)."""
    ev_dir, ok = step(out, "evaluate", timings)
    if not ok:
        t0 = time.time()
        ecfg = cfgmod.build(EvaluateConfig, {**evaluate, "model": str(rm_dir.resolve()),
                                             "candidate": {"engine": {"model": str(Path(new_policy).resolve())},
                                                           "name": name},
                                             "baseline": {"engine": {"model": None}, "name": "smollm2"}})
        rep = evaluate_policies(ecfg, say=say)
        rep.pop("_replies")
        io.write_json(ev_dir / "report.json", rep)
        io.write_text(ev_dir / "report.md", render(rep))
        done(ev_dir, timings, "evaluate", t0)
    return ev_dir, json.loads((ev_dir / "report.json").read_text())


def start(pipeline: type, argv, doc: str, out: str, report: str, example: str) -> tuple:
    """The command line of a pipeline script: its configs with the overrides, the arguments, its output folder,
    the timings so far, and a printer."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--out", default=out)
    ap.add_argument("--report", default=report, help="the recorded run: PATH.md and PATH.json")
    ap.add_argument("overrides", nargs="*", help=f"key=value overrides of the stage configs ({example})")
    args = ap.parse_args(argv)
    p = cfgmod.build(pipeline, cfgmod._merge(asdict(pipeline()), cfgmod.parse_overrides(args.overrides)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict = json.loads((out / "timings.json").read_text()) if (out / "timings.json").exists() else {}
    return p, args, out, timings, lambda m: print(m, flush=True)


EVALUATE_KEYS = ("win_rates", "world", "ab", "artifacts", "refusals", "steerability")  # kept in the summary


def write_report(summary: dict, text: str, out: Path, report: str) -> None:
    """The summary and its markdown into the run folder and, as the recorded run, to `report`.md/.json."""
    for base in (out / "report", Path(report)):
        base.parent.mkdir(parents=True, exist_ok=True)
        io.write_json(base.with_suffix(".json"), summary)
        io.write_text(base.with_suffix(".md"), text)
    print(text)


def main(argv=None) -> dict:
    p, args, out, timings, say = start(Pipeline, argv, __doc__, out="runs/rejection-sft",
                                       report="reports/rejection_sft", example="sample.n=4")

    # 1. logs of world v2 and the reward model trained on them
    rm_dir = world_and_reward_model(p.world, p.rm, p.rm_run, out, timings, say)

    # 2. rejection sampling on fresh prompts (also best-of-N vs best-of-1 in the world)
    rs_dir, ok = step(out, "rejection-sample", timings)
    if not ok:
        t0 = time.time()
        rejection_sample(cfgmod.build(RejectionConfig, {**p.sample, "model": str(rm_dir.resolve())}), rs_dir, say=say)
        done(rs_dir, timings, "rejection-sample", t0)
    rs = json.loads((rs_dir / "report.json").read_text())
    if "truth_terms" not in rs and rs.get("world_version") == 2:  # a run from before the report had them
        import pandas as pd

        from rm_lab.policy.objectives.best_of_n import load_prompts, truth_terms

        scfg = cfgmod.build(RejectionConfig, {**p.sample, "model": str(rm_dir.resolve())})
        ctx, chars, _ = load_prompts(scfg)
        rs["truth_terms"] = truth_terms(pd.read_parquet(rs_dir / "samples.parquet"), ctx, chars, scfg.n)

    # 3. LoRA SFT on the picks
    sft_dir, ok = step(out, "train-policy", timings)
    if not ok:
        t0 = time.time()
        train_policy(cfgmod.build(TrainPolicyConfig, {**p.sft, "method": "sft", "data": str(rs_dir.resolve())}),
                     sft_dir, say=say)
        done(sft_dir, timings, "train-policy", t0)
    new_policy = PolicyRun(sft_dir).policy

    # 4. the new policy vs SmolLM2
    ev_dir, ev = evaluate_step(p.evaluate, rm_dir, new_policy, "smollm2-rs-sft", out, timings, say)
    io.write_json(out / "timings.json", timings)

    summary = {"sizes": asdict(p), "timings_s": timings, "total_s": round(sum(timings.values()), 1),
               "rm_run": str(rm_dir), "best_of_n": rs.get("truth"), "best_of_n_kept": rs.get("truth_kept"), "best_of_n_terms": rs.get("truth_terms"),
               "rejection": {"n_contexts": rs["n_contexts"], "n_picked": rs["n_picked"], "artifacts": rs["artifacts"],
                             "scores": rs["scores"], "diversity_weight": rs.get("diversity_weight"),
                             "repetition_of_picks": rs.get("repetition_of_picks"),
                             "tokens_per_s": rs.get("tokens_per_s")},
               "evaluate": {k: ev[k] for k in EVALUATE_KEYS}}
    text = report(summary, rs_dir, ev_dir)
    write_report(summary, text, out, args.report)
    return summary


def report(s: dict, rs_dir: Path, ev_dir: Path) -> str:
    t = s["best_of_n"] or {}
    n = lambda v, d=4: "–" if v is None else f"{v:+.{d}f}"  # noqa: E731  (NaN is written as null)
    f = lambda e, d=4: f"{n(e['mean'], d)} [{n(e['low'], d)}, {n(e['high'], d)}]"  # noqa: E731
    lines = ["# Rejection-sampling SFT of SmolLM2 in world v2", "",
             f"Total {s['total_s']:.0f} s on this machine (steps: {s['timings_s']}); sizes: "
             f"{json.dumps(s['sizes'])}", ""]
    if t:
        lines += [f"## Best-of-{t['n']} vs best-of-1 (true engagement, all {t['lift']['n']} fresh user contexts)", "",
                  f"- best-of-{t['n']}: {f(t['best_of_n'])}", f"- best-of-1: {f(t['best_of_1'])}",
                  f"- difference: {f(t['lift'])}", ""]
        lines += [f"Best-of-{t['n']} answers every context (the best-scored sample where none ended by EOS)."]
        if s.get("best_of_n_kept"):
            k = s["best_of_n_kept"]["lift"]
            lines[-1] += f" On the {k['n']} contexts the rejection set kept, the difference is {f(k)}."
        lines.append("")
        if s.get("best_of_n_terms"):
            lines += ["Where it comes from (world v2's logit by part, the pick minus the mean of the samples, paired "
                      "per context):", "", "| part | difference [95% interval] |", "|---|---|"]
            lines += [f"| {k} | {f(v, 3)} |" for k, v in s["best_of_n_terms"].items()]
            lines.append("")
    r = s["rejection"]
    lines += [f"Rejection sampling kept {r['n_picked']} of {r['n_contexts']} contexts (require_finished; "
              f"diversity_weight {r.get('diversity_weight')}, repetition across the picks "
              f"{(r.get('repetition_of_picks') or {}).get('mean', 0):.3f}); style artifacts accepted vs rejected:", "",
              "| artifact | accepted | rejected |", "|---|---|---|"]
    lines += [f"| {k} | {r['artifacts']['accepted'][k]:.3f} | {r['artifacts']['rejected'][k]:.3f} |"
              for k in r["artifacts"]["accepted"]]
    lines.append("")
    lines += evaluate_lines(s["evaluate"], "SFT")
    lines += ["", f"Details: {rs_dir}/report.md, {ev_dir}/report.md", ""]
    return "\n".join(lines)


def evaluate_lines(ev: dict, what: str) -> list[str]:
    """The report's evaluate part: true engagement, the simulated A/B lifts, where the difference comes
    from, and the style artifacts before and after."""
    n = lambda v, d=4: "–" if v is None else f"{v:+.{d}f}"  # noqa: E731  (NaN is written as null)
    w = ev["world"]
    names = [k for k in w if k not in ("true_difference", "term_difference")]
    lines = [f"## The {what} generation vs SmolLM2", ""]
    for name in names:
        e, so = w[name]["true_engagement"], w[name]["style_only_engagement"]
        lines.append(f"- {name}: true engagement {n(e['rate'])} [{n(e['low'])}, {n(e['high'])}], style-only part "
                     f"{n(so['rate'])}")
    d = w["true_difference"]
    lines.append(f"- true difference: {n(d['rate'])} [{n(d['low'])}, {n(d['high'])}]")
    for m in ("breadth", "depth"):
        a = ev["ab"][m]
        lines.append(f"- simulated A/B {m} lift: {n(a['lift'])} [{n(a['low'])}, {n(a['high'])}] with the contexts' "
                     f"noise (users' noise only: [{n(a.get('users_low'))}, {n(a.get('users_high'))}]; true lift on "
                     f"these contexts {n(a['true_lift'])})")
    if w.get("term_difference"):
        lines += ["", f"Where the difference comes from (world v2's logit by part, {what} - SmolLM2, paired over "
                  "user contexts; `style` is v1's style judge):", "", "| part | difference [95% interval] |",
                  "|---|---|"]
        lines += [f"| {k} | {n(v['rate'], 3)} [{n(v['low'], 3)}, {n(v['high'], 3)}] |"
                  for k, v in w["term_difference"].items()]
    lines += ["", f"## Style artifacts before (SmolLM2) and after ({what})", "",
              "| artifact | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for a in ev["artifacts"][names[0]]:
        lines.append(f"| {a} | " + " | ".join(n(ev["artifacts"][k][a], 3) for k in names) + " |")
    return lines


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
