"""The DAG's failure hook: every failed task attempt is written to the warehouse
(``_failures/ds=<ds>/``: stage, ds, run, try, error, when) and, when
``orchestration.failure_webhook_conn_id`` names an Airflow connection, POSTed to it as
JSON. The run report lists failed nights. A failure here is logged, never raised: the
task's own error stays the one that counts."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import urllib.request

log = logging.getLogger(__name__)


def failure_record(context: dict) -> dict:
    """What is kept about a failed attempt, from an Airflow task context."""
    from vrec.airflow.schedule import run_ds

    ti, run = context.get("ti") or context.get("task_instance"), context.get("dag_run")
    exc = context.get("exception")
    return {
        "ds": run_ds(getattr(run, "logical_date", None), getattr(run, "run_after", None)),
        "stage": getattr(ti, "task_id", None), "run_id": getattr(run, "run_id", None),
        "try": getattr(ti, "try_number", None),
        "error": (f"{type(exc).__name__}: {exc}" if exc is not None else "unknown")[:2000],
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def webhook_url(conn) -> str:
    """``http[s]://host[:port]/path`` of a connection (type http or https)."""
    scheme = "https" if (conn.conn_type or "").lower() == "https" else "http"
    port = f":{conn.port}" if conn.port else ""
    return f"{scheme}://{conn.host}{port}/{(conn.schema or '').lstrip('/')}"


def on_failure(context: dict) -> None:
    """on_failure_callback of every vrec task."""
    try:
        from vrec.config import load_settings
        from vrec.io import warehouse as W

        settings = load_settings(os.environ.get("VREC_CONFIG"))
        record = failure_record(context)
        path = W.write_failure(settings.paths.warehouse_root, record["ds"], record)
        log.warning("vrec failure recorded: %s", path)
        conn_id = settings.orchestration.failure_webhook_conn_id
        if conn_id:
            from airflow.sdk import BaseHook

            url = webhook_url(BaseHook.get_connection(conn_id))
            req = urllib.request.Request(url, data=json.dumps(record).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=10) as resp:
                log.warning("vrec failure sent to %s: HTTP %s", conn_id, resp.status)
    except Exception:  # noqa: BLE001 - reported; the task's failure is what matters
        log.exception("vrec failure hook could not record the failure")
