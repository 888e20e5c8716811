"""Screenshots of every explorer page in headless Chromium: `python scripts/screenshots.py [--runs DIR] [--out DIR]`.

Without --runs it builds a runs folder under --out the way a user would, through the CLI: a tiny
`simulate`, `train-rm` (2 members), `eval-rm`, `calibrate`, `evaluate`, a 2-trial `tune`, plus a
best-of-n-shaped samples run (each preference context's two replies and two style edits of them, scored
by `best_of_n.score_samples` with the model, so no LLM is needed), and prepares the explorer's cache
(`rm_lab explore --prepare`). Then `rm_lab explore` serves it on
127.0.0.1 and Debian's Chromium (`/usr/bin/chromium`, started headless with a new empty profile) opens
each page by its `?page=` link, waits until Streamlit has finished running the script, and saves the
page as PNG (Chrome DevTools Protocol over a local websocket). The PNGs go to `<runs>/screenshots/`
with `manifest.json`: per page its file, size, seconds, and any exception or `error:` text on the page
(the test asserts there is none). `--docs DIR` copies the PNGs there too (docs/screenshots/).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = ("Runs", "Landscape", "Calibration", "Samples", "Generations", "Tuning")
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(args: list[str], env: dict) -> None:
    """`rm_lab <args>`, in this process (the CLI's own entry point; no interpreter start per stage)."""
    from typer.testing import CliRunner

    from rm_lab.cli import app

    os.environ.update(env)
    res = CliRunner().invoke(app, args)
    if res.exit_code != 0:
        import traceback

        tb = "".join(traceback.format_exception(res.exception)) if res.exception else ""
        raise SystemExit(f"rm_lab {' '.join(args)} failed (exit {res.exit_code}):\n{res.output[-2000:]}\n{tb[-4000:]}")


def _cli_run(root: Path, kind: str, args: list[str], env: dict) -> Path:
    """`rm_lab <kind> <args>` and the one run folder it made. Run ids are second-stamped with a random
    suffix, so the newest by name need not be this run (a tune trial of the same second may sort after it)."""
    before = set((root / kind).iterdir()) if (root / kind).is_dir() else set()
    _cli([kind, *args], env)
    made = [p for p in (root / kind).iterdir() if p not in before]
    if len(made) != 1:
        raise SystemExit(f"rm_lab {kind} made {len(made)} run folders under {root / kind}, expected 1")
    return made[0]


def samples_run(root: Path, model: Path, sim: Path, n_contexts: int = 12) -> Path:
    """A best-of-n run folder: per preference context its two replies and a style edit of each, scored and
    picked by the library function best-of-n uses, with the world's truth beside them."""
    from rm_lab import io
    from rm_lab.explore.edits import set_emoji, set_list
    from rm_lab.policy.objectives.best_of_n import load_scorer, score_report, score_samples, world_truth
    from rm_lab.reward.data import read_record_folder
    from rm_lab.runs import Run

    recs = read_record_folder(sim)
    pr = recs["preference"].drop_duplicates("context_id").head(n_contexts)
    ctx = recs["context"].drop_duplicates("context_id").set_index("context_id").loc[pr["context_id"]].reset_index()
    groups = [[a, b, set_emoji(a, 3), set_list(b, 1)] for a, b in zip(pr["chosen"], pr["rejected"])]
    scorer = load_scorer(str(model))
    samples = score_samples(ctx, groups, recs["character"], scorer.outputs)
    rows = ctx.loc[ctx.index.repeat(4)].reset_index(drop=True)
    samples["truth_engagement"] = world_truth(samples["response"], rows, recs["character"], 1)
    run = Run("best-of-n", {"model": str(model), "n": 4, "source": "world replies and style edits"}, root=root)
    with io.atomic_path(run.file("samples.parquet")) as tmp:
        samples.to_parquet(tmp, index=False)
    io.write_json(run.file("report.json"), {"n": 4, "n_contexts": len(ctx), "scores": score_report(samples)})
    run.finish()
    return run.path


def build_runs(root: Path, env: dict) -> None:
    """The tiny runs folder the pages are shown on (a tiny random encoder: seconds, not minutes)."""
    import yaml

    sys.path.insert(0, str(ROOT / "tests"))
    from rm_helpers import make_tiny_backbone

    bb = make_tiny_backbone(root.parent / "tiny_bert")
    sim = _cli_run(root, "simulate", ["seed=3", "n_characters=4", "n_contexts=40", "n_preference_contexts=40"], env)
    tune = {"stage": "train-rm", "base": None, "n_trials": 2, "n_startup_trials": 1, "n_warmup_steps": 0,
            "fixed": {"data": str(sim), "backbone": str(bb), "cache_dir": str(root.parent / "tune_cache"),
                      "epochs": 1, "hidden": 16, "batch_size": 16, "max_length": 64, "pairwise": False},
            "space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
                      "n_layers": {"type": "int", "low": 0, "high": 2}}}
    (root.parent / "tune.yaml").write_text(yaml.safe_dump(tune, sort_keys=False))
    _cli(["tune", "-c", str(root.parent / "tune.yaml"), "--study", "screenshots"], env)
    model = _cli_run(root, "train-rm", [f"data={sim}", f"backbone={bb}", "cache_dir=run", "n_ensemble=2", "epochs=2",
                                        "pairwise=false", "hidden=16", "batch_size=16", "max_length=64"], env)
    _cli(["eval-rm", f"model={model}", f"data={sim}", "split=all", "n_counterfactual=4"], env)
    _cli(["calibrate", f"model={model}", "n_characters=4", "n_tests=8", "offline_contexts=16", "quality_contexts=60",
          "eligible_users=3000", "jitter=0.1"], env)
    _cli(["evaluate", f"model={model}", "n_contexts=8", "eligible_users=20000"], env)
    samples_run(root, model, sim)
    _cli(["explore", "--prepare", str(root)], env)  # as after the stages: the pages open from the cache


class Browser:
    """Headless Chromium driven over the DevTools Protocol (one page, one websocket)."""

    def __init__(self, width: int, height: int, profile: Path):
        self.port = _free_port()
        self.proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}",
                                      f"--remote-debugging-port={self.port}", "--remote-allow-origins=*",
                                      "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.ws, self.n, self.stack = None, 0, contextlib.ExitStack()
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=2) as r:
                    pages = [t for t in json.load(r) if t.get("type") == "page"]
                if pages:
                    from websockets.sync.client import connect

                    self.ws = self.stack.enter_context(connect(pages[0]["webSocketDebuggerUrl"], max_size=2**28,
                                                               open_timeout=20))
                    break
            except OSError:
                pass
            time.sleep(0.3)
        if self.ws is None:
            self.close()
            raise SystemExit(f"chromium did not open its DevTools port {self.port} within 60 s")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params) -> dict:
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=120))
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expr: str):
        return self.call("Runtime.evaluate", expression=expr, returnByValue=True)["result"].get("value")

    def close(self) -> None:
        try:
            self.stack.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


# the page is done when Streamlit shows the page's header, is not running the script, and charts are drawn
READY = """(() => {
  const h = [...document.querySelectorAll('h2')].map(e => e.innerText.trim());
  const status = document.querySelector('[data-testid="stStatusWidget"]');
  const running = document.querySelector('[data-testid^="stStatusWidgetRunning"]') ||
                  (status && /\b(stop|running)\b/i.test(status.innerText));
  const spin = document.querySelector('[data-testid="stSpinner"], [data-testid="stSpinnerIcon"]');
  const charts = [...document.querySelectorAll('.vega-embed')];
  const drawn = charts.every(c => c.querySelector('canvas, svg'));
  return {header: h, busy: Boolean(running || spin), drawn: drawn, charts: charts.length};
})()"""
PROBLEMS = """(() => ({
  exceptions: [...document.querySelectorAll('[data-testid="stException"]')].map(e => e.innerText.slice(0, 300)),
  errors: [...document.querySelectorAll('[data-testid="stAlertContentError"], .stAlert')]
            .map(e => e.innerText).filter(t => /error/i.test(t)).map(t => t.slice(0, 300)),
  traceback: /Traceback \\(most recent call last\\)/.test(document.body.innerText),
  deploy_button: [...document.querySelectorAll('button')].some(b => b.innerText.trim() === 'Deploy'),
}))()"""


HEIGHT = """(() => { const m = document.querySelector('[data-testid="stMain"]') ||
  document.querySelector('section.main') || document.body; return m.scrollHeight; })()"""


def shoot(runs: Path, out: Path, width: int = 1400, height: int = 1000, timeout: float = 180,
          max_height: int = 3200) -> dict:
    """Serve `runs` with `rm_lab explore` and save one PNG per page into `out`; returns the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen([sys.executable, "-m", "rm_lab.cli", "explore", str(runs), "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    profile = Path(tempfile.mkdtemp(prefix="chromium_profile_"))
    manifest: dict = {"runs": str(runs), "width": width, "height": height, "pages": {}}
    browser = None
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read()
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise SystemExit(f"rm_lab explore did not answer on 127.0.0.1:{port}")
                time.sleep(0.5)
        browser = Browser(width, height, profile)
        browser.call("Page.enable")
        browser.call("Runtime.enable")
        for page in PAGES:
            t = time.time()
            browser.call("Page.navigate", url=f"http://127.0.0.1:{port}/?page={page}")
            state, calm = {}, 0
            while time.time() - t < timeout:
                time.sleep(0.5)
                state = browser.js(READY) or {}
                ok = page in state.get("header", []) and not state.get("busy") and state.get("drawn")
                calm = calm + 1 if ok else 0
                if calm >= 4:  # settled for 2 s: rendered, not between reruns
                    break
            else:
                raise SystemExit(f"page {page} did not finish rendering in {timeout:.0f} s: {state}")
            # the whole page: grow the viewport to the height of Streamlit's scrolling main block (capped)
            full = int(browser.js(HEIGHT) or height)
            shot_h = max(height, min(full + 40, max_height))
            browser.call("Emulation.setDeviceMetricsOverride", width=width, height=shot_h, deviceScaleFactor=1,
                         mobile=False)
            time.sleep(1.5)  # relayout, and let the charts finish their transitions
            png = base64.b64decode(browser.call("Page.captureScreenshot", format="png")["data"])
            browser.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                         mobile=False)
            path = out / f"{page.lower()}.png"
            tmp = path.with_suffix(".png.tmp")
            tmp.write_bytes(png)
            tmp.replace(path)
            manifest["pages"][page] = {"file": path.name, "seconds": round(time.time() - t, 1), "height": shot_h,
                                       "charts": state.get("charts", 0), **(browser.js(PROBLEMS) or {})}
    finally:
        if browser is not None:
            browser.close()
        os.killpg(server.pid, 15)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
        shutil.rmtree(profile, ignore_errors=True)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=Path, help="an existing runs folder (default: build a tiny one under --out)")
    ap.add_argument("--out", type=Path, help="where to build the runs folder (default: a temporary folder)")
    ap.add_argument("--docs", type=Path, help="also copy the PNGs here (e.g. docs/screenshots)")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=1000, help="viewport height; a longer page is captured whole")
    a = ap.parse_args()
    if not Path(CHROMIUM).is_file():
        raise SystemExit(f"error: {CHROMIUM} not found: install Debian's chromium (apt-get install chromium)")
    runs = a.runs
    if runs is None:
        base = a.out or Path(tempfile.mkdtemp(prefix="explore_shots_"))
        runs = base / "runs"
        runs.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "RM_LAB_RUNS": str(runs), "HF_HUB_OFFLINE": "1",
               "RM_LAB_EXPLORE_CACHE": os.environ.get("RM_LAB_EXPLORE_CACHE", str(base / "explore_cache"))}
        os.environ.update({k: env[k] for k in ("RM_LAB_RUNS", "RM_LAB_EXPLORE_CACHE", "HF_HUB_OFFLINE")})
        t = time.time()
        build_runs(runs, env)
        print(f"built {runs} in {time.time() - t:.0f} s", file=sys.stderr)
    manifest = shoot(runs.resolve(), runs / "screenshots", a.width, a.height)
    if a.docs:
        a.docs.mkdir(parents=True, exist_ok=True)
        for p in manifest["pages"].values():
            shutil.copyfile(runs / "screenshots" / p["file"], a.docs / p["file"])
    print(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main()
