"""Decoding images to RGB the same way everywhere, and the facts used to judge them:
size, pixel spread (near-blank) and a 64-bit perceptual hash (near-duplicates)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from vrec import schemas as S


class ImageError(ValueError):
    """An image that cannot be used; ``reason`` is a short quarantine reason."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = S.reason("images", reason)


@dataclass
class PreparedImage:
    """A model-ready crop plus the facts the quality policy needs."""

    array: np.ndarray  # (crop, crop, 3) uint8
    width: int
    height: int
    pixel_std: float
    phash: int  # signed 64-bit


def to_rgb(img):
    """Apply EXIF orientation and turn palette, CMYK, grayscale and alpha images into RGB
    (transparent areas composited over white)."""
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(img)
    if img.mode == "P" or img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    return img.convert("RGB")


def phash64(img) -> int:
    """64-bit DCT perceptual hash (32x32 grayscale, 8x8 lowest frequencies vs median)."""
    from PIL import Image
    from scipy.fft import dctn

    g = np.asarray(img.convert("L").resize((32, 32), Image.LANCZOS), dtype=np.float64)
    low = dctn(g, norm="ortho")[:8, :8].ravel()
    bits = low > np.median(low[1:])
    value = 0
    for b in bits:
        value = (value << 1) | int(b)
    return int(np.uint64(value).view(np.int64))


MAX_PIXELS = 50_000_000  # the default decode cap (EmbedSettings.max_image_pixels)


def prepare(data: bytes, *, crop_size: int = 224, resize_size: int = 256,
            interpolation: str = "bilinear", max_pixels: int = MAX_PIXELS) -> PreparedImage:
    """Decode bytes, resize the short side to ``resize_size``, centre-crop ``crop_size``.

    Raises ImageError("image_too_large") when the header declares more than
    ``max_pixels`` pixels (checked before anything is decoded: a decompression bomb) and
    ImageError("undecodable_image") for anything PIL cannot fully decode (not an image,
    truncated, unsupported).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        w0, h0 = img.size
        if w0 * h0 > max_pixels:
            raise ImageError("image_too_large", f"{w0}x{h0} pixels > {max_pixels}")
        img.load()
        rgb = to_rgb(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError("image_too_large", str(exc)[:120]) from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageError("undecodable_image", str(exc)[:120]) from exc
    w, h = rgb.size
    std = float(np.asarray(rgb.convert("L"), dtype=np.float32).std())
    resample = Image.BICUBIC if interpolation == "bicubic" else Image.BILINEAR
    scale = resize_size / min(w, h)
    img2 = rgb.resize((max(crop_size, round(w * scale)), max(crop_size, round(h * scale))), resample)
    W, H = img2.size
    left, top = (W - crop_size) // 2, (H - crop_size) // 2
    arr = np.asarray(img2.crop((left, top, left + crop_size, top + crop_size)), dtype=np.uint8)
    return PreparedImage(arr, w, h, std, phash64(rgb))


@dataclass
class PairMemo:
    """Every near-duplicate verdict among a set of pictures: ``hashes`` (sorted, unique
    content hashes as ASCII bytes) and the pairs of them that are near-duplicates (``a`` <
    ``b``, positions in ``hashes``) with their Hamming distance and cosine. A pair of
    ``hashes`` that is not listed was checked and is not one. Valid for one embedding model
    and one pair of thresholds (the caller keys it by them)."""

    hashes: np.ndarray
    a: np.ndarray
    b: np.ndarray
    hamming: np.ndarray
    cosine: np.ndarray


def _pair_cosines(emb: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``emb[a] . emb[b]`` pair by pair (float32 dot products, as float64): one product a
    pair keeps every cosine's bits whatever else is searched."""
    return np.fromiter((float(np.dot(emb[x], emb[y])) for x, y in zip(a.tolist(), b.tolist())),
                       dtype=np.float64, count=len(a))


def near_duplicate_pairs(keys, hashes, phash: np.ndarray, emb: np.ndarray, max_distance: int,
                         min_cosine: float, memo: PairMemo | None = None, block: int = 1024
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, PairMemo, int]:
    """The near-duplicate pairs of items: perceptual hashes within ``max_distance`` bits
    and embeddings with a cosine of at least ``min_cosine``.

    ``keys`` (item ids), ``hashes`` (content hashes), ``phash`` and ``emb`` (an object
    array of float32 vectors) are per item; an item's ``phash`` and ``emb`` are those of
    its content hash. Returns positions ``i`` < ``j`` of different keys (in ``(i, j)``
    order), distances, cosines, the memo of this catalog's pictures and how many pictures
    were compared with all the others (those not in ``memo``). Pictures in ``memo`` are
    not compared again: a warm night compares only its new pictures with the rest, with
    the same pairs, distances and cosines as a full search."""
    h = np.asarray(hashes, dtype=object).astype(str).astype("S")
    uh, first, inv = np.unique(h, return_index=True, return_inverse=True)
    inv = inv.reshape(-1)
    up = np.asarray(phash, dtype=np.int64)[first].view(np.uint64)
    ue = np.asarray(emb, dtype=object)[first]
    n = len(uh)
    ka = kb = np.zeros(0, np.int64)
    kd, kc = np.zeros(0, np.int64), np.zeros(0, np.float64)
    known = np.zeros(n, bool)
    if memo is not None and len(memo.hashes) and n:
        at = np.minimum(np.searchsorted(memo.hashes, uh), len(memo.hashes) - 1)
        known = memo.hashes[at] == uh
        to_u = np.full(len(memo.hashes), -1, np.int64)
        to_u[at[known]] = np.nonzero(known)[0]
        ma, mb = to_u[memo.a], to_u[memo.b]
        keep = (ma >= 0) & (mb >= 0)
        ka, kb, kd, kc = ma[keep], mb[keep], memo.hamming[keep], memo.cosine[keep]
    # the new pictures against all: a new-new pair once (a < b), a known-known pair never
    fresh = np.nonzero(~known)[0]
    na, nb, nd = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for s in range(0, len(fresh), block):
        rows = fresh[s:s + block]
        d = np.bitwise_count(up[rows, None] ^ up[None, :])
        r, c = np.nonzero(d <= max_distance)
        row = rows[r]
        keep = (c != row) & (known[c] | (c > row))
        na.append(np.minimum(row, c)[keep])
        nb.append(np.maximum(row, c)[keep])
        nd.append(d[r[keep], c[keep]].astype(np.int64))
    na, nb, nd = np.concatenate(na), np.concatenate(nb), np.concatenate(nd)
    # each item of a picture shown by several items is a pair with the others (distance 0)
    per = np.bincount(inv, minlength=n)
    shared = np.nonzero(per > 1)[0]
    nc = _pair_cosines(ue, na, nb)
    sc = _pair_cosines(ue, shared, shared)
    hit = nc >= min_cosine
    ha, hb = np.concatenate([ka, na[hit]]), np.concatenate([kb, nb[hit]])
    hd, hc = np.concatenate([kd, nd[hit]]), np.concatenate([kc, nc[hit]])
    o = np.lexsort((hb, ha))
    out = PairMemo(uh, ha[o].astype(np.int32), hb[o].astype(np.int32),
                   hd[o].astype(np.int8), hc[o])
    # back to items: every item of picture a with every item of picture b
    order = np.argsort(inv, kind="stable")
    start = np.cumsum(per) - per
    same = shared[sc >= min_cosine]
    pa, pb = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    pd_, pc = [np.zeros(0, np.int64)], [np.zeros(0, np.float64)]
    for a, b, d, c in ((out.a.astype(np.int64), out.b.astype(np.int64), out.hamming, out.cosine),
                       (same, same, np.zeros(len(same), np.int64), sc[sc >= min_cosine])):
        cnt = per[a] * per[b]
        which = np.repeat(np.arange(len(a)), cnt)
        k = np.arange(len(which)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        nbw = per[b][which]
        x = order[start[a][which] + k // nbw]
        y = order[start[b][which] + k % nbw]
        one = (a[which] != b[which]) | (x < y)  # two items of one picture: the pair once
        pa.append(np.minimum(x, y)[one])
        pb.append(np.maximum(x, y)[one])
        pd_.append(np.asarray(d, np.int64)[which][one])
        pc.append(np.asarray(c, np.float64)[which][one])
    i, j = np.concatenate(pa), np.concatenate(pb)
    d, cos = np.concatenate(pd_), np.concatenate(pc)
    _, code = np.unique(np.asarray(keys, dtype=object).astype(str), return_inverse=True)
    code = code.reshape(-1)
    keep = code[i] != code[j]  # an item listed twice is not its own duplicate
    i, j, d, cos = i[keep], j[keep], d[keep], cos[keep]
    o = np.lexsort((j, i))
    return i[o], j[o], d[o], cos[o], out, len(fresh)
