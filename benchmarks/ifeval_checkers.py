"""Benchmark: check all 541 IFEval prompts (GPT-4 responses), strict and loose; the budget is 5 s.

Run: .venv/bin/python benchmarks/ifeval_checkers.py [--data DIR] [--repeat 3]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rm_lab.evaluate import checkers_ifeval  # noqa: E402
from rm_lab.evaluate.ifeval_reference import check_all, data_dir, missing_files  # noqa: E402

BUDGET_S = 5.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="data folder (default $RM_LAB_DATA or ../shared/data)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    folder = data_dir(args.data)
    if missing_files(folder):
        print(f"IFEval data not found in {folder}: {missing_files(folder)}", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    strict = check_all(folder, loose=False)
    check_all(folder, loose=True)  # timed with strict: the benchmark covers both modes
    cold = time.perf_counter() - t0  # includes loading langdetect's profiles
    warm = []
    for _ in range(args.repeat):
        checkers_ifeval.detect_language.cache_clear()  # re-detect languages each time; keep profiles
        t = time.perf_counter()
        check_all(folder, loose=False)
        check_all(folder, loose=True)
        warm.append(time.perf_counter() - t)
    n_inst = sum(len(v) for v in strict)
    print(f"IFEval checkers: {len(strict)} prompts, {n_inst} instructions, strict + loose")
    print(f"  cold (first run, incl. langdetect profile load): {cold:.2f} s")
    print(f"  warm (best of {args.repeat}, language cache cleared): {min(warm):.2f} s")
    print(f"  machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}")
    ok = cold < BUDGET_S
    print(f"  budget {BUDGET_S:.0f} s: {'OK' if ok else 'OVER'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
