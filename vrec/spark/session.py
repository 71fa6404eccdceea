"""Building the Spark session the same way everywhere (jobs, CLI and tests)."""

from __future__ import annotations

import os
import sys

from vrec.config import Settings


def python_for_workers() -> str:
    """The interpreter Spark's Python workers must run: this venv's (another one lacks
    vrec's modules and the workers fail)."""
    return os.environ.get("PYSPARK_PYTHON") or sys.executable


def build_session(settings: Settings, app_name: str, *, master: str | None = None):
    """Return a SparkSession configured from ``settings``.

    Under ``spark-submit`` the master comes from the submit command (Airflow's
    connection); otherwise from ``master`` or ``settings.spark.master``.
    """
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", python_for_workers())
    builder = SparkSession.builder.appName(app_name)
    under_submit = "PYSPARK_GATEWAY_PORT" in os.environ
    if not under_submit:
        builder = builder.master(master or settings.spark.master)
    from vrec.spark.jvm import jvm_conf

    # with the start-up options (class archive, JIT tier): they reach a JVM this call
    # starts itself; under spark-submit the DAG passed the same ones
    for key, value in jvm_conf(settings.spark).items():
        builder = builder.config(key, value)
    builder = builder.config("spark.pyspark.python", python_for_workers())
    # raw Parquet as pandas writes it: TIMESTAMP(NANOS) read as a long, which
    # vrec.spark.rawread turns into microseconds (Spark refuses it otherwise)
    builder = builder.config("spark.sql.legacy.parquet.nanosAsLong", "true")
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
