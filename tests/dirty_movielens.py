"""A generated MovieLens-style folder, clean or with defects injected at known lines: the
dirty-input matrix of tests/test_adapters.py. Each defect says which file and line it
lands on and the reject reason the adapter must give (None: the row must land)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

END = dt.date(2026, 11, 20)
N_USERS, N_MOVIES, DAYS = 40, 50, 12


def _epoch(d: dt.date, seconds: int) -> int:
    return int(dt.datetime.combine(d, dt.time(), tzinfo=dt.UTC).timestamp()) + seconds


def clean_rows(seed: int = 3) -> tuple[list[str], list[str]]:
    """(ratings lines, movies lines) without headers: every user rates 8 movies spread
    over the last DAYS days, on the 0.5..5 scale."""
    rng = np.random.default_rng(seed)
    ratings = []
    for u in range(1, N_USERS + 1):
        taste = u % 3
        pool = [m for m in range(1, N_MOVIES + 1) if m % 3 == taste] + \
            list(rng.choice(np.arange(1, N_MOVIES + 1), 4, replace=False))
        for m in rng.choice(pool, 8, replace=False):
            day = END - dt.timedelta(days=int(rng.integers(0, DAYS)))
            r = float(rng.choice([3.0, 3.5, 4.0, 4.5, 5.0]) if m % 3 == taste else
                      rng.choice([0.5, 1.0, 2.0, 3.0]))
            ratings.append((_epoch(day, int(rng.integers(0, 86_000))), u, int(m), r))
    ratings.sort()
    genres = ["Comedy|Drama", "Action", "Horror|Thriller"]
    movies = [f'{m},"Movie {m}, The ({1990 + m})",{genres[m % 3]}' for m in range(1, N_MOVIES + 1)]
    return [f"{u},{m},{r:g},{t}" for t, u, m, r in ratings], movies


def write_posters(folder: Path, seed: int = 3) -> None:
    """A 64 px poster per movie: its taste group's colour with noise (a real JPEG)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    colours = [(200, 40, 40), (40, 160, 60), (40, 60, 200)]
    for m in range(1, N_MOVIES + 1):
        base = np.array(colours[m % 3], dtype=float)
        px = np.clip(base + rng.normal(0, 30, (64, 64, 3)), 0, 255).astype("uint8")
        Image.fromarray(px).save(folder / f"{m}.jpg", "JPEG")


@dataclass(frozen=True)
class Defect:
    """One defect: the line it adds to ``file`` (bytes, inserted before clean row
    ``at``) and the reject reason the adapter gives it (None: it lands)."""

    file: str
    line: bytes
    reason: str | None
    at: int = 5


T = _epoch(END - dt.timedelta(days=2), 3600)
DEFECTS: dict[str, Defect] = {
    "extra_field": Defect("ratings.csv", f"1,2,4.0,{T},oops".encode(), "malformed_line", 3),
    "missing_field": Defect("ratings.csv", f"1,2,{T}".encode(), "malformed_line", 9),
    "empty_movie_id": Defect("ratings.csv", f"1,,4.0,{T}".encode(), "null_item_id", 14),
    "non_digit_user_id": Defect("ratings.csv", f"u7,2,4.0,{T}".encode(), "bad_user_id", 20),
    "float_movie_id": Defect("ratings.csv", f"1,2.0,4.0,{T}".encode(), "bad_item_id", 26),
    "rating_above_scale": Defect("ratings.csv", f"2,3,7.5,{T}".encode(), "rating_out_of_range", 31),
    "negative_rating": Defect("ratings.csv", f"2,4,-1,{T}".encode(), "rating_out_of_range", 37),
    "unreadable_rating": Defect("ratings.csv", f"2,5,four,{T}".encode(), "bad_value", 42),
    "timestamp_in_2100": Defect("ratings.csv", b"3,6,4.0,4102444800", "future_timestamp", 48),
    "unreadable_timestamp": Defect("ratings.csv", b"3,7,4.0,yesterday", "bad_ts", 55),
    "stray_quote": Defect("ratings.csv", f'3,"8,4.0,{T}'.encode(), "malformed_line", 61),
    "cp1252_title": Defect("movies.csv", b"51,Caf\xe9 Society (2016),Comedy", None, 4),
    "undecodable_title": Defect("movies.csv", b"52,Bad \x81 Byte (2001),Drama", "undecodable_text", 8),
    "empty_movies_id": Defect("movies.csv", b",Nobody (2001),Drama", "null_item_id", 12),
}


def write_folder(folder: Path, defects: list[str], *, bom_crlf: bool = False) -> dict:
    """Write ratings.csv, movies.csv and posters/ with ``defects`` injected; return
    {"expected": [(file, line, reason)], "clean": number of clean ratings,
    "landed_movies": the movie ids that must land}."""
    ratings, movies = clean_rows()
    files = {"ratings.csv": [r.encode() for r in ratings], "movies.csv": [m.encode() for m in movies]}
    marks: dict[str, list] = {"ratings.csv": [None] * len(ratings), "movies.csv": [None] * len(movies)}
    for name in sorted(defects, key=lambda n: -DEFECTS[n].at):
        d = DEFECTS[name]
        files[d.file].insert(d.at, d.line)
        marks[d.file].insert(d.at, name)
    header = {"ratings.csv": b"userId,movieId,rating,timestamp", "movies.csv": b"movieId,title,genres"}
    expected = []
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        for i, mark in enumerate(marks[name]):
            if mark is not None and DEFECTS[mark].reason is not None:
                expected.append((name, i + 2, DEFECTS[mark].reason))  # header is line 1
        eol = b"\r\n" if bom_crlf else b"\n"
        data = eol.join([header[name]] + lines) + eol
        (folder / name).write_bytes((b"\xef\xbb\xbf" if bom_crlf else b"") + data)
    write_posters(folder / "posters")
    landed_movies = {str(m) for m in range(1, N_MOVIES + 1)} | \
        ({"51"} if "cp1252_title" in defects else set())
    return {"expected": sorted(expected), "clean": len(ratings), "landed_movies": landed_movies}
