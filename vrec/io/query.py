"""Analyst access: DuckDB over the published warehouse, read-only.

Views: ``<table>`` = the latest published partition (or ``ds``), ``<table>_all`` = every
published partition with its ``ds`` column, plus ``item_embeddings`` (the cache).

Read-only by construction: once the views exist, the connection may touch files only
under the warehouse (``allowed_directories`` with ``enable_external_access`` off) and its
configuration is locked; statements other than SELECT and EXPLAIN (COPY, ATTACH,
INSTALL, CREATE, SET, ...) are refused before they run (:class:`ReadOnlyError`).
"""

from __future__ import annotations

from pathlib import Path

from vrec.io import warehouse as W

READ_STATEMENTS = ("SELECT", "EXPLAIN")


class ReadOnlyError(ValueError):
    """A statement that could change something (vrec query only reads)."""


def connect(warehouse: str | Path, ds: str | None = None):
    """A DuckDB connection with one view per published table, confined to the warehouse
    (no file outside it can be read) with its configuration locked."""
    import duckdb

    wh = Path(warehouse).resolve()
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
    root = str(wh.resolve()).replace("'", "''")
    con.execute(f"SET allowed_directories = ['{root}']")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def check_read_only(con, sql: str) -> None:
    """Raise :class:`ReadOnlyError` unless every statement of ``sql`` is a SELECT or an
    EXPLAIN."""
    for st in con.extract_statements(sql):
        kind = str(st.type).rsplit(".", 1)[-1]
        if kind not in READ_STATEMENTS:
            raise ReadOnlyError(f"read-only: {kind} statements are refused "
                                "(SELECT and EXPLAIN only; copy results out with --format csv)")


def run_query(warehouse: str | Path, sql: str, ds: str | None = None):
    """Run SQL (SELECT or EXPLAIN) against the views; returns a pandas DataFrame."""
    con = connect(warehouse, ds)
    check_read_only(con, sql)
    return con.execute(sql).df()
