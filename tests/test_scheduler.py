"""The scheduled night, run by Airflow's real scheduler: `airflow standalone` (scheduler,
DAG processor, triggerer, API server) on a fresh embedded home, the DAG unpaused, nothing
triggered by hand. The run hour is set a minute ahead, so one scheduled run falls due
while the test waits. The day's events land without their `_SUCCESS` marker, so the run
must wait (deferred to the triggerer) until the test writes it; then it must publish the
day before its run time. Then, through the REST API the UI uses: a backfill's dry run
maps D1..D2 to exactly those days, and clearing a task of the run re-runs it for the same
day. Everything started is stopped. The run's facts are kept in
test-artifacts/scheduled_run.json."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pendulum
import psutil
import pytest

from vrec.airflow.cluster import free_port
from vrec.airflow.env import REPO, airflow_bin, airflow_env, migrate
from vrec.data.sample import generate_sample
from vrec.io import warehouse as W
from vrec.io.landing import MARKER

from .airflow_api import Api
from .airflow_api import wait as _wait
from .conftest import TINY
from .test_e2e import ARTIFACTS

pytestmark = pytest.mark.e2e
DAG = "vrec_nightly"
DOWNSTREAM = "vrec_downstream_user_recs"  # examples/downstream_user_recs.py


def _stop(proc: subprocess.Popen, home: Path) -> None:
    """Stop standalone's process group, then anything else still running on this home."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    for p in psutil.process_iter(["pid"]):
        try:
            if p.pid != os.getpid() and p.environ().get("AIRFLOW_HOME") == str(home):
                p.kill()
        except (psutil.Error, OSError):
            continue


@pytest.fixture(scope="module")
def scheduled(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sched")
    # the run hour: the first whole minute at least 10 s away (standalone may still be
    # starting then: a run whose time has passed when the DAG is first parsed starts at
    # once); the day it processes is the day before the run time (computed here, not by
    # vrec.airflow.schedule)
    now = pendulum.now("UTC")
    run_time = (now + dt.timedelta(seconds=10)).replace(second=0, microsecond=0) + \
        dt.timedelta(minutes=1)
    expected = (run_time.date() - dt.timedelta(days=1)).isoformat()
    raw, wh = tmp / "raw", tmp / "wh"
    generate_sample(raw, dataclasses.replace(TINY, end_date=dt.date.fromisoformat(expected)))
    marker = raw / "events" / f"ds={expected}" / MARKER
    marker.unlink()  # the day's export is not finished yet
    cfg = tmp / "vrec.yaml"
    cfg.write_text(f"paths: {{raw_root: {raw}, image_root: {raw}, warehouse_root: {wh}}}\n"
                   "spark: {master: 'local[2]', quick_jit: true, conf: {spark.sql.shuffle.partitions: '2', "
                   "spark.ui.enabled: 'false', spark.driver.memory: 1g}}\n"
                   "cf: {factors: 16, iterations: 8}\nrecs: {k: 5, candidates: 20}\n"
                   "eval: {gate_min_users: 5}\nlanding: {poke_seconds: 5, quiet_minutes: null}\n")
    port = free_port()
    home = tmp / "airflow"
    env = airflow_env(home, config=cfg, spark_master="local[2]", port=port)
    env.update({"VREC_RUN_AT": run_time.strftime("%H:%M"), "VREC_START_DATE": expected,
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10"})
    # the DAGs folder: vrec_nightly plus the README's downstream example, scheduled on the
    # vrec.user_recs asset that publish updates
    dags = tmp / "dags"
    dags.mkdir()
    for src in (REPO / "dags" / "vrec_nightly.py", REPO / "examples" / "downstream_user_recs.py"):
        (dags / src.name).symlink_to(src)
    env.update({"AIRFLOW__CORE__DAGS_FOLDER": str(dags), "VREC_EXPORT_DIR": str(tmp / "exports")})
    migrate(env)
    log = tmp / "standalone.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([airflow_bin(), "standalone"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    pw_file = home / "simple_auth_manager_passwords.json.generated"
    api = Api(f"http://localhost:{port}", lambda: json.loads(pw_file.read_text())["admin"])
    try:
        api.login(time.time() + 240)

        def waiting_sensor():
            runs = api.get(f"/dags/{DAG}/dagRuns", run_type=["scheduled"])["dag_runs"]
            if not runs:
                return None
            ti = api.get(f"/dags/{DAG}/dagRuns/{runs[0]['dag_run_id']}/taskInstances/wait_for_events")
            return ti if ti["state"] == "deferred" else None

        deferred = _wait("the sensor to defer while the day has no marker", waiting_sensor,
                         run_time.timestamp() + 600, log, every=3)
        marker.touch()  # the export finishes
        landed_at = time.time()

        def finished_scheduled_run():
            runs = api.get(f"/dags/{DAG}/dagRuns", run_type=["scheduled"])["dag_runs"]
            done = [r for r in runs if r["state"] in ("success", "failed")]
            return done[0] if done else None

        run = _wait("the scheduled run to finish", finished_scheduled_run,
                    run_time.timestamp() + 900, log)

        def finished_downstream_run():
            runs = api.get(f"/dags/{DOWNSTREAM}/dagRuns")["dag_runs"]
            done = [r for r in runs if r["state"] in ("success", "failed")]
            return done[0] if done else None

        downstream = _wait("the downstream DAG to run on the user_recs asset",
                           finished_downstream_run, time.time() + 300, log, every=3) \
            if run["state"] == "success" else None
        yield {"run": run, "downstream": downstream, "exports": tmp / "exports", "expected": expected, "run_time": run_time, "wh": wh, "api": api,
               "log": log, "raw": raw, "deferred": deferred, "landed_at": landed_at}
    finally:
        _stop(proc, home)


def test_the_scheduled_run_published_the_day_before_its_run_time(scheduled):
    run, expected, wh = scheduled["run"], scheduled["expected"], scheduled["wh"]
    tis = scheduled["api"].get(f"/dags/{DAG}/dagRuns/{run['dag_run_id']}/taskInstances")
    states = {t["task_id"]: t["state"] for t in tis["task_instances"]}
    assert run["state"] == "success", (states, scheduled["log"].read_text()[-3000:])
    # made by the scheduler from the timetable, not triggered by hand
    assert run["run_type"] == "scheduled" and run["triggered_by"] == "timetable"
    assert run["dag_run_id"] == f"scheduled__{expected}T00:00:00+00:00"
    run_after = pendulum.parse(run["run_after"])
    assert run_after == scheduled["run_time"]
    assert pendulum.parse(run["logical_date"]).date().isoformat() == expected
    assert pendulum.parse(run["data_interval_start"]) == pendulum.parse(expected)
    assert pendulum.parse(run["data_interval_end"]) == pendulum.parse(expected) + dt.timedelta(days=1)
    # it waited for the day's marker, then published that day
    assert states["wait_for_events"] == "success" and states["report"] == "success"
    assert W.published_ds(wh) == [expected] and W.latest_ds(wh) == expected
    assert len(W.read_table(wh, "user_recs", expected)) > 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "scheduled_run.json").write_text(json.dumps({
        "dag_run_id": run["dag_run_id"], "run_type": run["run_type"],
        "triggered_by": run["triggered_by"], "run_after": run["run_after"],
        "logical_date": run["logical_date"], "start_date": run["start_date"],
        "end_date": run["end_date"], "state": run["state"], "published_ds": W.published_ds(wh),
        "latest_ds": W.latest_ds(wh), "tasks": states}, indent=2))


def test_publish_emits_asset_events_that_schedule_the_downstream_dag(scheduled):
    """Each published table is an Asset updated by publish, its event carrying the ds, the
    version and the report; the README's downstream DAG ran on the user_recs event and
    exported that day's lists."""
    from vrec.report import report_path

    api, expected, wh = scheduled["api"], scheduled["expected"], scheduled["wh"]
    man = W.manifest(wh, expected)
    events = api.get("/assets/events", source_dag_id=DAG, limit=100)["asset_events"]
    by_name = {e["name"]: e for e in events}
    assert set(by_name) == {f"vrec.{t}" for t in W.PUBLISHED_TABLES}, events
    for table in W.PUBLISHED_TABLES:
        e = by_name[f"vrec.{table}"]
        assert e["source_task_id"] == "publish" and e["source_run_id"] == scheduled["run"]["dag_run_id"]
        assert e["uri"] == (wh.resolve() / table).as_uri()
        assert e["extra"]["ds"] == expected and e["extra"]["version"] == man["version"]
        assert e["extra"]["rows"] == man["tables"][table]["rows"]
        assert e["extra"]["report"] == str(report_path(wh, expected))
    down = scheduled["downstream"]
    assert down and down["state"] == "success" and down["run_type"] == "asset_triggered", down
    csv = scheduled["exports"] / f"user_recs_{expected}.csv"
    assert len(pd.read_csv(csv)) == man["tables"]["user_recs"]["rows"] == \
        len(W.read_table(wh, "user_recs", expected))


def test_the_run_waited_in_the_triggerer_until_the_marker_landed(scheduled):
    """Late data is waited for: the sensor deferred (no worker slot) while the day had
    no _SUCCESS, and finished only after the test wrote it."""
    ti = scheduled["deferred"]
    assert ti["state"] == "deferred" and ti["task_id"] == "wait_for_events"
    final = scheduled["api"].get(
        f"/dags/{DAG}/dagRuns/{scheduled['run']['dag_run_id']}/taskInstances/wait_for_events")
    assert final["state"] == "success"
    assert pendulum.parse(final["end_date"]).timestamp() >= scheduled["landed_at"]


def test_a_backfill_of_d1_to_d2_plans_exactly_those_days(scheduled):
    """The dry run behind the UI's backfill dialog, against the running API server."""
    end = dt.date.fromisoformat(scheduled["expected"])
    d1, d2 = end - dt.timedelta(days=3), end - dt.timedelta(days=1)
    out = scheduled["api"].post("/backfills/dry_run", {
        "dag_id": DAG, "from_date": f"{d1}T00:00:00Z", "to_date": f"{d2}T00:00:00Z",
        "max_active_runs": 1, "reprocess_behavior": "completed"})
    assert [pendulum.parse(b["logical_date"]).date() for b in out["backfills"]] == \
        [d1, d1 + dt.timedelta(days=1), d2]


def test_clearing_a_task_reruns_it_for_the_same_day(scheduled):
    api, run, expected = scheduled["api"], scheduled["run"], scheduled["expected"]
    run_id = run["dag_run_id"]
    api.post(f"/dags/{DAG}/clearTaskInstances", {
        "dag_run_id": run_id, "task_ids": ["report"], "dry_run": False, "only_failed": False})

    def rerun():
        ti = api.get(f"/dags/{DAG}/dagRuns/{run_id}/taskInstances/report")
        return ti if ti["try_number"] >= 2 and ti["state"] in ("success", "failed") else None

    ti = _wait("the cleared report task to run again", rerun, time.time() + 300,
               scheduled["log"], every=3)
    assert ti["state"] == "success"
    # the same day, as part of the same run (the run owns its day's staging)
    assert ti["rendered_fields"]["op_args"] == ["report", expected, run_id]
