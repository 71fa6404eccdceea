"""Hostile and broken images: decompression bombs, paths outside the image roots, device
files and FIFOs, files larger than the cap, bytes that change between hashing and
embedding, transient read errors. Each is a quarantine reason for the run; none fails
the stage, hangs, or poisons the cache."""

from __future__ import annotations

import io
import os
import struct
import zlib

import pandas as pd
import pytest
from PIL import Image

from vrec import columns as C
from vrec.config import EmbedSettings
from vrec.images.embed import NOT_CACHED, hash_images, read_image
from vrec.images.imagequality import ImageError, prepare


def _png_bomb(side: int = 20000) -> bytes:
    """A tiny PNG whose header declares side x side pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def _jpeg(colour=(200, 30, 30), size=64) -> bytes:
    """A real photo-like JPEG: a colour with noise (not near-blank)."""
    import numpy as np

    rng = np.random.default_rng(sum(colour))
    px = np.clip(np.array(colour) + rng.normal(0, 40, (size, size, 3)), 0, 255).astype("uint8")
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, "JPEG")
    return buf.getvalue()


def test_a_decompression_bomb_is_image_too_large_not_a_crash():
    bomb = _png_bomb()
    assert len(bomb) < 100
    with pytest.raises(ImageError) as err:  # beyond PIL's own limit: its error, mapped
        prepare(bomb, max_pixels=50_000_000)
    assert err.value.reason == "image_too_large"
    with pytest.raises(ImageError) as err:  # below PIL's limit, above the configured cap
        prepare(_png_bomb(10000), max_pixels=50_000_000)
    assert err.value.reason == "image_too_large" and "10000x10000 pixels" in str(err.value)
    assert prepare(_jpeg(), max_pixels=50_000_000).width == 64


@pytest.fixture()
def roots(tmp_path):
    root = tmp_path / "raw"
    (root / "images").mkdir(parents=True)
    (root / "images" / "ok.jpg").write_bytes(_jpeg())
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(_jpeg((0, 0, 255)))
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "x.jpg").write_bytes(_jpeg((0, 255, 0)))
    os.mkfifo(root / "images" / "fifo.jpg")
    (root / "images" / "big.jpg").write_bytes(b"\xff" * 5000)
    return {"root": root, "outside": outside, "extra": extra}


CASES = {  # image_uri (relative to the case's folders) -> reason
    "images/ok.jpg": None,
    "{extra}/x.jpg": None,
    "{outside}/secret.jpg": "image_outside_root",
    "images/../../elsewhere/secret.jpg": "image_outside_root",
    "/dev/zero": "image_outside_root",
    "images/fifo.jpg": "not_a_regular_file",
    "images/big.jpg": "image_too_large",
    "images/none.jpg": "missing_image_file",
    "images": "not_a_regular_file",
}


def test_every_path_case_gets_its_reason_without_reading_what_it_must_not(roots):
    uris = [u.format(**{k: str(v) for k, v in roots.items()}) for u in CASES]
    frame = pd.DataFrame({C.ITEM_ID: [f"i{k}" for k in range(len(uris))], C.IMAGE_URI: uris})
    out = next(hash_images(iter([frame]), str(roots["root"]), [str(roots["extra"])],
                           max_bytes=4096))
    assert dict(zip(CASES, out["error"].where(out["error"].notna(), None))) == CASES
    assert out["content_hash"].notna().tolist() == [r is None for r in CASES.values()]


def test_device_files_are_refused_even_inside_a_root(tmp_path):
    root = tmp_path / "raw"
    root.mkdir()
    os.symlink("/dev/zero", root / "zero.jpg")  # an operator's link into a device
    with pytest.raises(ImageError) as err:
        read_image(root / "zero.jpg", max_bytes=1024)
    assert err.value.reason == "not_a_regular_file"


def test_read_errors_and_changed_bytes_are_not_cached():
    assert {"image_read_error", "image_changed", "image_too_large"} <= NOT_CACHED
    assert "undecodable_image" not in NOT_CACHED  # the bytes are the key: that stays true


def test_embedding_uses_the_bytes_that_were_hashed(tmp_path):
    """A file rewritten between hashing and embedding is not embedded under the old key."""
    from vrec.images.backbones import load_backbone
    from vrec.images.embed import content_hash, embed_paths

    p = tmp_path / "a.jpg"
    p.write_bytes(_jpeg())
    key = content_hash(p.read_bytes())
    p.write_bytes(_jpeg((0, 0, 255)))
    gone = tmp_path / "gone.jpg"  # hashed, then deleted: a read error, not "missing" forever
    bb = load_backbone(EmbedSettings().backbone, allow_download=False)
    res = embed_paths([str(p), str(p), str(gone)], bb, batch_size=2,
                      hashes=[key, content_hash(p.read_bytes()), "0" * 64])
    assert res["error"].tolist() == ["image_changed", None, "image_read_error"]
    assert res["embedding"].iloc[0] is None and res["embedding"].iloc[1] is not None
    assert set(res["error"].dropna()) <= NOT_CACHED


def test_a_run_over_hostile_images_quarantines_them_and_keeps_no_verdict_a_cap_made(
        spark, roots, tmp_path):
    from vrec.images.embed import model_version
    from vrec.spark.embed import read_cache, run_embed_items

    root = roots["root"]
    (root / "images" / "bomb.png").write_bytes(_png_bomb())
    catalog = spark.createDataFrame(pd.DataFrame({
        C.ITEM_ID: ["ok", "bomb", "out", "dev", "fifo"],
        C.IMAGE_URI: ["images/ok.jpg", "images/bomb.png", str(roots["outside"] / "secret.jpg"),
                      "/dev/zero", "images/fifo.jpg"]}))
    kw = dict(warehouse=tmp_path / "wh", image_root=root, ds="2026-11-20")
    version = model_version(EmbedSettings().backbone)
    # night 1: a cap so small that even the good 64 x 64 image is refused
    res = run_embed_items(spark, catalog, embed=EmbedSettings(batch_size=2, max_image_pixels=1000),
                          **kw)
    reasons = dict(zip(res["quarantine"]["key"], res["quarantine"]["reason"]))
    assert reasons == {"ok": "image_too_large", "bomb": "image_too_large",
                       "out": "image_outside_root", "dev": "image_outside_root",
                       "fifo": "not_a_regular_file"}
    cache = read_cache(spark, tmp_path / "wh", version)
    assert cache is None or cache.count() == 0  # verdicts of a cap are not cached
    # night 2: the default cap embeds the good image; the bomb is still refused
    res = run_embed_items(spark, catalog, embed=EmbedSettings(batch_size=2), **kw)
    assert res["vectors"][C.ITEM_ID].tolist() == ["ok"]
    assert dict(zip(res["quarantine"]["key"], res["quarantine"]["reason"]))["bomb"] == \
        "image_too_large"
    cache = read_cache(spark, tmp_path / "wh", version).toPandas()
    assert len(cache) == 1 and cache["error"].isna().all()
