"""Headless-Chromium screenshots of every explorer page (scripts/screenshots.py), on a runs folder the
script builds through the CLI. Skipped, saying why, where Debian's chromium is not installed (`.ci/run`
and `make test` install it when they can)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "screenshots.py"
CHROMIUM = Path("/usr/bin/chromium")
PAGES = ("Runs", "Landscape", "Calibration", "Samples", "Generations", "Tuning")

pytestmark = [pytest.mark.slow, pytest.mark.models,
              pytest.mark.skipif(not CHROMIUM.is_file(), reason="no /usr/bin/chromium: install Debian's chromium "
                                 "(apt-get install chromium; .ci/run does it as root) for the screenshot test")]


def test_every_page_is_screenshotted_without_an_exception(tmp_path):
    from PIL import Image

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RM_LAB_EXPLORE_CACHE": str(tmp_path / "explore_cache"),
           "RM_LAB_CACHE": os.environ.get("RM_LAB_CACHE", str(tmp_path / "cache"))}
    res = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path), "--width", "1200", "--height", "900"],
                         env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-3000:])
    shots = tmp_path / "runs" / "screenshots"  # written into the runs folder the pages were served from
    manifest = json.loads((shots / "manifest.json").read_text())
    assert list(manifest["pages"]) == list(PAGES)
    for page, entry in manifest["pages"].items():
        # no exception, no traceback and no `error:` line on the page
        assert not entry["exceptions"] and not entry["errors"] and not entry["traceback"], (page, entry)
        assert entry["deploy_button"] is False, page  # the launcher's minimal toolbar
        img = Image.open(shots / entry["file"])
        assert img.format == "PNG"
        img.verify()  # a complete, valid PNG
        img = Image.open(shots / entry["file"]).convert("RGB")
        assert img.size == (1200, entry["height"]) and 900 <= entry["height"] <= 3200, (page, img.size)
        px = np.asarray(img, dtype=float)
        # not blank: many colours, and the page's text and charts make it far from one flat colour
        assert px.std() > 10 and len(np.unique(px.reshape(-1, 3)[::7], axis=0)) > 50, page
    assert manifest["pages"]["Landscape"]["charts"] >= 3  # the map, the sweep, the training share
    assert manifest["pages"]["Samples"]["charts"] >= 1  # the SHAP importances
