"""Analyst access: DuckDB over the published warehouse.

Views: ``<table>`` = the latest published partition (or ``ds``), ``<table>_all`` = every
published partition with its ``ds`` column, plus ``item_embeddings`` (the cache).
"""

from __future__ import annotations

from pathlib import Path

from vrec.io import warehouse as W


def connect(warehouse: str | Path, ds: str | None = None):
    """A DuckDB connection with one view per published table."""
    import duckdb

    wh = Path(warehouse)
    target = ds or W.latest_ds(wh)
    if target is None:
        raise FileNotFoundError(f"nothing is published in {wh} yet: run `make demo` or the DAG first")
    if target not in W.published_ds(wh):
        raise FileNotFoundError(f"ds {target} is not published in {wh}; published: "
                                f"{', '.join(W.published_ds(wh)) or 'none'}")
    con = duckdb.connect()
    for table in W.PUBLISHED_TABLES:
        if not (wh / table).is_dir():
            continue
        glob = str(wh / table / "ds=*" / "*.parquet").replace("'", "''")
        src = f"read_parquet('{glob}', hive_partitioning=true, hive_types={{'ds': VARCHAR}})"
        con.execute(f"CREATE VIEW {table}_all AS SELECT * FROM {src}")
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM {table}_all WHERE ds = '{target}'")
    emb = wh / "item_embeddings"
    if any(emb.glob("*.parquet")):
        con.execute(f"CREATE VIEW item_embeddings AS SELECT * FROM read_parquet('{emb}/*.parquet')")
    return con


def run_query(warehouse: str | Path, sql: str, ds: str | None = None):
    """Run SQL against the views; returns a pandas DataFrame."""
    return connect(warehouse, ds).execute(sql).df()
