# vrec: two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vrec-installed

.PHONY: venv browser demo test test-real airflow lock lint clean-demo bench

# Create or reuse .venv; reinstall only when pyproject.toml or constraints.txt changed.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "[make] installing dependencies into $(VENV) (first time: a few minutes, ~7 GB)"
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@rm -rf vrec.egg-info  # build leftover: a second copy of the entry points beside the repo
	@touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(PY) -m vrec.demo

# Headless Chromium (Debian's package) for the test that renders the run report.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "[make] installing Debian's chromium (headless browser for the run-report test)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	  else echo "[make] chromium is missing and apt-get needs root or sudo"; exit 1; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q \
	    --no-install-recommends chromium fonts-dejavu-core; }

# pytest exit code 5 ("no tests collected") is a failure, not a pass.
test: venv browser
	@$(VENV)/bin/pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "[make] pytest collected no tests: failing"; exit 1; fi; exit $$rc

# The real-data suite (needs ../shared/datasets).
test-real: venv
	@$(VENV)/bin/pytest -m realdata $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "[make] real-data suite collected no tests: failing"; exit 1; fi; exit $$rc

# airflow standalone (scheduler + API server + UI) on the demo's home and DAGs.
airflow: venv
	$(PY) -m vrec.airflow.env standalone

# Regenerate the lock file from the current venv.
lock:
	$(PY) -m pip freeze --exclude-editable | grep -v '^-e ' > constraints.txt

lint: venv
	$(VENV)/bin/ruff check vrec dags jobs tests benchmarks

clean-demo:
	rm -rf data/warehouse .airflow

# Benchmarks (not tests): named scenarios, results in benchmarks/results/. Need ../shared/datasets.
# `make bench BENCH_CF="movielens synth50k"` skips the 10M-pair scale (about 25 min of it).
BENCH_N ?= 1500
BENCH_CF ?= movielens synth50k synth10m
bench: venv
	$(PY) benchmarks/bench_embed.py --dataset movielens --n $(BENCH_N)
	$(PY) benchmarks/bench_embed.py --dataset fashion --n $(BENCH_N)
	for s in $(BENCH_CF); do $(PY) benchmarks/bench_cf.py --scenario $$s || exit 1; done
