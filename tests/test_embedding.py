"""Backbones, preprocessing, image quality and similarity search (tiny images)."""

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from vrec import columns as C
from vrec.config import EmbedSettings
from vrec.core.similar import faiss_topk, recall_at_k
from vrec.core.topk import topk_blocked
from vrec.images.backbones import BackboneWeightsError, load_backbone
from vrec.images.embed import embed_paths, quality_reason
from vrec.images.imagequality import (
    ImageError,
    near_duplicate_pairs,
    phash64,
    prepare,
    to_rgb,
)
from vrec.spark.embed import run_embed_items

CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _photo(seed=0, size=(80, 60)) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.zeros((size[1], size[0], 3), np.uint8)
    base[:, : size[0] // 2] = (200, 30, 30)
    base[:, size[0] // 2:] = (20, 40, 220)
    noise = rng.integers(0, 25, base.shape, dtype=np.uint8)
    return Image.fromarray(base + noise)


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


# ---------------------------------------------------------------- decoding to RGB

def test_exif_orientation_is_applied():
    img = _photo()  # 80 wide, 60 high; left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    rgb = to_rgb(Image.open(io.BytesIO(_bytes(img, "JPEG", exif=exif.tobytes()))))
    assert rgb.size == (60, 80)
    top = np.asarray(rgb)[:20].reshape(-1, 3).mean(0)
    assert top[0] > 150 and top[2] < 100  # the red half is now on top


@pytest.mark.parametrize("mode", ["CMYK", "P", "L", "LA", "RGBA", "I;16"])
def test_every_mode_becomes_rgb(mode):
    src = _photo()
    if mode == "LA":
        img = src.convert("L").convert("LA")
    elif mode == "I;16":
        img = Image.fromarray(np.asarray(src.convert("L")).astype(np.uint16) * 257)
    else:
        img = src.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "TIFF" if mode == "I;16" else "PNG"
    out = prepare(_bytes(img, fmt), crop_size=32, resize_size=36)
    assert out.array.shape == (32, 32, 3) and out.array.dtype == np.uint8


def test_transparent_areas_become_white_not_black():
    img = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    img.paste((255, 0, 0, 255), (0, 0, 20, 40))
    arr = np.asarray(to_rgb(Image.open(io.BytesIO(_bytes(img, "PNG")))))
    assert tuple(arr[20, 30]) == (255, 255, 255) and tuple(arr[20, 5]) == (255, 0, 0)


# ---------------------------------------------------------------- bad images

@pytest.mark.parametrize("data", [b"not an image at all", b""])
def test_not_an_image_is_undecodable(data):
    with pytest.raises(ImageError) as e:
        prepare(data)
    assert e.value.reason == "undecodable_image"


def test_truncated_jpeg_is_undecodable():
    data = _bytes(_photo(size=(300, 300)), "JPEG", quality=95)
    with pytest.raises(ImageError) as e:
        prepare(data[: len(data) // 2])
    assert e.value.reason == "undecodable_image"


def test_quality_policy_reasons(tmp_path):
    paths = {}
    for name, img in {"ok": _photo(), "tiny": Image.new("RGB", (1, 1), (10, 20, 30)),
                      "blank": Image.new("RGB", (64, 64), (128, 128, 128)),
                      "cmyk": _photo(3).convert("CMYK")}.items():
        paths[name] = tmp_path / f"{name}.jpg"
        img.save(paths[name], format="JPEG")
    (tmp_path / "trunc.jpg").write_bytes(paths["ok"].read_bytes()[:200])
    paths["trunc"] = tmp_path / "trunc.jpg"
    paths["missing"] = tmp_path / "missing.jpg"
    bb = load_backbone("efficientnet_lite0", device="cpu")
    res = embed_paths([str(p) for p in paths.values()], bb, batch_size=2)
    got = {name: quality_reason(r.error, r.width, r.height, r.pixel_std, EmbedSettings())
           for name, r in zip(paths, res.itertuples())}
    assert got == {"ok": None, "tiny": "too_small", "blank": "near_blank", "cmyk": None,
                   "trunc": "undecodable_image", "missing": "missing_image_file"}
    assert res["embedding"].iloc[0].shape == (bb.dim,)


def test_decoder_threads_give_the_same_rows_in_the_same_order(tmp_path):
    """embed_paths with a pool of decoders: each path keeps its own vector, error and
    facts (a pool that reordered or dropped results would swap rows)."""
    import threading

    paths = []
    for k in range(11):
        p = tmp_path / f"{k}.jpg"
        _photo(k, size=(60 + 7 * k, 50)).save(p, format="JPEG")
        paths.append(str(p))
    paths[4] = str(tmp_path / "missing.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    paths[7] = str(tmp_path / "bad.jpg")
    bb = load_backbone("efficientnet_lite0", device="cpu")
    one = embed_paths(paths, bb, batch_size=3, decode_workers=1)
    seen = set()
    real_prepare = __import__("vrec.images.embed", fromlist=["prepare"]).prepare

    def spy(*a, **kw):
        seen.add(threading.current_thread().name)
        return real_prepare(*a, **kw)

    import vrec.images.embed as E

    E.prepare = spy
    try:
        many = embed_paths(paths, bb, batch_size=3, decode_workers=4)
    finally:
        E.prepare = real_prepare
    assert any(n.startswith("vrec-decode") for n in seen)  # the pool did the decoding
    assert one["error"].tolist() == many["error"].tolist()
    assert one["error"].iloc[4] == "missing_image_file" and one["error"].iloc[7] == "undecodable_image"
    assert one["width"].equals(many["width"]) and one["phash"].equals(many["phash"])
    for a, b in zip(one["embedding"], many["embedding"]):
        assert (a is None and b is None) or np.allclose(a, b, atol=1e-5)


def _pairs_by_brute_force(keys, hashes, phash, emb, max_distance, min_cosine):
    """Every pair of positions i < j with different keys, compared one by one."""
    u = np.asarray(phash, np.int64).view(np.uint64)
    out = []
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            d = bin(int(u[i] ^ u[j])).count("1")
            if keys[i] != keys[j] and d <= max_distance:
                c = float(np.dot(emb[i], emb[j]))
                if c >= min_cosine:
                    out.append((i, j, d, c))
    return out


def _as_rows(i, j, d, c):
    return list(zip(i.tolist(), j.tolist(), d.tolist(), c.tolist()))


def test_phash_finds_reencoded_copies_not_other_images():
    """Real photos (skimage): a resized, recompressed, brightened copy is a near-duplicate;
    other photos are far away."""
    from skimage import data

    cat = Image.fromarray(data.chelsea())
    copy = Image.open(io.BytesIO(_bytes(cat.resize((150, 114)), "JPEG", quality=50)))
    copy = copy.point(lambda v: min(255, v + 20))
    others = [Image.fromarray(data.coffee()), Image.fromarray(data.astronaut()),
              Image.fromarray(data.rocket())]
    hashes = np.array([phash64(im) for im in [cat, copy, *others]])
    emb = np.empty(5, dtype=object)
    emb[:] = [np.ones(4, np.float32) / 2] * 5  # the embeddings agree: the hash decides
    i, j, _, _, _, _ = near_duplicate_pairs(["cat", "copy", "coffee", "astronaut", "rocket"],
                                            list("abcde"), hashes, emb, 4, 0.95)
    assert list(zip(i.tolist(), j.tolist())) == [(0, 1)]


def _lookalikes(rng, n_pictures, copies, dim=8):
    """Groups of look-alike pictures: hashes a few bits apart, embeddings near each
    other (float32 unit vectors) or, for a third of each group, pointing elsewhere."""
    base = rng.integers(-(2**63), 2**63 - 1, size=n_pictures // copies, dtype=np.int64)
    phash = np.repeat(base, copies) ^ rng.integers(0, 8, size=n_pictures)
    centre = np.repeat(rng.normal(size=(n_pictures // copies, dim)), copies, axis=0)
    vec = centre + rng.normal(scale=0.1, size=centre.shape)
    vec[::3] = rng.normal(size=vec[::3].shape)
    vec = (vec / np.linalg.norm(vec, axis=1, keepdims=True)).astype(np.float32)
    emb = np.empty(n_pictures, dtype=object)
    emb[:] = list(vec)
    return phash, emb


def test_near_duplicate_pairs_equal_the_pairs_compared_one_by_one():
    """The pair search gives, in (i, j) order, exactly the pairs a one-by-one comparison
    gives, with the same distances and the same cosines to the bit: an item listed twice is
    never its own duplicate, two items showing one picture are a pair at distance 0."""
    rng = np.random.default_rng(1)
    phash, emb = _lookalikes(rng, 240, 8)
    keys = [f"k{i:03d}" for i in range(240)]
    pics = [f"p{i:03d}" for i in range(240)]
    keys[5] = keys[4]
    pics[7], phash[7], emb[7] = pics[6], phash[6], emb[6]  # one picture, two items
    want = _pairs_by_brute_force(keys, pics, phash, emb, 2, 0.95)
    i, j, d, c, memo, compared = near_duplicate_pairs(keys, pics, phash, emb, 2, 0.95, block=50)
    assert _as_rows(i, j, d, c) == want
    assert len(want) > 100 and (6, 7, 0, float(np.dot(emb[6], emb[6]))) in want
    assert not ((i == 4) & (j == 5)).any() and compared == 239 == len(memo.hashes)


def test_a_warm_night_compares_only_its_new_pictures_and_finds_the_same_pairs():
    """With the memo of the night before, only the pictures new to it are compared, and
    the pairs are those of a full search: items gone, items whose picture changed, new
    items, and the ids in another order (so positions move) all give the same result."""
    rng = np.random.default_rng(2)
    phash, emb = _lookalikes(rng, 400, 8)
    keys = np.array([f"k{i:03d}" for i in range(400)], dtype=object)
    pics = np.array([f"p{i:03d}" for i in range(400)], dtype=object)
    first = np.arange(0, 360)
    *_, memo, _ = near_duplicate_pairs(keys[first], pics[first], phash[first], emb[first],
                                       3, 0.9)
    # tonight: 20 items gone, 40 new, 10 with a new picture, keys renamed so order changes
    now = np.concatenate([np.arange(20, 360), np.arange(360, 400)])
    k2, p2, h2, e2 = keys[now].copy(), pics[now].copy(), phash[now].copy(), emb[now].copy()
    changed = rng.choice(len(now) - 40, 10, replace=False)
    p2[changed] = [f"new{x}" for x in range(10)]
    h2[changed] = phash[rng.choice(400, 10)]
    k2 = np.array([f"z{(7 * x) % 997:04d}" for x in range(len(now))], dtype=object)
    order = np.argsort(k2.astype(str), kind="stable")
    k2, p2, h2, e2 = k2[order], p2[order], h2[order], e2[order]
    want = _pairs_by_brute_force(list(k2), p2, h2, e2, 3, 0.9)
    i, j, d, c, memo2, compared = near_duplicate_pairs(k2, p2, h2, e2, 3, 0.9, memo=memo)
    assert _as_rows(i, j, d, c) == want and len(want) > 150
    assert compared == 50  # the 40 new items and the 10 changed pictures
    full = near_duplicate_pairs(k2, p2, h2, e2, 3, 0.9)
    assert all(np.array_equal(x, y) for x, y in zip((memo2.hashes, memo2.a, memo2.b,
                                                      memo2.hamming, memo2.cosine),
                                                     (full[4].hashes, full[4].a, full[4].b,
                                                      full[4].hamming, full[4].cosine)))


def test_the_near_duplicate_memo_is_kept_per_model_and_thresholds(tmp_path, capsys):
    """The memo is read back as written, under its model and thresholds only; an
    unreadable one is refused with a warning (every pair is compared again)."""
    from vrec.spark.embed import memo_key, memo_path, read_pair_memo, write_pair_memo

    rng = np.random.default_rng(3)
    phash, emb = _lookalikes(rng, 80, 8)
    *_, memo, _ = near_duplicate_pairs([f"k{i}" for i in range(80)],
                                       [f"p{i}" for i in range(80)], phash, emb, 3, 0.9)
    key = memo_key("resnet18@x", 3, 0.9)
    write_pair_memo(tmp_path, key, memo)
    back = read_pair_memo(tmp_path, key)
    assert back is not None and np.array_equal(back.hashes, memo.hashes)
    assert np.array_equal(back.cosine, memo.cosine) and len(memo.a) > 10
    assert key not in {memo_key("resnet50@x", 3, 0.9), memo_key("resnet18@x", 4, 0.9),
                       memo_key("resnet18@x", 3, 0.95)}
    assert read_pair_memo(tmp_path, memo_key("resnet18@x", 4, 0.9)) is None
    memo_path(tmp_path, key).write_bytes(b"not a memo")
    assert read_pair_memo(tmp_path, key) is None
    assert "not used" in capsys.readouterr().out


# ---------------------------------------------------------------- backbones

@pytest.mark.parametrize("name, dim", [("resnet18", 512), ("resnet50", 2048),
                                       ("efficientnet_b0", 1280), ("convnext_tiny", 768)])
def test_torchvision_backbones_from_a_local_weights_file(tmp_path, name, dim):
    import torch
    import torchvision.models as tvm

    torch.manual_seed(0)
    path = tmp_path / f"{name}.pth"
    torch.save(getattr(tvm, name)(weights=None).state_dict(), path)
    bb = load_backbone(name, weights_path=path, device="cpu")
    assert bb.dim == dim and bb.version.startswith(f"{name}@file-")
    batch = np.stack([prepare(_bytes(_photo(i), "PNG"), crop_size=bb.crop_size,
                              resize_size=bb.resize_size).array for i in range(2)])
    f = bb.features(batch)
    assert f.shape == (2, dim) and f.dtype == np.float32
    assert np.allclose(np.linalg.norm(f, axis=1), 1, atol=1e-5)


def test_missing_torchvision_weights_error_names_both_remedies(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-cache"))
    with pytest.raises(BackboneWeightsError) as e:
        load_backbone("resnet18", allow_download=False, device="cpu")
    msg = str(e.value)
    assert "weights_path" in msg and "torch cache" in msg and "resnet18" in msg


def test_unknown_backbone_lists_the_choices():
    with pytest.raises(ValueError, match="efficientnet_lite0.*convnext_tiny"):
        load_backbone("vgg99")


def test_pretrained_weights_are_real():
    """The pretrained head names a cat for a real cat photo (skimage's 'chelsea');
    the same network with random weights does not."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet
    from skimage import data

    bb = load_backbone("efficientnet_lite0", device="cpu")
    img = prepare(_bytes(Image.fromarray(data.chelsea()), "PNG"), crop_size=224, resize_size=256)
    x = bb.tensor(img.array[None])
    with torch.inference_mode():
        top5 = set(bb.module.net(x).topk(5).indices[0].tolist())
        torch.manual_seed(0)
        rand = EfficientNet.from_name("efficientnet-lite0").eval()
        rand_top5 = set(rand(x).topk(5).indices[0].tolist())
    assert top5 & CAT_CLASSES
    assert not rand_top5 & CAT_CLASSES


def test_pretrained_features_separate_real_photo_classes_better_than_random():
    """Crops of the cat photo vs crops of the coffee photo: pretrained features keep the
    classes apart far better than random-init ones."""
    import torch
    from efficientnet_lite_pytorch import EfficientNet
    from skimage import data

    bb = load_backbone("efficientnet_lite0", device="cpu")
    crops = []
    for photo in (data.chelsea(), data.coffee()):
        h, w = photo.shape[:2]
        for dy, dx in [(0, 0), (h // 4, w // 4), (0, w // 3), (h // 3, 0)]:
            crop = Image.fromarray(photo[dy: dy + h * 2 // 3, dx: dx + w * 2 // 3])
            crops.append(prepare(_bytes(crop, "PNG")).array)
    batch = np.stack(crops)

    def margin(feats):
        f = feats / np.linalg.norm(feats, axis=1, keepdims=True)
        s = f @ f.T
        within = (s[:4, :4].sum() - 4 + s[4:, 4:].sum() - 4) / 24
        return within - s[:4, 4:].mean()

    torch.manual_seed(0)
    rand = EfficientNet.from_name("efficientnet-lite0").eval()
    with torch.inference_mode():
        fmap = rand.extract_features(bb.tensor(batch))
        rand_feats = torch.nn.functional.adaptive_avg_pool2d(fmap, 1).flatten(1).numpy()
    assert margin(bb.features(batch)) > 3 * margin(rand_feats)


# ---------------------------------------------------------------- similarity search

def test_faiss_recall_against_exact_is_above_the_floor():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(40, 64))
    x = (centers[rng.integers(0, 40, 3000)] + 0.3 * rng.normal(size=(3000, 64))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    approx, _ = faiss_topk(x, 10)
    exact, _ = topk_blocked(x, x, 10, exclude=[np.array([i]) for i in range(len(x))])
    recall = recall_at_k(exact, approx)
    print(f"FAISS HNSW recall@10 vs exact on 3000x64: {recall:.4f}")
    assert recall >= 0.9
    assert recall_at_k(exact, exact) == 1.0


# ---------------------------------------------------------------- Spark stage

def test_switching_backbone_embeds_all_under_new_key_and_keeps_old(spark, tiny_raw, tmp_path):
    import torch
    import torchvision.models as tvm

    wh = tmp_path / "wh"
    cat = pd.read_parquet(tiny_raw / "catalog" / "ds=2026-11-20")
    catalog = spark.createDataFrame(cat[[C.ITEM_ID, C.IMAGE_URI]])
    first = run_embed_items(spark, catalog, warehouse=wh, image_root=tiny_raw,
                            embed=EmbedSettings(batch_size=8), ds="2026-11-20")
    again = run_embed_items(spark, catalog, warehouse=wh, image_root=tiny_raw,
                            embed=EmbedSettings(batch_size=8), ds="2026-11-20")
    assert first["embedded_new"] > 30 and again["embedded_new"] == 0
    torch.manual_seed(0)
    wpath = tmp_path / "r18.pth"
    torch.save(tvm.resnet18(weights=None).state_dict(), wpath)
    other = run_embed_items(spark, catalog, warehouse=wh, image_root=tiny_raw,
                            embed=EmbedSettings(backbone="resnet18", weights_path=wpath,
                                                batch_size=8), ds="2026-11-20")
    assert other["embedded_new"] == first["embedded_new"]
    assert len(other["vectors"]["embedding"].iloc[0]) == 512
    cache = pd.concat(pd.read_parquet(p) for p in (Path(wh) / "item_embeddings").glob("*.parquet"))
    assert cache["model_name"].nunique() == 2
    assert set(cache["model_name"]) == {first["model_version"], other["model_version"]}
    reasons = set(first["quarantine"]["reason"])
    assert {"no_image_uri", "undecodable_image"} <= reasons


def test_item_similar_faiss_engine_matches_exact_on_small_data(spark):
    from vrec.spark.similar import item_similar

    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    vecs = pd.DataFrame({C.ITEM_ID: [f"i{k}" for k in range(200)], "embedding": list(x)})
    exact, none = item_similar(spark, vecs, 5)
    approx, recall = item_similar(spark, vecs, 5, engine="faiss", recall_sample=200)
    assert none is None and recall >= 0.9
    e, a = exact.toPandas(), approx.toPandas()
    assert len(e) == len(a) == 1000
    overlap = len(set(zip(e[C.ITEM_ID], e["similar_item_id"])) &
                  set(zip(a[C.ITEM_ID], a["similar_item_id"]))) / len(e)
    assert overlap >= 0.9
    high, _ = item_similar(spark, vecs, 5, min_similarity=0.5)
    assert (high.toPandas()["similarity"] >= 0.5).all() and high.count() < len(e)


def test_catalog_whose_images_are_all_missing_does_not_crash(spark, tmp_path):
    """Regression: with an empty cache and nothing embeddable the stage crashed (None cache)."""
    catalog = spark.createDataFrame(pd.DataFrame({C.ITEM_ID: ["a", "b", "c"],
                                                  C.IMAGE_URI: ["gone.jpg", None, "x/y.png"]}))
    res = run_embed_items(spark, catalog, warehouse=tmp_path / "wh", image_root=tmp_path,
                          embed=EmbedSettings(batch_size=4), ds="2026-11-20")
    assert res["embedded_new"] == 0 and res["vectors"].empty
    assert sorted(res["quarantine"]["reason"]) == ["missing_image_file", "missing_image_file",
                                                   "no_image_uri"]


def test_torchvision_weights_found_in_the_torch_cache(tmp_path, monkeypatch):
    """A weights file placed in $TORCH_HOME/hub/checkpoints is used without any download."""
    import torch
    import torchvision.models as tvm

    from vrec.images import backbones

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    url = tvm.ResNet18_Weights.DEFAULT.url
    target = tmp_path / "th" / "hub" / "checkpoints" / Path(url).name
    target.parent.mkdir(parents=True)
    torch.save(tvm.resnet18(weights=None).state_dict(), target)
    backbones._CACHE.clear()
    bb = load_backbone("resnet18", allow_download=False, device="cpu")
    assert bb.version == "resnet18@IMAGENET1K_V1/p2" and bb.dim == 512


def test_near_duplicate_images_are_flagged_but_still_embedded(spark, tiny_raw, tmp_path):
    cat = pd.read_parquet(tiny_raw / "catalog" / "ds=2026-11-20")
    good = []
    for u in cat[C.IMAGE_URI].dropna():
        try:
            Image.open(tiny_raw / u).load()
            good.append(u)
        except OSError:
            continue
    src = Image.open(tiny_raw / good[0]).convert("RGB")
    (tmp_path / "copy.jpg").write_bytes((tiny_raw / good[0]).read_bytes())  # same bytes
    src.save(tmp_path / "reencoded.jpg", format="JPEG", quality=70)  # other bytes
    rows = pd.DataFrame({C.ITEM_ID: ["orig", "copy", "reenc", "other"],
                         C.IMAGE_URI: [str(tiny_raw / good[0]), str(tmp_path / "copy.jpg"),
                                       str(tmp_path / "reencoded.jpg"), str(tiny_raw / good[5])]})
    res = run_embed_items(spark, spark.createDataFrame(rows), warehouse=tmp_path / "wh",
                          image_root=tmp_path, image_roots=[tiny_raw],
                          embed=EmbedSettings(batch_size=4), ds="2026-11-20")
    pairs = {tuple(sorted((a, b))) for a, b in zip(res["duplicates"][C.ITEM_ID],
                                                    res["duplicates"]["duplicate_of"])}
    assert pairs == {("copy", "orig"), ("orig", "reenc"), ("copy", "reenc")}
    assert len(res["vectors"]) == 4  # flagged, not dropped
    flagged = set(res["quarantine"].query("reason == 'near_duplicate_image'")["key"])
    assert flagged and flagged <= {"orig", "copy", "reenc"}
    assert res["embedded_new"] == 3  # identical bytes are embedded once
    assert res["pictures_compared"] == 3  # the first night has no memo
    # the next night: one more copy; only its picture is compared, the pairs are the same
    src.save(tmp_path / "reencoded2.jpg", format="JPEG", quality=60)
    more = pd.concat([rows, pd.DataFrame({C.ITEM_ID: ["reenc2"],
                                          C.IMAGE_URI: [str(tmp_path / "reencoded2.jpg")]})])
    res2 = run_embed_items(spark, spark.createDataFrame(more), warehouse=tmp_path / "wh",
                           image_root=tmp_path, image_roots=[tiny_raw],
                           embed=EmbedSettings(batch_size=4), ds="2026-11-21")
    pairs2 = {tuple(sorted((a, b))) for a, b in zip(res2["duplicates"][C.ITEM_ID],
                                                     res2["duplicates"]["duplicate_of"])}
    assert res2["pictures_compared"] == 1 and pairs < pairs2
    assert pairs2 - pairs == {("copy", "reenc2"), ("orig", "reenc2"), ("reenc", "reenc2")}


KILLED_EMBED = """
import sys
import pandas as pd
from vrec.config import EmbedSettings, Settings
from vrec.spark.embed import run_embed_items
from vrec.spark.session import build_session

raw, wh = sys.argv[1], sys.argv[2]
spark = build_session(Settings(spark={"master": "local[2]", "conf": {
    "spark.ui.enabled": "false", "spark.driver.memory": "1g"}}), "vrec-killed-embed")
cat = pd.read_parquet(raw + "/catalog/ds=2026-11-20")[["item_id", "image_uri"]]
run_embed_items(spark, spark.createDataFrame(cat), warehouse=wh, image_root=raw,
                embed=EmbedSettings(batch_size=4, task_images=4), ds="2026-11-20")
"""


def test_a_killed_embedding_keeps_its_finished_tasks_and_the_retry_embeds_only_the_rest(
        spark, tiny_raw, tmp_path):
    """The embedding runs in its own Spark (a process of its own, killed with its JVM and
    workers): each worker stops after writing its first finished task to the cache, and
    the whole process tree is killed (SIGKILL). The retry embeds exactly the images those
    tasks did not, and ends with the same vectors as an uninterrupted run."""
    import signal

    from vrec.spark.embed import cache_dir

    wh, full = tmp_path / "wh", tmp_path / "full"
    cat = pd.read_parquet(tiny_raw / "catalog" / "ds=2026-11-20")
    catalog = spark.createDataFrame(cat[[C.ITEM_ID, C.IMAGE_URI]])
    settings = EmbedSettings(batch_size=4, task_images=4)
    whole = run_embed_items(spark, catalog, warehouse=full, image_root=tiny_raw,
                            embed=settings, ds="2026-11-20")
    proc = subprocess.Popen([sys.executable, "-c", KILLED_EMBED, str(tiny_raw), str(wh)],
                            env={**os.environ, "VREC_FAULT": "embed:task_cached=hang"},
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not list(cache_dir(wh).glob("*.parquet")):
            assert proc.poll() is None, "the embedding ended before a task was cached"
            assert time.monotonic() < deadline, "no task reached the cache in 3 minutes"
            time.sleep(0.2)
        time.sleep(1.0)  # the other worker may finish its task too
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    kept = pd.concat(pd.read_parquet(p) for p in cache_dir(wh).glob("*.parquet"))
    n_kept = kept["content_hash"].nunique()
    assert 0 < n_kept < whole["embedded_new"]
    retry = run_embed_items(spark, catalog, warehouse=wh, image_root=tiny_raw,
                            embed=settings, ds="2026-11-20")
    assert retry["embedded_new"] == whole["embedded_new"] - n_kept
    assert retry["reused"] == whole["reused"] + n_kept
    # the same vectors as the run that was never killed, and one merged file per run
    a = retry["vectors"].set_index(C.ITEM_ID).sort_index()
    b = whole["vectors"].set_index(C.ITEM_ID).sort_index()
    assert list(a.index) == list(b.index)
    assert np.allclose(np.stack(a["embedding"]), np.stack(b["embedding"]), atol=1e-5)
    assert len(list(cache_dir(full).glob("*.parquet"))) == 1
