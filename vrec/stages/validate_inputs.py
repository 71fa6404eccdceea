"""validate_inputs: Great Expectations on the day's landed events (Spark) and the catalog
snapshot (pandas), both read as producers wrote them and cast to the contract's types
(vrec.spark.rawread). A critical failure fails the stage before anything downstream
runs; warnings, every result and the rows the adapters rejected for the day go into the
stage record (and GX's results and Data Docs)."""

from __future__ import annotations

import pandas as pd

from vrec import columns as C


def run(ctx) -> dict:
    from vrec.io.rawio import (
        MissingInput,
        catalog_snapshot_ds,
        data_files,
        partition_dir,
        read_rejects,
    )
    from vrec.io.validation import (
        catalog_frame,
        docs_index,
        engines,
        raise_on_failure,
        summarize,
        validate_all,
    )
    from vrec.io.warehouse import parquet_rows
    from vrec.spark.validation_frames import events_frame

    spark, ds, paths = ctx.spark, ctx.ds, ctx.settings.paths
    snap = catalog_snapshot_ds(paths.raw_root, ds)
    from vrec.spark.interactions import load_catalog

    catalog = load_catalog(spark, paths.raw_root, ds, required=False).toPandas()
    ev_dir = partition_dir(paths.raw_root, "events", ds)
    if not data_files(ev_dir):
        raise MissingInput(f"no events landed for ds={ds}: {ev_dir} has no Parquet files "
                                "(an upstream export failed, or the date is outside the data)")
    ids = catalog[C.ITEM_ID].dropna().astype(str) if C.ITEM_ID in catalog else pd.Series([], dtype=str)
    catalog_ids = spark.createDataFrame(pd.DataFrame({C.ITEM_ID: ids.unique()}),
                                        schema="item_id string")
    v = ctx.settings.validation
    events = events_frame(spark, ev_dir, catalog_ids, ds, v.max_event_age_days)
    # the day's rows from the files' footers: small days are validated in pandas
    results = validate_all(ctx.warehouse, ds, {
        "raw_catalog": (catalog_frame(catalog, paths.image_root, paths.allowed_image_roots()),
                        len(catalog)),
        "raw_events": (events, parquet_rows(data_files(ev_dir)))},
        {"event_types": list(C.EVENT_TYPES)}, pandas_max_rows=v.pandas_max_rows)
    n_events = next(r.rows for r in results if r.suite == "raw_events")
    warnings = sum(len(r.warnings) for r in results)
    rejected = read_rejects(paths.raw_root, "events", [ds])["reason"].value_counts().to_dict()
    ctx.record(n_events + len(catalog), n_events + len(catalog), 0, warnings=warnings,
               catalog_snapshot=snap, validation=summarize(results),
               rejected_at_landing={str(k): int(n) for k, n in rejected.items()},
               validation_engines=engines(results),
               data_docs=str(docs_index(ctx.warehouse)))
    raise_on_failure(results)
    return {"events": n_events, "catalog": len(catalog), "warnings": warnings}
