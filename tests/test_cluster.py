"""The nightly DAG on a real cluster (``make test-cluster``; not part of ``make test``):
PostgreSQL as Airflow's metadata database, Airflow's API server, scheduler (LocalExecutor),
DAG processor and triggerer as separate processes sharing a JWT secret and Fernet key, and
a Spark standalone master with one worker (vrec.airflow.cluster), all on this machine.

Driven only through the REST API: the DAG is unpaused (the scheduler runs the last
complete day), one day is triggered with its logical date, then one earlier day is
backfilled: each kind of run once. Every published partition must equal what local mode (``airflow dags test``
on local Spark and SQLite, as ``make demo`` runs it) publishes for the same days, in the
same order, from the same raw data. Everything started is stopped at the end. The facts
are kept in test-artifacts/cluster_run.json.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import time

import numpy as np
import pandas as pd
import psutil
import psycopg2
import pytest

from vrec.airflow.cluster import LocalCluster
from vrec.airflow.env import airflow_env, dags_test, migrate
from vrec.data.sample import generate_sample
from vrec.io import warehouse as W

from .airflow_api import Api, wait
from .conftest import TINY
from .test_e2e import ARTIFACTS

pytestmark = pytest.mark.cluster
DAG = "vrec_nightly"
COMPARED = ("user_recs", "item_similar", "item_popularity", "user_profile", "eval_metrics",
            "quarantine")


def _config(tmp, raw, wh):
    cfg = tmp / f"vrec-{wh.name}.yaml"
    cfg.write_text(f"paths: {{raw_root: {raw}, image_root: {raw}, warehouse_root: {wh}}}\n"
                   "spark: {master: 'local[2]', quick_jit: true, conf: {spark.sql.shuffle.partitions: '2', "
                   "spark.ui.enabled: 'false', spark.driver.memory: 1g, "
                   "spark.executor.memory: 1g}}\n"
                   "cf: {factors: 16, iterations: 8}\nrecs: {k: 5, candidates: 20}\n"
                   "eval: {gate_min_users: 5}\nlanding: {poke_seconds: 5}\n"
                   "orchestration: {retries: 0}\n")
    return cfg


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    # the scheduler runs the last complete day as soon as the DAG is unpaused: the sample
    # ends that day, so that run has data too
    last = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    raw = tmp / "raw"
    generate_sample(raw, dataclasses.replace(TINY, days=4, end_date=last))
    triggered = [last - dt.timedelta(days=1)]
    backfilled = last - dt.timedelta(days=2)
    order = [last, *triggered, backfilled]
    wh = tmp / "wh-cluster"
    cluster = LocalCluster(tmp / "svc", _config(tmp, raw, wh), extra_env={
        "VREC_RUN_AT": "00:00", "VREC_START_DATE": backfilled.isoformat(),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10"})
    out: dict = {"order": [d.isoformat() for d in order], "wh": wh}
    started = time.time()
    cluster.start()
    sched_log = cluster.root / "scheduler.log"
    try:
        api = Api(cluster.api_url, lambda: cluster.secret["VREC_ADMIN_PASSWORD"])
        api.login(time.time() + 120)
        wait("the DAG to be parsed", lambda: api.get("/dags", dag_id_pattern=DAG)["dags"],
             time.time() + 300, sched_log, every=3)

        def finished(run_id: str):
            r = api.get(f"/dags/{DAG}/dagRuns/{run_id}")
            return r if r["state"] in ("success", "failed") else None

        def run_of(run_type: str):
            runs = api.get(f"/dags/{DAG}/dagRuns", run_type=[run_type])["dag_runs"]
            return runs[0]["dag_run_id"] if runs else None

        runs = []
        api.patch(f"/dags/{DAG}", {"is_paused": False})
        scheduled = wait("the scheduled run", lambda: run_of("scheduled"), time.time() + 300,
                         sched_log, every=3)
        runs.append(wait("the scheduled run to finish", lambda: finished(scheduled),
                         time.time() + 1500, sched_log))
        for day in triggered:
            rid = api.post(f"/dags/{DAG}/dagRuns", {
                "dag_run_id": f"cluster__{day}", "logical_date": f"{day}T00:00:00Z"})["dag_run_id"]
            runs.append(wait(f"the run for {day}", lambda rid=rid: finished(rid), time.time() + 1500,
                             sched_log))
        out["backfill"] = api.post("/backfills", {
            "dag_id": DAG, "from_date": f"{backfilled}T00:00:00Z",
            "to_date": f"{backfilled}T00:00:00Z", "max_active_runs": 1,
            "reprocess_behavior": "none"})
        backfill = wait("the backfill's run", lambda: run_of("backfill"), time.time() + 300,
                        sched_log, every=3)
        runs.append(wait("the backfill to finish", lambda: finished(backfill), time.time() + 1500,
                         sched_log))
        out["runs"] = runs
        out["tasks"] = {r["dag_run_id"]: {t["task_id"]: t["state"] for t in api.get(
            f"/dags/{DAG}/dagRuns/{r['dag_run_id']}/taskInstances")["task_instances"]} for r in runs}
        out["spark_apps"] = [a["name"] for a in cluster.spark.applications()]
        con = psycopg2.connect(host="127.0.0.1", port=cluster.postgres.port, user="airflow",
                               password=cluster.secret["POSTGRES_PASSWORD"], dbname="airflow")
        with con, con.cursor() as cur:
            cur.execute("SELECT run_type, count(*) FROM dag_run WHERE dag_id = %s GROUP BY 1", (DAG,))
            out["postgres_runs"] = dict(cur.fetchall())
            cur.execute("SELECT count(*) FROM task_instance WHERE dag_id = %s AND state = 'success'",
                        (DAG,))
            out["postgres_successful_tasks"] = cur.fetchone()[0]
        con.close()
        # the scheduler logs the executor of every finished task
        out["executors"] = sorted(set(re.findall(r"executor=(\w+)\(", sched_log.read_text())))
    finally:
        home = cluster.env.get("AIRFLOW_HOME")
        cluster.stop()
        out["cluster_seconds"] = round(time.time() - started, 1)
    out["left_running"] = [p.pid for p in psutil.process_iter() if _of(p, home)]
    out["postgres_left"] = cluster.postgres.root.exists()
    # the same days, in the same order, in local mode (what make demo runs)
    ref = tmp / "wh-local"
    env = airflow_env(tmp / "airflow-local", config=_config(tmp, raw, ref), spark_master="local[2]")
    migrate(env)
    t0 = time.time()
    out["local_rcs"] = [dags_test(d.isoformat(), env, log_path=tmp / f"local-{d}.log") for d in order]
    out["local_seconds"] = round(time.time() - t0, 1)
    out["ref"] = ref
    return out


def _of(p: psutil.Process, home: str | None) -> bool:
    try:
        return bool(home) and p.pid != psutil.Process().pid and p.environ().get("AIRFLOW_HOME") == home
    except (psutil.Error, OSError):
        return False


def _canon(df: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in df.columns if c not in ("run_id", "created_at", "published_at")]
    df = df[cols]
    keys = [c for c in cols if not pd.api.types.is_float_dtype(df[c])
            and not isinstance(df[c].iloc[0] if len(df) else None, (list, np.ndarray))]
    return df.sort_values(keys, kind="stable").reset_index(drop=True)


def test_every_run_succeeded_on_the_cluster(cluster_run):
    runs = cluster_run["runs"]
    assert [r["state"] for r in runs] == ["success"] * 3, cluster_run["tasks"]
    assert [r["run_type"] for r in runs] == ["scheduled", "manual", "backfill"]
    assert [pd.Timestamp(r["logical_date"]).date().isoformat() for r in runs] == cluster_run["order"]
    assert all(s == "success" for t in cluster_run["tasks"].values() for s in t.values())


def test_the_metadata_lives_in_postgres_and_spark_ran_on_the_standalone_master(cluster_run):
    assert cluster_run["postgres_runs"] == {"scheduled": 1, "manual": 1, "backfill": 1}
    assert cluster_run["executors"] == ["LocalExecutor"]
    tasks_per_run = len(next(iter(cluster_run["tasks"].values())))
    assert cluster_run["postgres_successful_tasks"] == 3 * tasks_per_run
    from vrec.stages import STAGES

    spark_stages = [s.name for s in STAGES if s.engine == "spark"]
    # every Spark stage of every run was an application of the standalone master
    for s in spark_stages:
        n = sum(a.startswith(f"vrec-{s}-") for a in cluster_run["spark_apps"])  # vrec-<stage>-<ds>
        assert n == 3, (s, cluster_run["spark_apps"])


def test_the_cluster_publishes_what_local_mode_publishes(cluster_run):
    assert cluster_run["local_rcs"] == [0, 0, 0]
    wh, ref = cluster_run["wh"], cluster_run["ref"]
    assert W.published_ds(wh) == W.published_ds(ref) == sorted(cluster_run["order"])
    compared = {}
    for ds in cluster_run["order"]:
        for table in COMPARED:
            a, b = _canon(W.read_table(wh, table, ds)), _canon(W.read_table(ref, table, ds))
            assert list(a.columns) == list(b.columns) and len(a) == len(b), (table, ds)
            for c in a.columns:
                if pd.api.types.is_float_dtype(a[c]):
                    np.testing.assert_allclose(a[c].to_numpy(), b[c].to_numpy(), rtol=1e-4,
                                               atol=1e-6, err_msg=f"{table}.{c} on {ds}")
                elif len(a) and isinstance(a[c].iloc[0], (list, np.ndarray)):
                    for x, y in zip(a[c], b[c]):  # lists of varying length, numbers or strings
                        x, y = np.asarray(x), np.asarray(y)
                        if x.dtype.kind == "f":
                            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6,
                                                       err_msg=f"{table}.{c} on {ds}")
                        else:
                            assert x.tolist() == y.tolist(), (table, c, ds)
                else:
                    assert a[c].tolist() == b[c].tolist(), (table, c, ds)
            compared[f"{table}/{ds}"] = len(a)
    assert compared and min(v for k, v in compared.items() if k.startswith("user_recs")) > 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "cluster_run.json").write_text(json.dumps({
        "order": cluster_run["order"], "compared_rows": compared,
        "runs": [{k: r[k] for k in ("dag_run_id", "run_type", "logical_date", "start_date",
                                    "end_date", "state")} for r in cluster_run["runs"]],
        "postgres_runs": cluster_run["postgres_runs"], "spark_apps": len(cluster_run["spark_apps"]),
        "cluster_seconds": cluster_run["cluster_seconds"],
        "local_seconds": cluster_run["local_seconds"]}, indent=2))


def test_everything_started_was_stopped(cluster_run):
    assert cluster_run["left_running"] == []
    assert cluster_run["postgres_left"] is False
