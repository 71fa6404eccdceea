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

import functools
import hashlib
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from vrec import columns as C
from vrec import schemas as S
from vrec.config import EmbedSettings
from vrec.images.backbones import Backbone, backbone_version, load_backbone
from vrec.images.imagequality import MAX_PIXELS, ImageError, prepare

MAX_BYTES = 50_000_000  # the default read cap (EmbedSettings.max_image_bytes)
NOT_CACHED = frozenset({"image_read_error", "image_changed", "image_too_large"})
"""Verdicts that depend on the moment or on a setting, not on the bytes alone: they are
not written to the cache, so the image is tried again next night."""


def resolve_image_path(uri: str | None, image_root: str | Path) -> Path | None:
    """Local path of an image_uri: absolute paths and ``file://`` as is, else under root."""
    if uri is None or (isinstance(uri, float) and np.isnan(uri)) or uri == "":
        return None
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    p = Path(uri)
    return p if p.is_absolute() else Path(image_root) / p


def _inside(path: str, roots: Sequence[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


@functools.lru_cache(maxsize=64)
def _root_forms(image_root: str, roots: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """The allowed roots written out (``..`` folded) and resolved, once per root set."""
    allowed = [image_root, *roots]
    return ([os.path.normpath(os.path.abspath(r)) for r in allowed],
            [os.path.realpath(r) for r in allowed])


def locate_image(uri: str | None, image_root: str | Path,
                 roots: Sequence[str | Path] = ()) -> Path | None:
    """The path an image_uri names (None without one), if it lies under ``image_root`` or
    one of ``roots``: by its written form with ``..`` folded (links that an operator put
    inside a root are trusted), or by its real path. Otherwise ImageError
    ``image_outside_root``: catalog data cannot make vrec read any file on the host."""
    p = resolve_image_path(uri, image_root)
    if p is None:
        return None
    lexical, real = _root_forms(str(image_root), tuple(map(str, roots)))
    if _inside(os.path.normpath(os.path.abspath(p)), lexical) or \
            _inside(os.path.realpath(p), real):
        return p
    raise ImageError("image_outside_root", f"{p} is not under paths.image_root, raw_root or "
                     "paths.image_roots")


def read_image(path: str | Path, max_bytes: int = MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most ``max_bytes``. ImageError reasons:
    ``missing_image_file``, ``not_a_regular_file`` (a folder, device, FIFO or socket:
    opened without blocking and refused before any read), ``image_too_large``,
    ``empty_image_file``, ``image_read_error`` (any other OS error: retried next night)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ImageError("missing_image_file") from None
    except OSError as exc:
        raise ImageError("image_read_error", str(exc)[:120]) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageError("not_a_regular_file", str(path))
        if st.st_size > max_bytes:
            raise ImageError("image_too_large", f"{st.st_size} bytes > {max_bytes}")
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > max_bytes:
            raise ImageError("image_too_large", f"more than {max_bytes} bytes")
        if size == 0:
            raise ImageError("empty_image_file")
        return b"".join(chunks)
    except OSError as exc:
        raise ImageError("image_read_error", str(exc)[:120]) from None
    finally:
        os.close(fd)


def content_hash(data: bytes) -> str:
    """SHA-256 hex digest of image bytes (the cache key with the model version)."""
    return hashlib.sha256(data).hexdigest()


def hash_images(frames: Iterator[pd.DataFrame], image_root: str, roots: Sequence[str] = (),
                max_bytes: int = MAX_BYTES) -> Iterator[pd.DataFrame]:
    """mapInPandas: (item_id, image_uri) -> (item_id, path, content_hash, error); only
    regular files under the allowed roots and within ``max_bytes`` are read."""
    for df in frames:
        paths, hashes, errors = [], [], []
        for uri in df[C.IMAGE_URI]:
            p, h, err = None, None, None
            try:
                p = locate_image(uri, image_root, roots)
                if p is None:
                    err = S.reason("images", "no_image_uri")
                else:
                    h = content_hash(read_image(p, max_bytes))
            except ImageError as exc:
                err = exc.reason
            paths.append(None if p is None else str(p)), hashes.append(h), errors.append(err)
        yield pd.DataFrame({C.ITEM_ID: df[C.ITEM_ID].to_numpy(), "path": paths,
                            "content_hash": hashes, "error": errors})


def decode_workers_for(setting: int, threads: int) -> int:
    """Decoder threads per embedding process: ``setting`` when set (>0); else, on CUDA,
    every core (the GPU waits on JPEG decoding otherwise), on CPU the process's share."""
    if setting > 0:
        return setting
    import torch

    return min(16, os.cpu_count() or 1) if torch.cuda.is_available() else max(1, threads)


def _ordered(fn, n: int, workers: int, ahead: int) -> Iterator:
    """``fn(0), fn(1), ...`` in order, computed by ``workers`` threads at most ``ahead``
    items in advance (bounded memory; Pillow releases the GIL while it decodes)."""
    if workers <= 1:
        yield from (fn(j) for j in range(n))
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers, thread_name_prefix="vrec-decode") as pool:
        pending = deque(pool.submit(fn, j) for j in range(min(n, ahead)))
        nxt = len(pending)
        while pending:
            yield pending.popleft().result()
            if nxt < n:
                pending.append(pool.submit(fn, nxt))
                nxt += 1


def embed_paths(paths: list[str], backbone: Backbone, batch_size: int,
                hashes: list[str] | None = None, max_bytes: int = MAX_BYTES,
                max_pixels: int = MAX_PIXELS, decode_workers: int = 1) -> pd.DataFrame:
    """Embed image files in batches; one row per path with the vector (or None), the
    error reason (or None) and the quality facts width, height, pixel_std, phash. With
    ``hashes``, a file whose bytes no longer hash to its key is ``image_changed`` (the
    vector always belongs to the bytes of the key). ``decode_workers`` threads read and
    decode the next images while the network runs on the current batch."""
    n = len(paths)
    out = {"embedding": [None] * n, "error": [None] * n, "width": [None] * n,
           "height": [None] * n, "pixel_std": [None] * n, "phash": [None] * n}
    batch, idx = [], []

    def flush() -> None:
        if batch:
            for j, v in zip(idx, backbone.features(np.stack(batch))):
                out["embedding"][j] = v
            batch.clear(), idx.clear()

    def decode(j: int):
        try:
            data = read_image(paths[j], max_bytes)
            if hashes is not None and content_hash(data) != hashes[j]:
                raise ImageError("image_changed", "the file changed after it was hashed")
            return prepare(data, crop_size=backbone.crop_size, resize_size=backbone.resize_size,
                           interpolation=backbone.interpolation, max_pixels=max_pixels)
        except ImageError as exc:
            return exc

    for j, img in enumerate(_ordered(decode, n, decode_workers, ahead=2 * batch_size)):
        if isinstance(img, ImageError):
            # a file that was there when hashed and is gone now: a moment's problem
            gone = hashes is not None and img.reason == "missing_image_file"
            out["error"][j] = S.reason("images", "image_read_error") if gone else img.reason
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
                  weights_path: str | None = None, allow_download: bool = True,
                  max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS,
                  decode_workers: int = 0):
    """Build the mapInPandas function: (content_hash, path) -> cache rows
    (``decode_workers``: see :func:`decode_workers_for`)."""

    def _embed(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import torch

        if not torch.cuda.is_available():
            torch.set_num_threads(max(1, threads))
        bb = load_backbone(backbone_name, weights_path=weights_path,
                           allow_download=allow_download)  # once per worker process
        decoders = decode_workers_for(decode_workers, threads)
        for df in frames:
            res = embed_paths(df["path"].tolist(), bb, batch_size,
                              hashes=df["content_hash"].tolist(), max_bytes=max_bytes,
                              max_pixels=max_pixels, decode_workers=decoders)
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
    """Version string of a backbone, found without loading the network on the driver
    (vrec.images.backbones.backbone_version; fails fast with a clear message when the
    weights are missing)."""
    return backbone_version(backbone_name, weights_path, allow_download)


def quality_reason(error, width, height, pixel_std, policy: EmbedSettings) -> str | None:
    """The quarantine reason of one cached image under the ``embed`` thresholds
    (``min_side``, ``blank_std``; None = usable)."""
    if isinstance(error, str):
        return error
    if pd.isna(width) or pd.isna(height) or pd.isna(pixel_std):
        return S.reason("images", "not_embedded")
    if min(width, height) < policy.min_side:
        return S.reason("images", "too_small")
    if pixel_std < policy.blank_std:
        return S.reason("images", "near_blank")
    return None


