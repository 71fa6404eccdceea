"""The raw landing zone as producers write it: events and catalog Parquet read into the
contract's types (docs/tables.md "The raw landing zone").

Producers rarely write exactly the contract's types. pandas writes nanosecond
timestamps by default (Spark 4 refuses TIMESTAMP(NANOS) unless told to read it as a long),
other writers use milliseconds or no time zone, and ids often arrive as integers. Each
Parquet file's schema is read from its footer (pyarrow, no data), files with the same
schema are read together, and every contract column is cast to its contract type:

* string columns (ids, event_type, title, category, image_uri): strings, or integers (written as
  their decimal digits);
* double columns (value, price): any integer, floating or decimal type;
* int columns (position): any integer type, or floats (pandas writes an integer column
  with nulls as floats: whole numbers are read, anything else as null); boolean columns
  (available): booleans;
* timestamp columns (ts, updated_at): timestamps of any unit, with or without a time zone
  (none: UTC), or dates (midnight UTC). Nanoseconds are truncated to microseconds.

A type that cannot be cast stops the read with one line naming the source, the file, the
column, the type found and the type expected (:class:`RawTypeError`). Needs the session
setting ``spark.sql.legacy.parquet.nanosAsLong=true`` (vrec.spark.session sets it).
"""

from __future__ import annotations

from pathlib import Path

from vrec import schemas as S
from vrec.io.rawio import MissingInput

CONTRACT: dict[str, dict[str, str]] = {
    source: table.types() for source, table in S.RAW.items()}
"""Each raw source's columns and types (:data:`vrec.schemas.RAW`)."""


class RawTypeError(ValueError):
    """A landed file that is not readable Parquet, or a column whose type cannot be read
    as the contract's type (an input problem: the runner prints its one line, no stack
    trace)."""

    input_problem = True


def _kind(t) -> str:
    """The arrow type's family: string, int, float, timestamp_ns, timestamp, date, null,
    or its own name."""
    import pyarrow as pa

    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float"
    if pa.types.is_timestamp(t):
        return "timestamp_ns" if t.unit == "ns" else "timestamp"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_null(t):
        return "null"
    return str(t)


ACCEPTED = {"string": {"string", "int", "null"},
            "int": {"int", "float", "null"},
            "boolean": {"boolean", "null"},
            "double": {"int", "float", "null"},
            "timestamp": {"timestamp", "timestamp_ns", "date", "null"}}


def contract_column(name: str, kind: str, expected: str):
    """The Spark expression reading column ``name`` (of arrow family ``kind``) as
    ``expected``; None when it cannot."""
    from pyspark.sql import functions as F

    if kind not in ACCEPTED[expected]:
        return None
    col = F.col(name)
    if expected == "int" and kind == "float":  # pandas writes an int column with nulls as floats
        return F.when(col == F.floor(col), col.cast("int")).alias(name)
    if kind == "timestamp_ns":  # read as a long of nanoseconds (nanosAsLong)
        # integer division: a double cannot hold nanoseconds since 1970 exactly
        return F.timestamp_micros(F.expr(f"`{name}` div 1000")).alias(name)
    return col.cast(expected).alias(name)


def read_raw(spark, source: str, files: list[Path], base: Path | None = None):
    """The Parquet ``files`` of raw ``source`` (events or catalog) as one Spark DataFrame
    with the contract's columns in the contract's types (plus ``ds`` when ``base``, the
    source's folder, is given: the landing partition). A missing optional column is read
    as nulls; a missing required one is left out (the callers and the validation suites
    name it)."""
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    contract = CONTRACT[source]
    groups: dict[tuple, list[str]] = {}
    for f in files:
        try:
            schema = pq.read_schema(f)
        except Exception as exc:  # a truncated file, or not Parquet at all
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RawTypeError(f"{source} file {f} is not readable Parquet: {first}") from None
        kinds = tuple((n, _kind(schema.field(n).type)) for n in contract if n in schema.names)
        for n, kind in kinds:
            if kind not in ACCEPTED[contract[n]]:
                raise RawTypeError(
                    f"{source} file {f}: column {n} is {schema.field(n).type}, expected "
                    f"{contract[n]} (accepted: {', '.join(sorted(ACCEPTED[contract[n]]))})")
        groups.setdefault(kinds, []).append(str(f))
    if not groups:
        raise MissingInput(f"no Parquet files for {source}")
    out = None
    for kinds, paths in groups.items():
        reader = spark.read.option("basePath", str(base)) if base is not None else spark.read
        df = reader.parquet(*paths)
        found = {n: contract_column(n, kind, contract[n]) for n, kind in kinds}
        # an optional column a file leaves out is read as nulls of its type
        cols = [found[c.name] if c.name in found else
                F.lit(None).cast(c.type).alias(c.name)
                for c in S.RAW[source].columns if c.name in found or c.optional]
        if base is not None:
            cols.append("ds")
        df = df.select(*cols)
        out = df if out is None else out.unionByName(df, allowMissingColumns=True)
    return out
