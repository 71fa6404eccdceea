"""The clean bulk of a producer's events CSV file at native speed (``vrec land``).

Events records never span lines, so each line of an events file means the same on its
own as in the file. The body is cut at line ends into blocks of about
:data:`BLOCK_BYTES`, and each block is scanned with numpy (:func:`scan`) for the lines a
plain CSV reader could read differently from the record parser: a quote, a byte outside
printable ASCII (another encoding, a control character, a lone carriage return), a
field count other than the header's, or an empty line. Those lines are parsed record by
record, exactly as before (:func:`vrec.data.rows.csv_block_records`), so the cp1252
fallback, stray-quote recovery and every reject reason stay what they were. The other
lines are read by pyarrow's CSV reader and checked column by column (pyarrow compute,
numpy) against a deliberately narrow grammar: ids without surrounding oddities, a known
event type, epoch seconds or a common ISO 8601 form before the day's end, plain decimal
values, ``YYYY-MM-DD`` days and whole positions. A row off that grammar goes through the
record-by-record check (:func:`vrec.data.land.check_event`), which lands it or gives its
reject reason and detail. Both paths give the same landed rows in the same order and the
same rejects (``tests/test_adapters.py`` checks them against each other, and
``benchmarks/bench_landing.py`` at 10M rows).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from vrec import columns as C
from vrec import schemas as S
from vrec.config import EventWeights
from vrec.data.rows import (
    _EPOCH_MAX,
    BadValue,
    Rejects,
    csv_block_records,
    jsonl_text_records,
)

BLOCK_BYTES = 8 << 20
SMALLEST_PIECE = 32  # JSON lines: a refused piece this small is read record by record
OPTIONAL = (C.VALUE, C.LIST_DS, C.POSITION, C.SURFACE)
CONTRACT = S.RAW["events"].arrow()
_ISO = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?$"


@dataclass
class BulkStats:
    """How a file was read: rows landed by the fast path, rows of the fast reader checked
    one by one (a value off the fast grammar), lines parsed record by record (a quote,
    another encoding, a control character, a field count that differs from the header's,
    a blank line), and blocks."""

    fast_rows: int = 0
    checked_rows: int = 0
    slow_lines: int = 0
    blocks: int = 0


def blocks(data: bytes, start: int, size: int | None = None) -> Iterator[bytes]:
    """The body from byte ``start`` in blocks of whole lines of about ``size``
    (:data:`BLOCK_BYTES`) bytes, each ending with a line end."""
    pos, n, size = start, len(data), size or BLOCK_BYTES
    while pos < n:
        end = data.find(b"\n", min(pos + size, n) - 1)
        end = n if end < 0 else end + 1
        chunk = data[pos:end]
        yield chunk if chunk.endswith(b"\n") else chunk + b"\n"
        pos = end


def _lines(block: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A block's bytes, and where each of its newline-ended lines starts and ends."""
    arr = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(arr == 10)
    return arr, np.concatenate(([0], ends[:-1] + 1)), ends


def _per_line(mask: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """How many bytes of each line ``mask`` marks (its line end not counted)."""
    return np.add.reduceat(mask.astype(np.int32), starts) - mask[ends]


def _joined(block: bytes, sc: Scan, keep: np.ndarray) -> bytes:
    """The lines ``keep`` of a block (ascending), joined: runs of consecutive lines are
    sliced whole."""
    if len(keep) == len(sc.odd):
        return block
    brk = np.flatnonzero(np.diff(keep) != 1)
    first = np.concatenate(([keep[0]], keep[brk + 1]))
    last = np.concatenate((keep[brk], [keep[-1]]))
    return b"".join(block[sc.starts[a]:sc.ends[b] + 1] for a, b in zip(first, last))


@dataclass
class Landed:
    """What one file lands: the fast tables, the rows checked one by one (with their
    line), and the rejects it added, put in the file's order at the end as the record
    parser reports them (one reject per line)."""

    path: Path
    check: Callable[[dict], dict]
    rejects: Rejects
    tables: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    first_reject: int = -1

    def __post_init__(self) -> None:
        self.first_reject = len(self.rejects.rows)

    def one(self, fields: dict, line: int, raw: str) -> None:
        """Check one record: a row, or a reject with its reason."""
        try:
            self.rows.append({**self.check(fields), "_line": line})
        except BadValue as bad:
            self.rejects.add(self.path, line, bad.reason, str(bad), raw)

    def table(self) -> pa.Table:
        """The landed rows in the file's order, in the contract's schema."""
        r = self.rejects.rows
        r[self.first_reject:] = sorted(r[self.first_reject:], key=lambda x: x["line"])
        tables = list(self.tables)
        if self.rows:
            tables.append(pa.Table.from_pandas(pd.DataFrame(self.rows).reindex(
                columns=[*CONTRACT.names, "_line"]), schema=CONTRACT.append(
                pa.field("_line", pa.int64())), preserve_index=False))
        if not tables:
            return CONTRACT.empty_table()
        out = pa.concat_tables(tables)
        return out.take(pc.sort_indices(out["_line"])).drop_columns(["_line"])


@dataclass
class Scan:
    """A block's physical lines (ended by ``\\n``): where each starts and ends, which the
    fast reader cannot take as the record parser would, and each one's line number."""

    starts: np.ndarray
    ends: np.ndarray
    odd: np.ndarray
    numbers: np.ndarray
    next_line: int


def scan(block: bytes, n_fields: int, first_line: int) -> Scan:
    """Find the lines of ``block`` that must be parsed record by record: a quote, a byte
    outside printable ASCII (another encoding, a control character, a lone carriage
    return), a field count other than ``n_fields``, or nothing at all. Line numbers
    count as the record parser does (a lone carriage return ends a line too)."""
    arr, starts, ends = _lines(block)

    def per_line(mask: np.ndarray) -> np.ndarray:
        return _per_line(mask, starts, ends)

    cr = arr == 13
    crlf = cr & np.concatenate((arr[1:] == 10, [False]))
    lone_cr = per_line(cr & ~crlf)
    odd = per_line((arr == 34) | (arr >= 127) | ((arr < 32) & (arr != 10) & ~crlf)) > 0
    odd |= per_line(arr == 44) != n_fields - 1
    odd |= (ends - starts - per_line(crlf)) == 0
    numbers = first_line + np.arange(len(ends)) + np.concatenate(([0], np.cumsum(lone_cr)[:-1]))
    return Scan(starts, ends, odd, numbers, int(first_line + len(ends) + lone_cr.sum()))


def _read_clean(block: bytes, sc: Scan, header: list[str]) -> pa.Table | None:
    """The fields of the block's lines the fast reader takes, as strings (None if its
    field counts still disagree: then the block is parsed record by record)."""
    import pyarrow.csv as pcsv

    keep = np.flatnonzero(~sc.odd)
    if not len(keep):
        return None
    body = _joined(block, sc, keep)
    bad = []

    def invalid(row) -> str:
        bad.append(row)
        return "skip"

    table = pcsv.read_csv(
        io.BytesIO(body),
        read_options=pcsv.ReadOptions(column_names=header, block_size=4 << 20),
        parse_options=pcsv.ParseOptions(quote_char=False, invalid_row_handler=invalid,
                                        ignore_empty_lines=False),
        convert_options=pcsv.ConvertOptions(
            column_types={h: pa.string() for h in header}, strings_can_be_null=False,
            null_values=[], quoted_strings_can_be_null=False))
    return None if bad or table.num_rows != len(keep) else table


def _match(col: pa.ChunkedArray, pattern: str) -> pa.ChunkedArray:
    return pc.match_substring_regex(col, pattern)


def _fast_rows(table: pa.Table, numbers: np.ndarray, weights: EventWeights,
               not_after: pd.Timestamp) -> tuple[pa.Table, np.ndarray]:
    """The rows of a block whose every field passes the fast checks, in the contract's
    schema plus ``_line``, and a mask of the others (to be checked one by one)."""
    n = table.num_rows
    ok = np.ones(n, dtype=bool)
    text = {}

    def mask(arr) -> np.ndarray:
        return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=bool)

    for name in table.column_names:
        col = table[name]
        ok &= ~mask(_match(col, r"[^\x20-\x7e]"))  # printable ASCII only
        text[name] = pc.utf8_trim(col, " ")  # Python's strip(), on printable ASCII
    empty = {name: pc.equal(t, "") for name, t in text.items()}
    for key in (C.USER_ID, C.ITEM_ID):
        ok &= ~mask(empty[key])
    etype = text[C.EVENT_TYPE]
    ok &= mask(pc.is_in(etype, value_set=pa.array(list(C.EVENT_TYPES))))

    # ts: epoch seconds (plain decimals) or a common ISO 8601 form
    ts_text = text[C.TS]
    numeric, iso = mask(_match(ts_text, r"^\d{1,10}(\.\d{1,9})?$")), mask(_match(ts_text, _ISO))
    seconds = pc.cast(pc.if_else(pa.array(numeric), ts_text, "0"), pa.float64())
    sec = seconds.to_numpy(zero_copy_only=False)
    micros = np.round(sec * 1e6).astype("int64")
    ts = micros.astype("datetime64[us]")
    good = numeric & (sec <= _EPOCH_MAX)
    zoned = mask(_match(ts_text, r"(Z|[+-]\d{2}:\d{2})$"))
    for part in (iso & zoned, iso & ~zoned):  # apart: pandas lets one row's zone reach others
        if not part.any():
            continue
        at = np.flatnonzero(part)
        parsed = pd.to_datetime(pd.Series(ts_text.to_numpy(zero_copy_only=False)[at]),
                                format="ISO8601", utc=True, errors="coerce")
        fine = (parsed.notna() & (parsed.dt.year >= 1970) & (parsed.dt.year < 2262)).to_numpy()
        ts[at[fine]] = parsed[fine].dt.tz_localize(None).astype("datetime64[us]").to_numpy()
        good[at[fine]] = True
    ok &= good
    ok &= ts < np.datetime64(not_after.tz_convert("UTC").tz_localize(None), "us")

    out = {C.USER_ID: text[C.USER_ID], C.ITEM_ID: text[C.ITEM_ID], C.EVENT_TYPE: etype,
           C.TS: pa.array(ts, pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC"))}
    value = text.get(C.VALUE)
    v = np.full(n, np.nan)
    if value is not None:
        plain = _match(value, r"^-?\d{1,15}(\.\d{1,15})?$")
        ok &= mask(pc.or_(empty[C.VALUE], plain))
        out[C.VALUE] = pc.cast(pc.if_else(plain, value, None), pa.float64())
        v = out[C.VALUE].to_numpy(zero_copy_only=False)
    rating = mask(pc.equal(etype, "rating"))
    if rating.any():
        on = ~np.isnan(v) & (v >= weights.rating_min) & (v <= weights.rating_max)
        if weights.rating_step:
            steps = (v - weights.rating_min) / weights.rating_step
            on &= np.abs(steps - np.round(steps)) <= weights.STEP_TOLERANCE
        ok &= ~rating | on
    day = text.get(C.LIST_DS)
    if day is not None:
        shaped = _match(day, r"^[1-9]\d{3}-\d{2}-\d{2}$")
        parsed = pc.strptime(pc.if_else(shaped, day, None), format="%Y-%m-%d", unit="s",
                             error_is_null=True)
        # a real day: Arrow's strptime rolls 2026-02-30 over; the day must print back
        real = pc.equal(pc.strftime(parsed, format="%Y-%m-%d"), day)
        ok &= mask(pc.or_(empty[C.LIST_DS], pc.fill_null(real, False)))
        out[C.LIST_DS] = pc.if_else(empty[C.LIST_DS], None, day)
    pos = text.get(C.POSITION)
    if pos is not None:
        whole = _match(pos, r"^[1-9]\d{0,8}$")
        ok &= mask(pc.or_(empty[C.POSITION], whole))
        out[C.POSITION] = pc.cast(pc.if_else(whole, pos, None), pa.int32())
    surface = text.get(C.SURFACE)
    if surface is not None:
        out[C.SURFACE] = pc.if_else(empty[C.SURFACE], None, surface)
    keep = pa.array(ok)
    cols = {name: (out[name] if name in out else pa.nulls(n, typ))
            for name, typ in zip(CONTRACT.names, CONTRACT.types)}
    fast = pa.table(cols, schema=CONTRACT).append_column(
        "_line", pa.array(numbers.astype("int64"))).filter(keep)
    return fast, ~ok


def land_csv_events(path: Path, data: bytes, start: int, header: list[str],
                    rejects: Rejects, check: Callable[[dict], dict], *,
                    weights: EventWeights, not_after: pd.Timestamp, fallback: str,
                    stats: BulkStats) -> pa.Table:
    """The landed rows of an events CSV file's body (``data`` from byte ``start``) in the
    contract's schema, the clean bulk at native speed (module doc), in the file's order;
    ``check`` is the record-by-record check (:func:`vrec.data.land.check_event` with the
    partition's bounds), and the rejects go to ``rejects``."""
    out = Landed(path, check, rejects)
    fast_ok = len(set(header)) == len(header)
    line = 2
    for block in blocks(data, start):
        stats.blocks += 1
        sc = scan(block, len(header), line)
        table = _read_clean(block, sc, header) if fast_ok else None
        if table is None:  # nothing for the fast reader: the block record by record
            sc.odd[:] = True
        else:
            numbers = sc.numbers[~sc.odd]
            fast, dirty = _fast_rows(table, numbers, weights, not_after)
            out.tables.append(fast)
            stats.fast_rows += fast.num_rows
            at = np.flatnonzero(~sc.odd)
            for i in np.flatnonzero(dirty):
                stats.checked_rows += 1
                k = at[i]
                raw = block[sc.starts[k]:sc.ends[k]].decode("ascii")
                out.one({h: table[h][int(i)].as_py() for h in header}, int(numbers[i]), raw)
        for k in np.flatnonzero(sc.odd):
            stats.slow_lines += 1
            for rec in csv_block_records(path, block[sc.starts[k]:sc.ends[k] + 1],
                                         int(sc.numbers[k]), header, rejects, fallback):
                out.one(rec.fields, rec.line, rec.raw)
        line = sc.next_line
    return out.table()


# JSON types the fast path takes per column: those whose text the record check reads the
# same way (an id may be a JSON integer, never a fraction; a time, value or position a
# number); any other type sends the block record by record
JSON_TYPES = {C.USER_ID: ("string", "int64"), C.ITEM_ID: ("string", "int64"),
              C.EVENT_TYPE: ("string",), C.TS: ("string", "int64", "double"),
              C.VALUE: ("string", "int64", "double"), C.LIST_DS: ("string",),
              C.POSITION: ("string", "int64", "double"), C.SURFACE: ("string",)}


def scan_jsonl(block: bytes, first_line: int) -> Scan:
    """The lines of a JSON-lines block the fast reader cannot take as the record parser
    would: a byte outside printable ASCII (another encoding, a control character, a
    carriage return), nothing at all, or not ``{...}``. Lines are counted by ``\\n``."""
    arr, starts, ends = _lines(block)
    odd = _per_line(((arr >= 127) | (arr < 32)) & (arr != 10), starts, ends) > 0
    odd |= ends == starts
    odd |= arr[starts] != ord("{")
    odd |= arr[np.maximum(ends - 1, 0)] != ord("}")
    numbers = first_line + np.arange(len(ends))
    return Scan(starts, ends, odd, numbers, int(first_line + len(ends)))


def _read_json(block: bytes, sc: Scan, keep: np.ndarray) -> pa.Table | None:
    """The contract's columns of the lines ``keep`` as strings (JSON null: empty), or
    None when pyarrow refuses one of them or a column is of another type or a required
    one is absent."""
    import pyarrow.json as pj

    body = _joined(block, sc, keep)
    try:
        table = pj.read_json(io.BytesIO(body))
    except pa.ArrowInvalid:
        return None
    if table.num_rows != len(keep) or any(
            c not in table.column_names for c in (C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.TS)):
        return None
    cols = {}
    for name, types in JSON_TYPES.items():
        if name not in table.column_names:
            continue
        col = table[name]
        if str(col.type) != "null" and str(col.type) not in types:
            return None
        cols[name] = pc.fill_null(pc.cast(col, pa.string()), "")
    return pa.table(cols)


def _json_pieces(block: bytes, sc: Scan, keep: np.ndarray
                 ) -> Iterator[tuple[np.ndarray, pa.Table | None]]:
    """The lines ``keep`` in pieces pyarrow reads with the fast types: a piece it
    refuses is halved until it reads or is at most :data:`SMALLEST_PIECE` lines (then
    None: record by record), so one odd line costs a few re-reads, not its block."""
    table = _read_json(block, sc, keep) if len(keep) else None
    if table is not None or len(keep) <= SMALLEST_PIECE:
        yield keep, table
        return
    half = len(keep) // 2
    yield from _json_pieces(block, sc, keep[:half])
    yield from _json_pieces(block, sc, keep[half:])


def land_jsonl_events(path: Path, data: bytes, start: int, rejects: Rejects,
                      check: Callable[[dict], dict], *, weights: EventWeights,
                      not_after: pd.Timestamp, fallback: str, stats: BulkStats) -> pa.Table:
    """The landed rows of an events JSON-lines file (``data`` from byte ``start``) in
    the contract's schema, as :func:`land_csv_events` does for CSV: the clean bulk by
    pyarrow's JSON reader, the rest line by line as before."""
    import json

    out = Landed(path, check, rejects)
    line = 1
    for block in blocks(data, start):
        stats.blocks += 1
        sc = scan_jsonl(block, line)
        for at, table in _json_pieces(block, sc, np.flatnonzero(~sc.odd)):
            if table is None:
                sc.odd[at] = True
                continue
            fast, dirty = _fast_rows(table, sc.numbers[at], weights, not_after)
            out.tables.append(fast)
            stats.fast_rows += fast.num_rows
            for k in at[dirty]:
                stats.checked_rows += 1
                raw = block[sc.starts[k]:sc.ends[k]].decode("ascii")
                out.one(json.loads(raw), int(sc.numbers[k]), raw)
        for k in np.flatnonzero(sc.odd):
            stats.slow_lines += 1
            text = block[sc.starts[k]:sc.ends[k]].decode("utf-8", "surrogateescape")
            for rec in jsonl_text_records(path, text, int(sc.numbers[k]), rejects, fallback):
                out.one(rec.fields, rec.line, rec.raw)
        line = sc.next_line
    return out.table()
