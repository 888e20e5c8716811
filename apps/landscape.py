"""The reward-landscape explorer: `rm_lab explore [RUNS_DIR]` (or `streamlit run apps/landscape.py -- RUNS_DIR`).

Only lays out what `rm_lab.explore.*` returns; every page catches its library call's error and shows it
as one line (never a traceback). Reads only run folders under RUNS_DIR and its registry. What Landscape and
Samples derive is read from the explorer's cache; `rm_lab explore --prepare RUNS_DIR` fills it ahead, and a
page that finds it cold says so and draws what is cheap first."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from rm_lab.commands.common import one_line
from rm_lab.config import ConfigError
from rm_lab.explore import attribution as A
from rm_lab.explore import calibration as C
from rm_lab.explore import generations as G
from rm_lab.explore import landscape as L
from rm_lab.explore import paths
from rm_lab.explore import runs as R
from rm_lab.explore import samples as S
from rm_lab.explore import tuning as T

PAGES = ("Runs", "Landscape", "Calibration", "Samples", "Generations", "Tuning")


def runs_dir() -> Path:
    """RUNS_DIR after `--` (streamlit run sets sys.argv to this script and its arguments), else
    $RM_LAB_EXPLORE_RUNS, $RM_LAB_RUNS or ./runs."""
    own = Path(sys.argv[0]).name == Path(__file__).name if sys.argv else False
    args = [a for a in sys.argv[1:] if not a.startswith("-")] if own else []
    return paths.runs_folder(args[0] if args else os.environ.get("RM_LAB_EXPLORE_RUNS")
                             or os.environ.get("RM_LAB_RUNS", "runs"))


def pick_folder(label: str, folders: list[Path], root: Path, key: str, missing: str) -> Path | None:
    """A run folder from the list, or a path typed by the user (refused outside the runs folder); with no run
    to pick, shows `missing` and gives None."""
    typed = st.sidebar.text_input(f"{label}: or a path under the runs folder", "", key=f"{key}_path")
    if typed.strip():
        return paths.run_folder(root, typed.strip(), label)
    if not folders:
        st.info(missing)
        return None
    names = [str(f.relative_to(root)) for f in folders]
    return root / st.sidebar.selectbox(label, names, key=key)


PREPARE_HINT = "run `rm_lab explore --prepare {root}` to do this ahead"


@st.cache_resource(show_spinner=False)
def landscape_of(root: str, folder: str, max_points: int, _model=None) -> L.Landscape:
    return L.load_landscape(root, folder, max_points=max_points, model=_model)


@st.cache_resource(show_spinner="editing replies and scoring them", max_entries=64)
def sweep_of(root: str, folder: str, max_points: int, edit: str, levels: tuple[int, ...], n: int) -> pd.DataFrame:
    return L.style_sweep(landscape_of(root, folder, max_points), edit, list(levels), n_replies=n)


@st.cache_resource(show_spinner=False, max_entries=32)
def attribution_of(root: str, folder: str, target: str) -> A.Attribution:
    return A.run_attribution(Path(folder), S.load_samples(root, folder)["samples"], target)


def prepared_landscape(root: Path, folder: Path, max_points: int) -> L.Landscape:
    """The map, from the explorer's cache when `rm_lab explore --prepare` (or an earlier open) put it there.

    Otherwise scoring it takes a model load and one pass over the replies (about a minute for 10,000 on a
    loaded machine), so the page says so, draws a sample of `L.PREVIEW_POINTS` replies first (a few
    seconds once the model is loaded) and then replaces it with the full map: the cost is shown, not
    hidden, and the page is usable before it is paid. The model loaded for the sample scores the full map."""
    if L.is_prepared(root, folder, max_points):
        return landscape_of(str(root), str(folder), max_points)
    t = time.time()
    note = st.empty()
    note.info(f"preparing… this model's map of up to {max_points:,} replies is not in the explorer's cache yet: "
              f"the model scores every reply once ({PREPARE_HINT.format(root=root)}).")
    model, preview = None, st.empty()
    if max_points > L.PREVIEW_POINTS:
        with st.spinner(f"loading the model and scoring a sample of {L.PREVIEW_POINTS:,} replies"):
            small = landscape_of(str(root), str(folder), L.PREVIEW_POINTS)
        model = small.model
        with preview.container():
            st.caption(f"a sample of {len(small.points):,} replies, while the full map is scored")
            st.altair_chart(map_chart(small, "score" if "score" in small.colours else small.colours[0]),
                            width="stretch")
    with st.spinner(f"scoring up to {max_points:,} replies for the full map"):
        land = landscape_of(str(root), str(folder), max_points, _model=model)
    preview.empty()
    kept = "kept in the explorer's cache" if land.info.get("map_key") else "not kept: the explorer's cache is read-only"
    note.caption(f"map prepared in {time.time() - t:.0f} s, {kept}; {PREPARE_HINT.format(root=root)}.")
    return land


def map_chart(land: L.Landscape, colour: str) -> alt.Chart:
    pts = land.points[list(dict.fromkeys(["x", "y", colour, "context_id", "origin", "response"]))]  # only what is drawn
    return alt.Chart(pts).mark_circle(size=40, opacity=0.8).encode(
        x=alt.X("x", title="PC 1"), y=alt.Y("y", title="PC 2"),
        color=alt.Color(colour, scale=alt.Scale(scheme="viridis")),
        tooltip=["context_id", "origin", "response", colour])


def page_runs(root: Path) -> None:
    st.header("Runs")
    table = R.runs_table(root)
    if table.empty:
        st.info(f"No runs in {root} yet (no registry.sqlite): run a stage, e.g. `rm_lab simulate`.")
        return
    st.dataframe(table, hide_index=True)
    ids = table["run_id"].tolist()
    c1, c2 = st.columns(2)
    a = c1.selectbox("run A", ids, index=0, key="run_a")
    b = c2.selectbox("run B", ids, index=min(1, len(ids) - 1), key="run_b")
    diff = R.compare(root, a, b)
    only = st.checkbox("only keys that differ", value=False, key="only_diff")
    st.subheader("Side by side")
    st.dataframe(diff[diff["differs"]] if only else diff, hide_index=True)


def page_landscape(root: Path) -> None:
    st.header("Landscape")
    folder = pick_folder("reward-model run", L.train_runs(root), root, "rm_run",
                         "No finished train-rm run under the runs folder: train one with `rm_lab train-rm data=...`.")
    if folder is None:
        return
    max_points = st.sidebar.number_input("max replies on the map", 50, 50_000, L.MAX_POINTS, step=500, key="max_points")
    land = prepared_landscape(root, folder, int(max_points))
    info = land.info
    st.caption(f"{info['n_points']} replies of {info['data']}; {info['n_members']} member(s); inputs "
               f"{', '.join(info['inputs'])}; PCA explains {land.explained[0]:.0%} + {land.explained[1]:.0%}")
    colour = st.selectbox("colour by", land.colours, key="colour")
    st.altair_chart(map_chart(land, colour), width="stretch")
    st.subheader("Heads over the map")
    st.dataframe(L.heads_summary(land), hide_index=True)

    st.subheader("Style sliders: the model's score along one feature, next to the truth")
    from rm_lab.explore.edits import EDITS

    edit = st.radio("feature", list(EDITS), horizontal=True, key="edit")
    levels = EDITS[edit][2]
    lo, hi = st.select_slider("levels", options=levels, value=(levels[0], levels[-1]), key=f"lv_{edit}")
    chosen = [v for v in levels if lo <= v <= hi]
    n = st.slider("replies edited", 8, 256, L.SWEEP_REPLIES, step=8, key="n_edit")
    sweep = sweep_of(str(root), str(folder), int(max_points), edit, tuple(chosen), int(n))
    cols = ["score_change"] + (["truth_change"] if "truth_change" in sweep else [])
    left, right = st.columns(2)
    left.caption("mean change from the unedited replies")
    left.line_chart(sweep.set_index("level")[cols])
    right.caption("share of training replies at this level (near 0: the model extrapolates)")
    right.bar_chart(sweep.set_index("level")[["train_share"]])
    st.dataframe(sweep, hide_index=True)


def page_calibration(root: Path) -> None:
    st.header("Calibration")
    folder = pick_folder("calibrate run", C.calibrate_runs(root), root, "cal_run",
                         "No calibrate run with calibration.json under the runs folder: "
                         "run `rm_lab calibrate model=...`.")
    if folder is not None:
        view = C.calibration_view(root, folder)
        cal, table = view["calibration"], view["experiments"]
        st.caption(f"predictor {cal.predictor}; map {cal.lift_map.method}; tau {cal.tau:.4g}; "
                   f"confidence {cal.confidence:.0%}")
        rel = view["reliability"]
        if rel:
            st.dataframe(pd.DataFrame([{k: v for k, v in rel.items() if isinstance(v, (int, float))}]),
                         hide_index=True)
        if not table.empty:
            x = "loo_pred" if "loo_pred" in table else cal.predictor
            base = alt.Chart(table)
            pts = base.mark_circle(size=50).encode(x=alt.X(x, title="predicted lift (held out)"),
                                                   y=alt.Y("observed_lift", title="observed lift"),
                                                   tooltip=list(table.columns[:6]))
            layers = [pts, base.mark_rule(opacity=0.5).encode(x=x, y="observed_low", y2="observed_high")]
            if {"loo_low", "loo_high"} <= set(table.columns):
                layers.append(base.mark_rule(opacity=0.3, color="orange").encode(y="observed_lift", x="loo_low",
                                                                                 x2="loo_high"))
            st.altair_chart(alt.layer(*layers), width="stretch")
            st.dataframe(table, hide_index=True)
        pred = st.number_input(f"what if: offline {cal.predictor}", value=float(table[cal.predictor].median())
                               if cal.predictor in table else 0.5, key="what_if")
        iv = C.interval_of(cal, pred)
        st.metric("calibrated lift", f"{iv['lift']:+.4f}", help=f"interval [{iv['low']:+.4f}, {iv['high']:+.4f}]")
        st.write(f"interval: [{iv['low']:+.4f}, {iv['high']:+.4f}]")
    st.subheader("Reliability per head (eval-rm)")
    evals = C.eval_runs(root)
    if not evals:
        st.info("No eval-rm run under the runs folder: run `rm_lab eval-rm model=... data=...`.")
        return
    ev = st.selectbox("eval-rm run", [str(f.relative_to(root)) for f in evals], key="eval_run")
    rel = C.head_reliability(root, root / ev)
    if rel["table"].empty:
        st.info("This eval-rm run has no binary head with calibration metrics.")
    else:
        st.dataframe(rel["table"], hide_index=True)
    for head, png in rel["plots"].items():
        st.image(str(png), caption=f"reliability: {head}")


def page_samples(root: Path) -> None:
    st.header("Samples")
    folder = pick_folder("sampling run", S.sample_runs(root), root, "sample_run",
                         "No best-of-n or rejection-sample run with samples.parquet under the runs folder: "
                         "run `rm_lab best-of-n model=...`.")
    if folder is None:
        return
    view = S.load_samples(root, folder)
    st.dataframe(S.summary(view), hide_index=True)
    ctx = st.selectbox("prompt (context)", view["contexts"], key="ctx")
    st.dataframe(S.ranked(view, ctx), hide_index=True)

    st.subheader("What drives the score: SHAP of a LightGBM style baseline")
    samples = view["samples"]
    targets = [c for c in dict.fromkeys(["value", *view["outputs"], "truth_engagement"]) if c in samples]
    target = st.selectbox("explain", targets, key="shap_target")
    note = None
    if not A.is_prepared(folder, samples, target):  # the tables above are drawn already; say what the wait is
        note = st.empty()
        note.info(f"preparing… fitting the style baseline to `{target}` over {len(samples):,} samples, with a 5-fold "
                  f"held-out R² ({PREPARE_HINT.format(root=root)}; other targets are fitted once, when picked).")
    try:
        with st.spinner(f"fitting LightGBM to `{target}` and its SHAP values"):
            att = attribution_of(str(root), str(folder), target)
    except ConfigError as e:  # too few samples, or nothing to attribute: this section only
        (note or st).info(one_line(e))
        return
    if note is not None:
        note.caption(f"fitted now and kept in the explorer's cache; {PREPARE_HINT.format(root=root)}.")
    r2 = "fewer than 20 samples: no held-out R²" if att.r2_heldout is None else f"held-out R² {att.r2_heldout:.2f}"
    st.caption(f"LightGBM on the replies' style features, fitted to `{target}` over all {len(samples)} samples "
               f"({r2}: how much of it style alone explains). Base {att.base:+.4f}; each reply's prediction is "
               "the base plus its SHAP values.")
    imp = att.importance().head(10)
    st.altair_chart(alt.Chart(imp).mark_bar().encode(
        x=alt.X("mean_abs_shap", title=f"mean |SHAP| on {target}"),
        y=alt.Y("feature", sort="-x", title=None, axis=alt.Axis(labelOverlap=False, labelLimit=240)),
        tooltip=list(imp.columns)).properties(height=28 * len(imp) + 40), width="stretch")
    st.caption("this prompt's replies: each feature's SHAP value (what it adds to the style prediction)")
    st.dataframe(att.for_context(samples, ctx), hide_index=True)


def page_generations(root: Path) -> None:
    st.header("Generations")
    fly = G.flywheel_generations(root)
    st.subheader("Flywheel generations (rm_lab flywheel)")
    if fly.empty:
        st.info("No finished flywheel run under the runs folder: run `rm_lab flywheel`.")
    else:
        st.dataframe(fly, hide_index=True)
        lifts = G.lift_long(fly)
        if not lifts.empty:
            base = alt.Chart(lifts)
            st.altair_chart(base.mark_point(filled=True, size=70).encode(
                x="generation:N", y=alt.Y("lift", axis=alt.Axis(format="%")), color="which",
                tooltip=list(lifts.columns)) + base.mark_rule().encode(
                x="generation:N", y="low", y2="high", color="which"), width="stretch")
    st.subheader("Evaluate runs")
    gen = G.generations(root)
    if gen.empty:
        st.info("No evaluate run under the runs folder: run `rm_lab evaluate model=...` per generation.")
    else:
        st.dataframe(gen, hide_index=True)
        long = G.win_rate_long(gen)
        if not long.empty:
            base = alt.Chart(long)
            chart = base.mark_line(point=True).encode(x="generation:O", y=alt.Y("rate", scale=alt.Scale(zero=False)),
                                                      color="which")
            band = base.mark_rule().encode(x="generation:O", y="low", y2="high", color="which")
            ceiling = alt.Chart(pd.DataFrame({"ceiling": [gen["ceiling"].dropna().iloc[0]]})).mark_rule(
                strokeDash=[4, 4], color="red").encode(y="ceiling") if gen["ceiling"].notna().any() else None
            st.altair_chart(chart + band + ceiling if ceiling is not None else chart + band, width="stretch")
    hist = G.training_histories(root)
    st.subheader("Policy training (train-policy)")
    if hist.empty:
        st.info("No train-policy run with history.json under the runs folder.")
    else:
        st.dataframe(hist, hide_index=True)


def page_tuning(root: Path) -> None:
    st.header("Tuning")
    folder = pick_folder("tune run", T.tune_runs(root), root, "tune_run",
                         "No tune run with study.json under the runs folder: run `rm_lab tune -c tune_rm`.")
    if folder is None:
        return
    view = T.study_view(root, folder)
    s = view["summary"]
    st.caption(f"study {s['study']} ({s['stage']}): {s['n_trials']} trials {s['states']}; {s['direction']} "
               f"{s['metric']}")
    trials = view["trials"]
    done = trials[trials["state"] == "COMPLETE"]
    if not done.empty:
        st.altair_chart(alt.Chart(trials.dropna(subset=["value"])).mark_circle(size=60).encode(
            x="number", y=alt.Y("value", scale=alt.Scale(zero=False)), color="state", tooltip=list(trials.columns)),
            width="stretch")
    st.dataframe(trials, hide_index=True)
    if not view["importances"].empty:
        st.subheader("Parameter importances")
        st.bar_chart(view["importances"].set_index("parameter"))
    if view["best"]:
        st.subheader(f"Best trial: #{view['best']['number']} ({view['best']['value']:.4g})")
        if view["best_yaml"]:
            st.code(view["best_yaml"], language="yaml")


def main() -> None:
    st.set_page_config(page_title="rm_lab explorer", layout="wide")
    st.title("rm_lab explorer")
    try:
        root = runs_dir()
    except Exception as e:  # noqa: BLE001  (shown as one line, never a traceback)
        st.error(f"error: {one_line(e)}")
        return
    st.sidebar.caption(f"runs folder: {root}")
    asked = st.query_params.get("page")  # a link to one page: http://127.0.0.1:8501/?page=Landscape
    page = st.sidebar.radio("page", PAGES, index=PAGES.index(asked) if asked in PAGES else 0, key="page")
    fn = {"Runs": page_runs, "Landscape": page_landscape, "Calibration": page_calibration,
          "Samples": page_samples, "Generations": page_generations, "Tuning": page_tuning}[page]
    try:
        fn(root)
    except Exception as e:  # noqa: BLE001
        st.error(f"error: {one_line(e)}")


main()
