"""embed_items: item images -> L2-normalised CNN feature vectors, incrementally.

Vectors are cached in ``warehouse/item_embeddings/`` keyed by (model_name, content_hash)
where content_hash is the SHA-256 of the image bytes and model_name is the backbone's
version (backbone, weights id, preprocessing version). A night embeds only hashes the
cache lacks; switching backbone embeds everything under the new key and keeps the old.
The cache also holds each image's quality facts (size, pixel spread, perceptual hash, or
its decode error), so undecodable images are not retried and thresholds apply at read time.
Inference runs in Spark's Python workers via ``mapInPandas``; the model is loaded once
per worker process (module-level cache).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from vrec import columns as C
from vrec.images.backbones import Backbone, load_backbone
from vrec.images.imagequality import ImageError, hamming_pairs, prepare


def resolve_image_path(uri: str | None, image_root: str | Path) -> Path | None:
    """Local path of an image_uri: absolute paths and ``file://`` as is, else under root."""
    if uri is None or (isinstance(uri, float) and np.isnan(uri)) or uri == "":
        return None
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    p = Path(uri)
    return p if p.is_absolute() else Path(image_root) / p


def content_hash(data: bytes) -> str:
    """SHA-256 hex digest of image bytes (the cache key with the model version)."""
    return hashlib.sha256(data).hexdigest()


def hash_images(frames: Iterator[pd.DataFrame], image_root: str) -> Iterator[pd.DataFrame]:
    """mapInPandas: (item_id, image_uri) -> (item_id, path, content_hash, error)."""
    for df in frames:
        paths, hashes, errors = [], [], []
        for uri in df[C.IMAGE_URI]:
            p = resolve_image_path(uri, image_root)
            if p is None:
                paths.append(None), hashes.append(None), errors.append("no_image_uri")
                continue
            try:
                data = p.read_bytes()
            except OSError:
                paths.append(str(p)), hashes.append(None), errors.append("missing_image_file")
                continue
            paths.append(str(p))
            if not data:
                hashes.append(None), errors.append("empty_image_file")
            else:
                hashes.append(content_hash(data)), errors.append(None)
        yield pd.DataFrame({C.ITEM_ID: df[C.ITEM_ID].to_numpy(), "path": paths,
                            "content_hash": hashes, "error": errors})


def embed_paths(paths: list[str], backbone: Backbone, batch_size: int) -> pd.DataFrame:
    """Embed image files in batches; one row per path with the vector (or None), the
    error reason (or None) and the quality facts width, height, pixel_std, phash."""
    n = len(paths)
    out = {"embedding": [None] * n, "error": [None] * n, "width": [None] * n,
           "height": [None] * n, "pixel_std": [None] * n, "phash": [None] * n}
    batch, idx = [], []

    def flush() -> None:
        if batch:
            for j, v in zip(idx, backbone.features(np.stack(batch))):
                out["embedding"][j] = v
            batch.clear(), idx.clear()

    for j, p in enumerate(paths):
        try:
            img = prepare(Path(p).read_bytes(), crop_size=backbone.crop_size,
                          resize_size=backbone.resize_size, interpolation=backbone.interpolation)
        except ImageError as exc:
            out["error"][j] = exc.reason
            continue
        except OSError:
            out["error"][j] = "missing_image_file"
            continue
        out["width"][j], out["height"][j] = img.width, img.height
        out["pixel_std"][j], out["phash"][j] = img.pixel_std, img.phash
        batch.append(img.array)
        idx.append(j)
        if len(batch) >= batch_size:
            flush()
    flush()
    return pd.DataFrame(out)


def make_embed_fn(backbone_name: str, batch_size: int, threads: int,
                  weights_path: str | None = None, allow_download: bool = True):
    """Build the mapInPandas function: (content_hash, path) -> cache rows."""

    def _embed(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import torch

        if not torch.cuda.is_available():
            torch.set_num_threads(max(1, threads))
        bb = load_backbone(backbone_name, weights_path=weights_path,
                           allow_download=allow_download)  # once per worker process
        for df in frames:
            res = embed_paths(df["path"].tolist(), bb, batch_size)
            yield pd.DataFrame({
                "model_name": bb.version,
                "content_hash": df["content_hash"].to_numpy(),
                "dim": [bb.dim if v is not None else None for v in res["embedding"]],
                "embedding": [v.tolist() if v is not None else None for v in res["embedding"]],
                "error": res["error"], "width": res["width"], "height": res["height"],
                "pixel_std": res["pixel_std"], "phash": res["phash"],
            })

    return _embed


CACHE_SCHEMA = ("model_name string, content_hash string, dim int, "
                "embedding array<float>, error string, width int, height int, "
                "pixel_std double, phash long")


def model_version(backbone_name: str, weights_path: str | None = None,
                  allow_download: bool = True) -> str:
    """Version string of a backbone (loads it once on the driver, which also fails fast
    with a clear message when weights are missing)."""
    return load_backbone(backbone_name, weights_path=weights_path,
                         allow_download=allow_download, device="cpu").version


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


def append_to_cache(rows: pd.DataFrame, warehouse: str | Path, ds: str) -> int:
    """Add new cache rows as one Parquet file, written to a temp name then renamed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if rows.empty:
        return 0
    folder = cache_dir(warehouse)
    folder.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("model_name", pa.string()), ("content_hash", pa.string()),
                        ("dim", pa.int32()), ("embedding", pa.list_(pa.float32())),
                        ("error", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
                        ("pixel_std", pa.float64()), ("phash", pa.int64())])
    table = pa.Table.from_pandas(rows[list(schema.names)], schema=schema, preserve_index=False)
    name = f"part-{ds}-{uuid.uuid4().hex[:12]}.parquet"
    tmp = folder / f".{name}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, folder / name)
    return len(rows)


@dataclass(frozen=True)
class QualityPolicy:
    """Thresholds applied at read time to the facts cached with each image."""

    min_side: int = 32
    blank_std: float = 2.0
    duplicate_hamming: int = 4
    duplicate_min_cosine: float = 0.95


def quality_reason(error, width, height, pixel_std, policy: QualityPolicy) -> str | None:
    """The quarantine reason of one cached image under ``policy`` (None = usable)."""
    if isinstance(error, str):
        return error
    if pd.isna(width) or pd.isna(height) or pd.isna(pixel_std):
        return "not_embedded"
    if min(width, height) < policy.min_side:
        return "too_small"
    if pixel_std < policy.blank_std:
        return "near_blank"
    return None


def run_embed_items(spark, catalog, *, warehouse: str | Path, image_root: str | Path,
                    backbone: str, batch_size: int, ds: str,
                    weights_path: str | None = None, allow_download: bool = True,
                    policy: QualityPolicy = QualityPolicy(), arrow_batch: int = 64) -> dict:
    """Embed the catalog's new images and return the run's item vectors.

    Returns a dict with ``vectors`` (pandas: item_id, content_hash, embedding),
    ``quarantine`` (pandas: key, reason), ``duplicates`` (pandas: item_id,
    duplicate_of, hamming, cosine) and counts ``embedded_new``, ``reused``, ``items``.
    Inference runs in Spark; the run's vectors are then collected on the driver for the
    quality policy and duplicate search (fine to a few hundred thousand items).
    """
    from pyspark.sql import functions as F

    version = model_version(backbone, weights_path, allow_download)
    parallelism = max(1, spark.sparkContext.defaultParallelism)
    threads = max(1, (os.cpu_count() or 1) // parallelism)
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(arrow_batch))
    items = catalog.select(C.ITEM_ID, C.IMAGE_URI).repartition(parallelism)
    hashed = items.mapInPandas(
        lambda it: hash_images(it, str(image_root)),
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
        n_parts = max(1, min(parallelism, n_new // max(1, batch_size) or 1))
        fresh = (spark.createDataFrame(todo_pd).repartition(n_parts)
                 .mapInPandas(make_embed_fn(backbone, batch_size, threads, weights_path,
                                            allow_download),
                              CACHE_SCHEMA)
                 .toPandas())
        append_to_cache(fresh, warehouse, ds)
        cache = read_cache(spark, warehouse, version)
    if cache is None:  # nothing embeddable, ever (e.g. every image missing)
        cache = spark.createDataFrame([], CACHE_SCHEMA)
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
    bad["reason"] = joined.loc[~ok, "reason"].fillna("not_embedded").to_numpy()
    kept = joined.loc[ok].sort_values(C.ITEM_ID)
    pairs = hamming_pairs(kept[C.ITEM_ID].tolist(), kept["phash"].astype("int64").to_numpy(),
                          policy.duplicate_hamming)
    # A perceptual hash alone confuses different products shot the same way (same pose,
    # white background); a pair counts only when the CNN embeddings agree as well.
    vec_of = dict(zip(vectors[C.ITEM_ID], vectors["embedding"]))
    rows = [(a, b, d, float(np.dot(vec_of[a], vec_of[b]))) for a, b, d in pairs]
    dups = pd.DataFrame([r for r in rows if r[3] >= policy.duplicate_min_cosine],
                        columns=[C.ITEM_ID, "duplicate_of", "hamming", "cosine"]).astype(
        {C.ITEM_ID: "string", "duplicate_of": "string", "hamming": "int64", "cosine": "float64"})
    dup_q = pd.DataFrame({"key": dups[C.ITEM_ID].astype(str), "reason": "near_duplicate_image"})
    quarantine = pd.concat([d for d in (bad, dup_q.drop_duplicates("key")) if len(d)],
                           ignore_index=True) if len(bad) or len(dup_q) else bad
    return {"vectors": vectors, "quarantine": quarantine,
            "duplicates": dups, "embedded_new": n_new,
            "reused": int(joined["content_hash"].dropna().nunique()) - n_new,
            "model_version": version,
            "items": len(joined)}
