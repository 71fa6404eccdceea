"""
### vrec_nightly

Nightly batch recommendations for one UTC day, `ds`: wait for the day's events
(`raw/events/ds=<ds>/_SUCCESS`, deferred to the triggerer), then one task per stage of
`vrec/stages/__init__.py`, in its order (Spark stages run `jobs/stage.py <stage>` through
the SparkSubmitOperator; publish and report run here): validate inputs (Great
Expectations; critical failures stop the run) → build the as-of interactions → embed new
item images (pretrained CNN) → train ALS (and tune the blend) → candidates (every user's
CF, visual and new-arrival top-N) → build_recs (rank them into `user_recs`; visual
neighbours into `item_similar`) → evaluate five models on a holdout (`eval_metrics`) →
validate outputs (GX; gates publish) → publish atomically behind the quality gate →
the run report. Publish updates one Airflow Asset per published table (`vrec.<table>`, e.g.
`vrec.user_recs`; event extra: ds, version, rows, path, report), so downstream DAGs can be
scheduled on `Asset.ref(name="vrec.user_recs")`.
GX Data Docs: `<warehouse>/reports/gx/data_docs/index.html`; run report:
`<warehouse>/reports/runs/vrec_report_<ds>.html`.

**Failures.** Each stage is retried (`orchestration.retries`, exponential back-off from
`orchestration.retry_delay_minutes`) and failed after `orchestration.stage_timeout_minutes`
(per stage: `orchestration.stage_timeouts`), so a hung task cannot block later nights.
Every failed attempt is recorded in `<warehouse>/_failures/ds=<ds>/` (the run report lists
failed nights) and, with `orchestration.failure_webhook_conn_id`, POSTed to that
connection as JSON.

Params (Trigger DAG w/ config): `override_quality_gate` (publish even when hybrid NDCG
dropped more than `eval.gate_max_drop` below the last published run; logged and recorded)
and `override_reason`.

**Which day.** The run for day D has the data interval [D, D+1) UTC and logical date
D 00:00; the scheduler starts it at D+1 `VREC_RUN_AT` (default 02:00 UTC), so each
night processes the day that just ended. A backfill from D1 to D2 runs exactly the days
D1..D2; clearing a run re-runs its day; a manual run processes the day of its logical
date (without one: the day before it started). Each task overwrites only its ds's staging
area, so clearing and backfilling are safe. A run for `ds` only reads events with `ts`
before the end of `ds`.

Environment (all optional): `VREC_CONFIG` (YAML settings file), `VREC_RUN_AT` (HH:MM UTC,
default 02:00), `VREC_START_DATE` (YYYY-MM-DD, default 2000-01-01: the first day a run may
process), `VREC_CATCHUP` (true/false, default false: after a pause only the last complete
day is scheduled; true: every day since the start date or the last run),
`VREC_SPARK_CONN_ID` (default `spark_default`; its host is the Spark master, e.g. `local[*]`),
`VREC_SALT_CONN_ID` (an Airflow connection whose password is the pseudonymisation salt;
passed to build_recs, evaluate and publish as `$VREC_USER_SALT` when `privacy.pseudonymize` is on).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Param, chain, dag, task

from vrec.airflow.assets import published_assets
from vrec.airflow.callbacks import on_failure
from vrec.airflow.schedule import NightlyTimetable, run_ds
from vrec.airflow.sensors import LandingSensor
from vrec.config import load_settings
from vrec.spark.jvm import jvm_conf
from vrec.stages import STAGES, Stage
from vrec.stages import get as get_stage

REPO = Path(__file__).resolve().parent.parent
JOBS = REPO / "jobs"
CONFIG = os.environ.get("VREC_CONFIG", str(REPO / "vrec.yaml"))
SETTINGS = load_settings(CONFIG)
ORCH = SETTINGS.orchestration  # retries, time limits, failure webhook
# the published tables as Assets: publish's outlets (vrec.airflow.assets)
ASSETS = published_assets(SETTINGS.paths.warehouse_root)
RUN_AT = os.environ.get("VREC_RUN_AT", "02:00")
# Airflow runs no task for a logical date before start_date (the run "succeeds" empty), so
# the default is early; with catchup off that schedules nothing extra.
START_DATE = pendulum.parse(os.environ.get("VREC_START_DATE", "2000-01-01"), tz="UTC")
CATCHUP = os.environ.get("VREC_CATCHUP", "false").lower() == "true"
SPARK_CONN_ID = os.environ.get("VREC_SPARK_CONN_ID", "spark_default")
WORKER_PYTHON = os.environ.get("PYSPARK_PYTHON", sys.executable)
SALT_CONN_ID = os.environ.get("VREC_SALT_CONN_ID", "")
# The day a run processes (vrec.airflow.schedule.run_ds): every task gets its ds from here.
DS = "{{ vrec_ds(dag_run.logical_date, dag_run.run_after) }}"


def _spark_stage(stage: Stage) -> SparkSubmitOperator:
    """A SparkSubmitOperator running ``jobs/stage.py <stage> --ds <the run's ds>``."""
    env = {"PYSPARK_PYTHON": WORKER_PYTHON, "VREC_CONFIG": CONFIG}
    if stage.needs_salt and SALT_CONN_ID:
        # rendered at run time from the connection (Airflow masks connection passwords)
        env["VREC_USER_SALT"] = "{{ conn." + SALT_CONN_ID + ".password }}"
    return SparkSubmitOperator(
        task_id=stage.name,
        execution_timeout=pendulum.duration(minutes=ORCH.timeout_minutes(stage.name)),
        application=str(JOBS / "stage.py"),
        application_args=[stage.name, "--ds", DS, "--config", CONFIG, "--run-id", "{{ run_id }}",
                          "--retune", "{{ params.retune | lower }}"],
        conn_id=SPARK_CONN_ID,
        name=f"vrec-{stage.name}",
        # the config's Spark settings go to spark-submit itself: the driver's memory (and
        # any JVM option) is fixed when the JVM starts, before the job builds its session;
        # jvm_conf adds the start-up options (class archive, JIT tier: vrec.spark.jvm);
        # spark.stage_conf sizes each stage's driver
        conf={**jvm_conf(SETTINGS.spark.for_stage(stage.name)),
              "spark.pyspark.python": WORKER_PYTHON,
              "spark.pyspark.driver.python": WORKER_PYTHON},
        env_vars=env,
        doc_md=f"{stage.summary}.\n\nSpark job `jobs/stage.py {stage.name}` for the run's ds; "
               f"reads {', '.join(stage.inputs) or 'the raw zone'}; writes "
               f"{', '.join(stage.outputs) or 'its record'}.",
    )


@dag(
    dag_id="vrec_nightly",
    schedule=NightlyTimetable(RUN_AT),
    start_date=START_DATE,
    catchup=CATCHUP,
    max_active_runs=1,
    tags=["vrec"],
    doc_md=__doc__,
    default_args={"retries": ORCH.retries,
                  "retry_delay": pendulum.duration(minutes=ORCH.retry_delay_minutes),
                  "retry_exponential_backoff": True,
                  "max_retry_delay": pendulum.duration(minutes=ORCH.max_retry_delay_minutes),
                  "on_failure_callback": on_failure},
    user_defined_macros={"vrec_ds": run_ds},
    params={
        "override_quality_gate": Param(
            False, type="boolean",
            description="Publish even when the quality gate refuses (hybrid NDCG dropped more "
                        "than eval.gate_max_drop below the last published run). Logged."),
        "override_reason": Param("", type="string",
                                 description="Why the gate is overridden (recorded)."),
        "retune": Param(
            False, type="boolean",
            description="Tune the CF model and the blend afresh. Off: a rerun of a day takes "
                        "the tunings that day used before, so it rebuilds the same tables."),
    },
)
def vrec_nightly():
    @task
    def local_stage(stage: str, day: str, run: str, params: dict | None = None,
                    env: dict | None = None) -> dict:
        """A local (non-Spark) stage for the run's day; publish takes the gate override
        and, with VREC_SALT_CONN_ID, the salt (the published quarantine and model are
        pseudonymised too)."""
        from vrec.config import load_settings
        from vrec.executor import run_stage

        p = params or {}
        os.environ.update({k: v for k, v in (env or {}).items() if v})
        out = run_stage(load_settings(CONFIG), stage, day, run_id=run, params={
            "override_gate": bool(p.get("override_quality_gate", False)),
            "override_reason": str(p.get("override_reason") or ""),
            "retune": bool(p.get("retune", False))})
        if get_stage(stage).publishes:
            from airflow.sdk import get_current_context

            from vrec.airflow.assets import annotate

            annotate(get_current_context()["outlet_events"], SETTINGS.paths.warehouse_root, out)
            return {"ds": out["ds"], "version": out["version"],
                    "gate": out["quality_gate"]["status"],
                    "rows": {t: v["rows"] for t, v in out["tables"].items()}}
        return out

    wait = LandingSensor(task_id="wait_for_events", ds=DS, config=CONFIG, retries=0,
                         doc_md="Waits (in the triggerer) for `raw/events/ds=<ds>/_SUCCESS`; "
                                "timeout and interval: the config's `landing` section.")
    salt = {"VREC_USER_SALT": "{{ conn." + SALT_CONN_ID + ".password }}"} if SALT_CONN_ID else {}
    tasks = [_spark_stage(s) if s.engine == "spark"
             else local_stage.override(task_id=s.name, doc_md=s.summary, execution_timeout=
                                       pendulum.duration(minutes=ORCH.timeout_minutes(s.name)),
                                       outlets=list(ASSETS.values()) if s.publishes else [])(
                 s.name, DS, "{{ run_id }}", env=salt if s.needs_salt else None)
             for s in STAGES]
    chain(wait, *tasks)


vrec_nightly()
