"""The published tables as Airflow Assets (docs/operations.md "Assets").

Each table of ``vrec.schemas.PUBLISHED`` is an Asset named
``vrec.<table>`` whose URI is the table's folder in the warehouse
(``file:///<warehouse>/<table>``). The publish task declares them as outlets; when it
succeeds, Airflow records one asset event per table whose extra holds the published ds,
version, row count, the partition's path and the run report's path. A downstream DAG
schedules on ``Asset.ref(name="vrec.user_recs")`` (examples/downstream_user_recs.py) and
reads that extra from the asset's latest event (``inlet_events``)."""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import Asset

from vrec.schemas import PUBLISHED as PUBLISHED_TABLES

PREFIX = "vrec."


def asset_name(table: str) -> str:
    """The Asset name of a published table (what downstream DAGs reference)."""
    return PREFIX + table


def published_assets(warehouse: str | Path) -> dict[str, Asset]:
    """One Asset per published table, by table name."""
    root = Path(warehouse).resolve()
    return {t: Asset(name=asset_name(t), uri=(root / t).as_uri(), group="vrec")
            for t in PUBLISHED_TABLES}


def event_extra(manifest: dict, table: str, report: str | Path) -> dict:
    """The asset event's extra for one table of a publish: ds, version, rows, path, report."""
    info = manifest.get("tables", {}).get(table, {})
    return {"ds": manifest["ds"], "version": manifest["version"], "rows": info.get("rows"),
            "path": info.get("path"), "run_id": manifest.get("run_id"), "report": str(report)}


def annotate(outlet_events, warehouse: str | Path, manifest: dict) -> None:
    """Attach :func:`event_extra` to the publish task's asset events (Airflow's
    ``outlet_events`` accessor of the running task)."""
    from vrec.report import report_path

    report = report_path(warehouse, manifest["ds"])
    for table, asset in published_assets(warehouse).items():
        if table in manifest.get("tables", {}):
            outlet_events[asset].extra = event_extra(manifest, table, report)
