"""Reading and writing the raw landing zone (events and catalog snapshots)."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vrec import schemas as S
from vrec.io.landing import clear_marker, is_data_file, write_marker

EVENTS_SCHEMA = S.RAW["events"].arrow()
CATALOG_SCHEMA = S.RAW["catalog"].arrow()
REJECTS_FILE = "_rejects.parquet"
"""Rows an adapter rejected, kept next to the partition's data (a leading ``_``: not data)."""
REJECTS_SCHEMA = pa.schema([("file", pa.string()), ("line", pa.int64()), ("reason", pa.string()),
                            ("detail", pa.string()), ("raw", pa.string())])


class MissingInput(FileNotFoundError):
    """A raw partition or file a run needs is not there (an input problem: the runner
    prints its one line, no stack trace)."""

    input_problem = True


def partition_dir(root: str | Path, source: str, ds: dt.date | str) -> Path:
    """Folder of one raw partition: ``<root>/<source>/ds=YYYY-MM-DD``."""
    return Path(root) / source / f"ds={ds if isinstance(ds, str) else ds.isoformat()}"


def link_image_folder(root: str | Path, name: str, folder: str | Path) -> Path:
    """Make ``<root>/images/<name>`` a link to an image ``folder`` outside the raw zone
    and return its absolute path: image_uri values under it lie inside raw_root, which
    the embedding reads from (vrec.images.embed.locate_image), without copying images."""
    link = Path(os.path.abspath(root)) / "images" / name
    target = Path(folder).resolve()
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return link
    if link.is_symlink():
        link.unlink()
    elif link.exists():
        raise FileExistsError(f"{link} exists and is not a link; cannot link {target} there")
    os.symlink(target, link)
    return link


def data_files(folder: str | Path) -> list[Path]:
    """A partition's Parquet data files, sorted (markers, rejects and temporaries are not)."""
    folder = Path(folder)
    return sorted(p for p in folder.glob("*.parquet") if is_data_file(p)) if folder.is_dir() else []


def _replace(folder: Path, name: str, table: pa.Table) -> Path:
    target = folder / name
    tmp = folder / f".tmp-{uuid.uuid4().hex}.parquet"
    pq.write_table(table, tmp)
    os.replace(tmp, target)
    return target


def _write(df: pd.DataFrame | pa.Table, schema: pa.Schema, folder: Path,
           rejects: pd.DataFrame | None = None) -> Path:
    """Replace a partition's files: marker off, old files out, the rejects (if any) and
    the new data file in by rename, marker on last (the nightly DAG waits for it, see
    ``vrec.io.landing``)."""
    folder.mkdir(parents=True, exist_ok=True)
    clear_marker(folder)
    for old in data_files(folder) + [folder / REJECTS_FILE]:
        old.unlink(missing_ok=True)
    if rejects is not None and len(rejects):
        _replace(folder, REJECTS_FILE, pa.Table.from_pandas(
            rejects[REJECTS_SCHEMA.names], schema=REJECTS_SCHEMA, preserve_index=False))
    if isinstance(df, pa.Table):  # landed by the native reader (vrec.data.bulk)
        table = df.select(schema.names).cast(schema)
    else:  # an optional column the writer leaves out is written as nulls
        table = pa.Table.from_pandas(df.reindex(columns=schema.names), schema=schema,
                                     preserve_index=False)
    target = _replace(folder, "part-00000.parquet", table)
    write_marker(folder)
    return target


def write_events_partition(root: str | Path, ds: dt.date | str,
                           events: pd.DataFrame | pa.Table,
                           rejects: pd.DataFrame | None = None) -> Path:
    """Write (replace) one day's events partition in the contract's schema, with the
    rows an adapter rejected for it (file, line, reason, detail, raw) in ``_rejects.parquet``."""
    return _write(events, EVENTS_SCHEMA, partition_dir(root, "events", ds), rejects)


def add_events_file(root: str | Path, ds: dt.date | str, events: pd.DataFrame, name: str) -> Path:
    """Add (or replace) one named data file to a day's events partition, in the
    contract's schema, leaving its other files and its marker as they are: a second
    producer landing into a day (the front end's impressions beside the shop's events)."""
    folder = partition_dir(root, "events", ds)
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(events.reindex(columns=EVENTS_SCHEMA.names),
                                 schema=EVENTS_SCHEMA, preserve_index=False)
    return _replace(folder, f"{name}.parquet", table)


def write_catalog_snapshot(root: str | Path, ds: dt.date | str,
                           catalog: pd.DataFrame | pa.Table,
                           rejects: pd.DataFrame | None = None) -> Path:
    """Write (replace) one day's full catalog snapshot in the contract's schema (and its
    rejects, as for events)."""
    return _write(catalog, CATALOG_SCHEMA, partition_dir(root, "catalog", ds), rejects)


def read_rejects(root: str | Path, source: str, parts: list[str]) -> pd.DataFrame:
    """The adapter rejects of ``source``'s partitions ``parts``, with ``landed_ds``."""
    frames = []
    for ds in parts:
        f = partition_dir(root, source, ds) / REJECTS_FILE
        if f.is_file():
            frames.append(pd.read_parquet(f).assign(landed_ds=ds))
    cols = list(REJECTS_SCHEMA.names) + ["landed_ds"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


def list_partitions(root: str | Path, source: str) -> list[str]:
    """Sorted ds values present for a raw source."""
    base = Path(root) / source
    if not base.is_dir():
        return []
    return sorted(p.name[3:] for p in base.iterdir() if p.is_dir() and p.name.startswith("ds="))


def catalog_snapshot_ds(root: str | Path, ds: str) -> str:
    """The catalog snapshot a run for ``ds`` uses: that day's, else the latest before it."""
    parts = [p for p in list_partitions(root, "catalog") if p <= ds]
    if not parts:
        raise MissingInput(
            f"no catalog snapshot on or before {ds} under {Path(root) / 'catalog'}")
    return parts[-1]


def event_partitions_until(root: str | Path, ds: str) -> list[str]:
    """Event partitions a run for ``ds`` may read (landing day <= ds)."""
    return [p for p in list_partitions(root, "events") if p <= ds]
