"""build_recs in Spark: the ranker (vrec.core.ranking) over every user's candidates.

Each task memory-maps the run's item space once and ranks batches of the candidates
stage's rows: the blend or the learned ranker, diversity, reserved new-arrival slots,
reasons, trending fill. The tasks read their share of the candidates' Parquet row groups
themselves (pyarrow), as the candidates stage's tasks wrote them: Spark moves only the
lists. At 10M the candidates are 2.7 GB of lists: read by Spark, shuffled and converted
to Arrow for the Python workers, they made the rank phase 24 s longer (135.8 against
111.8 s, benchmarks/README.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from vrec import schemas as S
from vrec.config import RecsSettings
from vrec.core.ranking import rank, to_user_recs
from vrec.core.retrieval import RankInput
from vrec.io import warehouse as W

RECS_SCHEMA = S.USER_RECS.ddl()


def ranking_partition(frames: Iterator[pd.DataFrame], *, space_dir: str, policy: RecsSettings,
                      model_version: str, ranker=None) -> Iterator[pd.DataFrame]:
    """Candidate rows -> user_recs rows (one BLAS thread per task); ``ranker``: a learned
    ranker (vrec.core.ranker.Ranker) to score with (None: the blend)."""
    from threadpoolctl import threadpool_limits

    from vrec.core.itemspace import ItemSpace

    space = ItemSpace.load(space_dir)
    learned = ranker
    with threadpool_limits(1, "blas"):
        for df in frames:
            for s in range(0, len(df), policy.batch_users):
                lists = rank(RankInput.from_frame(df.iloc[s:s + policy.batch_users]), space,
                             policy, learned)
                if len(lists):
                    yield to_user_recs(lists, space, model_version)


def rank_all(spark, candidates_dir: str | Path, *, space_dir: str | Path,
             policy: RecsSettings, model_version: str, ranker=None):
    """user_recs for every row of the candidates stage's output (the folder of its Parquet
    files), as a Spark DataFrame (``ranker``: the learned ranker, or None for the blend).
    Task ``i`` reads share ``i`` of the row groups itself (module doc)."""
    sd = str(Path(space_dir).resolve())
    shares = W.row_group_shares(candidates_dir, 2 * spark.sparkContext.defaultParallelism)
    if not shares:
        return spark.createDataFrame([], RECS_SCHEMA)

    def task(ids: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for part in ids:
            for i in part["id"]:
                yield from ranking_partition(W.read_share(shares[int(i)], policy.batch_users),
                                             space_dir=sd, policy=policy,
                                             model_version=model_version, ranker=ranker)

    return spark.range(0, len(shares), 1, len(shares)).mapInPandas(task, RECS_SCHEMA)


def list_facts(spark, recs, space, profile) -> dict:
    """Numbers about the lists for the stage record, aggregated in Spark: users, rows,
    catalog coverage (distinct recommended items / catalog items), rows per reason, the
    share of lists holding a new arrival, and the cold users (trending lists)."""
    import numpy as np
    from pyspark.sql import functions as F

    from vrec import columns as C

    new_ids = space.item_ids[np.asarray(space.new, dtype=bool)].astype(str).tolist()
    tot = recs.agg(F.countDistinct(C.USER_ID).alias("users"), F.count("*").alias("rows"),
                   F.countDistinct(C.ITEM_ID).alias("items")).first()
    new = spark.createDataFrame([(i,) for i in new_ids], "item_id string")
    with_new = (recs.join(F.broadcast(new), C.ITEM_ID, "left_semi")
                .select(C.USER_ID).distinct().count()) if new_ids else 0
    return {"users": int(tot["users"]), "rows": int(tot["rows"]),
            "coverage": round(tot["items"] / max(1, space.n), 4),
            "reasons": {r["reason"]: int(r["count"])
                        for r in recs.groupBy("reason").count().collect()},
            "lists_with_new_arrival": round(with_new / max(1, tot["users"]), 4),
            "new_arrivals": len(new_ids),
            "cold_users": profile.where(F.col("segment") == "cold").count()}
