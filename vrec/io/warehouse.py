"""The warehouse: ds-partitioned Parquet tables with atomic publish.

Layout under the warehouse root::

    _runs/<ds>/...                       staging area of a run (stage outputs, stats)
    _versions/<table>/ds=<ds>/<version>/ immutable published data
    <table>/ds=<ds>  -> symlink to the version above (what readers glob)
    _manifests/ds=<ds>.json              what was published for ds (tables, files, rows)
    _manifests/latest.json               the latest published ds
    item_embeddings/                     the incremental embedding cache (not per ds)

Publishing moves every staged table into a fresh version folder (nothing a reader sees
changes), then swaps each table's ``ds=`` link with an atomic ``rename`` and finally
writes the manifest. A reader therefore sees the previous complete partition or the new
complete one, never a half-written one; a failure before the swap leaves everything
published as it was.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

PUBLISHED_TABLES = ("user_recs", "item_similar", "item_popularity", "user_profile", "items",
                    "image_duplicates", "run_stats", "quarantine", "eval_metrics")
KEEP_VERSIONS = 2


class PublishError(RuntimeError):
    """Raised when staged outputs cannot be published; nothing published was changed."""


def check_ds(ds: str) -> str:
    """Return ``ds`` if it is a real date written YYYY-MM-DD, else raise ValueError."""
    if not isinstance(ds, str) or len(ds) != 10 or ds[4] != "-" or ds[7] != "-":
        raise ValueError(f"ds must be YYYY-MM-DD, got {ds!r}")
    dt.date.fromisoformat(ds)
    return ds


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


def write_table_folder(df: pd.DataFrame, folder: Path) -> Path:
    """Replace a staged table folder's Parquet files with one file holding ``df``."""
    for old in folder.glob("*.parquet") if folder.is_dir() else []:
        old.unlink()
    return write_parquet(df, folder / "part-00000.parquet")


QUARANTINE_COLUMNS = ("source", "key", "reason", "found_by", "landed_ds", "detail")


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
    write_parquet(out, run_dir(warehouse, ds) / "quarantine" / f"{source}.parquet",
                  pa.schema([(c, pa.string()) for c in QUARANTINE_COLUMNS]))
    return len(out)


def stage_records(warehouse: str | Path, ds: str) -> dict[str, dict]:
    """Every stage record staged for ``ds`` (``stats/<stage>.json``), by stage name."""
    folder = run_dir(warehouse, ds) / "stats"
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))} \
        if folder.is_dir() else {}


def read_stage_stats(warehouse: str | Path, ds: str) -> pd.DataFrame:
    """All stage records staged for ``ds`` (empty frame when none)."""
    recs = list(stage_records(warehouse, ds).values())
    cols = ["stage", "rows_in", "rows_out", "rows_quarantined", "seconds"]
    return pd.DataFrame(recs, columns=None if recs else cols)


def run_stats_frame(warehouse: str | Path, ds: str) -> pd.DataFrame:
    """The run_stats table of ``ds``: stage, rows_in, rows_out, rows_quarantined, seconds
    and ``details`` (the stage's other facts as a JSON object string), for every record
    but those of stages still running or failed."""
    base = ["stage", "rows_in", "rows_out", "rows_quarantined", "seconds"]
    rows = [{**{c: r.get(c) for c in base},
             "details": json.dumps({k: v for k, v in r.items() if k not in base},
                                   sort_keys=True, default=str)}
            for r in stage_records(warehouse, ds).values()
            if r.get("status") not in ("running", "failed")]
    return pd.DataFrame(rows, columns=base + ["details"])


def read_folder(folder: str | Path, columns: list[str] | None = None) -> pd.DataFrame:
    """A folder of Parquet files (a staged table) as pandas, optionally some columns;
    an empty frame when the folder has no Parquet files."""
    import pyarrow.dataset as pads

    folder = Path(folder)
    if not folder.is_dir() or not any(folder.glob("*.parquet")):
        return pd.DataFrame(columns=columns or [])
    return pads.dataset(str(folder), format="parquet").to_table(columns=columns).to_pandas()


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


def publish(warehouse: str | Path, ds: str, staged: dict[str, Path], *,
            extra: dict | None = None) -> dict:
    """Atomically publish staged table folders as partition ``ds``.

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

    Returns
    -------
    dict
        The manifest written for ``ds``.
    """
    wh = Path(warehouse)
    check_ds(ds)
    version = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%f") + "-" + uuid.uuid4().hex[:8]
    # Phase 1: verify and move into immutable version folders (invisible to readers).
    rows = {name: _check_parquet_folder(Path(folder)) for name, folder in staged.items()}
    moved: dict[str, Path] = {}
    try:
        for name, folder in staged.items():
            target = wh / "_versions" / name / f"ds={ds}" / version
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(folder, target, ignore=shutil.ignore_patterns(".*", "_*"))
            moved[name] = target
    except Exception as exc:
        for target in moved.values():
            shutil.rmtree(target, ignore_errors=True)
        raise PublishError(f"publishing {ds} failed before any swap: {exc}") from exc
    # Phase 2: swap each table's ds link atomically.
    for name, target in moved.items():
        link = wh / name / f"ds={ds}"
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.exists() and not link.is_symlink():
            raise PublishError(f"{link} is a real folder, not a published link; refusing to replace")
        tmp = link.with_name(f".ds={ds}.{uuid.uuid4().hex}")
        os.symlink(os.path.relpath(target, link.parent), tmp)
        os.replace(tmp, link)
    manifest = {
        "ds": ds, "version": version,
        "published_at": dt.datetime.now(dt.UTC).isoformat(),
        "tables": {n: {"rows": rows[n], "path": str(wh / n / f"ds={ds}")} for n in moved},
        **(extra or {}),
    }
    write_json(wh / "_manifests" / f"ds={ds}.json", manifest)
    latest = latest_ds(wh)
    if latest is None or ds >= latest:
        write_json(wh / "_manifests" / "latest.json", {"ds": ds, "version": version})
    _prune_versions(wh, ds, keep=KEEP_VERSIONS)
    return manifest


def _prune_versions(wh: Path, ds: str, keep: int) -> None:
    for table_dir in (wh / "_versions").iterdir():
        folder = table_dir / f"ds={ds}"
        if not folder.is_dir():
            continue
        versions = sorted(p for p in folder.iterdir() if p.is_dir())
        live = (wh / table_dir.name / f"ds={ds}").resolve()
        for old in versions[:-keep]:
            if old.resolve() != live:
                shutil.rmtree(old, ignore_errors=True)


def apply_retention(warehouse: str | Path, ds: str, days: int) -> list[str]:
    """Remove published partitions older than ``days`` before ``ds`` (tables, versions,
    manifests, saved models, run staging, run reports); the latest published ds is always
    kept.
    Returns the removed ds values."""
    wh = Path(warehouse)
    cutoff = (dt.date.fromisoformat(check_ds(ds)) - dt.timedelta(days=days)).isoformat()
    latest = latest_ds(wh)
    removed = []
    for old in published_ds(wh):
        if old >= cutoff or old == latest:
            continue
        for table_dir in sorted(p for p in wh.iterdir() if not p.name.startswith("_")):
            link = table_dir / f"ds={old}"
            if link.is_symlink():
                link.unlink()
        for folder in [*(wh / "_versions").glob(f"*/ds={old}"), wh / "models" / f"ds={old}",
                       wh / "_runs" / old]:
            shutil.rmtree(folder, ignore_errors=True)
        (wh / "_manifests" / f"ds={old}.json").unlink(missing_ok=True)
        (wh / "reports" / "runs" / f"vrec_report_{old}.html").unlink(missing_ok=True)
        removed.append(old)
    return removed


def latest_ds(warehouse: str | Path) -> str | None:
    """The latest published ds, or None when nothing was published yet."""
    p = Path(warehouse) / "_manifests" / "latest.json"
    return json.loads(p.read_text())["ds"] if p.is_file() else None


def published_ds(warehouse: str | Path) -> list[str]:
    """All published ds values, sorted."""
    folder = Path(warehouse) / "_manifests"
    if not folder.is_dir():
        return []
    return sorted(p.stem[3:] for p in folder.glob("ds=*.json"))


def manifest(warehouse: str | Path, ds: str) -> dict:
    """The manifest of a published ds."""
    p = Path(warehouse) / "_manifests" / f"ds={ds}.json"
    if not p.is_file():
        raise FileNotFoundError(f"ds {ds} is not published in {warehouse}")
    return json.loads(p.read_text())


def read_table(warehouse: str | Path, table: str, ds: str | None = None) -> pd.DataFrame:
    """Read one published partition (latest by default) into pandas, with a ds column."""
    ds = ds or latest_ds(warehouse)
    if ds is None:
        raise FileNotFoundError(f"nothing published yet in {warehouse}")
    df = pd.read_parquet(Path(warehouse) / table / f"ds={ds}")
    df.insert(0, "ds", ds)
    return df
