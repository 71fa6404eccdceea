"""The Spark driver JVM's start-up: a class-data-sharing archive and the JIT tier.

Every Spark stage is one ``spark-submit``: a fresh JVM (and, on a cluster, fresh
executor JVMs) that loads some ten thousand classes from Spark's jars, then JIT-compiles
the query engine while it plans its first jobs. On a small night that start-up is most of a stage: a job that only builds the
session and counts one Parquet folder took 10.4 s on 2 cores (docs/operations.md,
*Start-up*). Two standard HotSpot options cut it, and both are on by default:

* ``-XX:SharedArchiveFile``: application class-data sharing (AppCDS). ``make venv`` runs
  :func:`build_archive` once: a short warm-up job (the kinds of Spark work the stages
  do) under ``-XX:ArchiveClassesAtExit`` leaves the loaded classes, parsed and verified,
  in ``<venv>/share/vrec/spark-driver.jsa``; later JVMs map it instead of loading the
  jars' classes one by one. A JVM that cannot use the archive (another JDK build, other
  jars) ignores it and starts as before (one warning line); without the file nothing is
  passed. ``spark.class_archive`` names another file, or ``off``.
* ``-XX:TieredStopAtLevel=1`` (``spark.quick_jit``): the JIT stops at its first, fast
  tier (C1). Start-up work compiles sooner; long CPU-bound JVM work (shuffles of tens
  of millions of rows) runs somewhat slower without the optimising tier, so large
  deployments may turn it off (docs/operations.md has the measurements).

:func:`jvm_conf` appends both to ``spark.driver.extraJavaOptions`` and
``spark.executor.extraJavaOptions`` (an executor on a machine without the archive file,
or with other jars, simply does without it); the DAG passes the result to spark-submit and
:func:`vrec.spark.session.build_session` to a JVM it starts itself (tests, ``vrec
run-stage``). This module imports nothing heavy: the DAG file imports it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JAVA_OPTIONS = "spark.driver.extraJavaOptions"
EXECUTOR_JAVA_OPTIONS = "spark.executor.extraJavaOptions"
ARCHIVE_NAME = "spark-driver.jsa"


def default_archive() -> Path:
    """Where ``make venv`` keeps the archive: inside the environment that owns the jars."""
    return Path(sys.prefix) / "share" / "vrec" / ARCHIVE_NAME


def archive_path(setting: str) -> Path | None:
    """The archive a JVM should map (``setting``: ``auto``, ``off`` or a file), or None
    when it is off or not built."""
    if setting == "off":
        return None
    path = default_archive() if setting == "auto" else Path(setting)
    return path if path.is_file() else None


def java_options(spark_settings) -> list[str]:
    """The start-up options for ``spark_settings`` (vrec.config.SparkSettings)."""
    opts = []
    archive = archive_path(spark_settings.class_archive)
    if archive is not None:
        opts.append(f"-XX:SharedArchiveFile={archive}")
    if spark_settings.quick_jit:
        opts.append("-XX:TieredStopAtLevel=1")
    return opts


def jvm_conf(spark_settings) -> dict[str, str]:
    """``spark_settings.conf`` with the start-up options appended to the driver's and the
    executors' ``extraJavaOptions`` (the configured ones are kept, first)."""
    conf = dict(spark_settings.conf)
    opts = java_options(spark_settings)
    if opts:
        for key in (JAVA_OPTIONS, EXECUTOR_JAVA_OPTIONS):
            conf[key] = " ".join([conf[key], *opts] if conf.get(key) else opts)
    return conf


# ---------------------------------------------------------------- building the archive

def _warm_up() -> None:  # pragma: no cover - runs inside spark-submit
    """The archive's training job: the kinds of Spark work the stages do (Parquet both
    ways, joins, windows, aggregations, Arrow both ways, a pandas UDF), on a few rows."""
    import pandas as pd
    from pyspark.sql import SparkSession, Window
    from pyspark.sql import functions as F

    spark = SparkSession.builder.appName("vrec-jvm-archive").getOrCreate()
    with tempfile.TemporaryDirectory(prefix="vrec-jvm-") as tmp:
        pdf = pd.DataFrame({"user_id": [f"u{i % 7}" for i in range(200)],
                            "item_id": [f"i{i % 13}" for i in range(200)],
                            "value": [float(i) for i in range(200)],
                            "ts": pd.date_range("2026-01-01", periods=200, freq="h", tz="UTC")})
        df = spark.createDataFrame(pdf)
        df.write.mode("overwrite").parquet(f"{tmp}/a")
        ev = spark.read.parquet(f"{tmp}/a").cache()
        items = ev.select("item_id").distinct()
        w = Window.partitionBy("user_id").orderBy(F.col("value").desc())
        agg = (ev.join(F.broadcast(items), "item_id", "left")
               .withColumn("r", F.row_number().over(w))
               .groupBy("user_id", "item_id")
               .agg(F.sum("value").alias("weight"), F.max("ts").alias("last_ts"),
                    F.collect_set("item_id").alias("items"), F.countDistinct("r").alias("n")))
        agg.write.mode("overwrite").parquet(f"{tmp}/b")

        def scale(batches):
            for b in batches:
                yield b.assign(weight=b["weight"] * 2.0)

        out = spark.read.parquet(f"{tmp}/b").mapInPandas(scale, agg.schema)
        out.toPandas()
        out.count()
        ev.unpersist()
    spark.stop()


def build_archive(path: Path | None = None, *, timeout: float = 600.0) -> Path:
    """Run the warm-up job under spark-submit with ``-XX:ArchiveClassesAtExit`` and
    move the archive to ``path`` (default :func:`default_archive`) in one rename."""
    path = Path(path or default_archive())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    submit = Path(sys.executable).parent / "spark-submit"
    cmd = [str(submit) if submit.exists() else "spark-submit", "--master", "local[2]",
           "--conf", f"{JAVA_OPTIONS}=-XX:ArchiveClassesAtExit={tmp} -Xlog:cds=off",
           "--conf", "spark.ui.enabled=false",
           "--conf", "spark.ui.showConsoleProgress=false",
           "--conf", f"spark.pyspark.python={sys.executable}",
           "--conf", f"spark.pyspark.driver.python={sys.executable}",
           __file__, "warm-up"]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"building the JVM class archive failed (exit {proc.returncode}):\n"
                           + proc.stderr[-3000:])
    os.replace(tmp, path)
    print(f"[vrec] JVM class archive {path} ({path.stat().st_size / 1e6:.0f} MB) built in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m vrec.spark.jvm build [PATH]``: build the archive (``make venv`` does)."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["warm-up"]:
        _warm_up()
        return 0
    if args[:1] == ["build"]:
        try:
            build_archive(Path(args[1]) if len(args) > 1 else None)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            # start-up gets slower without it; nothing else changes
            print(f"[vrec] no JVM class archive: {exc}", file=sys.stderr, flush=True)
            return 1
        return 0
    print("usage: python -m vrec.spark.jvm build [PATH]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
