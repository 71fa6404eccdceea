"""Tunings kept across nights: ``<warehouse>/_state/tuning/<kind>/<as_of>.json``.

A tuning (``cf``: the CF model's factors, regularization, alpha and image prior; ``blend``:
the blend's weights) records what was chosen on data that ended on day ``as_of``, from
which settings (``key``) and on how much data (``size``). Each is its own file, so a
later night never overwrites an earlier one: a rerun of a day finds the tuning it used
before, and a backfill never sees a tuning of a later day. Which record may be reused is
:func:`vrec.core.tuning.tuning_reusable`'s rule; :func:`reusable` applies it to the
stored records, newest first.
"""

from __future__ import annotations

import json
from pathlib import Path

from vrec.dates import check_ds
from vrec.io.warehouse import write_json

KINDS = ("cf", "blend")
# before tunings were kept per day: the newest CF tuning only (read as a record of its ds)
LEGACY_CF = Path("_state") / "cf_tuning.json"


def tuning_dir(warehouse: str | Path, kind: str) -> Path:
    """The folder of ``kind``'s records."""
    if kind not in KINDS:
        raise ValueError(f"unknown tuning kind {kind!r}; kinds: {', '.join(KINDS)}")
    return Path(warehouse) / "_state" / "tuning" / kind


def save(warehouse: str | Path, kind: str, record: dict) -> Path:
    """Store ``record`` (it carries ``as_of``) as ``<as_of>.json``, atomically."""
    path = tuning_dir(warehouse, kind) / f"{check_ds(record['as_of'])}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, record)
    return path


def records(warehouse: str | Path, kind: str, *, until: str) -> list[dict]:
    """The stored records of ``kind`` whose data ended on or before ``until``, newest
    first (an unreadable file is skipped: it is then tuned again)."""
    folder = tuning_dir(warehouse, kind)
    out = []
    for f in sorted(folder.glob("*.json"), reverse=True) if folder.is_dir() else []:
        if f.stem > until:
            continue
        try:
            out.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            continue
    legacy = Path(warehouse) / LEGACY_CF
    if kind == "cf" and legacy.is_file():
        try:
            old = json.loads(legacy.read_text())
        except (OSError, ValueError):
            old = {}
        if old.get("ds") and old["ds"] <= until and old["ds"] not in {r.get("as_of") for r in out}:
            out.append({**old, "as_of": old["ds"], "key": old.get("settings")})
            out.sort(key=lambda r: r["as_of"], reverse=True)
    return out


def reusable(warehouse: str | Path, kind: str, *, as_of: str, max_age_days: int, key: dict,
             size: dict[str, int]) -> dict | None:
    """The newest stored record of ``kind`` that may be reused for data ending on
    ``as_of`` (vrec.core.tuning.tuning_reusable), or None."""
    from vrec.core.tuning import tuning_reusable

    for rec in records(warehouse, kind, until=as_of):
        if tuning_reusable(rec, as_of=as_of, max_age_days=max_age_days, key=key, size=size):
            return rec
    return None
