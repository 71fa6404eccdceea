"""Tunings kept across nights: ``<warehouse>/_state/tuning/<kind>/<as_of>[.<n>].json``.

A tuning (``cf``: the CF model's factors, regularization, alpha and image prior; ``blend``:
the blend's weights; ``ranker``: the learned ranker, its validation and its model) records
what was chosen on data that ended on day ``as_of``, from which settings (``key``) and on
how much data (``size``). Each is its own file and none is
ever overwritten (a second tuning with the same ``as_of``, e.g. a forced re-tune, gets
``.1``, ``.2``, ...), so a backfill never sees a tuning of a later day. Which record may be
reused is :func:`vrec.core.tuning.tuning_reusable`'s rule; :func:`reusable` applies it to
the stored records, newest first.

**What a day used is pinned.** ``_state/tuning/used/<ds>.json`` names, per use (``cf``,
``blend`` and ``ranker`` for train_cf, ``eval_cf``, ``eval_blend`` and ``eval_ranker`` for
evaluate), the record the run of ``ds`` took.
A rerun of the day takes exactly that record again (while its settings are unchanged),
even when a later night stored a tuning the rule would now prefer; ``--retune`` (the
``retune`` param) tunes afresh and pins the new record.

**One tuning serves the night and its evaluation.** With the time split both stages ask
for data that ended on the evaluation's cutoff (vrec.stages.common.tunings_day), and
evaluate takes the record the same run's train_cf pinned (``cf`` for ``eval_cf``,
``blend`` for ``eval_blend``, ``ranker`` for ``eval_ranker``) when it is for that day and
the same settings, whatever the sizes (the two stages count the pairs as of ds and as of
the cutoff) and ``retune`` (train_cf tuned afresh already).
"""

from __future__ import annotations

import json
from pathlib import Path

from vrec.dates import check_ds
from vrec.io.warehouse import write_json

KINDS = ("cf", "blend", "ranker")
# before tunings were kept per day: the newest CF tuning only (read as a record of its ds)
LEGACY_CF = Path("_state") / "cf_tuning.json"


def tuning_dir(warehouse: str | Path, kind: str) -> Path:
    """The folder of ``kind``'s records."""
    if kind not in KINDS:
        raise ValueError(f"unknown tuning kind {kind!r}; kinds: {', '.join(KINDS)}")
    return Path(warehouse) / "_state" / "tuning" / kind


def save(warehouse: str | Path, kind: str, record: dict) -> dict:
    """Store ``record`` (it carries ``as_of``) as ``<as_of>.json``, or ``<as_of>.<n>.json``
    when that name is taken (nothing stored is overwritten), atomically; returns the
    record with its ``id`` (the file's stem)."""
    folder = tuning_dir(warehouse, kind)
    folder.mkdir(parents=True, exist_ok=True)
    stem, n = check_ds(record["as_of"]), 0
    while (folder / f"{stem}.json").exists():
        n += 1
        stem = f"{record['as_of']}.{n}"
    record = {**record, "id": stem}
    write_json(folder / f"{stem}.json", record)
    return record


def _order(stem: str) -> tuple[str, int]:
    """Newest first: by as_of, then by the re-tune counter."""
    as_of, _, n = stem.partition(".")
    return as_of, int(n or 0)


def records(warehouse: str | Path, kind: str, *, until: str) -> list[dict]:
    """The stored records of ``kind`` whose data ended on or before ``until``, newest
    first (an unreadable file is skipped: it is then tuned again)."""
    folder = tuning_dir(warehouse, kind)
    out = []
    files = sorted(folder.glob("*.json"), key=lambda f: _order(f.stem), reverse=True) \
        if folder.is_dir() else []
    for f in files:
        if f.stem[:10] > until:
            continue
        try:
            out.append({**json.loads(f.read_text()), "id": f.stem})
        except (OSError, ValueError):
            continue
    legacy = Path(warehouse) / LEGACY_CF
    if kind == "cf" and legacy.is_file():
        try:
            old = json.loads(legacy.read_text())
        except (OSError, ValueError):
            old = {}
        if old.get("ds") and old["ds"] <= until and old["ds"] not in {r.get("as_of") for r in out}:
            out.append({**old, "as_of": old["ds"], "key": old.get("settings"), "id": "legacy"})
            out.sort(key=lambda r: r["as_of"], reverse=True)
    return out


def reusable(warehouse: str | Path, kind: str, *, as_of: str, max_age_days: int, key: dict,
             size: dict[str, int], pinned: str | None = None) -> dict | None:
    """The record ``pinned`` names (a rerun: what the day used before) when it may still be
    reused, else the newest stored record of ``kind`` that may be reused for data ending on
    ``as_of`` (vrec.core.tuning.tuning_reusable), or None."""
    from vrec.core.tuning import tuning_reusable

    found = records(warehouse, kind, until=as_of)
    for rec in [r for r in found if pinned and r["id"] == pinned] + found:
        if tuning_reusable(rec, as_of=as_of, max_age_days=max_age_days, key=key, size=size):
            return rec
    return None


def _used_path(warehouse: str | Path, ds: str) -> Path:
    return Path(warehouse) / "_state" / "tuning" / "used" / f"{check_ds(ds)}.json"


def pinned(warehouse: str | Path, ds: str, use: str) -> str | None:
    """The id of the record the run of ``ds`` took for ``use`` (None: none pinned)."""
    path = _used_path(warehouse, ds)
    try:
        return json.loads(path.read_text()).get(use) if path.is_file() else None
    except (OSError, ValueError):
        return None


def pin(warehouse: str | Path, ds: str, use: str, record_id: str) -> None:
    """Record that the run of ``ds`` took record ``record_id`` for ``use``."""
    path = _used_path(warehouse, ds)
    try:
        used = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        used = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {**used, use: record_id})


SHARED = {"eval_cf": "cf", "eval_blend": "blend", "eval_ranker": "ranker"}


def night_record(warehouse: str | Path, kind: str, *, ds: str, use: str, as_of: str,
                 key: dict) -> dict | None:
    """For an evaluation use (:data:`SHARED`): the record the run of ``ds`` pinned for
    train_cf's use when it holds data that ended on ``as_of`` and the same settings
    (``key``) and chose something, else None (module doc)."""
    night = SHARED.get(use)
    rid = pinned(warehouse, ds, night) if night else None
    path = tuning_dir(warehouse, kind) / f"{rid}.json"
    try:
        rec = {**json.loads(path.read_text()), "id": rid} if rid else None
    except (OSError, ValueError):
        return None
    ok = rec is not None and rec.get("as_of") == as_of and rec.get("key") == key \
        and rec.get("chosen") is not None
    return rec if ok else None


def take(warehouse: str | Path, kind: str, *, ds: str, use: str, as_of: str,
         max_age_days: int, key: dict, size: dict[str, int], retune: bool, tune) -> dict:
    """The tuning the run of ``ds`` uses for ``use`` on data ending on ``as_of``: the
    record it pinned before (a rerun), else a reusable stored one (:func:`reusable`), else
    ``tune()``'s record, stored when it chose something; ``retune`` skips the stored ones.
    The record taken is pinned. A reused record says ``reused_from``. An ``eval_*`` use
    takes the night's own record first (:func:`night_record`)."""
    rec = night_record(warehouse, kind, ds=ds, use=use, as_of=as_of, key=key)
    if rec is None and not retune:
        rec = reusable(warehouse, kind, as_of=as_of, max_age_days=max_age_days, key=key,
                       size=size, pinned=pinned(warehouse, ds, use))
    if rec is not None:
        pin(warehouse, ds, use, rec["id"])
        return {**rec, "reused_from": rec["as_of"]}
    record = tune()
    if record.get("chosen") is not None:
        record = save(warehouse, kind, {**record, "as_of": as_of, "key": key, "size": size})
        pin(warehouse, ds, use, record["id"])
    return record
