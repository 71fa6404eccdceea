"""Landing producers' CSV and JSON-lines files into the raw zone (``vrec land``), with
the checks every adapter shares.

A row that fails a check is not landed: it goes to the partition's ``_rejects.parquet``
(file, line, reason, detail, the text) and from there into the run's ``quarantine``
table. The rest of the file lands. Checks and their reasons:

* ``malformed_line``, ``undecodable_text``: see ``vrec.data.rows``;
* ``null_user_id``, ``null_item_id``, ``bad_user_id``, ``bad_item_id``: an empty id, or
  one that is not text or an integer (ids are kept as the text written, never as numbers);
* ``unknown_event_type``: not one of the contract's event types;
* ``null_ts``, ``bad_ts``: a missing or unreadable time (epoch seconds or ISO 8601;
  no zone means UTC);
* ``bad_value``, ``rating_without_value``, ``rating_out_of_range``: a value that is not a
  number, a rating without one, or one off the configured rating scale
  (``weights.rating_min``, ``rating_max``, ``rating_step``);
* ``future_timestamp``: an event at or after the end of the day it lands in;
* the optional impression columns: ``bad_list_ds`` (not a day YYYY-MM-DD),
  ``bad_position`` (not a whole number >= 1);
* catalog rows: ``null_item_id``, ``bad_item_id``, ``bad_price``, ``bad_updated_at``,
  ``bad_available`` (not true/false, yes/no or 1/0).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa

from vrec import columns as C
from vrec import schemas as S
from vrec.config import EventWeights
from vrec.data.bulk import BulkStats, land_csv_events, land_jsonl_events
from vrec.data.rows import (
    BadValue,
    InputFileError,
    Record,
    Rejects,
    csv_header,
    parse_bool,
    parse_day,
    parse_float,
    parse_id,
    parse_int,
    parse_ts,
    read_csv_records,
    read_jsonl_records,
)

log = logging.getLogger(__name__)

REQUIRED = {"events": (C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.TS), "catalog": (C.ITEM_ID,)}

def check_event(fields: dict, weights: EventWeights, *,
                not_after: pd.Timestamp | None = None) -> dict:
    """One event row in the contract's types, or :class:`BadValue` with the reject reason.
    ``not_after``: an event at or after it is a ``future_timestamp``."""
    user = parse_id(fields.get(C.USER_ID), C.USER_ID)
    item = parse_id(fields.get(C.ITEM_ID), C.ITEM_ID)
    etype = str(fields.get(C.EVENT_TYPE) or "").strip()
    if etype not in C.EVENT_TYPES:
        raise BadValue("unknown_event_type", f"event_type {etype!r} is not one of "
                       f"{', '.join(C.EVENT_TYPES)}")
    ts = parse_ts(fields.get(C.TS), C.TS)
    value = parse_float(fields.get(C.VALUE), C.VALUE)
    if etype == "rating":
        if value is None:
            raise BadValue("rating_without_value", "a rating without a value")
        if not weights.on_scale(value):
            step = f" in steps of {weights.rating_step:g}" if weights.rating_step else ""
            raise BadValue("rating_out_of_range", f"rating {value:g} is off the scale "
                           f"{weights.rating_min:g}..{weights.rating_max:g}{step}")
    if not_after is not None and ts >= not_after:
        raise BadValue("future_timestamp", f"ts {ts.isoformat()} is at or after "
                       f"{not_after.isoformat()}")
    surface = fields.get(C.SURFACE)
    surface = None if surface is None or not str(surface).strip() else str(surface).strip()
    return {C.USER_ID: user, C.ITEM_ID: item, C.EVENT_TYPE: etype, C.VALUE: value, C.TS: ts,
            C.LIST_DS: parse_day(fields.get(C.LIST_DS), C.LIST_DS),
            C.POSITION: parse_int(fields.get(C.POSITION), C.POSITION), C.SURFACE: surface}


def check_item(fields: dict, updated_at: pd.Timestamp) -> dict:
    """One catalog row in the contract's types, or :class:`BadValue`. Text columns may be
    empty (null); ``updated_at`` defaults to the given time."""
    def text(col):
        v = fields.get(col)
        return None if v is None or (isinstance(v, str) and not v.strip()) else str(v).strip()

    raw_upd = fields.get(C.UPDATED_AT)
    upd = updated_at if raw_upd is None or (isinstance(raw_upd, str) and not raw_upd.strip()) \
        else parse_ts(raw_upd, C.UPDATED_AT)
    return {C.ITEM_ID: parse_id(fields.get(C.ITEM_ID), C.ITEM_ID), C.TITLE: text(C.TITLE),
            C.CATEGORY: text(C.CATEGORY), C.PRICE: parse_float(fields.get(C.PRICE), C.PRICE),
            C.DESCRIPTION: text(C.DESCRIPTION), C.IMAGE_URI: text(C.IMAGE_URI), C.UPDATED_AT: upd,
            C.AVAILABLE: parse_bool(fields.get(C.AVAILABLE), C.AVAILABLE)}


def file_format(path: Path, fmt: str | None) -> str:
    """``csv`` or ``jsonl``: as given, else from the file's suffix."""
    if fmt:
        return fmt
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    raise InputFileError(f"{path}: cannot tell the format from the suffix {suffix!r}; "
                         "pass --format csv or --format jsonl")


def records(path: Path, source: str, rejects: Rejects, *, fmt: str | None = None,
            fallback: str = "cp1252") -> Iterator[Record]:
    """A CSV (header row with the contract's column names) or JSON-lines file's records."""
    if file_format(path, fmt) == "csv":
        return read_csv_records(path, REQUIRED[source], rejects, fallback=fallback,
                                multiline=source == "catalog")
    return read_jsonl_records(path, rejects, fallback=fallback)


def checked_rows(recs: Iterable[Record], check, path: Path, rejects: Rejects) -> list[dict]:
    """The records that pass ``check`` (a function of the record's fields) as rows; the
    others go to ``rejects``."""
    rows = []
    for rec in recs:
        try:
            rows.append(check(rec.fields))
        except BadValue as bad:
            rejects.add(path, rec.line, bad.reason, str(bad), rec.raw)
    return rows


def native_body(path: Path, fmt: str | None, fallback: str
                ) -> tuple[bytes, int, list[str] | None] | None:
    """An events file's bytes, where its body starts and (CSV) its header, for the
    native reader (vrec.data.bulk); None for a CSV file it does not take (a header line
    ended by a lone carriage return, or no line end at all)."""
    kind = file_format(path, fmt)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    start = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    if kind == "jsonl":
        return data, start, None
    end = data.find(b"\n", start)
    if end < 0 or b"\r" in data[start:end].rstrip(b"\r"):
        return None
    first = data[start:end + 1].decode("utf-8", "surrogateescape")
    return data, end + 1, csv_header(path, first, REQUIRED["events"], fallback)


def concat_landed(parts: list, source: str):
    """The files' landed rows as one table (pandas frames and Arrow tables)."""
    schema = S.RAW[source].arrow()
    tables = [p if isinstance(p, pa.Table) else pa.Table.from_pandas(
        p.reindex(columns=schema.names), schema=schema, preserve_index=False) for p in parts]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def land_files(source: str, files: list[str | Path], raw_root: str | Path, ds: dt.date, *,
               weights: EventWeights | None = None, fmt: str | None = None,
               fallback: str = "cp1252", native: bool = True) -> dict:
    """Land CSV or JSON-lines ``files`` as ``source`` (events or catalog) partition ``ds``,
    replacing it: the rows that pass the checks in ``raw/<source>/ds=<ds>/``, the others
    in its ``_rejects.parquet``; ``_SUCCESS`` last. Returns counts for the log.
    ``native``: read the clean bulk of events CSV and JSON-lines files at native speed
    (:mod:`vrec.data.bulk`; the same rows and rejects as record by record, which
    ``native=False`` forces)."""
    from vrec.io.rawio import write_catalog_snapshot, write_events_partition

    if source not in REQUIRED:
        raise ValueError(f"unknown source {source!r}: events or catalog")
    weights = weights or EventWeights()
    day_end = pd.Timestamp(ds + dt.timedelta(days=1), tz="UTC")
    day_start = pd.Timestamp(ds, tz="UTC")

    def check(fields: dict) -> dict:
        return check_event(fields, weights, not_after=day_end) if source == "events" \
            else check_item(fields, day_start)

    rejects, parts, bulk = Rejects(), [], BulkStats()
    for f in (Path(f).resolve() for f in files):
        body = native_body(f, fmt, fallback) if source == "events" and native else None
        if body is not None:
            data, start, header = body
            bounds = {"weights": weights, "not_after": day_end, "fallback": fallback,
                      "stats": bulk}
            got = land_csv_events(f, data, start, header, rejects, check, **bounds) \
                if header is not None else land_jsonl_events(f, data, start, rejects, check,
                                                             **bounds)
            del data
        else:
            got = pd.DataFrame(checked_rows(records(f, source, rejects, fmt=fmt,
                                                    fallback=fallback), check, f, rejects),
                               columns=list(S.RAW[source].names()))
        log.info("%s: %d rows pass, %d rejected so far", f, len(got), len(rejects.rows))
        parts.append(got)
    frame = concat_landed(parts, source)
    writer = write_events_partition if source == "events" else write_catalog_snapshot
    target = writer(raw_root, ds, frame, rejects.frame())
    stats = {"source": source, "ds": ds.isoformat(), "landed": len(frame),
             "rejected": len(rejects.rows), "reasons": rejects.counts(),
             "decoded_with_fallback": {f: len(v) for f, v in rejects.fallback_lines.items()},
             "partition": str(target.parent)}
    if bulk.blocks:
        stats["native"] = {"rows": bulk.fast_rows, "rows_checked_one_by_one": bulk.checked_rows,
                           "lines_parsed_record_by_record": bulk.slow_lines,
                           "blocks": bulk.blocks}
    report_fallback(rejects, fallback)
    return stats


def report_fallback(rejects: Rejects, fallback: str) -> None:
    """Log which lines were not UTF-8 and were decoded with the fallback encoding."""
    for f, lines in rejects.fallback_lines.items():
        shown = ", ".join(map(str, lines[:10])) + (" ..." if len(lines) > 10 else "")
        log.warning("%s: %d line(s) not UTF-8, decoded as %s: line %s", f, len(lines),
                    fallback, shown)
