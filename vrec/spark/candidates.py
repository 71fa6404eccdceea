"""The candidates stage in Spark: retrieval (vrec.core.retrieval) for every user.

Users' rows (vrec.spark.users) are spread over ``2 x`` the default parallelism; each task
memory-maps the run's item space and CF model once, builds batches of users with the one
builder (vrec.core.users) and retrieves their CF, visual and new-arrival top-N with the
exact top-k kernel. The output (one row per user: candidates with raw scores, plus what
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

import pandas as pd

from vrec import schemas as S
from vrec.config import RecsSettings, VisualSettings
from vrec.core.retrieval import retrieve
from vrec.core.users import user_batch

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
    """mapInPandas body: user rows -> candidate rows (one BLAS thread per task).
    ``clock``: seconds per part (``load``, ``users``, ``retrieve``, ``frame``) are added
    to it."""
    from threadpoolctl import threadpool_limits

    clock = clock if clock is not None else {}
    t = time.perf_counter()
    space, model, item_index, user_index = _load(space_dir, model_dir)
    t = _tick(clock, "load", t)
    with threadpool_limits(1, "blas"):
        for df in frames:
            t = time.perf_counter()  # the wait for the next Arrow batch is not counted
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


WORKER_PARTS = ("load", "users", "retrieve", "frame", "write", "task")


def write_candidates(spark, rows, out_dir: str | Path, *, space_dir: str | Path,
                     model_dir: str | Path, recs: RecsSettings, visual: VisualSettings,
                     end: pd.Timestamp, profile: bool = True, extra: bool = False,
                     seconds: dict[str, float] | None = None) -> tuple[int, int]:
    """Retrieve the candidates of every row of ``rows`` (vrec.spark.users.user_rows) and
    write them to ``out_dir`` (vrec.schemas.CANDIDATES); returns (users, candidates).

    Each task writes its users as one Parquet file, ``part-<task>.parquet``, from the
    Python worker (pyarrow: a temp name renamed into place, so a retried task replaces its
    own file). Spark moves only the counts: at 10M the candidates are 65M scores in seven
    columns, and converting them to Spark rows and writing them in the JVM took a fifth of
    the stage beside the workers. ``extra``: the learned ranker's sources too.
    ``seconds``: filled with the tasks' seconds summed over tasks, per part
    (:data:`WORKER_PARTS`: loading the space, building user batches, retrieval, the
    stored form, the Parquet writes, and each task's whole time)."""
    sd, md = str(Path(space_dir).resolve()), str(Path(model_dir).resolve())
    out = str(Path(out_dir).resolve())
    Path(out).mkdir(parents=True, exist_ok=True)
    parts = max(1, 2 * spark.sparkContext.defaultParallelism)

    def task(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from pyspark import TaskContext

        t0 = time.perf_counter()
        clock: dict[str, float] = {}
        counts = _write_part(candidates_partition(frames, space_dir=sd, model_dir=md, recs=recs,
                                                  visual=visual, end=end, profile=profile,
                                                  extra=extra, clock=clock),
                             Path(out), TaskContext.get().partitionId(), clock)
        clock["task"] = time.perf_counter() - t0
        yield counts.assign(**{f"{p}_s": [clock.get(p, 0.0)] for p in WORKER_PARTS})

    schema = ", ".join(["users long", "candidates long"] + [f"{p}_s double" for p in WORKER_PARTS])
    counts = rows.repartition(parts).mapInPandas(task, schema).toPandas()
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
