# vrec: two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.vrec-installed

.PHONY: venv browser postgres demo test test-real test-cluster airflow lock lint clean-demo bench bench-scale bench-startup

# Create or reuse .venv; reinstall only when pyproject.toml or constraints.txt changed.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "[make] installing dependencies into $(VENV) (first time: a few minutes, ~7 GB)"
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@rm -rf vrec.egg-info  # build leftover: a second copy of the entry points beside the repo
	@echo "[make] building the Spark driver's JVM class archive (about 30 s; faster stage start-up)"
	@$(PY) -m vrec.spark.jvm build || echo "[make] continuing without the class archive (stages start slower)"
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

# PostgreSQL (Debian's package) for the cluster test's Airflow metadata database.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "[make] installing Debian's postgresql (Airflow's metadata database in make test-cluster)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null 2>&1; then SUDO=sudo; \
	  else echo "[make] postgresql is missing and apt-get needs root or sudo"; exit 1; fi; \
	  $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q \
	    --no-install-recommends postgresql; }

# pytest exit code 5 ("no tests collected") is a failure, not a pass. Two test processes
# (pytest-xdist, whole files each; TEST_WORKERS=0 runs in this process): serial pytest
# keeps a core idle about half the time (JVM starts, Airflow polling).
TEST_WORKERS ?= 2
test: venv browser
	@$(VENV)/bin/pytest $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile) $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "[make] pytest collected no tests: failing"; exit 1; fi; exit $$rc

# The real-data suite (needs ../shared/datasets).
test-real: venv
	@$(VENV)/bin/pytest -m realdata $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "[make] real-data suite collected no tests: failing"; exit 1; fi; exit $$rc

# The nightly DAG on Postgres + Airflow's four services + a Spark standalone master and worker,
# all started here and stopped after (about 25 min on 2 cores); not part of make test.
test-cluster: venv postgres
	@$(VENV)/bin/pytest -m cluster $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "[make] the cluster test collected no tests: failing"; exit 1; fi; exit $$rc

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

# One stage's start-up (session + first query) with and without the JVM start-up options.
bench-startup: venv
	$(PY) benchmarks/bench_startup.py --repeat 5

# The whole nightly DAG through Airflow at 1M and 10M events (about 2 h on 2 cores, most of
# it the first night's 50k-picture embedding): benchmarks/results/e2e_10m.json.
BENCH_SCALES ?= 1m 10m
bench-scale: venv
	$(PY) benchmarks/bench_scale.py $(foreach s,$(BENCH_SCALES),--scale $(s))
