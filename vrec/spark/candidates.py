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
                         profile: bool = True, extra: bool = False) -> Iterator[pd.DataFrame]:
    """mapInPandas body: user rows -> candidate rows (one BLAS thread per task)."""
    from threadpoolctl import threadpool_limits

    space, model, item_index, user_index = _load(space_dir, model_dir)
    with threadpool_limits(1, "blas"):
        for df in frames:
            for s in range(0, len(df), recs.batch_users):
                batch = user_batch(df.iloc[s:s + recs.batch_users], space, model, recs, end,
                                   item_index=item_index, user_index=user_index)
                yield retrieve(batch, space, recs.candidates, visual,
                               profile=profile, extra=extra).to_frame()


def write_candidates(spark, rows, out_dir: str | Path, *, space_dir: str | Path,
                     model_dir: str | Path, recs: RecsSettings, visual: VisualSettings,
                     end: pd.Timestamp, profile: bool = True, extra: bool = False
                     ) -> tuple[int, int]:
    """Retrieve the candidates of every row of ``rows`` (vrec.spark.users.user_rows) and
    write them to ``out_dir`` (vrec.schemas.CANDIDATES); returns (users, candidates).

    Each task writes its users as one Parquet file, ``part-<task>.parquet``, from the
    Python worker (pyarrow: a temp name renamed into place, so a retried task replaces its
    own file). Spark moves only the counts: at 10M the candidates are 65M scores in seven
    columns, and converting them to Spark rows and writing them in the JVM took a fifth of
    the stage beside the workers. ``extra``: the learned ranker's sources too."""
    sd, md = str(Path(space_dir).resolve()), str(Path(model_dir).resolve())
    out = str(Path(out_dir).resolve())
    Path(out).mkdir(parents=True, exist_ok=True)
    parts = max(1, 2 * spark.sparkContext.defaultParallelism)

    def task(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from pyspark import TaskContext

        yield _write_part(candidates_partition(frames, space_dir=sd, model_dir=md, recs=recs,
                                               visual=visual, end=end, profile=profile,
                                               extra=extra),
                          Path(out), TaskContext.get().partitionId())

    counts = rows.repartition(parts).mapInPandas(task, "users long, candidates long").toPandas()
    if not any(Path(out).glob("*.parquet")):  # no users: an empty table, still readable
        _write_part(iter([S.CANDIDATES.empty()]), Path(out), -1)
    return int(counts["users"].sum()), int(counts["candidates"].sum())


def _write_part(frames: Iterator[pd.DataFrame], folder: Path, part: int) -> pd.DataFrame:
    """Write ``frames`` (vrec.schemas.CANDIDATES) as ``folder/part-<part>.parquet``,
    atomically, when they hold users (``part`` -1: part 0, even when empty); returns one
    row of counts (users, candidates)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = S.CANDIDATES.arrow()
    tmp = folder / f".part-{part}.{uuid.uuid4().hex[:8]}.tmp"
    users = cands = 0
    with pq.ParquetWriter(tmp, schema) as w:
        for df in frames:
            w.write_table(pa.Table.from_pandas(df, schema=schema, preserve_index=False))
            users += len(df)
            cands += int(sum(len(a) for a in df["items"]))
    if users or part < 0:
        os.replace(tmp, folder / f"part-{max(part, 0):05d}.parquet")
    else:  # a task without users writes nothing
        tmp.unlink()
    return pd.DataFrame({"users": [users], "candidates": [cands]})
