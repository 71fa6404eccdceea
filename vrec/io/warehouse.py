"""The warehouse: ds-partitioned Parquet tables with one commit point per publish.

Layout under the warehouse root::

    _runs/<ds>/...                         staging area of a run (stage outputs, stats)
    _versions/ds=<ds>/<version>/<table>/   immutable published data of one publish
    _versions/ds=<ds>/<version>/model/     the CF model published with it
    _versions/ds=<ds>/<version>/_manifest.json   what was published (tables, rows, facts)
    _current/ds=<ds> -> _versions/ds=<ds>/<version>   THE commit point (one symlink)
    <table>/ds=<ds>  -> _current/ds=<ds>/<table>      what readers glob (never changes)
    models/ds=<ds>   -> _current/ds=<ds>/model
    _manifests/latest.json                 the latest published ds (for outside readers)
    _locks/                                the publish lock (vrec.io.locks)
    item_embeddings/                       the incremental embedding cache (not per ds)

Publishing copies every staged table and the model into a fresh version folder (nothing
a reader sees changes), then replaces the ``_current/ds=<ds>`` symlink with one atomic
``rename``: every table, the model and the manifest of ds switch together. A reader
sees the previous complete state or the new complete one. Publish and retention run
under one warehouse-wide lock; each starts by collecting what a killed predecessor left
(versions never committed, dangling links), so a restart converges. Retention removes
the commit point first, then the data.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from vrec import schemas as S
from vrec.dates import check_ds, shift_ds
from vrec.io import faults
from vrec.io.locks import hold, holder_note

PUBLISHED_TABLES = tuple(S.PUBLISHED)
KEEP_VERSIONS = 2
MODEL = "model"  # the non-table folder published with each version, linked at models/ds=
PUBLISH_LOCK_WAIT_SECONDS = 600.0


class PublishError(RuntimeError):
    """Raised when staged outputs cannot be published; nothing published was changed."""


def run_dir(warehouse: str | Path, ds: str) -> Path:
    """Staging folder of the run for ``ds``."""
    check_ds(ds)
    return Path(warehouse) / "_runs" / ds


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (temp file + rename)."""
    _atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str))


# ---------------------------------------------------------------- stage bookkeeping

def write_stage_record(warehouse: str | Path, ds: str, stage: str, record: dict) -> dict:
    """Write a stage's record ``stats/<stage>.json`` (atomically); returns it."""
    write_json(run_dir(warehouse, ds) / "stats" / f"{stage}.json", record)
    return record


def write_parquet(df: pd.DataFrame, path: Path, schema: pa.Schema | None = None) -> Path:
    """Write ``df`` to one Parquet file via a temp name and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    pq.write_table(pa.Table.from_pandas(df.reset_index(drop=True), schema=schema,
                                        preserve_index=False), tmp)
    os.replace(tmp, path)
    return path


def write_table_folder(df: pd.DataFrame, folder: Path, table: S.Table | None = None) -> Path:
    """Replace a staged table folder's Parquet files with one file holding ``df`` (in
    ``table``'s columns and types when given: an empty frame keeps them)."""
    for old in folder.glob("*.parquet") if folder.is_dir() else []:
        old.unlink()
    if table is not None:
        df = df[table.names()].astype(table.dtypes())
    return write_parquet(df, folder / "part-00000.parquet",
                         table.arrow() if table is not None else None)


QUARANTINE_COLUMNS = tuple(S.QUARANTINE.names())


def write_quarantine(warehouse: str | Path, ds: str, source: str, rows: pd.DataFrame) -> int:
    """Stage quarantine rows (``key``, ``reason``; optional ``found_by``: ``landing`` for
    an adapter's reject, else ``run``; ``landed_ds``, the partition the row landed in;
    ``detail``) found by ``source``; returns the count."""
    def opt(col):
        values = rows[col] if col in rows else pd.Series([None] * len(rows), index=rows.index)
        return values.map(lambda v: None if v is None or v != v else str(v)).astype(object)

    out = pd.DataFrame({"source": source, "key": rows["key"].astype(str),
                        "reason": rows["reason"].astype(str),
                        "found_by": opt("found_by").fillna("run"),
                        "landed_ds": opt("landed_ds"), "detail": opt("detail")})
    by_run = set(out.loc[out["found_by"] == "run", "reason"])
    for r in sorted(by_run):  # the run's own reasons come from one vocabulary per source
        S.reason(source, r)
    write_parquet(out, run_dir(warehouse, ds) / "quarantine" / f"{source}.parquet",
                  S.QUARANTINE.arrow())
    return len(out)


def stage_records(warehouse: str | Path, ds: str) -> dict[str, dict]:
    """Every stage record staged for ``ds`` (``stats/<stage>.json``), by stage name."""
    folder = run_dir(warehouse, ds) / "stats"
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} \
        if folder.is_dir() else {}


def read_stage_stats(warehouse: str | Path, ds: str) -> pd.DataFrame:
    """All stage records staged for ``ds`` (empty frame when none)."""
    recs = list(stage_records(warehouse, ds).values())
    return pd.DataFrame(recs, columns=None if recs else S.RUN_STATS.names()[:-1])


def run_stats_frame(warehouse: str | Path, ds: str) -> pd.DataFrame:
    """The run_stats table of ``ds``: stage, rows_in, rows_out, rows_quarantined, seconds
    and ``details`` (the stage's other facts as a JSON object string), for every record
    but those of stages still running or failed."""
    base = [c for c in S.RUN_STATS.names() if c != "details"]
    rows = [{**{c: r.get(c) for c in base},
             "details": json.dumps({k: v for k, v in r.items() if k not in base},
                                   sort_keys=True, default=str)}
            for r in stage_records(warehouse, ds).values()
            if r.get("status") not in ("running", "failed")]
    return pd.DataFrame(rows, columns=S.RUN_STATS.names())


def read_folder(folder: str | Path, columns: list[str] | None = None, *,
                since: dt.datetime | None = None, ts: str = "ts",
                arrow: bool = False) -> pd.DataFrame:
    """A folder of Parquet files (a staged table) as pandas, optionally some columns and
    only the rows with ``ts`` at or after ``since`` (filtered while reading: row groups
    before it are skipped); an empty frame when the folder has no Parquet files.
    ``arrow``: columns backed by Arrow (pd.ArrowDtype), for reads that only count or
    look up: at 10M the interactions' ids read in a third of the time and a tenth of
    the memory of Python strings."""
    import pyarrow.dataset as pads

    folder = Path(folder)
    if not folder.is_dir() or not any(folder.glob("*.parquet")):
        return pd.DataFrame(columns=columns or [])
    data = pads.dataset(str(folder), format="parquet")
    where = None
    if since is not None:
        where = pads.field(ts) >= pa.scalar(since, type=data.schema.field(ts).type)
    return to_frame(data.to_table(columns=columns, filter=where), arrow=arrow)


def to_frame(table: pa.Table, *, arrow: bool = False) -> pd.DataFrame:
    """``table.to_pandas()`` (``arrow``: Arrow-backed columns), except that a column of
    string lists holds one shared array per distinct list: the same values, types and
    order. A pair's event types are one of a few lists, and at 10M a window's 8.6M
    arrays of their own took 1.5 GB of the driver's memory and 9 s; shared, 0.7 GB and
    4 s. A list column with null or empty-string elements converts as pyarrow does."""
    import pyarrow.compute as pc

    if arrow:
        return table.to_pandas(types_mapper=pd.ArrowDtype)
    shared = {}
    for name in table.column_names:
        col = table.column(name)
        if not (pa.types.is_list(col.type) and pa.types.is_string(col.type.value_type)):
            continue
        lists = col.combine_chunks().cast(pa.list_(pa.string()))
        values = lists.flatten()
        if values.null_count or (len(values) and (
                pc.any(pc.equal(values, "")).as_py()
                or pc.any(pc.match_substring(values, SEP)).as_py())):
            continue
        enc = pc.binary_join(lists, SEP).dictionary_encode()
        distinct = np.empty(len(enc.dictionary) + 1, dtype=object)  # the last: a null list
        for k, joined in enumerate(enc.dictionary.to_pylist()):
            distinct[k] = np.asarray(joined.split(SEP) if joined else [], dtype=object)
        shared[name] = distinct[enc.indices.fill_null(len(enc.dictionary)).to_numpy()]
    out = table.drop_columns(list(shared)).to_pandas() if shared else table.to_pandas()
    for name, values in shared.items():
        out.insert(table.column_names.index(name), name, values)
    return out


# joins a list's strings in :func:`to_frame` (a column holding it converts as pyarrow does)
SEP = "\x1f"


def row_group_shares(folder: str | Path, tasks: int) -> list[list[tuple[str, int]]]:
    """A folder's Parquet row groups, (file, row group) in file and group order, cut into
    at most ``tasks`` runs of consecutive groups with about equal rows each (from the
    files' footers; no data is read): the shares of Spark tasks that read a staged table
    themselves."""
    groups = []
    for f in sorted(Path(folder).glob("*.parquet")):
        meta = pq.ParquetFile(f).metadata
        groups += [(str(f), g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)
                   if meta.row_group(g).num_rows]
    total = sum(n for *_, n in groups)
    shares: list[list[tuple[str, int]]] = [[] for _ in range(max(1, tasks))]
    seen = 0
    for f, g, n in groups:  # a row group goes to the share its first row falls in
        shares[min(len(shares) - 1, seen * len(shares) // max(1, total))].append((f, g))
        seen += n
    return [s for s in shares if s]


def read_share(share: list[tuple[str, int]], batch: int) -> Iterator[pd.DataFrame]:
    """The rows of a share (:func:`row_group_shares`), ``batch`` rows at a time."""
    for f, groups in itertools.groupby(share, key=lambda fg: fg[0]):
        for b in pq.ParquetFile(f).iter_batches(batch_size=batch,
                                                row_groups=[g for _, g in groups]):
            yield b.to_pandas()


def read_keyed_share(shares: list[list[tuple[str, int]]], i: int, key: str,
                     columns: list[str] | None = None) -> pa.Table:
    """From a table sorted by ``key`` and cut into ``shares``: the rows of every key whose
    first row lies in share ``i``. A key that runs on from the share before is left to
    that share; the share's last key is read on into the groups after it."""
    groups = [g for share in shares for g in share]
    at = sum(len(s) for s in shares[:i])
    mine = groups[at:at + len(shares[i])]

    def group(fg: tuple[str, int], cols: list[str] | None) -> pa.Table:
        return pq.ParquetFile(fg[0]).read_row_group(fg[1], columns=cols)

    table = pa.concat_tables([group(g, columns) for g in mine])
    keys = table.column(key)
    if at > 0 and len(table):  # the previous group's last key belongs to the share before
        before = group(groups[at - 1], [key]).column(key)
        prev = before[len(before) - 1]
        first_new = 0
        while first_new < len(keys) and keys[first_new] == prev:
            first_new += 1
        table, keys = table.slice(first_new), keys.slice(first_new)
    if len(keys):
        last, parts = keys[len(keys) - 1], [table]
        for g in groups[at + len(mine):]:
            more = group(g, columns)
            k = more.column(key)
            run = 0
            while run < len(k) and k[run] == last:
                run += 1
            parts.append(more.slice(0, run))
            if run < len(k):
                break
        table = pa.concat_tables(parts)
    return table


def parquet_rows(paths: Path | list[Path]) -> int:
    """Rows in Parquet files, or in the ``*.parquet`` files of a folder, from their
    footers (no data read); 0 for a missing folder."""
    files = []
    for p in [paths] if isinstance(paths, (str, Path)) else paths:
        p = Path(p)
        files += sorted(p.glob("*.parquet")) if p.is_dir() else [p] if p.is_file() else []
    return sum(pq.read_metadata(f).num_rows for f in files)


def staged_quarantine(warehouse: str | Path, ds: str) -> pd.DataFrame:
    """All quarantine rows staged for ``ds``."""
    folder = run_dir(warehouse, ds) / "quarantine"
    parts = [pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))] if folder.is_dir() else []
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype="string") for c in QUARANTINE_COLUMNS})
    return pd.concat(parts, ignore_index=True).reindex(
        columns=list(QUARANTINE_COLUMNS)).astype("string")


# ---------------------------------------------------------------- publish

def _check_parquet_folder(folder: Path) -> int:
    if not folder.is_dir():
        raise PublishError(f"staged table folder missing: {folder}")
    files = sorted(folder.glob("*.parquet"))
    if not files:
        raise PublishError(f"staged table folder has no Parquet files: {folder}")
    rows = 0
    for f in files:
        try:
            rows += pq.read_metadata(f).num_rows
        except Exception as exc:  # a truncated or foreign file
            raise PublishError(f"staged file is not readable Parquet: {f}: {exc}") from exc
    return rows


def _pointer(wh: Path, ds: str) -> Path:
    return wh / "_current" / f"ds={ds}"


def publish_lock(warehouse: str | Path, what: str, **note):
    """The warehouse-wide lock around publish and retention (waits up to 10 minutes)."""
    wh = Path(warehouse)
    return hold(wh / "_locks" / "publish.lock", holder_note(what, **note),
                wait_seconds=PUBLISH_LOCK_WAIT_SECONDS, what=f"the publish lock of {wh}")


def migrate_layout(wh: Path) -> list[str]:
    """Move partitions published by an older vrec (per-table ``_versions/<table>/ds=/v``
    links and ``_manifests/ds=<ds>.json``) into the one-commit layout; call under the
    publish lock. Each ds gets its committed version folder, then its commit point, then
    its old manifest goes: a migration killed midway is finished by the next call.
    Returns the migrated ds values."""
    done = []
    for old in sorted((wh / "_manifests").glob("ds=*.json")):
        ds = old.stem[3:]
        m = json.loads(old.read_text())
        if not _pointer(wh, ds).is_symlink():
            vdir = wh / "_versions" / f"ds={ds}" / m["version"]
            tmp = vdir.with_name(f".{vdir.name}.migrating")
            shutil.rmtree(tmp, ignore_errors=True)
            for table in m.get("tables", {}):
                link = wh / table / f"ds={ds}"
                if link.is_dir():
                    shutil.copytree(link, tmp / table)
            models = wh / "models" / f"ds={ds}"
            if models.is_dir():
                shutil.copytree(models, tmp / MODEL)
            write_json(tmp / "_manifest.json", m)
            shutil.rmtree(vdir, ignore_errors=True)
            os.replace(tmp, vdir)
            for table in m.get("tables", {}):
                _link(wh / table / f"ds={ds}", f"../_current/ds={ds}/{table}")
            if (vdir / MODEL).is_dir():
                if models.is_dir() and not models.is_symlink():
                    shutil.rmtree(models)
                _link(models, f"../_current/ds={ds}/{MODEL}")
            _link(_pointer(wh, ds), f"../_versions/ds={ds}/{m['version']}")
        old.unlink()
        done.append(ds)
    for folder in (wh / "_versions").glob("*") if (wh / "_versions").is_dir() else []:
        if not folder.name.startswith(("ds=", ".")):  # an old per-table version tree
            shutil.rmtree(folder, ignore_errors=True)
    return done


def _check_layout(wh: Path) -> None:
    """Bring a warehouse of an older vrec to the current layout (logged)."""
    migrated = migrate_layout(wh)
    if migrated:
        print(f"[vrec] {wh}: {len(migrated)} partitions moved to the one-commit layout "
              f"({migrated[0]} .. {migrated[-1]})", flush=True)


def _link(link: Path, target: str) -> None:
    """Make ``link`` a symlink to ``target`` (relative), replacing an older link atomically."""
    if link.is_symlink() and os.readlink(link) == target:
        return
    if link.exists() and not link.is_symlink():
        raise PublishError(f"{link} is a real folder, not a published link; refusing to replace")
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex}")
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(warehouse: str | Path, ds: str, staged: dict[str, Path], *,
            extra: dict | None = None, model: Path | None = None, run_id: str | None = None
            ) -> dict:
    """Publish staged table folders (and the ``model`` folder) as partition ``ds`` with
    one commit point.

    Parameters
    ----------
    warehouse : path
        Warehouse root.
    ds : str
        Logical date (YYYY-MM-DD).
    staged : dict
        Table name -> folder of Parquet files (without a ds column).
    extra : dict, optional
        Additional fields stored in the manifest (model version, settings).
    model : path, optional
        A folder published with the tables and linked at ``models/ds=<ds>``.
    run_id : str, optional
        The publishing run (in the manifest and the lock's note).

    Returns
    -------
    dict
        The manifest written for ``ds``.
    """
    wh = Path(warehouse)
    check_ds(ds)
    rows = {name: _check_parquet_folder(Path(folder)) for name, folder in staged.items()}
    if model is not None and not (Path(model) / "model.json").is_file():
        raise PublishError(f"model folder {model} has no model.json")
    with publish_lock(wh, f"publish ds={ds}", run_id=run_id):
        _check_layout(wh)
        collect_garbage(wh)
        version = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%f") + "-" + uuid.uuid4().hex[:8]
        vdir = wh / "_versions" / f"ds={ds}" / version
        # 1. the new version, complete, where no reader looks
        try:
            for name, folder in staged.items():
                shutil.copytree(folder, vdir / name, ignore=shutil.ignore_patterns(".*", "_*"))
            if model is not None:
                shutil.copytree(model, vdir / MODEL, ignore=shutil.ignore_patterns(".*"))
            manifest = {
                "ds": ds, "version": version, "run_id": run_id,
                "published_at": dt.datetime.now(dt.UTC).isoformat(),
                "tables": {n: {"rows": rows[n], "path": str(wh / n / f"ds={ds}")} for n in staged},
                **({"model_path": str(wh / "models" / f"ds={ds}")} if model is not None else {}),
                **(extra or {}),
            }
            write_json(vdir / "_manifest.json", manifest)
        except Exception as exc:
            shutil.rmtree(vdir, ignore_errors=True)
            raise PublishError(f"publishing {ds} failed before the commit: {exc}") from exc
        faults.point("publish:after_copy")
        # 2. readers' paths: static links through the commit point (dangling until it exists)
        for name in staged:
            _link(wh / name / f"ds={ds}", f"../_current/ds={ds}/{name}")
        if model is not None:
            _link(wh / "models" / f"ds={ds}", f"../_current/ds={ds}/{MODEL}")
        faults.point("publish:after_links")
        # 3. the commit: one rename makes every table, the model and the manifest visible
        _link(_pointer(wh, ds), f"../_versions/ds={ds}/{version}")
        _fsync_dir(_pointer(wh, ds).parent)
        faults.point("publish:after_commit")
        _write_latest(wh)
        faults.point("publish:after_latest")
        _prune_versions(wh, ds, keep=KEEP_VERSIONS)
    return manifest


def _write_latest(wh: Path) -> None:
    """``latest.json`` = the newest committed ds (under the publish lock: never backwards)."""
    pub = published_ds(wh)
    if pub:
        write_json(wh / "_manifests" / "latest.json",
                   {"ds": pub[-1], "version": manifest(wh, pub[-1])["version"]})


def _current_version(wh: Path, ds: str) -> str | None:
    p = _pointer(wh, ds)
    return os.readlink(p).rsplit("/", 1)[-1] if p.is_symlink() else None


def _prune_versions(wh: Path, ds: str, keep: int) -> None:
    """Keep the committed version of ds and the newest ``keep - 1`` older ones (a reader
    mid-query may still be on them); versions never committed go."""
    folder = wh / "_versions" / f"ds={ds}"
    if not folder.is_dir():
        return
    live = _current_version(wh, ds)
    versions = sorted(p.name for p in folder.iterdir() if p.is_dir())
    older = [v for v in versions if live is not None and v < live]
    keep_set = {live, *older[len(older) - (keep - 1):]} if keep > 1 else {live}
    for v in versions:
        if v not in keep_set:
            shutil.rmtree(folder / v, ignore_errors=True)
    if not any(folder.iterdir()):
        folder.rmdir()


def collect_garbage(warehouse: str | Path) -> list[str]:
    """Remove what a killed publish or retention left: versions never committed, partial
    link files, links into a ds with no commit point. Call under the publish lock.
    Returns what was removed (for the log)."""
    wh = Path(warehouse)
    removed = []
    for tmp in [*wh.glob("_current/.ds=*"), *wh.glob("*/.ds=*")]:
        tmp.unlink(missing_ok=True)
        removed.append(str(tmp))
    committed = set(published_ds(wh))
    for p in list(wh.glob("_current/ds=*")):
        if p.is_symlink() and not p.exists():  # its version is gone: retention was killed
            p.unlink()
            removed.append(str(p))
    for folder in sorted((wh / "_versions").glob("ds=*")):
        ds = folder.name[3:]
        before = {v.name for v in folder.iterdir()}
        _prune_versions(wh, ds, keep=KEEP_VERSIONS)
        after = {v.name for v in folder.iterdir()} if folder.is_dir() else set()
        removed += [f"{folder}/{v}" for v in sorted(before - after)]
    for link in [*wh.glob("*/ds=*")]:
        if link.is_symlink() and link.name[3:] not in committed and \
                os.readlink(link).startswith("../_current/"):
            link.unlink()
            removed.append(str(link))
    return removed


def apply_retention(warehouse: str | Path, ds: str, days: int, run_id: str | None = None
                    ) -> list[str]:
    """Remove published partitions older than ``days`` before ``ds`` (commit point first,
    then links, versions, model, run staging, run report) and the staging of runs older
    than that which never published; the latest published ds is always kept.
    Returns the removed published ds values."""
    wh = Path(warehouse)
    cutoff = shift_ds(ds, -days)
    removed = []
    with publish_lock(wh, f"retention as of ds={ds}", run_id=run_id):
        _check_layout(wh)
        pub = published_ds(wh)
        latest = pub[-1] if pub else None
        for old in pub:
            if old >= cutoff or old == latest:
                continue
            _pointer(wh, old).unlink()  # the commit point first: from here on it is gone
            faults.point("retention:after_pointer")
            for link in [*wh.glob(f"*/ds={old}")]:
                if link.is_symlink():
                    link.unlink()
            shutil.rmtree(wh / "_versions" / f"ds={old}", ignore_errors=True)
            removed.append(old)
        for run in sorted((wh / "_runs").glob("*")) if (wh / "_runs").is_dir() else []:
            if run.name < cutoff and run.name != latest:
                shutil.rmtree(run, ignore_errors=True)
        for folder in (wh / "_failures").glob("ds=*"):
            if folder.name[3:] < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        for report in (wh / "reports" / "runs").glob("vrec_report_*.html"):
            d = report.stem.rsplit("_", 1)[-1]
            if d < cutoff and d != latest:
                report.unlink(missing_ok=True)
        collect_garbage(wh)
    return removed


def write_failure(warehouse: str | Path, ds: str, record: dict) -> Path:
    """Keep one failed task attempt (stage, ds, run, try, error, when) under
    ``_failures/ds=<ds>/``; the run report lists them."""
    name = f"{record.get('stage', 'task')}-{record.get('try', 0)}-{uuid.uuid4().hex[:6]}.json"
    path = Path(warehouse) / "_failures" / f"ds={check_ds(ds)}" / name
    write_json(path, record)
    return path


def read_failures(warehouse: str | Path, since: str | None = None) -> list[dict]:
    """Failure records of every ds (on or after ``since``), oldest first."""
    out = []
    for folder in sorted((Path(warehouse) / "_failures").glob("ds=*")):
        if since is None or folder.name[3:] >= since:
            out += [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    return sorted(out, key=lambda r: (r.get("ds", ""), r.get("at", "")))


def latest_ds(warehouse: str | Path) -> str | None:
    """The latest published ds, or None when nothing was published yet."""
    pub = published_ds(warehouse)
    return pub[-1] if pub else None


def published_ds(warehouse: str | Path) -> list[str]:
    """All committed ds values, sorted (a ds is published when its commit point resolves)."""
    folder = Path(warehouse) / "_current"
    if not folder.is_dir():
        return []
    return sorted(p.name[3:] for p in folder.glob("ds=*") if p.is_symlink() and p.is_dir())


def manifest(warehouse: str | Path, ds: str) -> dict:
    """The manifest of a published ds (read through its commit point)."""
    p = _pointer(Path(warehouse), ds) / "_manifest.json"
    if not p.is_file():
        raise FileNotFoundError(f"ds {ds} is not published in {warehouse}")
    return json.loads(p.read_text())


def read_recent(warehouse: str | Path, table: str, before: str, nights: int) -> pd.DataFrame:
    """The published partitions of ``table`` of the last ``nights`` published ds before
    ``before``, with their ``ds`` (nights published before the table existed are left
    out); an empty frame of the table's columns when there are none."""
    frames = []
    for d in [d for d in published_ds(warehouse) if d < before][-nights:]:
        try:
            frames.append(read_table(warehouse, table, d))
        except (FileNotFoundError, OSError):
            continue
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["ds", *S.PUBLISHED[table].names()])


def read_table(warehouse: str | Path, table: str, ds: str | None = None) -> pd.DataFrame:
    """Read one published partition (latest by default) into pandas, with a ds column."""
    ds = ds or latest_ds(warehouse)
    if ds is None:
        raise FileNotFoundError(f"nothing published yet in {warehouse}")
    df = pd.read_parquet(Path(warehouse) / table / f"ds={ds}")
    df.insert(0, "ds", ds)
    return df
