"""embed_items in Spark: hash every catalog image, embed those the cache lacks
(``mapInPandas``, model loaded once per worker), apply the quality thresholds, find
near-duplicates (a memo in ``_state/near_duplicates/`` keeps the verdicts, so a night
compares only its new pictures with the rest).

Vectors are cached in ``warehouse/item_embeddings/`` keyed by (model_name, content_hash)
where content_hash is the SHA-256 of the image bytes and model_name is the backbone's
version. A night embeds only hashes the cache lacks; switching backbone embeds everything
under the new key and keeps the old. The cache also holds each image's quality facts, so
undecodable images are not retried and thresholds apply at read time.

**The cache grows per finished task.** Each embedding task (``embed.task_images``
images) writes its rows to the cache as its own file when it finishes, so a stage that is
killed or fails part-way keeps every finished task, and its retry embeds only the rest.
When the run's embedding ends, its task files are merged into one file (a crash in
between leaves duplicate rows, which every read drops).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from vrec import columns as C
from vrec import schemas as S
from vrec.config import EmbedSettings
from vrec.images.embed import (
    NOT_CACHED,
    hash_images,
    make_embed_fn,
    model_version,
    quality_reason,
)
from vrec.images.imagequality import PairMemo, near_duplicate_pairs
from vrec.io import faults
from vrec.progress import watch

CACHE_SCHEMA = S.ITEM_EMBEDDINGS.ddl()


def cache_dir(warehouse: str | Path) -> Path:
    """Folder of the item_embeddings cache."""
    return Path(warehouse) / "item_embeddings"


def read_cache(spark, warehouse: str | Path, version: str):
    """The cached rows of one model version (None when the cache is empty)."""
    from pyspark.sql import functions as F

    folder = cache_dir(warehouse)
    if not any(folder.glob("*.parquet")):
        return None
    # Concurrent runs (a backfill beside the nightly run) may both embed a new image:
    # keep one row per key.
    return (spark.read.schema(CACHE_SCHEMA).parquet(str(folder))
            .where(F.col("model_name") == version).dropDuplicates(["content_hash"]))


def _cache_schema():
    import pyarrow as pa

    return pa.schema([("model_name", pa.string()), ("content_hash", pa.string()),
                      ("dim", pa.int32()), ("embedding", pa.list_(pa.float32())),
                      ("error", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
                      ("pixel_std", pa.float64()), ("phash", pa.int64())])


def _write_atomic(table, folder: Path, name: str) -> None:
    """Write a Parquet file under a hidden temp name, then rename it into place (a reader
    never sees half a file; Spark and the cache reads skip hidden names)."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, folder / name)


def append_to_cache(rows: pd.DataFrame, warehouse: str | Path, ds: str,
                    tag: str | None = None) -> int:
    """Add new cache rows as one Parquet file (``part-<ds>-<tag>-<random>.parquet``),
    written to a temp name then renamed."""
    import pyarrow as pa

    if rows.empty:
        return 0
    schema = _cache_schema()
    table = pa.Table.from_pandas(rows[list(schema.names)], schema=schema, preserve_index=False)
    prefix = f"part-{ds}-{tag}-" if tag else f"part-{ds}-"
    _write_atomic(table, cache_dir(warehouse), f"{prefix}{uuid.uuid4().hex[:12]}.parquet")
    return len(rows)


def merge_task_files(warehouse: str | Path, ds: str, tag: str) -> int:
    """Merge the task files one run wrote (``part-<ds>-<tag>-*``) into one file; returns
    how many were merged. The merged file is in place before the pieces go, so a crash
    in between leaves duplicates (dropped at read), never a loss."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = cache_dir(warehouse)
    pieces = sorted(folder.glob(f"part-{ds}-{tag}-*.parquet"))
    if len(pieces) < 2:
        return len(pieces)
    table = pa.concat_tables([pq.read_table(p, schema=_cache_schema()) for p in pieces])
    _write_atomic(table, folder, f"part-{ds}-{uuid.uuid4().hex[:12]}.parquet")
    for p in pieces:
        p.unlink(missing_ok=True)
    return len(pieces)


def memo_key(version: str, max_distance: int, min_cosine: float) -> str:
    """The near-duplicate memo's name for one model version and pair of thresholds."""
    import hashlib

    return hashlib.sha256(f"{version}|{max_distance}|{min_cosine!r}".encode()).hexdigest()[:16]


def memo_path(warehouse: str | Path, key: str) -> Path:
    """``<warehouse>/_state/near_duplicates/<key>.npz``."""
    return Path(warehouse) / "_state" / "near_duplicates" / f"{key}.npz"


def read_pair_memo(warehouse: str | Path, key: str) -> PairMemo | None:
    """The near-duplicate verdicts a run stored under ``key`` (None when there are none,
    or they cannot be read: a warning says why, and every pair is compared again)."""
    path = memo_path(warehouse, key)
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            memo = PairMemo(z["hashes"], z["a"], z["b"], z["hamming"], z["cosine"])
        n = len(memo.hashes)
        if not (len(memo.a) == len(memo.b) == len(memo.hamming) == len(memo.cosine)) or (
                len(memo.a) and (min(memo.a.min(), memo.b.min()) < 0
                                 or max(memo.a.max(), memo.b.max()) >= n)):
            raise ValueError("its pair columns do not fit its pictures")
        return memo
    except Exception as exc:  # noqa: BLE001 - a bad memo costs time, never a wrong pair
        print(f"[vrec] warning: near-duplicate memo {path} not used ({type(exc).__name__}: "
              f"{exc}); every pair is compared again", flush=True)
        return None


def write_pair_memo(warehouse: str | Path, key: str, memo: PairMemo) -> None:
    """Store ``memo`` under ``key``: a temp file renamed into place (a reader sees the
    old memo or the new one, and any memo is right for the pictures it lists)."""
    path = memo_path(warehouse, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, hashes=memo.hashes, a=memo.a, b=memo.b, hamming=memo.hamming,
                 cosine=memo.cosine)
    os.replace(tmp, path)


def run_embed_items(spark, catalog, *, warehouse: str | Path, image_root: str | Path,
                    embed: EmbedSettings, ds: str, image_roots: list | tuple = (),
                    phase=None) -> dict:
    """Embed the catalog's new images and return the run's item vectors.

    Returns a dict with ``vectors`` (pandas: item_id, content_hash, embedding),
    ``quarantine`` (pandas: key, reason), ``duplicates`` (pandas: item_id,
    duplicate_of, hamming, cosine) and counts ``embedded_new``, ``reused``, ``items`` and
    ``pictures_compared`` (pictures new to the near-duplicate memo, compared with all).
    Inference runs in Spark; the run's vectors are then collected on the driver for the
    quality policy and duplicate search (fine to a few hundred thousand items). Images are
    read only under ``image_root`` and ``image_roots`` (vrec.images.embed.locate_image);
    verdicts in ``NOT_CACHED`` count for this run only. ``phase``: the stage's timer
    (``ctx.phase``) for its parts.
    """
    import contextlib

    from pyspark.sql import functions as F

    phase = phase or (lambda name: contextlib.nullcontext())

    backbone, batch_size, policy = embed.backbone, embed.batch_size, embed
    weights_path = str(embed.weights_path) if embed.weights_path else None
    allow_download, arrow_batch = embed.allow_download, embed.arrow_batch
    version = model_version(backbone, weights_path, allow_download)
    parallelism = max(1, spark.sparkContext.defaultParallelism)
    threads = max(1, (os.cpu_count() or 1) // parallelism)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(arrow_batch))
    items = catalog.select(C.ITEM_ID, C.IMAGE_URI).repartition(parallelism)
    roots = [str(r) for r in image_roots]
    max_bytes, max_pixels = embed.max_image_bytes, embed.max_image_pixels
    with phase("hash images, find new ones"):
        hashed = items.mapInPandas(
            lambda it: hash_images(it, str(image_root), roots, max_bytes),
            "item_id string, path string, content_hash string, error string").localCheckpoint()
        cache = read_cache(spark, warehouse, version)
        wanted = hashed.where(F.col("content_hash").isNotNull()).dropDuplicates(["content_hash"])
        todo = wanted if cache is None else wanted.join(
            cache.select("content_hash"), "content_hash", "left_anti")
        todo_pd = todo.select("content_hash", "path").toPandas()
    n_new = len(todo_pd)
    if n_new:
        print(f"[vrec] {ds} embed_items: embedding {n_new} new images with {version} "
              f"({parallelism} workers x {threads} threads)", flush=True)
        # small tasks (embed.task_images): each finished task is in the cache at once, and
        # an accumulator (it only reports finished tasks) moves the progress line
        n_parts = max(1, min(n_new, max(parallelism, -(-n_new // max(embed.task_images,
                                                                        batch_size)))))
        done = spark.sparkContext.accumulator(0)
        embed_fn = make_embed_fn(backbone, batch_size, threads, weights_path, allow_download,
                                 max_bytes, max_pixels, embed.decode_workers)
        tag, wh = uuid.uuid4().hex[:8], str(warehouse)

        def cached_per_task(frames):
            """Embed one task's images, write its cacheable rows to the cache as one file,
            and pass on only this run's verdicts (NOT_CACHED)."""
            outs = []
            for out in embed_fn(frames):
                done.add(len(out))
                outs.append(out)
            rows = pd.concat(outs, ignore_index=True) if outs else None
            if rows is not None and len(rows):
                passing = rows["error"].isin(NOT_CACHED)
                append_to_cache(rows[~passing], wh, ds, tag)
                faults.point("embed:task_cached")
                if passing.any():
                    yield rows[passing]

        with watch(f"{ds} embed_items: embedded", n_new, lambda: done.value, "images"), \
                phase("embed new images"):
            fresh = (spark.createDataFrame(todo_pd).repartition(n_parts)
                     .mapInPandas(cached_per_task, CACHE_SCHEMA).toPandas())
        merge_task_files(warehouse, ds, tag)
        cache = read_cache(spark, warehouse, version)
        if len(fresh):  # this run's verdict only: tried again next night
            now = spark.createDataFrame(
                [(r.model_name, r.content_hash, None, None, r.error, None, None, None, None)
                 for r in fresh.itertuples()], CACHE_SCHEMA)
            cache = now if cache is None else cache.unionByName(now)
    if cache is None:  # nothing embeddable, ever (e.g. every image missing)
        cache = spark.createDataFrame([], CACHE_SCHEMA)
    with phase("collect vectors"):
        joined = hashed.join(
            cache.select("content_hash", "embedding", F.col("error").alias("embed_error"),
                         "width", "height", "pixel_std", "phash"),
            "content_hash", "left").toPandas()
    reasons = [
        str(e) if isinstance(e, str) else quality_reason(ee, w, h, s, policy)
        for e, ee, w, h, s in zip(joined["error"], joined["embed_error"], joined["width"],
                                  joined["height"], joined["pixel_std"])
    ]
    joined["reason"] = reasons
    ok = joined["reason"].isna() & joined["embedding"].notna()
    vectors = joined.loc[ok, [C.ITEM_ID, "content_hash", "embedding"]].reset_index(drop=True)
    bad = joined.loc[~ok, [C.ITEM_ID]].rename(columns={C.ITEM_ID: "key"})
    bad["reason"] = joined.loc[~ok, "reason"].fillna(S.reason("images", "not_embedded")).to_numpy()
    kept = joined.loc[ok].sort_values(C.ITEM_ID)
    with phase("near-duplicates"):
        ids = kept[C.ITEM_ID].to_numpy(dtype=object)
        # A perceptual hash alone confuses different products shot the same way (same
        # pose, white background); a pair counts only when the CNN embeddings agree too.
        key = memo_key(version, policy.duplicate_hamming, policy.duplicate_min_cosine)
        i, j, d, cos, memo, compared = near_duplicate_pairs(
            ids, kept["content_hash"].to_numpy(dtype=object),
            kept["phash"].astype("int64").to_numpy(), kept["embedding"].to_numpy(),
            policy.duplicate_hamming, policy.duplicate_min_cosine,
            memo=read_pair_memo(warehouse, key))
        write_pair_memo(warehouse, key, memo)
        known = len(memo.hashes) - compared
        print(f"[vrec] {ds} embed_items: near-duplicates: {len(i):,} pairs; {compared:,} of "
              f"{len(memo.hashes):,} pictures compared with the rest"
              + (f", the verdicts among the other {known:,} from the memo" if known else
                 " (none in the memo)"), flush=True)
    dups = pd.DataFrame({C.ITEM_ID: ids[i], "duplicate_of": ids[j], "hamming": d,
                         "cosine": cos}, columns=S.IMAGE_DUPLICATES.names()).astype(
        {C.ITEM_ID: "string", "duplicate_of": "string", "hamming": "int64", "cosine": "float64"})
    dup_q = pd.DataFrame({"key": dups[C.ITEM_ID].astype(str),
                          "reason": S.reason("images", "near_duplicate_image")})
    quarantine = pd.concat([d for d in (bad, dup_q.drop_duplicates("key")) if len(d)],
                           ignore_index=True) if len(bad) or len(dup_q) else bad
    return {"vectors": vectors, "quarantine": quarantine,
            "duplicates": dups, "embedded_new": n_new,
            "reused": int(joined["content_hash"].dropna().nunique()) - n_new,
            "pictures_compared": compared, "model_version": version,
            "items": len(joined)}
