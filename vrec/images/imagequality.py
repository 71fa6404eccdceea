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


def hamming_pairs(keys: list[str], hashes: np.ndarray, max_distance: int,
                  block: int = 1024) -> list[tuple[str, str, int]]:
    """Pairs (a, b, distance) of different keys whose 64-bit hashes differ in at most
    ``max_distance`` bits; each pair once, a < b by position, in position order."""
    i, j, d = hamming_pair_index(keys, hashes, max_distance, block)
    return list(zip([keys[a] for a in i.tolist()], [keys[b] for b in j.tolist()], d.tolist()))


def hamming_pair_index(keys: list[str] | np.ndarray, hashes: np.ndarray, max_distance: int,
                       block: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`hamming_pairs` as arrays of positions (i < j) and distances, in the same
    order, without a Python object per pair (a catalog of look-alike pictures has
    millions)."""
    h = np.asarray(hashes, dtype=np.int64).view(np.uint64)
    _, code = np.unique(np.asarray(keys, dtype=object).astype(str),
                        return_inverse=True)  # equal keys, equal codes
    out_i, out_j, out_d = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for start in range(0, len(h), block):
        d = np.bitwise_count(h[start:start + block, None] ^ h[None, :])
        rows, cols = np.nonzero(d <= max_distance)
        i = rows + start
        keep = (cols > i) & (code[i] != code[cols])
        out_i.append(i[keep])
        out_j.append(cols[keep])
        out_d.append(d[rows[keep], cols[keep]].astype(np.int64))
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_d)
