"""The run report: one self-contained static HTML file per ds (docs/evaluation.md "Run report").

``<warehouse>/reports/runs/vrec_report_<ds>.html`` opens from disk with no server: styles,
trend plots (inline SVG) and thumbnails (JPEG data URIs) are all inside the file. It
shows the pipeline summary (stages, seconds, rows, quarantines, validation), the quality
gate, the offline metrics of every model (beside the tuning's estimates) with trends across
published runs, how the published lists did (realised metrics, what the rules and the
feedback left out), and a
gallery: sample users' recent history and recommendations (score, reason), and
item_similar examples. Staged artifacts are read through the calling stage's declared
inputs (``ctx.input``: the report stage's, or publish's when its gate refuses, so a
refused run still gets its report); the trends read published partitions.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from vrec import columns as C
from vrec.config import Settings
from vrec.core.evaluation import METRICS, SLICES
from vrec.core.models import MODELS
from vrec.dates import check_ds, shift_ds
from vrec.io import warehouse as W
from vrec.stages import NAMES, publisher

COLORS = {"popularity": "#8c8c8c", "als": "#1f77b4", "visual": "#2ca02c", "visual_pref": "#9467bd",
          "hybrid": "#d62728", "ranker": "#ff7f0e", "realised": "#17becf"}
REALISED_COLUMNS = ("users", "hit_rate", "precision", "ndcg", "demand_coverage",
                    "impressions", "ctr")


def report_path(warehouse: str | Path, ds: str) -> Path:
    """Where the report of ``ds`` is written."""
    return Path(warehouse) / "reports" / "runs" / f"vrec_report_{check_ds(ds)}.html"


def _e(x) -> str:
    return html.escape("" if x is None else str(x))


# ---------------------------------------------------------------- thumbnails

class Thumbs:
    """JPEG data URIs of catalog images, made once per item."""

    def __init__(self, catalog: pd.DataFrame, image_root: Path, px: int,
                 roots: list | tuple = ()):
        self.uri = dict(zip(catalog[C.ITEM_ID].astype(str), catalog[C.IMAGE_URI]))
        self.root, self.roots, self.px, self.cache = image_root, list(roots), px, {}

    def __call__(self, item_id: str) -> str | None:
        if item_id not in self.cache:
            self.cache[item_id] = self._make(item_id)
        return self.cache[item_id]

    def _make(self, item_id: str) -> str | None:
        from PIL import Image

        from vrec.images.embed import locate_image, read_image
        from vrec.images.imagequality import MAX_PIXELS

        try:  # the same rules as embedding: allowed roots, regular files, size caps
            path = locate_image(self.uri.get(item_id), self.root, self.roots)
            if path is None:
                return None
            with Image.open(io.BytesIO(read_image(path))) as im:
                if im.size[0] * im.size[1] > MAX_PIXELS:
                    return None
                im = im.convert("RGB")
                im.thumbnail((self.px, self.px))
                buf = io.BytesIO()
                im.save(buf, format="JPEG", quality=82)
        except Exception:  # noqa: BLE001 - an undecodable image shows as a placeholder
            return None
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _card(thumbs: Thumbs, titles: dict, item_id: str, lines: list[str]) -> str:
    src = thumbs(str(item_id))
    pic = (f'<img src="{src}" alt="{_e(titles.get(str(item_id), item_id))}">' if src else
           '<div class="noimg">no image</div>')
    text = "".join(f"<div>{line}</div>" for line in lines)
    return (f'<figure class="card" title="{_e(item_id)}: {_e(titles.get(str(item_id), ""))}">'
            f"{pic}<figcaption>{text}</figcaption></figure>")


# ---------------------------------------------------------------- plots

def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values (1, 2, 2.5 or 5 times a power of ten) covering [lo, hi]."""
    import math

    if hi - lo < 1e-12:
        lo, hi = lo - 0.01, hi + 0.01
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    v = first
    while v < hi + step * 0.999:
        ticks.append(round(v, 12))
        v += step
    return ticks


def _fmt(v: float) -> str:
    return f"{v:.4f}".rstrip("0").rstrip(".") if abs(v) < 10 else f"{v:,.0f}"


def svg_trend(series: dict[str, list[tuple[str, float]]], title: str, *, width: int = 680,
              height: int = 320) -> str:
    """A line chart (inline SVG) of one value per ds for each model: round y ticks with
    grid lines, at most six ds labels (first and last included), and each point's model, ds and value on hover."""
    pts = [v for s in series.values() for _, v in s]
    days = sorted({d for s in series.values() for d, _ in s})
    if not pts:
        return f'<div class="plot empty">{_e(title)}: no values yet</div>'
    ticks = nice_ticks(min(pts), max(pts))
    lo, hi = ticks[0], ticks[-1]
    ml, mr, mt, mb = 72, 120, 28, 40
    pw, ph = width - ml - mr, height - mt - mb

    def xy(d: str, v: float) -> tuple[float, float]:
        i = days.index(d)
        x = ml + (pw * i / (len(days) - 1) if len(days) > 1 else pw / 2)
        return x, mt + ph * (1 - (v - lo) / (hi - lo))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'role="img" aria-label="{_e(title)}" class="plot trend">',
           f'<text x="{ml}" y="17" class="pt">{_e(title)}</text>']
    for t in ticks:
        _, y = xy(days[0], t)
        out.append(f'<line x1="{ml}" y1="{y:.1f}" x2="{ml + pw}" y2="{y:.1f}" class="grid"/>'
                   f'<text x="{ml - 6}" y="{y + 4:.1f}" class="tick ytick" '
                   f'text-anchor="end">{_fmt(t)}</text>')
    out += [f'<line x1="{ml}" y1="{mt + ph}" x2="{ml + pw}" y2="{mt + ph}" class="ax"/>',
            f'<line x1="{ml}" y1="{mt}" x2="{ml}" y2="{mt + ph}" class="ax"/>']
    # at most six dates fit side by side: evenly spaced, the first and the last included
    shown = sorted({round(i * (len(days) - 1) / 5) for i in range(6)}) if len(days) > 6 \
        else range(len(days))
    for d in (days[i] for i in shown):
        x, _ = xy(d, lo)
        out.append(f'<line x1="{x:.1f}" y1="{mt + ph}" x2="{x:.1f}" y2="{mt + ph + 5}" class="ax"/>'
                   f'<text x="{x:.1f}" y="{mt + ph + 19}" class="tick xtick" '
                   f'text-anchor="middle">{_e(d)}</text>')
    for j, (name, s) in enumerate(series.items()):
        color = COLORS.get(name, "#444")
        coords = [xy(d, v) for d, v in sorted(s)]
        if len(coords) > 1:
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2.5" points="'
                       + " ".join(f"{x:.1f},{y:.1f}" for x, y in coords) + '"/>')
        for (d, v), (x, y) in zip(sorted(s), coords):
            # the visible dot, and a wider transparent target that shows the value on hover
            out.append(f'<g class="pt-hover"><title>{_e(name)} {_e(d)}: {v:.4f}</title>'
                       f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{color}"/>'
                       f'<circle cx="{x:.1f}" cy="{y:.1f}" r="9" fill="transparent"/></g>')
        ly = mt + 16 * j + 6
        out.append(f'<rect x="{ml + pw + 14}" y="{ly - 9}" width="11" height="11" fill="{color}"/>'
                   f'<text x="{ml + pw + 30}" y="{ly + 1}" class="tick">{_e(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def svg_stage_bars(seconds: dict[str, float], *, width: int = 680, bar: int = 22) -> str:
    """Seconds inside each stage as horizontal bars (inline SVG), values written and on hover."""
    items = [(k, float(v)) for k, v in seconds.items() if v is not None]
    if not items:
        return '<div class="plot empty">stage seconds: none recorded</div>'
    ml, mr, mt = 150, 70, 10
    pw = width - ml - mr
    top = max(v for _, v in items) or 1.0
    height = mt + bar * len(items) + 30
    ticks = [t for t in nice_ticks(0.0, top, 5) if t <= top * 1.0001]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           'role="img" aria-label="seconds per stage" class="plot bars">']
    for t in ticks:
        x = ml + pw * t / top
        out.append(f'<line x1="{x:.1f}" y1="{mt}" x2="{x:.1f}" y2="{mt + bar * len(items)}" '
                   f'class="grid"/><text x="{x:.1f}" y="{mt + bar * len(items) + 14}" '
                   f'class="tick xtick" text-anchor="middle">{_fmt(t)}</text>')
    for i, (name, v) in enumerate(items):
        y = mt + bar * i
        w = max(pw * v / top, 1.0)
        out.append(f'<g class="bar"><title>{_e(name)}: {v:.1f} s</title>'
                   f'<text x="{ml - 6}" y="{y + bar * 0.68:.1f}" class="tick" '
                   f'text-anchor="end">{_e(name)}</text>'
                   f'<rect x="{ml}" y="{y + 3}" width="{w:.1f}" height="{bar - 6}" fill="#1f77b4"/>'
                   f'<text x="{ml + w + 4:.1f}" y="{y + bar * 0.68:.1f}" class="tick">{v:.1f} s</text></g>')
    out.append(f'<text x="{ml + pw / 2:.0f}" y="{height - 2}" class="tick" '
               'text-anchor="middle">seconds inside the stage</text></svg>')
    return "".join(out)


# ---------------------------------------------------------------- sections

def _reconciliation_table(stats: dict[str, dict]) -> str:
    """Rows landed = rows used + rows quarantined, per source (build_interactions' check)."""
    recon = (stats.get("build_interactions") or {}).get("reconciliation") or {}
    if not recon:
        return ""
    rows = "".join(
        f"<tr><td>{_e(src)}</td><td class=n>{r['landed']:,}</td>"
        f"<td class=n>{r['rejected_at_landing']:,}</td><td class=n>{r['used']:,}</td>"
        f"<td class=n>{r['quarantined']:,}</td>"
        f"<td class='{'ok' if r['balanced'] else 'bad'}'>{'yes' if r['balanced'] else 'NO'}</td></tr>"
        for src, r in recon.items())
    return ("<h3>Rows accounted for</h3><p>Every row of the run's input (all partitions up to "
            "this day, and the rows the adapters rejected) is used or quarantined.</p>"
            "<table><tr><th>source</th><th>landed</th><th>rejected at landing</th>"
            "<th>used</th><th>quarantined</th><th>landed = used + quarantined</th></tr>"
            + rows + "</table>")


def _pipeline_section(stats: dict[str, dict], quarantine: pd.DataFrame) -> str:
    rows = []
    for s in [s for s in NAMES if s in stats] + [s for s in stats if s not in NAMES]:
        r = stats[s]
        rows.append(f"<tr><td>{_e(s)}</td><td class=n>{r.get('seconds', 0):.1f}</td>"
                    f"<td class=n>{int(r.get('rows_in', 0)):,}</td>"
                    f"<td class=n>{int(r.get('rows_out', 0)):,}</td>"
                    f"<td class=n>{int(r.get('rows_quarantined', 0)):,}</td></tr>")
    total = sum(float(r.get("seconds", 0)) for r in stats.values())
    out = ["<h2>Pipeline</h2>",
           "<table><tr><th>stage</th><th>seconds</th><th>rows in</th><th>rows out</th>"
           "<th>quarantined</th></tr>", *rows,
           f"<tr class=tot><td>total inside stages</td><td class=n>{total:.1f}</td>"
           "<td></td><td></td><td></td></tr></table>",
           svg_stage_bars({s: stats[s].get("seconds") for s in NAMES if s in stats})]
    out.append(_reconciliation_table(stats))
    if len(quarantine):
        q = quarantine.assign(at_landing=quarantine["found_by"] == "landing")
        q = q.groupby(["source", "reason", "at_landing"]).size().reset_index(name="rows")
        out.append("<h3>Quarantine</h3><table><tr><th>source</th><th>reason</th>"
                   "<th>where</th><th>rows</th></tr>"
                   + "".join(f"<tr><td>{_e(r.source)}</td><td>{_e(r.reason)}</td>"
                             f"<td>{'rejected at landing' if r.at_landing else 'by the run'}</td>"
                             f"<td class=n>{r.rows:,}</td></tr>" for r in q.itertuples())
                   + "</table>")
    else:
        out.append("<p>No rows quarantined.</p>")
    val = []
    for stage in ("validate_inputs", "validate_outputs"):
        for suite, r in (stats.get(stage, {}).get("validation") or {}).items():
            ok = "ok" if r.get("success") else "FAILED"
            val.append(f"<tr><td>{_e(suite)}</td><td class=n>{int(r.get('rows', 0)):,}</td>"
                       f"<td class='{'ok' if r.get('success') else 'bad'}'>{ok}</td>"
                       f"<td>{_e(', '.join(r.get('failed', [])))}</td>"
                       f"<td>{_e(', '.join(r.get('warnings', [])))}</td></tr>")
    if val:
        docs = (stats.get("validate_outputs") or stats.get("validate_inputs") or {}).get("data_docs")
        out.append("<h3>Data validation (Great Expectations)</h3><table><tr><th>suite</th>"
                   "<th>rows</th><th>result</th><th>failed</th><th>warnings</th></tr>"
                   + "".join(val) + "</table>"
                   + (f'<p>Data Docs: <a href="file://{_e(docs)}">{_e(docs)}</a></p>' if docs else ""))
    return "\n".join(out)


def _failures_section(wh: Path, ds: str) -> str:
    """Failed task attempts of the 30 days up to now (vrec.airflow.callbacks)."""

    since = shift_ds(ds, -30)
    failures = W.read_failures(wh, since)
    if not failures:
        return "<h2>Failed nights</h2><p>No failed task in the last 30 days.</p>"
    rows = "".join(
        f"<tr><td>{_e(f.get('ds'))}</td><td>{_e(f.get('stage'))}</td>"
        f"<td class=n>{_e(f.get('try'))}</td><td>{_e(f.get('at'))}</td>"
        f"<td>{_e(str(f.get('error', '')).splitlines()[0][:300] if f.get('error') else '')}</td></tr>"
        for f in failures[-50:])
    return ("<h2>Failed nights</h2><table><tr><th>ds</th><th>task</th><th>try</th><th>at</th>"
            "<th>error</th></tr>" + rows + "</table>")


def _gate_section(g: dict) -> str:
    if not g:
        return "<h2>Quality gate</h2><p>Not checked yet (publish has not run).</p>"
    cls = {"refused": "bad", "overridden": "warn"}.get(g.get("status"), "ok")
    cur = "—" if g.get("current") is None else f"{g['current']:.4f}"
    prev = "—" if g.get("previous") is None else f"{g['previous']:.4f} ({_e(g.get('previous_ds'))})"
    return ("<h2>Quality gate</h2>"
            f"<p class='{cls}'><b>{_e(g.get('status'))}</b>: {_e(g.get('message'))}</p>"
            f"<table><tr><th>metric</th><th>this run</th><th>last published</th>"
            f"<th>allowed drop</th></tr><tr><td>{_e(g.get('metric'))}</td><td class=n>{cur}</td>"
            f"<td class=n>{prev}</td><td class=n>{g.get('max_drop')}</td></tr></table>")


def estimate_vs_holdout(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per model: the blend tuning's NDCG estimate on its forward window (slice
    ``tuning_window``) beside the holdout's NDCG at the same K (slice ``all``), with the
    difference and its z (difference over the combined standard error)."""
    est = metrics[metrics["slice"] == "tuning_window"]
    if est.empty:
        return pd.DataFrame(columns=["model", "k", "estimate", "estimate_se", "holdout",
                                     "holdout_se", "difference", "z"])
    k = int(est["k"].iloc[0])
    rows = []
    for model, g in est.groupby("model"):
        hold = metrics[(metrics["slice"] == "all") & (metrics["k"] == k)
                       & (metrics["model"] == model)]
        if hold.empty:
            continue

        def val(frame, metric):
            v = frame.loc[frame["metric"] == metric, "value"]
            return float(v.iloc[0]) if len(v) else float("nan")

        e, e_se, h, h_se = val(g, "ndcg"), val(g, "ndcg_se"), val(hold, "ndcg"), val(hold, "ndcg_se")
        se = math.hypot(e_se, h_se)
        rows.append({"model": model, "k": k, "estimate": e, "estimate_se": e_se, "holdout": h,
                     "holdout_se": h_se, "difference": h - e,
                     "z": (h - e) / se if se > 0 else float("nan")})
    order = {m: i for i, m in enumerate(MODELS)}
    return pd.DataFrame(rows).sort_values("model", key=lambda c: c.map(order)) \
        if rows else pd.DataFrame(rows)


def _estimates_table(metrics: pd.DataFrame, info: dict) -> str:
    """What the tuning expected beside what happened (docs/evaluation.md)."""
    t = estimate_vs_holdout(metrics)
    if t.empty:
        return ("<h3>What the tuning expected</h3><p>No tuning-window estimates for this run "
                "(the blend tuning was off, skipped, or reused from a record that predates "
                "them).</p>")
    tuning = ((info.get("blend") or {}).get("tuning") or {})
    window = tuning.get("window") or {}
    head = (f"the blend tuning as of {_e(tuning.get('as_of') or info.get('tunings_as_of'))}"
            + (f" (features to {_e(window.get('cutoff'))}, {window.get('scored_users')} users "
               "scored on what they did next)" if window else ""))
    rows = "".join(
        f"<tr><td>{_e(r.model)}</td><td class=n>{r.estimate:.4f} ± {r.estimate_se:.4f}</td>"
        f"<td class=n>{r.holdout:.4f} ± {r.holdout_se:.4f}</td>"
        f"<td class=n>{r.difference:+.4f}</td><td class=n>{r.z:+.1f}</td></tr>"
        for r in t.itertuples())
    return (f"<h3>What the tuning expected and what happened (NDCG@{int(t['k'].iloc[0])})</h3>"
            f"<p>Estimate: {head}. Holdout: this run's evaluation, after the cutoff. A |z| "
            "above 2 means the tuning's window did not predict the holdout.</p>"
            "<table class=metrics><tr><th>model</th><th>tuning window</th><th>holdout</th>"
            f"<th>difference</th><th>z</th></tr>{rows}</table>")


def _ranked_by(stats: dict) -> str:
    """Which model ranked the lists (the learned ranker or the blend), the ranker's
    validation against the blend, and why the blend ranked when it did."""
    br = stats.get("build_recs") or {}
    if not br:
        return ""
    rk = (stats.get("train_cf") or {}).get("ranker") or {}
    v = rk.get("validation") or {}
    line = f"Ranked by: <b>{_e(br.get('ranked_by') or 'hybrid')}</b>"
    if v:
        line += (f". The learned ranker's validation (as of {_e(rk.get('as_of'))}, "
                 f"{_e(v.get('users'))} users): NDCG@{_e(v.get('k'))} {_e(v.get('ranker_ndcg'))} "
                 f"against the blend's {_e(v.get('blend_ndcg'))}, gain {_e(v.get('gain'))} "
                 f"± {_e(v.get('se'))}")
    why = br.get("ranker_reason")
    if br.get("ranked_by") != "ranker" and why:
        line += f". Why the blend ranked: {_e(why)}"
    return f"<p>{line}.</p>"


def _metrics_section(metrics: pd.DataFrame, info: dict, trend: pd.DataFrame, gate_k: int) -> str:
    out = ["<h2>Offline evaluation</h2>"]
    if info:
        facts = {k: info.get(k) for k in ("split", "train_pairs", "test_users", "evaluated_users",
                                           "train_end", "slots_off", "skipped") if info.get(k)}
        blend = info.get("blend") or {}
        out.append("<p>" + "; ".join(f"{_e(k)}: {_e(v)}" for k, v in facts.items())
                   + (f"; hybrid blend: visual weight {blend.get('visual_weight')}, history "
                      f"shrink {blend.get('history_shrink')} (tuned on the training part: "
                      f"{blend.get('tuned')})" if blend else "") + "</p>")
    if metrics.empty:
        out.append("<p>No metrics for this run.</p>")
        return "\n".join(out)
    cols = [m for m in METRICS if m != "users"]
    for sl in SLICES:
        part = metrics[metrics["slice"] == sl]
        for k in sorted(part["k"].unique()):
            pk = part[part["k"] == k]
            n = pk[pk["metric"] == "users"]["value"]
            users = int(n.iloc[0]) if len(n) else 0
            out.append(f"<h3>{_e(sl)} @ K={int(k)} ({users:,} users)</h3>")
            if users == 0:
                out.append("<p>No users in this slice.</p>")
                continue
            pv = pk.pivot_table(index="model", columns="metric", values="value")
            rows = "".join(
                f"<tr><td>{_e(m)}</td>" + "".join(
                    f"<td class=n>{pv.loc[m, c]:.4f}</td>" if c in pv.columns else "<td></td>"
                    for c in cols) + "</tr>"
                for m in MODELS if m in pv.index)
            out.append("<table class=metrics><tr><th>model</th>"
                       + "".join(f"<th>{_e(c)}</th>" for c in cols) + f"</tr>{rows}</table>")
    out.append(_estimates_table(metrics, info))
    plots = []
    kmax = int(metrics["k"].max())
    for metric, k in (("ndcg", gate_k), ("recall", kmax), ("coverage", kmax)):
        t = trend[(trend["slice"] == "all") & (trend["k"] == k) & (trend["metric"] == metric)]
        series = {m: list(zip(g["ds"], g["value"].astype(float)))
                  for m, g in t.groupby("model")}
        plots.append(svg_trend({m: series[m] for m in MODELS if m in series},
                               f"{metric}@{k} (all users) by ds"))
    out.append("<h3>Trends across runs</h3><div class=plots>" + "".join(plots) + "</div>")
    return "\n".join(out)


def _realised_section(wh: Path, ds: str, stats: dict, tonight: pd.DataFrame,
                      trend: pd.DataFrame, k: int) -> str:
    """How the published lists did (docs/operations.md): tonight's realised metrics per
    list, the one-day realised NDCG of each list beside the offline NDCG of the night
    that published it, the drop warning, and what the rules and the feedback left out."""
    ev = stats.get("evaluate") or {}
    real = ev.get("realised") or {}
    out = ["<h2>How the published lists did</h2>"]
    if real.get("warning"):
        out.append(f"<p class=bad>WARNING: {_e(real['warning'].get('message'))}</p>")
    head = tonight[tonight["slice"] == "all"] if len(tonight) else tonight
    if len(head):
        pv = head.pivot_table(index=[C.LIST_DS, "horizon_days"], columns="metric",
                              values="value")
        cols = [c for c in REALISED_COLUMNS if c in pv.columns]
        rows = "".join(f"<tr><td>{_e(d)}</td><td class=n>{int(h)}</td>" + "".join(
            f"<td class=n>{_fmt(float(r[c]))}</td>" if pd.notna(r[c]) else "<td></td>"
            for c in cols) + "</tr>" for (d, h), r in pv.iterrows())
        out.append("<p>Each list of the last nights against the engagements after it "
                   "(users: active in the window).</p><table class=metrics><tr><th>list of"
                   "</th><th>days after</th>" + "".join(f"<th>{_e(c)}</th>" for c in cols)
                   + f"</tr>{rows}</table>")
    else:
        out.append(f"<p>No published list to measure yet: {_e(real.get('skipped') or 'the first night, or none in the horizon')}.</p>")
    hist = pd.concat([W.read_recent(wh, "realised_metrics", ds, 30), tonight.assign(ds=ds)],
                     ignore_index=True)
    one = hist[(hist["horizon_days"] == 1) & (hist["slice"] == "all") & (hist["metric"] == "ndcg")]
    series = {"realised": sorted((str(d), float(v)) for d, v in
                                 one.groupby(C.LIST_DS)["value"].mean().items())}
    off = trend[(trend["slice"] == "all") & (trend["k"] == k) & (trend["metric"] == "ndcg")]
    for m in ("hybrid", "ranker"):
        g = off[off["model"] == m]
        if len(g):
            series[m] = list(zip(g["ds"].astype(str), g["value"].astype(float)))
    out.append("<div class=plots>" + svg_trend(
        series, f"NDCG@{k}: realised one day after each list vs the offline holdout, by ds")
        + "</div>")
    blocked = (stats.get("build_interactions") or {}).get("blocked") or {}
    left = (stats.get("candidates") or {}).get("left_out") or {}
    rules = ", ".join(f"{_e(r)} {int(n):,}" for r, n in sorted(blocked.items())) or "none"
    line = (f"<p>Blocked by availability and the rules file (never recommended tonight): "
            f"{rules}. Left out of users' lists by the feedback: "
            f"{int(left.get('rested_pairs', 0)):,} (user, item) pairs rested after "
            f"unengaged shows ({int(left.get('impressions', 0)):,} impressions read), "
            f"{int(left.get('dismissed_pairs', 0)):,} dismissed and "
            f"{int(left.get('near_duplicate_pairs', 0)):,} near-duplicates of dismissed items")
    ex = left.get("rested_example")
    if ex:
        line += (f"; e.g. user {_e(ex['user_id'])} no longer sees {_e(ex['item_id'])} after "
                 f"{int(ex['shows'])} unengaged shows")
    out.append(line + ".</p>")
    return "\n".join(out)


def _gallery_section(read: Callable[[str], Path], settings: Settings, thumbs: Thumbs,
                     titles: dict, pseudonymized: bool) -> str:
    e = settings.eval
    recs = W.read_folder(read("user_recs"))
    out = ["<h2>Gallery: sample users</h2>"]
    if recs.empty or e.report_users == 0:
        return "\n".join(out + ["<p>No recommendations staged.</p>"])
    profile = W.read_folder(read("user_profile"), [C.USER_ID, "segment"])
    cold = set(profile.loc[profile["segment"] == "cold", C.USER_ID].astype(str))
    variety = recs.groupby(C.USER_ID)["reason"].nunique().sort_index()
    warm = [u for u in variety.sort_values(ascending=False, kind="stable").index if u not in cold]
    users = warm[:max(1, e.report_users - 1)] + sorted(u for u in variety.index if u in cold)[:1]
    users = users[:e.report_users]
    pairs = W.read_folder(read("interactions"), [C.USER_ID, C.ITEM_ID, "weight", "last_ts"])
    for n, u in enumerate(users, 1):
        hist = pairs[(pairs[C.USER_ID].astype(str) == u) & (pairs["weight"] > 0)]
        hist = hist.sort_values("last_ts", ascending=False).head(e.report_history)
        label = f"user #{n} (id pseudonymised)" if pseudonymized else f"user {_e(u)}"
        seg = "cold user: no history in the window" if u in cold else f"{len(hist)} recent items shown"
        out.append(f"<section class=user><h3>{label} <small>{seg}</small></h3>"
                   "<div class=row><span class=lab>history</span>"
                   + ("".join(_card(thumbs, titles, str(r.item_id),
                                    [f"{pd.Timestamp(r.last_ts):%Y-%m-%d}", f"w {r.weight:.1f}"])
                              for r in hist.itertuples()) or "<i>none</i>") + "</div>")
        ur = recs[recs[C.USER_ID].astype(str) == u].sort_values("rank")
        out.append("<div class=row><span class=lab>recommended</span>"
                   + "".join(_card(thumbs, titles, str(r.item_id),
                                   [f"#{int(r.rank)} score {r.score:.3f}", _e(r.reason)]
                                   + ([f"like {_e(titles.get(str(r.reason_item_id), r.reason_item_id))}"]
                                      if isinstance(r.reason_item_id, str) and r.reason_item_id else []))
                             for r in ur.itertuples()) + "</div></section>")
    return "\n".join(out)


def _similar_section(read: Callable[[str], Path], settings: Settings, thumbs: Thumbs,
                     titles: dict) -> str:
    sim = W.read_folder(read("item_similar"))
    out = ["<h2>Gallery: visually similar items (item_similar)</h2>"]
    if sim.empty or settings.eval.report_similar == 0:
        return "\n".join(out + ["<p>No item_similar rows staged.</p>"])
    pop = W.read_folder(read("item_popularity"),
                        [C.ITEM_ID, "trending_rank"]).sort_values("trending_rank")
    have = set(sim[C.ITEM_ID].astype(str))
    items = [i for i in pop[C.ITEM_ID].astype(str) if i in have][:settings.eval.report_similar]
    for i in items:
        s = sim[sim[C.ITEM_ID].astype(str) == i].sort_values("rank").head(6)
        out.append("<div class=row><span class=lab>item</span>"
                   + _card(thumbs, titles, i, [_e(titles.get(i, i))[:28]])
                   + "<span class=lab>similar</span>"
                   + "".join(_card(thumbs, titles, str(r.similar_item_id),
                                   [f"#{int(r.rank)} cos {r.similarity:.3f}"])
                             for r in s.itertuples()) + "</div>")
    return "\n".join(out)


CSS = """
body{font:14px/1.4 system-ui,-apple-system,'DejaVu Sans',sans-serif;margin:24px;color:#222;max-width:1400px}
h1{margin:0 0 4px}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr.tot td{font-weight:bold}.ok{color:#1a7f37}.bad{color:#b00020;font-weight:bold}.warn{color:#a15c00}
.row{display:flex;flex-wrap:wrap;align-items:flex-start;gap:6px;margin:6px 0}
.lab{writing-mode:vertical-rl;transform:rotate(180deg);color:#777;font-size:12px}
.card{margin:0;width:108px;font-size:11px;text-align:center}
.card img,.noimg{width:96px;height:96px;object-fit:contain;border:1px solid #ddd;background:#fafafa}
.noimg{display:flex;align-items:center;justify-content:center;color:#999;margin:auto}
.plots{display:flex;flex-wrap:wrap;gap:12px}.plot .pt{font-size:13px;font-weight:bold}
.plot .tick{font-size:12px;fill:#444}.plot .ax{stroke:#777}.plot .grid{stroke:#e6e6e6}
.plot .pt-hover:hover circle:first-child{r:6}.plot .bar:hover rect{fill:#ff7f0e}
section.user{border-top:1px dashed #ddd;padding-top:4px}small{color:#777;font-weight:normal}
"""

# Counts the thumbnails the browser decoded (shown at the bottom; read by the test).
SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  var el = document.getElementById('img-status');
  el.setAttribute('data-images-total', imgs.length);
  el.setAttribute('data-images-loaded', ok);
  el.textContent = ok + ' of ' + imgs.length + ' thumbnails loaded';
});
"""


def render_report(settings: Settings, ds: str, read: Callable[[str], Path],
                  gate: dict | None = None) -> str:
    """The report's HTML for ``ds`` (see the module doc): ``read`` opens a staged artifact
    (``ctx.input``); ``gate`` is the quality gate's verdict when publish is still running
    (else it is read from publish's record)."""
    wh = Path(settings.paths.warehouse_root)
    stats = W.stage_records(wh, ds)
    catalog = W.read_folder(read("catalog"))
    titles = dict(zip(catalog[C.ITEM_ID].astype(str), catalog[C.TITLE].astype(str))) \
        if len(catalog) else {}
    thumbs = Thumbs(catalog if len(catalog) else pd.DataFrame(columns=[C.ITEM_ID, C.IMAGE_URI]),
                    Path(settings.paths.image_root), settings.eval.thumb_px,
                    settings.paths.allowed_image_roots())
    metrics = W.read_folder(read("eval_metrics"))
    trend = pd.concat([W.read_recent(wh, "eval_metrics", ds, 30), metrics.assign(ds=ds)],
                      ignore_index=True)
    pub = stats.get(publisher().name) or {}
    gate = gate or pub.get("quality_gate") or {}
    if gate.get("status") == "refused":
        status = "<span class=bad>REFUSED by the quality gate: not published</span>"
    elif pub.get("status") == "succeeded":
        status = f"<span class=ok>published</span> (version {_e(pub.get('version'))})"
    else:
        status = "<span class=warn>not published yet</span>"
    model = (stats.get("build_recs") or {}).get("model_version", "")
    body = [f"<h1>vrec run report — {_e(ds)}</h1>",
            f"<p>Status: {status}. Model: <code>{_e(model)}</code>. Warehouse: "
            f"<code>{_e(wh)}</code>.</p>",
            _ranked_by(stats),
            _pipeline_section(stats, W.staged_quarantine(wh, ds)),
            _failures_section(wh, ds),
            _gate_section(gate),
            _metrics_section(metrics, (stats.get("evaluate") or {}).get("evaluation") or {},
                             trend, settings.eval.gate_k),
            _realised_section(wh, ds, stats, W.read_folder(read("realised_metrics")), trend,
                              settings.recs.k),
            _gallery_section(read, settings, thumbs, titles,
                             bool((stats.get("build_recs") or {}).get("pseudonymized"))),
            _similar_section(read, settings, thumbs, titles),
            '<p id="img-status" data-images-total="?" data-images-loaded="?">'
            "thumbnails: page scripts off</p>"]
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f"<title>vrec run report {_e(ds)}</title><style>{CSS}</style></head><body>"
            + "\n".join(body) + f"<script>{SCRIPT}</script></body></html>")


def write_report(settings: Settings, ds: str, read: Callable[[str], Path],
                 gate: dict | None = None) -> Path:
    """Render and write the report of ``ds`` atomically (:func:`render_report`); returns
    its path."""
    path = report_path(settings.paths.warehouse_root, ds)
    W._atomic_write_text(path, render_report(settings, ds, read, gate))
    return path

