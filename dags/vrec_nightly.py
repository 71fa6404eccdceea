"""
### vrec_nightly

Nightly batch recommendations (every stage but publish is a Spark job):
validate inputs (Great Expectations; critical failures stop the run) → build the as-of
interaction matrix (Spark) → embed new item images (Spark + pretrained CNN) → train
implicit ALS → score all users (Spark) → blend collaborative and visual scores into
`user_recs` and `item_similar` → evaluate four models on a holdout (`eval_metrics`) →
validate outputs (GX; gates publish) → publish atomically behind the quality gate →
write the run report.
GX Data Docs: `<warehouse>/reports/gx/data_docs/index.html`; run report:
`<warehouse>/reports/runs/vrec_report_<ds>.html`.

Params (Trigger DAG w/ config): `override_quality_gate` (publish even when hybrid NDCG
dropped more than `eval.gate_max_drop` below the last published run; logged and recorded)
and `override_reason`.

Each task works on the run's logical date `ds` and overwrites that date's staging area on
rerun, so clearing a task or backfilling a range is safe. A run for `ds` only reads events
with `ts` before the end of `ds`.

Environment (all optional): `VREC_CONFIG` (YAML settings file), `VREC_START_DATE`
(YYYY-MM-DD, default 2000-01-01; dates before it are not run), `VREC_CATCHUP` (true/false, default false),
`VREC_SPARK_CONN_ID` (default `spark_default`; its host is the Spark master, e.g. `local[*]`),
`VREC_SALT_CONN_ID` (an Airflow connection whose password is the pseudonymisation salt;
passed to build_recs as `$VREC_USER_SALT` when `privacy.pseudonymize` is on).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Param, dag, task

REPO = Path(__file__).resolve().parent.parent
JOBS = REPO / "jobs"
CONFIG = os.environ.get("VREC_CONFIG", str(REPO / "vrec.yaml"))
# Airflow runs no task for a logical date before start_date (the run "succeeds" empty), so
# the default is early; with catchup off that schedules nothing extra.
START_DATE = pendulum.parse(os.environ.get("VREC_START_DATE", "2000-01-01"), tz="UTC")
CATCHUP = os.environ.get("VREC_CATCHUP", "false").lower() == "true"
SPARK_CONN_ID = os.environ.get("VREC_SPARK_CONN_ID", "spark_default")
WORKER_PYTHON = os.environ.get("PYSPARK_PYTHON", sys.executable)
SALT_CONN_ID = os.environ.get("VREC_SALT_CONN_ID", "")


def _spark_stage(stage: str) -> SparkSubmitOperator:
    """A SparkSubmitOperator running ``jobs/<stage>.py --ds {{ ds }}``."""
    env = {"PYSPARK_PYTHON": WORKER_PYTHON, "VREC_CONFIG": CONFIG}
    if stage == "build_recs" and SALT_CONN_ID:
        # rendered at run time from the connection (Airflow masks connection passwords)
        env["VREC_USER_SALT"] = "{{ conn." + SALT_CONN_ID + ".password }}"
    return SparkSubmitOperator(
        task_id=stage,
        application=str(JOBS / f"{stage}.py"),
        application_args=["--ds", "{{ ds }}", "--config", CONFIG],
        conn_id=SPARK_CONN_ID,
        name=f"vrec-{stage}",
        conf={"spark.pyspark.python": WORKER_PYTHON,
              "spark.pyspark.driver.python": WORKER_PYTHON},
        env_vars=env,
        doc_md=f"Spark job `jobs/{stage}.py` for the run's ds.",
    )


@dag(
    dag_id="vrec_nightly",
    schedule="@daily",
    start_date=START_DATE,
    catchup=CATCHUP,
    max_active_runs=1,
    tags=["vrec"],
    doc_md=__doc__,
    default_args={"retries": 0},
    params={
        "override_quality_gate": Param(
            False, type="boolean",
            description="Publish even when the quality gate refuses (hybrid NDCG dropped more "
                        "than eval.gate_max_drop below the last published run). Logged."),
        "override_reason": Param("", type="string",
                                 description="Why the gate is overridden (recorded)."),
    },
)
def vrec_nightly():
    @task
    def publish(ds: str | None = None, params: dict | None = None) -> dict:
        """Quality gate, then atomically publish the run's tables for ds."""
        from vrec import pipeline
        from vrec.config import load_settings

        p = params or {}
        m = pipeline.publish(load_settings(CONFIG), ds,
                             override_gate=bool(p.get("override_quality_gate", False)),
                             override_reason=str(p.get("override_reason") or ""))
        return {"ds": m["ds"], "version": m["version"], "gate": m["quality_gate"]["status"],
                "rows": {t: v["rows"] for t, v in m["tables"].items()}}

    @task
    def report(ds: str | None = None) -> str:
        """The self-contained HTML run report of ds; returns its path."""
        from vrec import pipeline
        from vrec.config import load_settings

        return pipeline.report(load_settings(CONFIG), ds)["report"]

    stages = [_spark_stage(s) for s in
              ("validate_inputs", "build_interactions", "embed_items", "train_cf", "score_users",
               "build_recs", "evaluate", "validate_outputs")]
    for up, down in zip(stages, stages[1:]):
        up >> down
    stages[-1] >> publish() >> report()


vrec_nightly()
