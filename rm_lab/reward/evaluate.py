"""`eval-rm`: a trained reward model against held-out records (and the world's hidden truth when the
records carry it): every head with the metric of its likelihood (rm_lab.reward.heads): pairwise accuracy
for the preference head, AUC/log-loss/ECE per binary head before and after calibration, Spearman, Kendall
tau and MAE of the expected level for ordinal heads, Spearman and RMSE for gaussian heads, Spearman for
counts; the style-artifact report with counterfactual edits next to the true effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from rm_lab import io
from rm_lab.config import MAX_SEED, ConfigError, check_fields, param
from rm_lab.reward.data import (build_reward_data, check_heldout_content, item_inputs, labelled_heads,
                                merge_sources, read_sources)
from rm_lab.reward.heads import COUNT_LIKELIHOODS
from rm_lab.reward.model import RewardModel
from rm_lab.schema import RecordError, Records


@dataclass
class EvalRMConfig:
    """eval-rm: which model, which records, which split (configs/eval_rm.yaml)."""

    model: str | None = param(None, doc="a train-rm run folder (required)")
    data: str | list[str] | None = param(None, doc="a records folder, or a list of them (as train-rm's); "
                                         "null: simulate `world`")
    world: dict = param({}, doc="WorldConfig keys of the world simulated when data is null",
                        schema="rm_lab.world.simulate:WorldConfig")
    split: str = param("heldout", doc="heldout: only the contexts the model held out (split.json); all: every row",
                       choices=("heldout", "all"))
    min_truth_gap: float = param(0.1, doc="pairs whose true engagements differ by at least this (truth metrics)",
                                 ge=0)
    counterfactuals: list[str] = param(["append_emoji"], doc="style edits whose effect on the score is measured",
                                       choices="rm_lab.reward.artifacts:COUNTERFACTUALS")
    n_counterfactual: int = param(400, doc="replies edited per counterfactual", ge=1, le=10_000_000)
    n_bins: int = param(15, doc="bins of the reliability diagrams and ECE", ge=2, le=1000)
    batch_size: int = param(64, doc="rows scored per batch", ge=1, le=65_536)
    cache_dir: str | None = param(None, doc="embedding cache (null: the shared one)")
    seed: int = param(0, doc="seed of the counterfactual sample and of a simulated world", ge=0, le=MAX_SEED)

    def __post_init__(self):
        check_fields(self)


def _world_records(cfg: EvalRMConfig) -> tuple[Records, object]:
    from rm_lab import config as cfgmod
    from rm_lab.world.simulate import WorldConfig, simulate

    wc = cfgmod.build(WorldConfig, dict(cfg.world), "world")
    return simulate(wc), wc


def _data_world_config(folder: Path):
    """The WorldConfig of a `simulate` run folder (to compute true counterfactual effects), else None."""
    import yaml

    from rm_lab import config as cfgmod
    from rm_lab.world.simulate import WorldConfig

    p = folder / "config.yaml"
    if not p.is_file():
        return None
    try:
        return cfgmod.build(WorldConfig, yaml.safe_load(p.read_text()) or {}, str(p))
    except ConfigError:
        return None


def _expand(k: np.ndarray, n: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Binomial (n, k) rows -> Bernoulli outcomes with the row's prediction repeated."""
    n_i, k_i = np.rint(n).astype(int), np.rint(k).astype(int)
    y = np.concatenate([np.r_[np.ones(kk), np.zeros(nn - kk)] for kk, nn in zip(k_i, n_i)]) if len(n_i) else np.zeros(0)
    return y, np.repeat(p, n_i)


def _plot_scatter(x, y, path: Path, xlabel: str, ylabel: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    try:
        ax.scatter(x, y, s=6, alpha=0.5)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        fig.tight_layout()
        with io.atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)


def _plot_effects(effects: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(e, k, v) for e, r in effects.items() for k, v in r.items() if k.endswith("_sd") or k == "truth_sd"]
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    try:
        labels = [f"{e}\n{k}" for e, k, _ in rows]
        ax.bar(range(len(rows)), [v for _, _, v in rows], color=["C3" if k == "truth_sd" else "C0" for _, k, _ in rows])
        ax.set_xticks(range(len(rows)), labels, fontsize=7, rotation=30, ha="right")
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_ylabel("effect / sd of the score")
        ax.set_title("counterfactual edits: learned vs true (red)")
        fig.tight_layout()
        with io.atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)


def evaluate_reward_model(cfg: EvalRMConfig, out_dir: str | Path, say: Callable[[str], None] = print,
                          rm: RewardModel | None = None, records: Records | None = None,
                          world_cfg=None) -> dict:
    from rm_lab.reward import artifacts as A
    from rm_lab.reward import metrics as M
    from rm_lab.reward.embed_cache import default_cache_root

    out_dir = Path(out_dir)
    if not cfg.model and rm is None:
        raise ConfigError("model: give a train-rm run folder, e.g. model=runs/train-rm/<id>")
    rm = rm or RewardModel.load(cfg.model, cfg.cache_dir or default_cache_root())
    sources = None
    if records is None:
        if cfg.data:
            sources = read_sources(cfg.data)
            records = merge_sources(sources)
            world_cfg = _data_world_config(Path(cfg.data)) if isinstance(cfg.data, (str, Path)) else None
        else:
            records, world_cfg = _world_records(cfg)
    labelled = labelled_heads(sources or records)
    data = build_reward_data(sources or records, list(rm.specs.values()))  # the model's heads, as it was trained
    heads = [h for h in rm.heads if h in data.heads]
    missing = [h for h in labelled if h not in rm.heads]
    if not heads:
        raise ConfigError(f"data: labels for {labelled} but the model has heads {rm.heads}: nothing to evaluate")
    if cfg.split == "heldout":
        from rm_lab.reward import store

        split_file = store.TrainRun(Path(cfg.model or "")).split
        if not split_file.is_file():
            raise ConfigError(f"split=heldout: {split_file} not found (use split=all for a model without a split)")
        split = store.read_json(split_file, "the model's held-out split")
        held = set(split["heldout_contexts"])
        check_heldout_content(split, records, str(cfg.data) if cfg.data else "the simulated world (world=...)", say)
        data = data.subset([c for c in data.items["context_id"].unique() if c in held])
        if len(data.items) == 0:
            raise RecordError(str(cfg.data), None, "context_id", "no held-out context in the data",
                              "records of the contexts the model held out (or split=all)")
    items = data.items
    ctx_rows = records["context"].drop_duplicates("context_id").set_index("context_id").loc[items["context_id"]].reset_index()
    say(f"scoring {len(items)} replies ({len(data.pairs)} pairs), heads {heads}")
    texts, style = rm.item_texts(ctx_rows, items["response"].tolist(), records["character"])
    feats = rm.member_features(texts, cfg.batch_size)
    scores = rm.score_features(feats, style, cfg.batch_size)
    base: list = []  # the pairwise model reads features of the untrained encoder: computed once, when needed

    def pair_feats() -> np.ndarray:
        if not base:
            base.append(feats if isinstance(feats, np.ndarray) else rm.features(texts, 0, cfg.batch_size, base=True))
        return base[0]
    metrics: dict = {"n_items": int(len(items)), "n_pairs": int(len(data.pairs)), "split": cfg.split,
                     "heads_evaluated": heads, "heads_without_labels": [h for h in rm.heads if h not in data.heads],
                     "labels_without_head": missing}

    c_idx, r_idx = data.pairs["chosen"].to_numpy(), data.pairs["rejected"].to_numpy()
    if "preference" in heads and len(data.pairs):
        s = scores["score"]
        metrics["pairwise_accuracy"] = {"pointwise": M.pairwise_accuracy(s[c_idx], s[r_idx]), "n": int(len(c_idx))}
        if rm.pairwise is not None:
            pf = pair_feats()
            p = rm.pairwise.prob(pf[c_idx], style[c_idx], pf[r_idx], style[r_idx], cfg.batch_size)
            metrics["pairwise_accuracy"]["pairwise_model"] = M.pairwise_accuracy(p, 1 - p)
    plots = []
    for h in heads:  # every item head with the metric of its likelihood
        spec = data.spec(h)
        if spec.is_pairwise:
            continue
        col = lambda s: items[f"{h}_{s}"].to_numpy(float)  # noqa: E731
        has = col("n") > 0
        if spec.likelihood == "binomial":
            p = np.clip(scores[spec.out][has], 1e-6, 1 - 1e-6)
            y, pe = _expand(col("k")[has], col("n")[has], p)
            if len(y) < 4 or y.min() == y.max():
                metrics[h] = {"likelihood": spec.likelihood, "n": int(len(y)), "note": "too few rows or one class only"}
                continue
            rep = M.calibration_report(y, np.log(pe / (1 - pe)), seed=cfg.seed, n_bins=cfg.n_bins, with_probs=True)
            path = out_dir / f"reliability_{h}.png"
            M.reliability_plot(rep.pop("eval_y"), rep.pop("eval_probs"), path, cfg.n_bins, title=f"p({h})")
            plots.append(path.name)
            metrics[h] = {"likelihood": spec.likelihood, **rep}
        elif spec.likelihood in COUNT_LIKELIHOODS:
            metrics[h] = {"likelihood": spec.likelihood, **M.count_metrics(col("n"), col("k"), scores[spec.out])}
        elif spec.likelihood == "ordinal":
            counts = np.stack([col(f"c{j}") for j in range(spec.levels)], 1)[has]
            m = int(has.sum())
            ge = [np.ones(m)] + [scores[o][has] for o in spec.outputs()[1:]] + [np.zeros(m)]
            probs = np.stack([ge[j] - ge[j + 1] for j in range(spec.levels)], 1)
            metrics[h] = {"likelihood": spec.likelihood, "levels": spec.level_values(),
                          **M.ordinal_metrics(counts, scores[spec.out][has], probs, spec.level_values())}
        elif spec.likelihood == "gaussian":
            metrics[h] = {"likelihood": spec.likelihood,
                          **M.regression_metrics(col("n"), col("mean"), col("m2"), scores[spec.out])}
        elif spec.likelihood == "arm_logit":  # within-experiment: NLL per click, higher-rate arm picked
            from rm_lab.reward.arm_logit import arm_logit_report

            metrics[h] = arm_logit_report(scores[spec.out][has], col("k")[has], col("n")[has],
                                          items["context_id"].to_numpy(object)[has])
        elif spec.is_set:  # arm_mean: predicted vs measured log lift of each held-out treatment arm
            from rm_lab.reward.arm_mean import set_report

            taus = [float(m.head_params(h)["log_tau"].detach().exp().item()) for m in rm.members]
            metrics[h] = set_report(data.sets.get(h, items.iloc[:0]), items, scores[spec.out], float(np.mean(taus)))

    # hidden truth of a simulated world (never used in training)
    truth: dict = {}
    if "interaction" in records and "truth_engagement" in records["interaction"].columns:
        it = records["interaction"]
        te = it.drop_duplicates(["context_id", "response"]).set_index(["context_id", "response"])["truth_engagement"]
        keys = list(zip(items["context_id"], items["response"]))
        known = np.array([k in te.index for k in keys])
        if known.any() and "preference" in heads:
            tv = te.loc[[k for k, ok in zip(keys, known) if ok]].to_numpy()
            truth["spearman_score_vs_truth"] = M.spearman(scores["score"][known], tv)
            truth["n_interactions"] = int(known.sum())
            if "continue" in heads:
                truth["spearman_p_continue_vs_truth"] = M.spearman(scores["p_continue"][known], tv)
            _plot_scatter(scores["score"][known], tv, out_dir / "score_vs_truth.png", "pointwise score",
                          "true engagement", f"held-out replies (Spearman {truth['spearman_score_vs_truth']:.3f})")
            plots.append("score_vs_truth.png")
    if "preference" in records and "truth_chosen_engagement" in records["preference"].columns and len(data.pairs):
        pr = records["preference"]
        tmap = {(c, ch, rj): (tc, tr) for c, ch, rj, tc, tr in zip(pr["context_id"], pr["chosen"], pr["rejected"],
                                                                   pr["truth_chosen_engagement"],
                                                                   pr["truth_rejected_engagement"])}
        ch, rj = items["response"].to_numpy()[c_idx], items["response"].to_numpy()[r_idx]
        tv = np.array([tmap.get((c, a, b), (np.nan, np.nan)) for c, a, b in zip(data.pairs["context_id"], ch, rj)])
        gap = tv[:, 0] - tv[:, 1]
        big = np.abs(gap) >= cfg.min_truth_gap
        if big.any() and "preference" in heads:
            s = scores["score"]
            sign = np.sign(gap[big])  # the truly better side may be the "rejected" one (annotator noise)
            truth["pairwise_accuracy_vs_truth"] = float(np.mean(sign * (s[c_idx][big] - s[r_idx][big]) > 0))
            truth["n_pairs_gap"] = int(big.sum())
            truth["min_truth_gap"] = cfg.min_truth_gap
            if rm.pairwise is not None:
                pf = pair_feats()
                p = rm.pairwise.prob(pf[c_idx][big], style[c_idx][big], pf[r_idx][big], style[r_idx][big])
                truth["pairwise_model_accuracy_vs_truth"] = float(np.mean(sign * (p - 0.5) > 0))
    if truth:
        metrics["truth"] = truth

    # style artifacts: observational correlations + counterfactual edits
    score_cols = {data.spec(h).out: scores[data.spec(h).out] for h in heads
                  if h in ("preference", "continue", "thumb_up") or data.spec(h).likelihood in ("ordinal", "gaussian")}
    _, _, kws = item_inputs(items["context_id"].tolist(), items["response"].tolist(), records["context"],
                            records["character"])
    art = A.style_artifact_report(items["response"].tolist(), score_cols, kws,
                                  records["preference"] if "preference" in records else None)
    rng = np.random.default_rng(cfg.seed)
    pick = np.sort(rng.choice(len(items), size=min(cfg.n_counterfactual, len(items)), replace=False))
    sub_ctx = ctx_rows.iloc[pick].reset_index(drop=True)
    sub_replies = items["response"].to_numpy()[pick].tolist()
    cache: dict = {}

    def scorer(name):
        def fn(replies):
            key = tuple(replies)
            if key not in cache:
                cache[key] = rm.score(sub_ctx, replies, records["character"], cfg.batch_size)
            return cache[key][name]
        return fn

    unknown = [c for c in cfg.counterfactuals if c not in A.COUNTERFACTUALS]
    if unknown:
        raise ConfigError(f"counterfactuals: unknown {unknown}; known: {sorted(A.COUNTERFACTUALS)}")
    tfs = {c: A.COUNTERFACTUALS[c] for c in cfg.counterfactuals}
    true_eff = {}
    if world_cfg is not None and "append_emoji" in tfs and len(pick):
        from rm_lab.world.engagement import true_emoji_effect

        true_eff["append_emoji"] = true_emoji_effect(sub_replies, sub_ctx, records["character"], world_cfg.population())
    effects = A.effect_table({n: scorer(n) for n in score_cols}, sub_replies, tfs, true_eff) if len(pick) else {}
    # the same effects in units of each score's spread, so the BT score and probabilities compare
    sds = {n: float(np.std(v)) for n, v in score_cols.items()}
    if world_cfg is not None and len(pick):
        from rm_lab.world.engagement import score_replies

        sds["truth"] = float(np.std(score_replies(sub_replies, sub_ctx, records["character"],
                                                  world_cfg.population()).true_engagement))
    for row in effects.values():
        for k in list(row):
            if sds.get(k):
                row[f"{k}_sd"] = row[k] / sds[k]
    metrics["style_artifacts"] = {"report": art, "counterfactual": effects, "n_counterfactual": int(len(pick))}
    if effects:
        _plot_effects(effects, out_dir / "counterfactual_effects.png")
        plots.append("counterfactual_effects.png")
    metrics["plots"] = plots
    io.write_text(out_dir / "style_artifacts.md", A.render_artifact_report(art, effects))
    return metrics


def summary_lines(m: dict) -> list[str]:
    """A few headline numbers for the console and report.md."""
    lines = [f"items {m['n_items']}, pairs {m['n_pairs']} ({m['split']})"]
    if "pairwise_accuracy" in m:
        lines.append("pairwise accuracy: " + ", ".join(f"{k}={v:.3f}" for k, v in m["pairwise_accuracy"].items()
                                                        if k != "n"))
    for h in m.get("heads_evaluated", []):
        r = m.get(h)
        if not isinstance(r, dict):
            continue
        if "raw" in r:
            lines.append(f"{h}: AUC {r['raw']['auc']:.3f}, log-loss {r['raw']['log_loss']:.3f} -> "
                         f"{r['temperature_scaled']['log_loss']:.3f} (T={r['temperature']:.2f}), "
                         f"ECE {r['raw']['ece']:.3f} -> {r['temperature_scaled']['ece']:.3f} / "
                         f"{r['isotonic']['ece']:.3f} (isotonic)")
        elif r.get("likelihood") == "ordinal":
            lines.append(f"{h} (ordinal, {len(r['levels'])} levels): Spearman {r['spearman']:.3f}, Kendall tau "
                         f"{r['kendall_tau']:.3f}, MAE of the expected level {r['mae']:.3f} ({r['n']} ratings)")
        elif r.get("likelihood") == "gaussian":
            lines.append(f"{h} (gaussian): Spearman {r['spearman']:.3f}, RMSE {r['rmse']:.3f} ({r['n_items']} items)")
        elif r.get("likelihood") == "arm_logit":
            lines.append(f"{h} (arm_logit, {r['n_experiments']} experiments): NLL per click {r['nll_per_click']:.4f} "
                         f"(equal arms {r['nll_per_click_equal_arms']:.4f}), higher-rate arm picked in "
                         f"{r['pair_accuracy']:.3f} of {r['n_pairs']} pairs")
        elif r.get("likelihood") == "arm_mean":
            lines.append(f"{h} (arm_mean, {r['n_arms']} arms of {r['n_experiments']} experiments): predicted vs "
                         f"measured log lift Spearman {r['spearman_measured']:.3f}, sign agreement "
                         f"{r['sign_agreement_measured']:.3f}, RMSE {r['rmse_log_lift']:.4f}")
        elif "spearman" in r:
            lines.append(f"{h}: Spearman {r['spearman']:.3f}")
        elif "note" in r:
            lines.append(f"{h}: {r['note']} (n={r['n']})")
    for k, v in m.get("truth", {}).items():
        lines.append(f"truth {k}: {v:.3f}" if isinstance(v, float) else f"truth {k}: {v}")
    for e, row in m.get("style_artifacts", {}).get("counterfactual", {}).items():
        lines.append(f"{e}: " + ", ".join(f"{k}={v:+.4f}" for k, v in row.items()))
    return lines
