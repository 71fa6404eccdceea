"""
### vrec_downstream_user_recs (example)

A downstream DAG scheduled on the `vrec.user_recs` Asset: it runs each time
`vrec_nightly`'s publish task publishes a day. It reads the asset's latest event (its
extra: ds, version, rows, path, report) and exports that day's lists to
`$VREC_EXPORT_DIR/user_recs_<ds>.csv` (default: `/tmp/vrec-exports`), the kind of hand-off
a CRM or e-mail team would schedule. Copy it into your DAGs folder to use it; it needs only
Airflow and pyarrow, not vrec.
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import Asset, dag, task

USER_RECS = Asset.ref(name="vrec.user_recs")  # declared by vrec_nightly's publish task


@dag(dag_id="vrec_downstream_user_recs", schedule=[USER_RECS],
     start_date=pendulum.datetime(2024, 1, 1, tz="UTC"), catchup=False,
     tags=["vrec", "example"], doc_md=__doc__)
def vrec_downstream_user_recs():
    @task(inlets=[USER_RECS])
    def export_lists(inlet_events=None) -> dict:
        """Write the published partition named by the asset's latest event as CSV."""
        import pyarrow.csv as pacsv
        import pyarrow.dataset as pads

        events = inlet_events[USER_RECS]
        if not len(events):
            raise ValueError("vrec.user_recs has no asset event yet: nothing is published")
        extra = events[-1].extra
        out_dir = Path(os.environ.get("VREC_EXPORT_DIR", "/tmp/vrec-exports"))
        out_dir.mkdir(parents=True, exist_ok=True)
        table = pads.dataset(extra["path"], format="parquet").to_table()
        out = out_dir / f"user_recs_{extra['ds']}.csv"
        pacsv.write_csv(table, out)
        print(f"exported {table.num_rows} rows of user_recs ds={extra['ds']} "
              f"(version {extra['version']}, report {extra['report']}) to {out}")
        return {"ds": extra["ds"], "version": extra["version"], "rows": table.num_rows,
                "csv": str(out)}

    export_lists()


vrec_downstream_user_recs()
