"""The steps of one flywheel generation, each a composition of stage library calls.

Every step is `step(gen, run) -> outputs`: `gen` holds the config, the generation's number, the current
policy and the outputs of the steps before; `run` is the step's child `Run` (its folder is the step's
working folder). Outputs are plain JSON (paths and figures): they are what state.json keeps, so a
resumed flywheel hands them to the later steps without redoing the earlier ones.

Prompt sets are fresh draws from one world (its characters fixed by `world_seed`), kept apart by their
draw number: the traffic of generation g, its rejection-sampling prompts, its coupled-trainer contexts
and its RL prompts never overlap each other, nor the evaluation's contexts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from rm_lab import config as cfgmod
from rm_lab import io
from rm_lab.flywheel.config import FlywheelConfig
from rm_lab.flywheel.layout import FlywheelRun

# draw numbers of the prompt sets (world_prompts(draw=...)); the evaluation uses draws 0 and 1
DRAW_TRAFFIC, DRAW_REJECTION, DRAW_COUPLED, DRAW_RL = 100, 2_000, 3_000, 10_000


@dataclass
class Gen:
    cfg: FlywheelConfig
    fw: FlywheelRun
    g: int
    current: str | None  # the current (shipped) policy folder; None: the packaged SmolLM2
    out: dict = field(default_factory=dict)  # this generation's finished steps' outputs
    before: list[dict] = field(default_factory=list)  # earlier generations' outputs, oldest first
    calibration: str | None = None
    say: Callable[[str], None] = print

    @property
    def seed(self) -> int:
        return self.cfg.seed + self.g


# ----------------------------------------------------------------------------------------------
# shared pieces

def prompts(cfg: FlywheelConfig, n: int, traffic: str, draw: int, prefix: str):
    """(contexts, characters): `n` fresh contexts of one world; traffic both = half user, half internal."""
    from rm_lab.policy.objectives.best_of_n import world_prompts

    if traffic != "both":
        return world_prompts(n, traffic, cfg.world_seed, cfg.world_version, prefix=prefix, draw=draw)
    cu, chars = world_prompts(n - n // 2, "user", cfg.world_seed, cfg.world_version, prefix=f"{prefix}-u", draw=draw)
    if n // 2 == 0:
        return cu, chars
    ci, _ = world_prompts(n // 2, "internal", cfg.world_seed, cfg.world_version, prefix=f"{prefix}-i", draw=draw + 1)
    return pd.concat([cu, ci], ignore_index=True), chars


def write_prompts(contexts: pd.DataFrame, characters: pd.DataFrame, folder: Path) -> str:
    """A folder of context + character records (what the sampling and GRPO stages read)."""
    chars = characters[characters["character_id"].isin(set(contexts["character_id"]))].reset_index(drop=True)
    io.write_records(chars, folder / "character.parquet", "character")
    io.write_records(contexts.reset_index(drop=True), folder / "context.parquet", "context")
    return str(folder)


def engine(cfg: FlywheelConfig, policy: str | None) -> dict:
    return {**cfg.engine, "model": policy}


def log_folders(gen: Gen) -> list[str]:
    """Every log the reward model may learn from: each generation's curated traffic and coupled-trainer logs."""
    folders = []
    for o in [*gen.before, gen.out]:
        if "curate" in o:
            folders.append(o["curate"]["records"])
        folders += list((o.get("rl") or {}).get("logs") or [])
    return folders


def reward_config(cfg: FlywheelConfig, keys: dict, seed: int, where: str):
    from rm_lab.reward.train import TrainRMConfig

    base = {"seed": seed, **({"cache_dir": cfg.cache_dir} if cfg.cache_dir else {})}
    return cfgmod.build(TrainRMConfig, {**base, **keys}, where)


def _json(d: dict) -> dict:
    return io.json_safe(d)


# ----------------------------------------------------------------------------------------------
# the steps

def traffic(gen: Gen, run) -> dict:
    """Generation 1: the logged traffic of the scripted policies. Later: the current policy answers fresh
    contexts and the world's users react (near-policy data, as production traffic is)."""
    cfg = gen.cfg
    folder = run.path / "records"
    if gen.g == 1:
        from rm_lab.world.simulate import WorldConfig, simulate

        wc = cfgmod.build(WorldConfig, {**cfg.traffic, "seed": cfg.world_seed, "world_version": cfg.world_version,
                                        "spurious_emoji": cfg.spurious_emoji}, "traffic")
        recs = simulate(wc, progress=lambda m: gen.say(f"  traffic: {m}"))
        source = f"scripted policies {', '.join(wc.logging_policies)}"
    else:
        from rm_lab.flywheel.world_logs import log_replies
        from rm_lab.policy.coupled import respond_with

        ctx, chars = prompts(cfg, cfg.traffic_contexts, "both", DRAW_TRAFFIC + gen.g, f"g{gen.g}-traffic")
        gen.say(f"  traffic: the current policy answers {len(ctx)} fresh contexts")
        replies = respond_with(gen.current, ctx, chars, gen.seed, cfg.engine, cfg.temperature, cfg.max_new_tokens)
        recs = log_replies(replies, ctx, chars, f"g{gen.g - 1}-shipped", gen.seed, cfg.world_version,
                           cfg.spurious_emoji)
        source = "the current policy"
    from rm_lab.flywheel.world_logs import write_records

    write_records(recs, folder)
    return {"records": str(folder), "counts": recs.counts(), "source": source}


def curate(gen: Gen, run) -> dict:
    from rm_lab.curate.pipeline import CurateConfig, curate as curate_records, load_folder

    src = gen.out["traffic"]["records"]
    ccfg = cfgmod.build(CurateConfig, {**gen.cfg.curate, "input": src, "seed": gen.seed}, "curate")
    recs, rep = curate_records(load_folder(src), ccfg, progress=lambda m: gen.say(f"  curate: {m}"))
    folder = run.path / "records"
    for name, df in recs.frames.items():
        io.write_records(df, folder / f"{name}.parquet", name)
    io.write_json(run.path / "report.json", rep)
    return {"records": str(folder), "input": rep.get("input"), "output": recs.counts()}


def reward(gen: Gen, run) -> dict:
    """A reward model on every log so far (train-rm cannot continue a fitted model: it is refitted, and the
    frozen encoder's features of texts seen before come from the cache)."""
    from rm_lab.flywheel.world_logs import merge_logs
    from rm_lab.reward.train import train_reward_model

    folders = log_folders(gen)
    tcfg = reward_config(gen.cfg, gen.cfg.reward, gen.seed, "reward")
    m = train_reward_model(tcfg, run.path, records=merge_logs(folders), say=lambda s: gen.say(f"  train-rm: {s}"))
    run.log_metrics({"n_items": m["n_items"], "seconds": m["seconds"]})
    return {"model": str(run.path), "heads": m["heads"], "n_items": m["n_items"], "logs": folders}


def rejection(gen: Gen, run) -> dict:
    from rm_lab.policy.objectives.best_of_n import prepare_sampling
    from rm_lab.policy.objectives.rejection import RejectionConfig, rejection_sample

    cfg = gen.cfg
    n = cfgmod.build(RejectionConfig, dict(cfg.rejection), "rejection").n_contexts
    ctx, chars = prompts(cfg, n, "user", DRAW_REJECTION + gen.g, f"g{gen.g}-rs")
    folder = write_prompts(ctx, chars, run.path / "prompts")
    rcfg = cfgmod.build(RejectionConfig, {"temperature": cfg.temperature, "max_new_tokens": cfg.max_new_tokens,
                                          **cfg.rejection, "model": gen.out["reward"]["model"],
                                          "engine": engine(cfg, gen.current), "contexts": folder,
                                          "traffic": "user", "seed": gen.seed}, "rejection")
    rep = rejection_sample(rcfg, run.path, prepare_sampling(rcfg), say=lambda m: gen.say(f"  rejection: {m}"))
    return {"data": str(run.path), "n_contexts": rep["n_contexts"], "n": rep["n"], "n_picked": rep["n_picked"],
            "scores": {k: rep["scores"][k].get("mean") for k in ("all", "chosen")},
            "artifacts": rep["artifacts"]}


def sft(gen: Gen, run) -> dict:
    from rm_lab.policy.trainer import TrainPolicyConfig, train_policy

    rs = gen.out["rejection"]
    if rs["n_picked"] == 0:
        gen.say("  sft: rejection sampling kept no reply; the policy stays as it was")
        return {"policy": gen.current, "skipped": "rejection sampling kept no reply"}
    data, planted = rs["data"], None
    if gen.g in gen.cfg.plant_emoji:
        share = gen.cfg.plant_emoji_share
        data = plant_emoji(rs["data"], run.path / "planted", gen.cfg.plant_emoji_count,
                           gen.cfg.rejection.get("label_name", "rejection_pick"), share, gen.seed)
        planted = (f"{gen.cfg.plant_emoji_count} emoji after the first sentence of "
                   + ("every SFT target" if share >= 1 else f"a share {share:g} of the SFT targets"))
        gen.say(f"  sft: planted hack: {planted}")
    tcfg = cfgmod.build(TrainPolicyConfig, {"max_completion_tokens": gen.cfg.max_new_tokens, **gen.cfg.sft,
                                            "method": "sft", "policy": gen.current, "data": data,
                                            "seed": gen.seed}, "sft")
    m = train_policy(tcfg, run.path, say=lambda s: gen.say(f"  sft: {s}"))
    return {"policy": m["policy"], "loss": m.get("losses/loss"), "n_examples": m.get("n_examples"),
            "seconds": m.get("seconds"), "planted": planted}


def plant_emoji(data: str, folder: Path, k: int, label_name: str, share: float = 1.0, seed: int = 0) -> str:
    """A copy of a rejection-sample folder whose SFT targets (label rows `label_name`, a seeded `share` of them)
    carry `k` emoji after their first sentence (an emoji at the end of a reply the token cap cuts is never
    reached in generation, so a policy never learned it there): the reward hack planted on purpose, so a run
    can show whether the guardrails stop it before it ships. With a share below 1 the policy writes emoji in
    some replies only, so RL's groups differ in them and a reward model that loves emoji can pay for more."""
    from rm_lab.explore.edits import emoji_after_first_sentence
    from rm_lab.reward.data import read_record_folder

    recs = read_record_folder(data)
    folder.mkdir(parents=True, exist_ok=True)
    for kind in ("character", "context", "label"):
        df = recs[kind].copy()
        if kind == "label":
            hit = (df["name"] == label_name).to_numpy() & (np.random.default_rng([seed, 7]).random(len(df)) < share)
            df.loc[hit, "response"] = [emoji_after_first_sentence(str(r), k) for r in df.loc[hit, "response"]]
        io.write_records(df, folder / f"{kind}.parquet", kind)
    return str(folder)


def rl(gen: Gen, run) -> dict:
    """GRPO or DPO rounds in the coupled trainer, from the SFT policy, against the generation's reward model."""
    from rm_lab.policy.coupled import LLMHooks, run_coupled

    cfg = gen.cfg
    start = gen.out["sft"]["policy"]
    if cfg.rl == "none":
        return {"policy": start, "skipped": "rl=none", "stopped": None, "rounds": [], "logs": []}
    coupled = cfgmod.build(type(cfg.coupled), {**asdict(cfg.coupled), "seed": gen.seed}, "coupled")
    ctx, chars = prompts(cfg, 2 * coupled.contexts, "both", DRAW_COUPLED + 2 * gen.g, f"g{gen.g}-cpl")
    rm_keys = {"n_ensemble": cfg.reward.get("n_ensemble", 1), **cfg.refresh}  # the ensemble's spread is a guardrail
    hooks = LLMHooks(update_config=lambda p, rm, folder, r: update_config(gen, p, rm, folder, r),
                     rm_config=reward_config(cfg, rm_keys, gen.seed, "refresh"), engine=cfg.engine,
                     temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, world_version=cfg.world_version,
                     spurious_emoji=cfg.spurious_emoji, cache_dir=cfg.cache_dir, say=gen.say)
    res = run_coupled(coupled, start, gen.out["reward"]["model"], gen.out["reward"]["logs"], ctx, chars, run.path,
                      hooks, say=lambda m: gen.say(f"  {m}"))
    rounds = [{"round": r["round"], "win_rates": {k: v["rate"] for k, v in r["win_rates"].items()},
               "alarms": [f"{a['name']} ({a['metric']})" for a in r["alarms"]],
               "stopping": list(dict.fromkeys(a["name"] for a in r["stopping"])),
               "uncertainty": r["uncertainty"].get("ratio"),
               "emoji": (r["drift"].get("n_emoji") or {}).get("candidate"),
               "words": (r["drift"].get("n_words") or {}).get("candidate"),
               "true_lift": (r.get("true") or {}).get("lift")} for r in res["rounds"]]
    return {"policy": res["policy"], "reward_model": res["reward_model"], "stopped": res["stopped"],
            "rounds": rounds, "logs": res["logs"], "method": cfg.rl}


def update_config(gen: Gen, policy: str | None, reward_model: str, folder: Path, r: int):
    """The TrainPolicyConfig of one coupled round: GRPO on fresh prompts, or DPO on fresh best-vs-worst pairs."""
    from rm_lab.policy.trainer import TrainPolicyConfig

    cfg = gen.cfg
    draw = DRAW_RL + 100 * gen.g + 2 * r
    ctx, chars = prompts(cfg, cfg.rl_contexts, "both", draw, f"g{gen.g}-r{r}-rl")
    base = {"max_completion_tokens": cfg.max_new_tokens, **({"temperature": cfg.temperature} if cfg.rl == "grpo"
                                                            and cfg.temperature > 0 else {}),
            **cfg.rl_train, "method": cfg.rl, "policy": policy, "seed": gen.seed * 100 + r}
    if cfg.rl == "grpo":
        data = write_prompts(ctx, chars, folder.parent / "prompts")
        return cfgmod.build(TrainPolicyConfig, {**base, "data": data, "reward_model": reward_model}, "rl_train")
    from rm_lab.policy.objectives.best_of_n import prepare_sampling
    from rm_lab.policy.objectives.rejection import RejectionConfig, rejection_sample

    pairs = folder.parent / "pairs"
    if not (pairs / "preference.parquet").is_file():
        data = write_prompts(ctx, chars, folder.parent / "prompts")
        rcfg = cfgmod.build(RejectionConfig, {"temperature": cfg.temperature, "max_new_tokens": cfg.max_new_tokens,
                                              **cfg.rejection, "n_contexts": len(ctx), "model": reward_model,
                                              "engine": engine(cfg, policy), "contexts": data, "traffic": "both",
                                              "seed": gen.seed * 100 + r}, "rejection (dpo pairs)")
        rejection_sample(rcfg, pairs, prepare_sampling(rcfg), say=lambda m: gen.say(f"    pairs: {m}"))
    return cfgmod.build(TrainPolicyConfig, {**base, "data": str(pairs)}, "rl_train")


def evaluate(gen: Gen, run) -> dict:
    """The candidate against the current policy on the evaluation's fresh contexts (`rm_lab evaluate`)."""
    from rm_lab.policy.evaluate import evaluate_policies, render

    ecfg = evaluate_config(gen)
    rep = evaluate_policies(ecfg, say=lambda m: gen.say(f"  evaluate: {m}"))
    r = rep.pop("_replies")
    df = r["contexts"][["context_id", "character_id", "traffic"]].copy()
    df["candidate"], df["baseline"] = r["candidate"], r["baseline"]
    with io.atomic_path(run.file("replies.parquet")) as tmp:
        df.to_parquet(tmp, index=False)
    io.write_json(run.file("report.json"), rep)
    io.write_text(run.file("report.md"), render(rep))
    run.log_metrics({k: v["rate"] for k, v in rep["win_rates"].items()})
    return {"report": str(run.path / "report.json"), "replies": str(run.path / "replies.parquet"),
            "config": cfgmod.to_dict(ecfg), **_json(rep)}


def evaluate_config(gen: Gen):
    from rm_lab.policy.evaluate import EvaluateConfig

    cfg = gen.cfg
    cand = gen.out["rl"]["policy"]
    return cfgmod.build(EvaluateConfig, {"temperature": cfg.temperature, "max_new_tokens": cfg.max_new_tokens,
                                         **cfg.evaluate, "model": gen.out["reward"]["model"],
                                         "candidate": {"engine": engine(cfg, cand), "name": f"g{gen.g}-candidate"},
                                         "baseline": {"engine": engine(cfg, gen.current), "name": "current"},
                                         "world_version": cfg.world_version, "world_seed": cfg.world_seed,
                                         "seed": gen.seed, "guardrails": True}, "evaluate")


def qualities(gen: Gen):
    """(current, candidate) ArmQuality from the evaluation's replies on user traffic, the population, and the
    per-context engagement logits of both (for the contexts' share of the A/B interval)."""
    from rm_lab.flywheel.world_logs import population
    from rm_lab.policy.evaluate import EvaluateConfig
    from rm_lab.policy.objectives.best_of_n import world_prompts
    from rm_lab.world.ab import ArmQuality
    from rm_lab.world.engagement import score_replies

    ev = gen.out["evaluate"]
    ecfg = cfgmod.build(EvaluateConfig, ev["config"], "evaluate")
    ctx, chars = world_prompts(ecfg.n_contexts, "user", ecfg.world_seed, ecfg.world_version, prefix="eval-user")
    df = pd.read_parquet(ev["replies"])
    df = df[df["traffic"] == "user"].set_index("context_id").loc[ctx["context_id"]]
    pop = population(gen.cfg.world_version, gen.cfg.spurious_emoji)
    out = []
    for side, name in (("baseline", "current"), ("candidate", f"g{gen.g}-candidate")):
        z = score_replies(df[side].tolist(), ctx, chars, pop).z
        out.append((ArmQuality(name, z.mean(axis=0)), z))
    (cur, z_cur), (cand, z_cand) = out
    return cur, cand, pop, (z_cur, z_cand)


def calibrate(gen: Gen, run) -> dict:
    """Built once (generation 1) when no calibration is given: calibrate's library on simulated past tests,
    with the offline predictions made by this generation's reward model."""
    from rm_lab.calibrate.config import CalibrateConfig
    from rm_lab.calibrate.stage import calibrate_world
    from rm_lab.reward.embed_cache import default_cache_root
    from rm_lab.reward.model import RewardModel

    cfg = gen.cfg
    model = gen.out["reward"]["model"]
    ccfg = cfgmod.build(CalibrateConfig, {**cfg.calibrate, "source": "world", "model": model,
                                          "world_seed": cfg.world_seed, "spurious_emoji": cfg.spurious_emoji,
                                          "world_version": cfg.world_version,
                                          **({"cache_dir": cfg.cache_dir} if cfg.cache_dir else {})}, "calibrate")
    rm = RewardModel.load(model, cfg.cache_dir or default_cache_root())
    out = calibrate_world(ccfg, run, say=lambda m: gen.say(f"  calibrate: {m}"), loaded=(rm, model))
    return {"calibration": str(run.path / "calibration.json"), "n_tests": out["n_tests"],
            "heldout": out["heldout"]}


PREDICTOR_KEYS = {"win_point_user": "point_user", "win_point_internal": "point_internal",
                  "win_pair_user": "pair_user", "win_pair_internal": "pair_internal"}


def predict(gen: Gen, run) -> dict:
    """The calibration's predicted lift (point and interval) from the evaluation's win rate, with the noise of
    a test of the planned size (an A/A test of the current policy at that size gives its standard error)."""
    from rm_lab.calibrate.experiments import lift_se
    from rm_lab.calibrate.intervals import load_calibration, predict_lift
    from rm_lab.config import ConfigError
    from rm_lab.evaluate.ab import analyze
    from rm_lab.world.ab import run_ab

    cal = load_calibration(gen.calibration)
    key = PREDICTOR_KEYS.get(cal.predictor)
    rates = gen.out["evaluate"]["win_rates"]
    if key is None or key not in rates:
        raise ConfigError(f"calibration {gen.calibration}: its predictor {cal.predictor!r} is not a win rate the "
                          f"evaluation measures ({sorted(PREDICTOR_KEYS)}; measured: {sorted(rates)})")
    metric = cal.meta.get("metric", "breadth")
    cur, _, pop, _ = qualities(gen)
    ab = gen.cfg.ab
    aa = analyze(run_ab(cur, cur, pop, ab.eligible_users, ab.arm_share, ab.days,
                        np.random.default_rng(ab.seed + 50_000 + gen.g), experiment_id=f"g{gen.g}-plan")).iloc[0]
    se = lift_se(aa, metric)
    x = float(rates[key]["rate"])
    p = predict_lift(cal, x, se)
    out = {"predictor": cal.predictor, "x": x, "metric": metric, "se_planned": se, "confidence": cal.confidence,
           "calibration": gen.calibration, **p}
    run.log_metrics(out)
    return _json(out)


def ab_test(gen: Gen, run) -> dict:
    """The simulated A/B test of the candidate against the current policy, with the true lifts beside it."""
    from rm_lab.evaluate.ab import analyze
    from rm_lab.policy.evaluate import ab_interval, context_lift_sd
    from rm_lab.world.ab import run_ab, true_lifts

    cur, cand, pop, (z_cur, z_cand) = qualities(gen)
    ab = gen.cfg.ab
    arms = run_ab(cur, cand, pop, ab.eligible_users, ab.arm_share, ab.days, np.random.default_rng(ab.seed + gen.g),
                  experiment_id=f"g{gen.g}")
    io.write_records(arms, run.file("arms.parquet"), "ab_arm")
    row = analyze(arms).iloc[0]
    truth = true_lifts(cur, cand, pop)
    # each arm's quality is measured on a few evaluation contexts: that noise joins the users' (as in evaluate)
    csd = context_lift_sd(z_cand, z_cur, pop, seed=ab.seed + gen.g)
    out = {m: {**ab_interval(float(row[f"{m}_lift"]), float(row[f"{m}_ci_low"]), float(row[f"{m}_ci_high"]),
                             csd[m]),
               "p_value_users": float(row[f"{m}_p_value"]), "true_lift": float(truth[f"{m}_lift"])}
           for m in ("breadth", "depth")}
    out["n_contexts"] = int(len(z_cur))
    out["users_per_arm"] = int(row["users_control"])
    out["days"] = ab.days
    run.log_metrics(out)
    return out


def ship(gen: Gen, run) -> dict:
    from rm_lab.flywheel.ship import decide, describe

    ev = gen.out["evaluate"]
    alarms = [{**a, "source": "evaluate"} for a in ((ev.get("guardrails") or {}).get("alarms") or [])]
    pred = gen.out.get("predict")
    d = decide(gen.cfg.ship, alarms, pred, gen.out["ab"], ev.get("win_rates"))
    cand = gen.out["rl"]["policy"]
    out = {**d.to_json(), "rule": describe(gen.cfg.ship), "candidate": cand,
           "policy_after": cand if d.ship else gen.current}
    run.log_metrics({"ship": float(d.ship)})
    return out


STEP_FUNCTIONS: dict[str, Callable] = {"traffic": traffic, "curate": curate, "reward": reward,
                                       "rejection": rejection, "sft": sft, "rl": rl, "evaluate": evaluate,
                                       "predict": predict, "ab": ab_test, "ship": ship}
