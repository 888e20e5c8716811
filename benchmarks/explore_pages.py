"""Time each explorer page on a large run folder: `python benchmarks/explore_pages.py [RUNS_DIR] [--replies N]`.

Without RUNS_DIR it builds one in a temporary folder: a simulated world with about N replies
(interactions + both sides of the preference pairs), a 2-member reward model on a tiny random encoder
(the page cost is the app's, not the encoder's), an eval-rm run and a best-of-4-shaped samples run of about N
samples (its SHAP baseline is fitted on all of them). Then, timed:

1. `prepare`: `rm_lab explore --prepare RUNS_DIR` in a new process, into a new, empty explorer cache
   (`$RM_LAB_EXPLORE_CACHE`), as a user runs it after the stages;
2. `prepared_open`: a new process opens every page over that cache (the issue's target: each page
   under 3 s, `cold_s`, the first render in that process);
3. without preparing, two new processes sharing another new, empty cache: `first_open` (nothing
   cached: the Landscape page scores a sample, then the map and its default sweep; Samples fits SHAP) and
   `reopen` (a new process, as after restarting `rm_lab explore`); and `cold_preview_s`: in a new process
   over an empty cache, the seconds until the sample map a cold Landscape page draws first is ready
   (imports, the model load and scoring `landscape.PREVIEW_POINTS` replies).

Each page process renders every page once cold and once warm (AppTest); the seconds are printed as JSON
with `target_met` (every page of `prepared_open` under 3 s), and written to `--json PATH` if given."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def build(root: Path, replies: int) -> None:
    from typer.testing import CliRunner

    from rm_helpers import make_tiny_backbone
    from rm_lab.cli import app

    os.environ["RM_LAB_RUNS"] = str(root)
    r = CliRunner()
    n = max(1, replies // 3)  # one reply per interaction context, two per preference context

    def ok(args):
        res = r.invoke(app, args)
        if res.exit_code != 0:
            raise SystemExit(f"{args[0]} failed: {res.output[-500:]}")

    ok(["simulate", "seed=1", "n_characters=12", f"n_contexts={n}", f"n_preference_contexts={n}"])
    sim = next((root / "simulate").iterdir())
    bb = make_tiny_backbone(root.parent / "tiny_bert")
    ok(["train-rm", f"data={sim}", f"backbone={bb}", "cache_dir=run", "n_ensemble=2", "epochs=1", "pairwise=false",
        "hidden=32", "batch_size=256", "max_length=64"])
    model = next((root / "train-rm").iterdir())
    ok(["eval-rm", f"model={model}", f"data={sim}", "split=all", "n_counterfactual=4"])
    sys.path.insert(0, str(ROOT / "scripts"))
    from screenshots import samples_run

    samples_run(root, model, sim, n_contexts=max(1, replies // 4))  # ~N best-of-4 samples for the Samples page


PAGES = ("Runs", "Landscape", "Calibration", "Samples", "Generations", "Tuning")


def pages(root: Path) -> dict:
    """Each page rendered twice in this process (cold, then warm), in seconds."""
    from streamlit.testing.v1 import AppTest

    os.environ["RM_LAB_EXPLORE_RUNS"] = str(root)
    t = time.time()
    at = AppTest.from_file(str(ROOT / "apps" / "landscape.py"), default_timeout=1200).run()
    out: dict = {"app_start_s": round(time.time() - t, 2)}
    for page in PAGES:
        times = []
        for _ in range(2):
            t = time.time()
            at.sidebar.radio(key="page").set_value(page).run()
            times.append(round(time.time() - t, 2))
            if at.exception or at.error:
                raise SystemExit(f"{page}: {[e.value for e in at.error] or at.exception}")
            at.sidebar.radio(key="page").set_value("Runs" if page != "Runs" else "Generations").run()
        out[page] = {"cold_s": times[0], "warm_s": times[1]}
    return out


def preview(root: Path) -> float:
    """Seconds from a bare process to the sample map a cold Landscape page draws first."""
    t = time.time()
    from rm_lab.explore import landscape as L

    L.load_landscape(root, L.train_runs(root)[0], max_points=L.PREVIEW_POINTS)
    return round(time.time() - t, 2)


def main() -> None:
    import subprocess

    if "--pages-only" in sys.argv:  # the child process: one explorer session
        print(json.dumps(pages(Path(sys.argv[sys.argv.index("--pages-only") + 1]))))
        return
    if "--preview-only" in sys.argv:
        print(json.dumps(preview(Path(sys.argv[sys.argv.index("--preview-only") + 1]))))
        return
    flags = ("--replies", "--json")
    args = [a for i, a in enumerate(sys.argv[1:], 1) if not a.startswith("--") and sys.argv[i - 1] not in flags]
    replies = int(sys.argv[sys.argv.index("--replies") + 1]) if "--replies" in sys.argv else 10_000
    if args:
        root = Path(args[0])
    else:
        root = Path(tempfile.mkdtemp(prefix="explore_bench_")) / "runs"
        root.mkdir()
        t = time.time()
        build(root, replies)
        print(f"built {root} in {time.time() - t:.0f} s", file=sys.stderr)
    out: dict = {"runs": str(root), "load_average_start": round(os.getloadavg()[0], 1)}

    def page_process(name: str, env: dict) -> None:
        t = time.time()
        res = subprocess.run([sys.executable, __file__, "--pages-only", str(root)], env=env, capture_output=True,
                             text=True)
        if res.returncode != 0:
            raise SystemExit(f"{name}: {res.stdout[-1000:]}{res.stderr[-2000:]}")
        out[name] = {"process_s": round(time.time() - t, 1), **json.loads(res.stdout.strip().splitlines()[-1])}
        print(f"{name}: {json.dumps(out[name])}", file=sys.stderr)

    prepared = {**os.environ, "RM_LAB_EXPLORE_CACHE": tempfile.mkdtemp(prefix="explore_cache_prepared_")}
    t = time.time()
    res = subprocess.run([sys.executable, "-m", "rm_lab.cli", "explore", "--prepare", str(root)], env=prepared,
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"prepare: {res.stdout[-1000:]}{res.stderr[-2000:]}")
    out["prepare"] = {"process_s": round(time.time() - t, 1), "log": res.stderr.strip().splitlines()}
    print(f"prepare: {out['prepare']['process_s']} s", file=sys.stderr)
    page_process("prepared_open", prepared)
    out["target_met"] = all(out["prepared_open"][p]["cold_s"] < 3 for p in PAGES)
    if "--no-cold" not in sys.argv:
        cold = {**os.environ, "RM_LAB_EXPLORE_CACHE": tempfile.mkdtemp(prefix="explore_cache_")}
        for name in ("first_open", "reopen"):
            page_process(name, cold)
        t = time.time()
        res = subprocess.run([sys.executable, __file__, "--preview-only", str(root)], capture_output=True, text=True,
                             env={**os.environ, "RM_LAB_EXPLORE_CACHE": tempfile.mkdtemp(prefix="explore_cache_")})
        if res.returncode != 0:
            raise SystemExit(f"preview: {res.stderr[-2000:]}")
        out["cold_preview_s"] = json.loads(res.stdout.strip().splitlines()[-1])
    out["load_average_end"] = round(os.getloadavg()[0], 1)
    text = json.dumps(out, indent=1)
    if "--json" in sys.argv:
        Path(sys.argv[sys.argv.index("--json") + 1]).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
