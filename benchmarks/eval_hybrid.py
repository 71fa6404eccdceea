"""Real-data quality of the published lists, forward in time: MovieLens-small (posters,
titles, genres, tags) and fashion-small with simulated shoppers of several generative
forms, each with opaque titles (pictures only) and with titles as shops write them.
Every run tunes the CF model and the blend on a forward window before the holdout, as
the nightly run does, and reports NDCG@10 with the paired per-user difference ± SE
against ALS at the configured settings, ALS tuned the same way, and the best ALS of a
grid picked in hindsight on the holdout. The learned ranker trains on the window before
the tuning window, is validated against the blend on the tuning window and refit there,
as the night does; ``published`` is the model the night would publish (the ranker when
it won its validation, else the hybrid). Writes benchmarks/results/hybrid_<dataset>.json.

    .venv/bin/python benchmarks/eval_hybrid.py --dataset movielens --als-grid
    .venv/bin/python benchmarks/eval_hybrid.py --dataset fashion --users 10000 --als-grid
    .venv/bin/python benchmarks/eval_hybrid.py --dataset fashion --forms funnel --titles shop

``--content image|text|both`` fixes the content features (default: the product's default).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import harness  # noqa: E402
from realdata_embeddings import DATASETS, dataset_embeddings  # noqa: E402

from vrec.config import CFSettings, ContentSettings  # noqa: E402
from vrec.data.fashion import FORMS  # noqa: E402

PEERS = ("als_configured", "als_tuned", "als_best_in_hindsight")
# the hindsight grid: every combination is fit and scored on the holdout
HINDSIGHT = CFSettings(tune_factors=(64, 128), tune_regularization=(0.1, 1.0, 10.0),
                       tune_alpha=(2.0, 5.0, 10.0, 20.0))


def summary(name: str, r: dict) -> str:
    """One line: the models' NDCG@10 and the published model's paired gains."""
    n = r["ndcg_all"]
    top = "published" if "published_vs" in r else "hybrid"
    v = r.get("published_vs") or r["hybrid_vs"]
    gains = " ".join(f"{p} {n[top] / n[p]:.3f}x ({v[p]['diff']:+.5f}±{v[p]['stderr']:.5f})"
                     for p in PEERS if n.get(p, 0) > 0)
    rk = r.get("ranker") or {}
    models = " ".join(f"{m} {n[m]:.5f}" for m in
                      ("popularity", "als", "visual", "visual_pref", "text", "hybrid", "ranker")
                      if m in n)
    models += (f" | ranker validation {rk.get('validation')} use={(rk.get('chosen') or {}).get('use')}"
               if rk else "")
    gains = f"{top} vs {gains}"
    agree = " ".join(f"{m} z={a['z']:+.1f}" for m, a in r["estimate_vs_holdout"].items())
    return (f"{name}: {models} | {gains} | cf {r['cf_tuning']['chosen']} "
            f"blend {r['tuning']['chosen']} | cold recall@10 {r['cold']['recall_at_k'].get(top)} "
            f"| estimate vs holdout {agree} | {r['seconds']:.0f}s")


def _pm(d: dict) -> str:
    return f"{d['diff']:+.4f} ± {d['stderr']:.4f}"


def markdown(res: dict) -> str:
    """The results table of benchmarks/README.md: one row per run (NDCG@10; paired
    per-user differences ± 1 SE; the tuning's estimate of the hybrid against the
    holdout, as z; cold recall@10 of the hybrid)."""
    head = ("| run | users | ALS configured | ALS tuned | best ALS in hindsight | visual_pref | "
            "text | **hybrid** | ÷ best ALS | − best ALS | − tuned ALS | hybrid estimate z "
            "| new-arrival recall@10 | CF chosen (f/reg/alpha/prior) | blend (vw/shrink/pref/text) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in res.items():
        n, v = r["ndcg_all"], r["hybrid_vs"]
        c, b = r["cf_tuning"]["chosen"] or {}, r["tuning"]["chosen"] or {}
        best = n.get("als_best_in_hindsight")
        lines.append(
            f"| {name} | {r['users']} | {n['als_configured']:.4f} | {n['als_tuned']:.4f} | "
            f"{best:.4f} | {n['visual_pref']:.4f} | {n.get('text', float('nan')):.4f} | "
            f"**{n['hybrid']:.4f}** | {n['hybrid'] / best:.3f} | "
            f"{_pm(v['als_best_in_hindsight'])} | {_pm(v['als_tuned'])} | "
            f"{r['estimate_vs_holdout'].get('hybrid', {}).get('z', float('nan')):+.1f} | "
            f"{r['cold']['recall_at_k'].get('hybrid') or 0:.4f} | "
            f"{c.get('factors')}/{c.get('regularization'):g}/{c.get('alpha'):g}/"
            f"{c.get('visual_prior'):g} | {b.get('visual_weight'):g}/{b.get('history_shrink'):g}/"
            f"{b.get('pref_mix'):g}/{b.get('text_mix', 0):g} |")
    return "\n".join(lines)


def markdown_ranker(res: dict) -> str:
    """The learned ranker's table: one row per run (NDCG@10; the published model's paired
    per-user differences ± 1 SE against the best ALS in hindsight, the tuned ALS and the
    hybrid; the ranker's validation gain over the blend; new-arrival recall@10 of the
    published lists, and of the ranker's lists with one reserved slot kept)."""
    head = ("| run | users | best ALS in hindsight | hybrid | ranker | published | **÷ best ALS** | "
            "− best ALS | − tuned ALS | ranker − hybrid | validation gain (SE) | rounds | "
            "new-arrival recall@10 | with a slot: NDCG, recall@10 |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, r in res.items():
        if "published_vs" not in r:
            continue
        n, v, rk = r["ndcg_all"], r["published_vs"], r["ranker"] or {}
        val = rk.get("validation") or {}
        rv = (r.get("ranker_vs") or {}).get("hybrid")
        cold = r["cold"]["recall_at_k"]
        slot = (f"{n['ranker_slots']:.4f}, {cold.get('ranker_slots') or 0:.4f}"
                if "ranker_slots" in n else "-")
        lines.append(
            f"| {name} | {r['users']} | {n['als_best_in_hindsight']:.4f} | {n['hybrid']:.4f} | "
            f"{n.get('ranker', float('nan')):.4f} | {n['published']:.4f} | "
            f"**{n['published'] / n['als_best_in_hindsight']:.3f}** | "
            f"{_pm(v['als_best_in_hindsight'])} | {_pm(v['als_tuned'])} | "
            f"{_pm(rv) if rv else '-'} | {val.get('gain', 0):+.4f} ({val.get('se', 0):.4f}) | "
            f"{(rk.get('train') or {}).get('rounds', '-')} | "
            f"{cold.get('published') or 0:.4f} | {slot} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", choices=["movielens", "fashion"], required=True)
    ap.add_argument("--forms", nargs="*", choices=list(FORMS), default=None,
                    help="fashion generative forms to run (default: all)")
    ap.add_argument("--titles", nargs="*", choices=["opaque", "shop"], default=["opaque", "shop"])
    ap.add_argument("--users", type=int, default=10000, help="fashion shoppers")
    ap.add_argument("--content", choices=["image", "text", "both"], default=None)
    ap.add_argument("--als-grid", action="store_true",
                    help="also score plain ALS over a grid in hindsight")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--table", nargs="*", type=Path, default=None,
                    help="print the Markdown table of result files (no run)")
    a = ap.parse_args(argv)
    if a.table is not None:
        for f in a.table:
            res = json.loads(f.read_text())
            res = {"movielens": res} if "ndcg_all" in res else res
            print(markdown(res) + "\n\n" + markdown_ranker(res))
        return 0
    vec = dataset_embeddings(a.dataset)
    content = ContentSettings(features=a.content) if a.content else None
    suffix = f"_{a.content}" if a.content else ""
    out = a.out or REPO / "benchmarks" / "results" / f"hybrid_{a.dataset}{suffix}.json"
    cf = HINDSIGHT if a.als_grid else CFSettings()
    if a.dataset == "movielens":
        res = harness.run_movielens(DATASETS / "movielens-small", vec, als_grid=a.als_grid,
                                    content=content, cf=cf)
        print(summary("movielens", res), flush=True)
    else:
        from vrec import columns as C
        from vrec.data.fashion import load_styles, simulate_shoppers

        styles = load_styles(DATASETS / "fashion-small", set(vec[C.ITEM_ID].astype(str)))
        res = json.loads(out.read_text()) if out.exists() else {}
        for form in a.forms or list(FORMS):
            sim = simulate_shoppers(styles, n_users=a.users, days=60, seed=0, form=form)
            als_cache: dict = {}  # the same shoppers: the plain ALS peers are fit once
            for titles in a.titles:
                t0 = time.perf_counter()
                r = harness.run_fashion(DATASETS / "fashion-small", vec, n_users=a.users,
                                        form=form, titles=titles, als_grid=a.als_grid,
                                        content=content, cf=cf, events=sim,
                                        als_cache=als_cache)
                r["seconds"] = round(time.perf_counter() - t0, 1)
                res[f"{form}/{titles}"] = r
                print(summary(f"{form}/{titles}", r), flush=True)
                out.write_text(json.dumps(res, indent=2, default=str))
    out.write_text(json.dumps(res, indent=2, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
