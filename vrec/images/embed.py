"""Item images -> L2-normalised CNN feature vectors: the batch loop and its helpers.

Vectors are cached in ``warehouse/item_embeddings/`` keyed by (model_name, content_hash)
where content_hash is the SHA-256 of the image bytes and model_name is the backbone's
version (backbone, weights id, preprocessing version). A night embeds only hashes the
cache lacks; switching backbone embeds everything under the new key and keeps the old.
The cache also holds each image's quality facts (size, pixel spread, perceptual hash, or
its decode error), so undecodable images are not retried and thresholds apply at read time.
Inference runs in Spark's Python workers via ``mapInPandas`` (vrec.spark.embed); the
model is loaded once per worker process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from vrec import columns as C
from vrec.config import EmbedSettings
from vrec.images.backbones import Backbone, load_backbone
from vrec.images.imagequality import ImageError, prepare


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


def model_version(backbone_name: str, weights_path: str | None = None,
                  allow_download: bool = True) -> str:
    """Version string of a backbone (loads it once on the driver, which also fails fast
    with a clear message when weights are missing)."""
    return load_backbone(backbone_name, weights_path=weights_path,
                         allow_download=allow_download, device="cpu").version


def quality_reason(error, width, height, pixel_std, policy: EmbedSettings) -> str | None:
    """The quarantine reason of one cached image under the ``embed`` thresholds
    (``min_side``, ``blank_std``; None = usable)."""
    if isinstance(error, str):
        return error
    if pd.isna(width) or pd.isna(height) or pd.isna(pixel_std):
        return "not_embedded"
    if min(width, height) < policy.min_side:
        return "too_small"
    if pixel_std < policy.blank_std:
        return "near_blank"
    return None


