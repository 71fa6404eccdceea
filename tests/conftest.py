"""Shared fixtures: one local Spark session per test run and a tiny generated sample."""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import tempfile
from pathlib import Path

import pytest

from vrec.config import Settings, load_settings
from vrec.data.sample import SampleSpec, generate_sample

# py4j logs on interpreter shutdown after pytest closed its streams: keep it quiet.
logging.getLogger("py4j").setLevel(logging.WARNING)

# Keep Airflow (imported by DAG tests) away from ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="vrec-airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

TINY = SampleSpec(n_users=30, n_items=48, days=4, end_date=dt.date(2026, 11, 20), seed=11,
                  image_size=64, missing_image_share=0.03, corrupt_image_share=0.05,
                  dirty_event_share=0.02, new_users=3)


@pytest.fixture(scope="session")
def spark():
    """One local Spark session for the whole run (2 threads, 2 shuffle partitions)."""
    from vrec.spark.session import build_session

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    settings = Settings(spark={"master": "local[2]", "conf": {
        "spark.sql.shuffle.partitions": "2", "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": "2g"}})
    session = build_session(settings, "vrec-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory) -> Path:
    """A tiny generated raw landing zone (4 days, 48 items, 30 users)."""
    root = tmp_path_factory.mktemp("tiny") / "raw"
    generate_sample(root, TINY)
    return root


def settings_for(raw: Path, warehouse: Path, tmp: Path) -> Settings:
    """Settings for a raw zone and warehouse, written as a YAML file and loaded back."""
    cfg = tmp / "vrec.yaml"
    cfg.write_text(
        f"paths:\n  raw_root: {raw}\n  image_root: {raw}\n  warehouse_root: {warehouse}\n"
        "spark:\n  master: local[2]\n  conf:\n    spark.sql.shuffle.partitions: '2'\n"
        "    spark.ui.enabled: 'false'\n    spark.driver.memory: 2g\n"
        "cf:\n  factors: 16\n  iterations: 8\nrecs:\n  k: 5\n  candidates: 20\n  similar_k: 5\n"
        # four days of data: the tunings' forward window is the last day, and a few
        # users active on it are enough to tune on (and to train the ranker: it then
        # runs, though a handful of queries rarely lets it beat the blend)
        "  window_days: 1\n  tune_min_users: 5\n"
        "ranker:\n  min_queries: 2\n")
    return load_settings(cfg, environ={})


def run_through_publish(spark, s: Settings, ds: str) -> dict:
    """Run every stage up to publish for ``ds`` in-process; the publish result. The quality
    gate is off: a few dozen test users a day make day-to-day NDCG too noisy to gate on
    (the gate has its own tests)."""
    from vrec.executor import run_stage
    from vrec.stages import NAMES

    s = s.model_copy(update={"eval": s.eval.model_copy(update={"gate": False})})
    out = {name: run_stage(s, name, ds, spark=spark) for name in NAMES[:NAMES.index("publish") + 1]}
    return out["publish"]


def published_state(wh: Path) -> dict:
    """Every published partition's manifest version and a digest of its files (each
    table also read back, so a torn one fails here)."""
    import hashlib

    from vrec.io import warehouse as W

    out = {}
    for ds in W.published_ds(wh):
        m = W.manifest(wh, ds)
        for table in m["tables"]:
            h = hashlib.sha256()
            for f in sorted((wh / table / f"ds={ds}").glob("*.parquet")):
                h.update(f.read_bytes())
            out[(ds, table)] = (m["version"], h.hexdigest())
            W.read_table(wh, table, ds)
    return out
