"""Producers' text files, row by row: CSV and JSON lines read so that a bad row is a
reject (reason, file, line, the text) and never the end of the file.

* Text is decoded as UTF-8 (a leading byte-order mark is dropped). A record that is not
  valid UTF-8 is decoded with the declared fallback encoding (``cp1252`` by default)
  and reported; one that the fallback cannot decode either is rejected
  (``undecodable_text``).
* A CSV record whose field count differs from the header's is rejected
  (``malformed_line``). A stray quote that would swallow the following lines rejects
  its own line only; parsing starts again on the next line.
* A JSON line that is not a JSON object is rejected (``malformed_line``).
* Values are checked by the ``parse_*`` functions here; the adapters
  (``vrec.data.movielens``, ``vrec.data.land``) map a failed check to a reject reason.

Every error about the file as a whole (missing, no header, required columns absent)
is an :class:`InputFileError` naming the file.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

REJECT_COLUMNS = ("file", "line", "reason", "detail", "raw")
_SURROGATE = re.compile("[\udc80-\udcff]")
RAW_CHARS = 300  # how much of a rejected record's text is kept


class InputFileError(ValueError):
    """A whole input file cannot be read (an input problem: printed as one line)."""

    input_problem = True


class BadValue(ValueError):
    """A field that fails its check; ``reason`` is the reject reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@dataclass
class Rejects:
    """Rejected records of one or more files, and the records decoded with the fallback."""

    rows: list[dict] = field(default_factory=list)
    fallback_lines: dict[str, list[int]] = field(default_factory=dict)

    def add(self, file: str | Path, line: int, reason: str, detail: str, raw: str) -> None:
        """Record one rejected record."""
        self.rows.append({"file": str(file), "line": int(line), "reason": reason,
                          "detail": detail, "raw": _printable(raw)[:RAW_CHARS]})

    def frame(self) -> pd.DataFrame:
        """The rejects as a frame with :data:`REJECT_COLUMNS`."""
        return pd.DataFrame(self.rows, columns=list(REJECT_COLUMNS)).astype({"line": "int64"})

    def counts(self) -> dict[str, int]:
        """Rejects by reason."""
        return dict(Counter(r["reason"] for r in self.rows).most_common())


@dataclass
class Record:
    """One record of a file: its first line number, its fields by column name (None for
    a column the record lacks) and its text."""

    line: int
    fields: dict[str, object]
    raw: str


def _printable(text: str) -> str:
    """Text safe to store: undecodable bytes shown as U+FFFD, line ends as spaces."""
    text = _SURROGATE.sub("\ufffd", text)
    return text.replace("\r", " ").replace("\n", " ").strip()


def _decode(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.decode("utf-8", "surrogateescape")


def _fix_encoding(values: list[str], fallback: str) -> list[str] | None:
    """Decode fields holding non-UTF-8 bytes with ``fallback``; None when it cannot."""
    out = []
    for v in values:
        if _SURROGATE.search(v):
            try:
                v = v.encode("utf-8", "surrogateescape").decode(fallback)
            except (UnicodeDecodeError, UnicodeEncodeError, LookupError):
                return None
        out.append(v)
    return out


def read_csv_records(path: str | Path, required: tuple[str, ...], rejects: Rejects, *,
                     fallback: str = "cp1252", multiline: bool = False) -> Iterator[Record]:
    """The records of a CSV file with a header row; bad records go to ``rejects``.
    ``multiline``: a quoted field may span lines (else a record spanning lines is a
    stray quote: its first line is rejected and parsing goes on with the next).

    Raises :class:`InputFileError` (naming the file) when the file is missing or empty or
    its header lacks a ``required`` column. Blank lines are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    lines = split_lines(_decode(path))
    header = csv_header(path, lines[0] if lines else None, required, fallback)
    yield from _csv_body(path, lines, header, rejects, fallback, multiline)


def split_lines(text: str) -> list[str]:
    """Lines as the CSV reader sees them (``\\n``, ``\\r\\n`` and a lone ``\\r`` end one)."""
    return io.StringIO(text, newline="").readlines()


def csv_header(path: Path, first: str | None, required: tuple[str, ...],
               fallback: str) -> list[str]:
    """The column names of a CSV file's header line ``first`` (:class:`InputFileError`
    when it is missing or lacks a ``required`` column)."""
    header_rec = next(csv.reader([first]), None) if first else None
    if not header_rec:
        raise InputFileError(f"{path}: empty file, expected a header row with {', '.join(required)}")
    header = [h.strip() for h in (_fix_encoding(header_rec, fallback) or header_rec)]
    missing = [c for c in required if c not in header]
    if missing:
        raise InputFileError(f"{path}: header lacks column(s) {', '.join(missing)} "
                             f"(found: {', '.join(header)})")
    return header


def csv_block_records(path: Path, block: bytes, first_line: int, header: list[str],
                      rejects: Rejects, fallback: str) -> Iterator[Record]:
    """The records of a block of whole lines of a CSV file's body (no record spans
    lines: the events' rule), ``first_line`` being the block's first line number, read
    exactly as :func:`read_csv_records` reads them in the whole file."""
    lines = ["", *split_lines(block.decode("utf-8", "surrogateescape"))]
    yield from _csv_body(path, lines, header, rejects, fallback, False, offset=first_line - 2)


def _csv_body(path: Path, lines: list[str], header: list[str], rejects: Rejects,
              fallback: str, multiline: bool, offset: int = 0) -> Iterator[Record]:
    """The records of ``lines`` after the header (``lines[0]``); line numbers are the
    index + 1 + ``offset``."""
    n, base = len(header), 1
    while base < len(lines):
        reader = csv.reader(itertools.islice(lines, base, None))
        start, restart = base, None
        while True:
            try:
                rec = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                # without multi-line records, an error past the record's own line is a
                # stray quote that ran on (into the reader's field size limit)
                ran_on = not multiline and base + reader.line_num - start > 1
                rejects.add(path, start + 1 + offset, "malformed_line",
                            "unbalanced quote (the record ran over the end of its line)"
                            if ran_on else f"CSV error: {exc}", lines[start])
                restart = start + 1
                break
            end = base + reader.line_num
            raw = "".join(lines[start:end])
            spans = end - start > 1 or any("\n" in f or "\r" in f for f in rec)
            if rec and spans and (len(rec) != n or not multiline):
                # a stray quote swallowed the following lines: reject its own line only
                rejects.add(path, start + 1 + offset, "malformed_line",
                            "unbalanced quote (the record ran over the end of its line)",
                            lines[start])
                restart = start + 1
                break
            line, start = start + 1 + offset, end
            if not rec:
                continue  # blank line
            if len(rec) != n:
                rejects.add(path, line, "malformed_line", f"expected {n} fields, saw {len(rec)}", raw)
                continue
            fixed = _fix_encoding(rec, fallback)
            if fixed is None:
                rejects.add(path, line, "undecodable_text", f"neither UTF-8 nor {fallback}", raw)
                continue
            if fixed != rec:
                rejects.fallback_lines.setdefault(str(path), []).append(line)
            yield Record(line, dict(zip(header, fixed)), raw)
        if restart is None:
            break
        base = restart


def read_jsonl_records(path: str | Path, rejects: Rejects, *,
                       fallback: str = "cp1252") -> Iterator[Record]:
    """The records of a JSON-lines file (one JSON object per line); bad lines go to
    ``rejects``. Blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file")
    yield from jsonl_text_records(path, _decode(path), 1, rejects, fallback)


def jsonl_text_records(path: Path, body: str, first_line: int, rejects: Rejects,
                       fallback: str) -> Iterator[Record]:
    """The records of JSON-lines ``body`` (a whole file, or whole lines of one that start
    at line ``first_line``); bad lines go to ``rejects``."""
    for line, text in enumerate(body.split("\n"), start=first_line):
        if not text.strip():
            continue
        fixed = _fix_encoding([text], fallback)
        if fixed is None:
            rejects.add(path, line, "undecodable_text", f"neither UTF-8 nor {fallback}", text)
            continue
        if fixed[0] != text:
            rejects.fallback_lines.setdefault(str(path), []).append(line)
        try:
            obj = json.loads(fixed[0])
        except ValueError as exc:
            rejects.add(path, line, "malformed_line", f"not JSON: {exc}", text)
            continue
        if not isinstance(obj, dict):
            rejects.add(path, line, "malformed_line",
                         f"expected a JSON object, got {type(obj).__name__}", text)
            continue
        yield Record(line, obj, text)


# ---------------------------------------------------------------- field checks

def parse_id(v: object, what: str) -> str:
    """An id as the text it was written as (surrounding spaces dropped). Integers (JSON)
    become their digits. Empty, a boolean or a fractional number is a :class:`BadValue`
    (``null_<what>`` or ``bad_<what>``)."""
    if v is None or (isinstance(v, str) and not v.strip()):
        raise BadValue(f"null_{what}", f"{what} is empty")
    if isinstance(v, bool) or isinstance(v, (float, list, dict)):
        raise BadValue(f"bad_{what}", f"{what} {v!r} is not a string or an integer")
    text = str(v).strip()
    if any(ord(ch) < 32 for ch in text):
        raise BadValue(f"bad_{what}", f"{what} {text!r} has control characters")
    return text


def parse_float(v: object, what: str) -> float | None:
    """A finite number, or None for an empty field; anything else is ``bad_<what>``."""
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    if isinstance(v, bool):
        raise BadValue(f"bad_{what}", f"{what} {v!r} is not a number")
    try:
        x = float(v.strip() if isinstance(v, str) else v)
    except (TypeError, ValueError):
        raise BadValue(f"bad_{what}", f"{what} {str(v)[:40]!r} is not a number") from None
    if not math.isfinite(x):
        raise BadValue(f"bad_{what}", f"{what} {v!r} is not finite")
    return x


_EPOCH_MAX = 9_999_999_999  # 2286-11-20: larger numbers are not epoch seconds


def parse_ts(v: object, what: str = "ts") -> pd.Timestamp:
    """A UTC timestamp from epoch seconds (a number or digits) or ISO 8601 text (no zone:
    UTC). Empty is ``null_<what>``; anything else unreadable is ``bad_<what>``."""
    if v is None or (isinstance(v, str) and not v.strip()):
        raise BadValue(f"null_{what}", f"{what} is empty")
    text = v.strip() if isinstance(v, str) else v
    if not isinstance(text, str) or re.fullmatch(r"[+-]?\d+(\.\d*)?", text):
        seconds = parse_float(text, what)  # a number: epoch seconds (else bad_<what>)
        if not 0 <= seconds <= _EPOCH_MAX:
            raise BadValue(f"bad_{what}", f"{what} {v!r} is out of range for epoch seconds")
        return pd.Timestamp(int(round(seconds * 1e6)), unit="us", tz="UTC")
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise BadValue(f"bad_{what}", f"{what} {text[:40]!r} is neither epoch seconds nor "
                       "ISO 8601") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    if not 1970 <= t.year < 2262:
        raise BadValue(f"bad_{what}", f"{what} {text!r} is out of range")
    return pd.Timestamp(t).tz_convert("UTC")


def parse_int(v: object, what: str, *, minimum: int = 1) -> int | None:
    """A whole number of at least ``minimum``, or None for an empty field; anything else
    is ``bad_<what>``."""
    x = parse_float(v, what)
    if x is None:
        return None
    if x != int(x) or x < minimum:
        raise BadValue(f"bad_{what}", f"{what} {v!r} is not a whole number >= {minimum}")
    return int(x)


def parse_day(v: object, what: str) -> str | None:
    """A day ``YYYY-MM-DD``, or None for an empty field; anything else is ``bad_<what>``."""
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    text = str(v).strip()
    try:
        if len(text) != 10:  # fromisoformat also reads 20261120
            raise ValueError(text)
        return dt.date.fromisoformat(text).isoformat()
    except ValueError:
        raise BadValue(f"bad_{what}", f"{what} {text[:40]!r} is not a day YYYY-MM-DD") from None


TRUE_TEXT = {"true", "t", "yes", "y", "1"}
FALSE_TEXT = {"false", "f", "no", "n", "0"}


def parse_bool(v: object, what: str) -> bool | None:
    """true/false (also yes/no, 1/0, any case), or None for an empty field; anything else
    is ``bad_<what>``."""
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    if isinstance(v, bool):
        return v
    text = str(v).strip().lower()
    if text in TRUE_TEXT:
        return True
    if text in FALSE_TEXT:
        return False
    raise BadValue(f"bad_{what}", f"{what} {str(v)[:40]!r} is not true or false")
