"""``vrec status``: what is published, and did last night work? One screen (or JSON) from
the warehouse alone: the latest published ds and version, the last nights with their
state, per-stage seconds, quality-gate verdict, quarantine counts and failed attempts
(the failure records of ``vrec.airflow.callbacks``), and an exit code for cron or
monitoring (docs/operations.md "Status").

A night's state:

* ``published``: its partition is committed and no attempt failed after that;
* ``refused``: the quality gate refused it (nothing published for it);
* ``failed``: a task failed for good (a failure record, or a stage record saying failed),
  after its last publish if it has one;
* ``running``: a stage is running and nothing failed;
* ``incomplete``: stages ran, nothing failed, nothing published (a run that stopped).

Exit codes: 0 healthy; 1 the newest night failed or was refused; 3 the latest published
day is older than ``max_age`` (or nothing is published); 4 (when nothing above holds) the
realised NDCG of the latest published list dropped sharply (the ``realised`` warning of
the latest publish, vrec.core.feedback.drop_warning); 2 is left to usage errors."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

from vrec.dates import check_ds, end_of_ds
from vrec.io import warehouse as W
from vrec.stages import NAMES, publisher

EXIT_OK, EXIT_FAILED, EXIT_STALE, EXIT_REALISED_DROP = 0, 1, 3, 4
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_age(text: str) -> dt.timedelta:
    """``36h``, ``90m``, ``2d``, ``1d12h`` or ``45s`` as a timedelta."""
    parts = re.findall(r"(\d+(?:\.\d+)?)([dhms])", text.strip().lower())
    if not parts or "".join(n + u for n, u in parts) != text.strip().lower():
        raise ValueError(f"expected an age like 36h, 90m, 2d or 1d12h, got {text!r}")
    return dt.timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))


def _nights(wh: Path) -> list[str]:
    """Every ds the warehouse knows: published, staged or with a failure record."""
    found = set(W.published_ds(wh))
    found |= {p.name for p in (wh / "_runs").glob("*") if p.is_dir()} if (wh / "_runs").is_dir() \
        else set()
    found |= {p.name[3:] for p in (wh / "_failures").glob("ds=*")}
    out = []
    for ds in found:
        try:
            out.append(check_ds(ds))
        except ValueError:
            continue
    return sorted(out)


def _quarantine_counts(wh: Path, ds: str, published: bool) -> dict[str, int]:
    """Quarantined rows by reason: the staging area, else the published table."""
    q = W.staged_quarantine(wh, ds)
    if not len(q) and published:
        try:
            q = W.read_table(wh, "quarantine", ds)
        except (FileNotFoundError, OSError):
            q = q.iloc[0:0]
    return {str(k): int(v) for k, v in q.groupby("reason").size().sort_values(
        ascending=False).items()} if len(q) else {}


def night(wh: str | Path, ds: str) -> dict:
    """The state of one night (module doc), with its stages, gate, quarantine, failures."""
    wh = Path(wh)
    published = ds in W.published_ds(wh)
    man = W.manifest(wh, ds) if published else {}
    records = W.stage_records(wh, ds)
    failures = [f for f in W.read_failures(wh, ds) if f.get("ds") == ds]
    if published:  # attempts before the publish belong to the published run's history
        failures = [f for f in failures if str(f.get("at", "")) > man.get("published_at", "")]
    # the gate's verdict: publish's record (a refused gate fails publish), else the manifest
    gate = (records.get(publisher().name) or {}).get("quality_gate") \
        or man.get("quality_gate") or {}
    stage_failed = [s for s, r in records.items() if r.get("status") == "failed"
                    and (not published or str(r.get("finished_at", "")) > man["published_at"])]
    if gate.get("status") == "refused" and not published:
        state = "refused"
    elif failures or stage_failed:
        state = "failed"
    elif published:
        state = "published"
    elif any(r.get("status") == "running" for r in records.values()):
        state = "running"
    else:
        state = "incomplete"
    stages = {s: {"status": r.get("status"), "seconds": r.get("seconds")}
              for s, r in records.items() if s in NAMES}
    if not stages and man.get("stage_stats"):  # staging pruned: the manifest's copy
        stages = {r["stage"]: {"status": "succeeded", "seconds": r.get("seconds")}
                  for r in man["stage_stats"] if r.get("stage") in NAMES}
    runs = {r.get("run_id") for r in records.values() if r.get("run_id")}
    # which GX engine validated each suite (vrec.io.validation: pandas below the row
    # threshold, Spark above it)
    engines = {suite: engine for stage in ("validate_inputs", "validate_outputs")
               for suite, engine in (records.get(stage, {}).get("validation_engines") or {}).items()}
    return {"ds": ds, "state": state, "version": man.get("version"),
            "published_at": man.get("published_at"),
            "run_id": man.get("run_id") or (sorted(runs)[-1] if runs else None),
            "gate": {k: gate.get(k) for k in ("status", "metric", "current", "previous",
                                              "message")} if gate else None,
            "stages": stages,
            "validation_engines": engines,
            "seconds": round(sum(float(v["seconds"] or 0) for v in stages.values()), 1),
            "quarantine": _quarantine_counts(wh, ds, published),
            "failures": [{k: f.get(k) for k in ("stage", "try", "at", "run_id", "error")}
                         for f in failures + [
                             {"stage": s, "at": records[s].get("finished_at"),
                              "run_id": records[s].get("run_id"),
                              "error": records[s].get("error")} for s in stage_failed
                             if not any(f.get("stage") == s for f in failures)]]}


def status(warehouse: str | Path, *, runs: int = 7, max_age: dt.timedelta | None = None,
           now: dt.datetime | None = None) -> dict:
    """The warehouse's status (module doc): latest publish, the last ``runs`` nights
    (newest first), the verdict and its exit code."""
    wh = Path(warehouse)
    now = now or dt.datetime.now(dt.UTC)
    known = _nights(wh)
    nights = [night(wh, ds) for ds in reversed(known[-runs:])] if runs > 0 else []
    latest = W.latest_ds(wh)
    head = None
    if latest:
        man = W.manifest(wh, latest)
        head = {"ds": latest, "version": man.get("version"),
                "published_at": man.get("published_at"),
                "data_age_hours": round((now - end_of_ds(latest)).total_seconds() / 3600, 1),
                "tables": {t: v["rows"] for t, v in man.get("tables", {}).items()},
                "realised": man.get("realised") or {}}
    problems, code = [], EXIT_OK
    newest = (nights[0] if nights else night(wh, known[-1])) if known else None
    if newest and newest["state"] in ("failed", "refused"):
        where = ", ".join(sorted({str(f.get("stage")) for f in newest["failures"]})) or "the gate"
        problems.append(f"the newest night, {newest['ds']}, {newest['state']} ({where})")
        code = EXIT_FAILED
    if max_age is not None:
        if head is None:
            problems.append("nothing is published")
            code = code or EXIT_STALE
        elif now - end_of_ds(head["ds"]) > max_age:
            problems.append(f"the latest published day, {head['ds']}, ended "
                            f"{head['data_age_hours']} h ago (more than --max-age "
                            f"{max_age.total_seconds() / 3600:g} h)")
            code = code or EXIT_STALE
    warning = ((head or {}).get("realised") or {}).get("warning")
    if warning:
        problems.append(f"realised drop on {head['ds']}: {warning.get('message')}")
        code = code or EXIT_REALISED_DROP
    verdicts = {EXIT_OK: "ok", EXIT_FAILED: "failed", EXIT_STALE: "stale",
                EXIT_REALISED_DROP: "realised_drop"}
    return {"warehouse": str(wh), "as_of": now.isoformat(timespec="seconds"), "latest": head,
            "nights": nights, "verdict": verdicts[code],
            "problems": problems, "exit_code": code}


def render(st: dict) -> str:
    """``status`` as one screen of text."""
    lines = [f"vrec status: warehouse {st['warehouse']} (as of {st['as_of']})"]
    h = st["latest"]
    lines.append("latest published: nothing yet" if h is None else
                 f"latest published: ds {h['ds']}, version {h['version']}, published "
                 f"{(h['published_at'] or '')[:19]} (data age {h['data_age_hours']} h)")
    lines.append("verdict: OK" if st["verdict"] == "ok" else
                 f"verdict: {st['verdict'].upper()}: " + "; ".join(st["problems"]))
    real = (h or {}).get("realised") or {}
    for r in (real.get("lists") or [])[-2:]:
        ctr = f", click-through {r['ctr']:.3f} of {int(r['impressions'])} impressions" \
            if r.get("impressions") else ""
        lines.append(f"realised: lists of {r['list_ds']} after {r['horizon_days']} day(s): "
                     f"{int(r.get('users', 0))} active users, hit rate "
                     f"{r.get('hit_rate', 0):.3f}, NDCG {r.get('ndcg', 0):.4f}{ctr}")
    if not st["nights"]:
        return "\n".join(lines)
    lines += ["", f"{'ds':<11} {'state':<11} {'gate':<11} {'seconds':>8}  "
                  f"{'failures':>8}  quarantined"]
    for n in st["nights"]:
        q = n["quarantine"]
        qs = f"{sum(q.values()):,}" + (" (" + ", ".join(f"{k} {v:,}" for k, v in
                                                         list(q.items())[:3]) + ")" if q else "")
        lines.append(f"{n['ds']:<11} {n['state']:<11} {(n['gate'] or {}).get('status') or '-':<11} "
                     f"{n['seconds']:>8.1f}  {len(n['failures']):>8}  {qs}")
    seen = {s for n in st["nights"] for s in n["stages"]}
    stages = [s for s in NAMES if s in seen] + sorted(seen - set(NAMES))
    if stages:
        shown = st["nights"][:6]
        width = max(len("seconds per stage"), *map(len, stages))
        lines += ["", f"{'seconds per stage':<{width}} " + " ".join(f"{n['ds'][5:]:>7}"
                                                              for n in shown)]
        for s in stages:
            cells = []
            for n in shown:
                v = n["stages"].get(s)
                cells.append(f"{'-' if not v or v['seconds'] is None else format(v['seconds'], '.1f'):>7}"
                             if not v or v["status"] in ("succeeded", None) else
                             f"{v['status'][:7]:>7}")
            lines.append(f"{s:<{width}} " + " ".join(cells))
    newest = next((n for n in st["nights"] if n.get("validation_engines")), None)
    if newest:
        lines += ["", f"validated by ({newest['ds']}): " + ", ".join(
            f"{suite} {engine}" for suite, engine in newest["validation_engines"].items())]
    fails = [(n["ds"], f) for n in st["nights"] for f in n["failures"]][:5]
    if fails:
        lines += ["", "failures:"]
        lines += [f"  {ds} {f.get('stage')} try {f.get('try') or '-'} at {(f.get('at') or '')[:19]}: "
                  f"{str(f.get('error') or '').splitlines()[0][:160] if f.get('error') else ''}"
                  for ds, f in fails]
    return "\n".join(lines)


def to_json(st: dict) -> str:
    return json.dumps(st, indent=2, default=str)
