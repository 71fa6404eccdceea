"""The candidates stage in Spark: retrieval (vrec.core.retrieval) for every user.

The staged interactions (sorted by user and item) are cut into ``2 x`` the default
parallelism shares of row groups; each task reads the pairs of the users that start in
its share itself (pyarrow: vrec.io.warehouse.read_keyed_share), regroups them per user
(vrec.core.users.pairs_by_user), memory-maps the run's item space and CF model once,
builds batches of users with the one builder (vrec.core.users) and retrieves their CF,
visual and new-arrival top-N with the exact top-k kernel. Spark moves only the counts. The output (one row per user: candidates with raw scores, plus what
the ranker needs about the user) is what build_recs ranks.

Memory per task, in bytes, for I items, f factors, d embedding dimensions and B users per
batch: the space and model are memory-mapped (shared through the page cache:
``4·I·(f + d)`` plus the users' factors); a batch's scores take ``4·B·I`` per source.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from vrec import columns as C
from vrec import schemas as S
from vrec.config import RecsSettings, VisualSettings
from vrec.core.retrieval import retrieve
from vrec.core.users import pairs_by_user, user_batch
from vrec.core.window import PAIR_COLUMNS  # the interactions' columns a task reads
from vrec.io import warehouse as W

CHUNK_PAIRS = 1 << 18  # pairs regrouped at a time (whole users)

_LOADED: dict[tuple, tuple] = {}


def _load(space_dir: str, model_dir: str):
    """The space (with its search indexes, built on first use) and model, once per Python
    worker and version of the files: Spark reuses workers across the stage's tasks."""
    from vrec.core.cf import CFModel
    from vrec.core.itemspace import ItemSpace

    stamp = tuple(os.stat(p).st_mtime_ns for p in (Path(space_dir) / "meta.json",
                                                   Path(model_dir) / "model.json"))
    key = (space_dir, model_dir, stamp)
    if key not in _LOADED:
        _LOADED.clear()
        space = ItemSpace.load(space_dir)
        model = CFModel.load(model_dir, mmap=True)
        _LOADED[key] = (space, model, {str(v): i for i, v in enumerate(space.item_ids)},
                        {str(v): i for i, v in enumerate(model.user_ids)})
    return _LOADED[key]


def candidates_partition(frames: Iterator[pd.DataFrame], *, space_dir: str, model_dir: str,
                         recs: RecsSettings, visual: VisualSettings, end: pd.Timestamp,
                         profile: bool = True, extra: bool = False,
                         clock: dict[str, float] | None = None) -> Iterator[pd.DataFrame]:
    """A candidates task's body: user rows -> candidate rows (one BLAS thread per task).
    ``clock``: seconds per part (``load``, ``read``: the wait for the next user rows,
    ``users``, ``retrieve``, ``frame``) are added to it."""
    from threadpoolctl import threadpool_limits

    clock = clock if clock is not None else {}
    t = time.perf_counter()
    space, model, item_index, user_index = _load(space_dir, model_dir)
    t = _tick(clock, "load", t)
    frames = iter(frames)
    with threadpool_limits(1, "blas"):
        while True:
            df = next(frames, None)
            if df is None:
                break
            t = _tick(clock, "read", t)
            for s in range(0, len(df), recs.batch_users):
                batch = user_batch(df.iloc[s:s + recs.batch_users], space, model, recs, end,
                                   item_index=item_index, user_index=user_index)
                t = _tick(clock, "users", t)
                inp = retrieve(batch, space, recs.candidates, visual, profile=profile,
                               extra=extra)
                t = _tick(clock, "retrieve", t)
                frame = inp.to_frame()
                t = _tick(clock, "frame", t)
                yield frame
                t = time.perf_counter()


def _tick(clock: dict[str, float], part: str, since: float) -> float:
    """Add the seconds since ``since`` to ``clock[part]``; returns now."""
    now = time.perf_counter()
    clock[part] = clock.get(part, 0.0) + now - since
    return now


WORKER_PARTS = ("load", "read", "users", "retrieve", "frame", "write", "task")


def user_frames(table, exclude: dict | None = None, chunk: int = CHUNK_PAIRS
                ) -> Iterator[pd.DataFrame]:
    """User rows (vrec.core.users.USER_COLUMNS, plus ``exclude`` when ``exclude`` maps
    users to item ids to leave out) of an Arrow table of pairs sorted by user, regrouped
    about ``chunk`` pairs (whole users) at a time."""
    pairs = W.to_frame(table)
    user = pairs[C.USER_ID].to_numpy(dtype=object)
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]]) if len(user) else []
    a = 0
    while a < len(pairs):
        j = int(np.searchsorted(starts, a + chunk))
        e = int(starts[j]) if j < len(starts) else len(pairs)
        rows = pairs_by_user(pairs.iloc[a:e])
        if exclude:
            rows["exclude"] = [exclude.get(u) for u in rows[C.USER_ID]]
        yield rows
        a = e


def write_candidates(spark, interactions_dir: str | Path, out_dir: str | Path, *,
                     space_dir: str | Path, model_dir: str | Path, recs: RecsSettings,
                     visual: VisualSettings, end: pd.Timestamp,
                     exclude: pd.DataFrame | None = None, profile: bool = True,
                     extra: bool = False, seconds: dict[str, float] | None = None
                     ) -> tuple[int, int]:
    """Retrieve the candidates of every user of the staged interactions (a folder of
    Parquet sorted by user and item) and write them to ``out_dir``
    (vrec.schemas.CANDIDATES); returns (users, candidates). ``exclude``: (user_id,
    item_id) pairs the feedback rules leave out of the lists.

    Each task reads the pairs of its share of the users itself (module doc) and writes
    its users as one Parquet file, ``part-<task>.parquet``, from the Python worker
    (pyarrow: a temp name renamed into place, so a retried task replaces its own file).
    Spark moves only the counts: at 10M, regrouping the 8.9M pairs in Spark and moving
    them to the workers took about 30 s of the stage, and converting the 65M candidate
    scores to Spark rows and writing them in the JVM a fifth of it. ``extra``: the
    learned ranker's sources too. ``seconds``: filled with the tasks' seconds summed over
    tasks, per part (:data:`WORKER_PARTS`: loading the space, reading and regrouping the
    pairs, building the user batches, retrieval, the stored form, the Parquet writes,
    and each task's whole time)."""
    sd, md = str(Path(space_dir).resolve()), str(Path(model_dir).resolve())
    out = str(Path(out_dir).resolve())
    Path(out).mkdir(parents=True, exist_ok=True)
    shares = W.row_group_shares(interactions_dir, 2 * spark.sparkContext.defaultParallelism)
    leave_out = None
    if exclude is not None and len(exclude):
        ex = exclude[[C.USER_ID, C.ITEM_ID]].astype(str).drop_duplicates()
        leave_out = {u: g.tolist() for u, g in ex.groupby(C.USER_ID, sort=False)[C.ITEM_ID]}

    def task(ids: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for part in ids:
            for i in part["id"].tolist():
                t0 = time.perf_counter()
                clock: dict[str, float] = {}
                table = W.read_keyed_share(shares, i, C.USER_ID, PAIR_COLUMNS)
                _tick(clock, "read", t0)
                counts = _write_part(
                    candidates_partition(user_frames(table, leave_out), space_dir=sd,
                                         model_dir=md, recs=recs, visual=visual, end=end,
                                         profile=profile, extra=extra, clock=clock),
                    Path(out), i, clock)
                clock["task"] = time.perf_counter() - t0
                yield counts.assign(**{f"{p}_s": [clock.get(p, 0.0)] for p in WORKER_PARTS})

    schema = ", ".join(["users long", "candidates long"] + [f"{p}_s double" for p in WORKER_PARTS])
    if shares:
        counts = spark.range(0, len(shares), 1, len(shares)).mapInPandas(task, schema).toPandas()
    else:
        counts = pd.DataFrame(columns=["users", "candidates"]
                              + [f"{p}_s" for p in WORKER_PARTS])
    if not any(Path(out).glob("*.parquet")):  # no users: an empty table, still readable
        _write_part(iter([S.CANDIDATES.empty()]), Path(out), -1)
    if seconds is not None:
        seconds.update({p: round(float(counts[f"{p}_s"].sum()), 1) for p in WORKER_PARTS})
    return int(counts["users"].sum()), int(counts["candidates"].sum())


def _write_part(frames: Iterator[pd.DataFrame], folder: Path, part: int,
                clock: dict[str, float] | None = None) -> pd.DataFrame:
    """Write ``frames`` (vrec.schemas.CANDIDATES) as ``folder/part-<part>.parquet``,
    atomically, when they hold users (``part`` -1: part 0, even when empty); returns one
    row of counts (users, candidates). ``clock["write"]``: the seconds of the writes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    clock = clock if clock is not None else {}
    schema = S.CANDIDATES.arrow()
    tmp = folder / f".part-{part}.{uuid.uuid4().hex[:8]}.tmp"
    users = cands = 0
    with pq.ParquetWriter(tmp, schema) as w:
        for df in frames:
            t = time.perf_counter()
            w.write_table(pa.Table.from_pandas(df, schema=schema, preserve_index=False))
            users += len(df)
            cands += int(sum(len(a) for a in df["items"]))
            _tick(clock, "write", t)
    if users or part < 0:
        os.replace(tmp, folder / f"part-{max(part, 0):05d}.parquet")
    else:  # a task without users writes nothing
        tmp.unlink()
    return pd.DataFrame({"users": [users], "candidates": [cands]})
