"""The Spark driver JVM's start-up options (vrec.spark.jvm): what reaches spark-submit,
and that the class archive ``make venv`` builds is really mapped by a driver JVM started
the way the DAG starts the stages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vrec.config import SparkSettings
from vrec.spark.jvm import (
    EXECUTOR_JAVA_OPTIONS,
    JAVA_OPTIONS,
    archive_path,
    default_archive,
    jvm_conf,
)


def test_the_start_up_options_are_appended_to_the_configured_ones(tmp_path):
    archive = tmp_path / "a.jsa"
    archive.write_bytes(b"x")
    s = SparkSettings(conf={"spark.driver.memory": "2g", JAVA_OPTIONS: "-Dfoo=1"},
                      class_archive=str(archive), quick_jit=True)
    conf = jvm_conf(s)
    assert conf["spark.driver.memory"] == "2g"
    assert conf[JAVA_OPTIONS] == f"-Dfoo=1 -XX:SharedArchiveFile={archive} -XX:TieredStopAtLevel=1"
    # executors (a cluster's) get the same options; none were configured for them
    assert conf[EXECUTOR_JAVA_OPTIONS] == f"-XX:SharedArchiveFile={archive} -XX:TieredStopAtLevel=1"
    # off, or an archive that is not there: nothing is passed (the JVM starts as before)
    assert JAVA_OPTIONS not in jvm_conf(SparkSettings(class_archive="off"))
    assert archive_path(str(tmp_path / "missing.jsa")) is None
    assert jvm_conf(SparkSettings(class_archive=str(tmp_path / "missing.jsa"), conf={})) == {}
    # the defaults: the venv's archive when built, the optimising JIT kept
    default = jvm_conf(SparkSettings())
    expected = f"-XX:SharedArchiveFile={default_archive()}" if default_archive().is_file() else None
    assert default.get(JAVA_OPTIONS) == expected


def test_a_stage_jvm_maps_the_class_archive_make_venv_built(tmp_path):
    """A driver JVM started by spark-submit with the DAG's options loads Spark's classes
    from the archive (HotSpot logs their source as the shared objects file)."""
    archive = default_archive()
    assert archive.is_file(), ("make venv builds the archive (python -m vrec.spark.jvm build); "
                               f"missing: {archive}")
    opts = jvm_conf(SparkSettings(quick_jit=True))[JAVA_OPTIONS]
    log = tmp_path / "classes.log"
    job = tmp_path / "job.py"
    job.write_text("from pyspark.sql import SparkSession\n"
                   "s = SparkSession.builder.getOrCreate()\n"
                   "print('rows', s.range(5).count())\ns.stop()\n")
    submit = Path(sys.executable).parent / "spark-submit"
    out = subprocess.run(
        [str(submit), "--master", "local[1]", "--conf", "spark.ui.enabled=false",
         "--conf", f"{JAVA_OPTIONS}={opts} -Xlog:class+load=info:file={log}", str(job)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable})
    assert out.returncode == 0 and "rows 5" in out.stdout, out.stderr[-2000:]
    lines = log.read_text().splitlines()
    spark = [ln for ln in lines if " org.apache.spark." in ln]
    shared = [ln for ln in spark if "source: shared objects file" in ln]
    from_jars = [ln for ln in spark if ".jar" in ln]
    assert len(shared) > 1000, (len(shared), lines[:5])
    assert len(shared) > 5 * len(from_jars)


@pytest.mark.parametrize("bad", [b"", b"not an archive"])
def test_a_damaged_archive_is_ignored_by_the_jvm(tmp_path, bad):
    """An archive the JVM cannot use costs its speed, not the stage: java starts anyway."""
    archive = tmp_path / "bad.jsa"
    archive.write_bytes(bad)
    out = subprocess.run(["java", f"-XX:SharedArchiveFile={archive}", "-version"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "version" in out.stderr
