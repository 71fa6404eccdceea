"""Real-data suite (marker ``realdata``): MovieLens-small with posters from
../shared/datasets. Run by `make test-real` and by .ci/run when the folder exists."""

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vrec import columns as C
from vrec.airflow.env import airflow_env, dags_test, migrate
from vrec.data.movielens import adapt_movielens
from vrec.io import warehouse as W
from vrec.io.rawio import list_partitions

ML = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "movielens-small"
pytestmark = pytest.mark.realdata



@pytest.fixture(autouse=True)
def _needs_the_datasets():
    """Selected with -m realdata, a missing folder is a failure, never a skip."""
    if not ML.is_dir():
        pytest.fail(f"the real-data suite needs {ML}")


def test_adapter_on_full_movielens(tmp_path):
    stats = adapt_movielens(ML, tmp_path / "raw")
    ratings = pd.read_csv(ML / "ratings.csv")
    assert stats["events"] == len(ratings) == 100836
    assert stats["users"] == ratings["userId"].nunique() == 610
    assert stats["items"] == len(pd.read_csv(ML / "movies.csv"))
    assert stats["with_poster"] == len(list((ML / "posters").glob("*.jpg")))
    parts = list_partitions(tmp_path / "raw", "events")
    total = sum(len(pd.read_parquet(tmp_path / "raw" / "events" / f"ds={p}")) for p in parts)
    assert total == len(ratings)
    assert parts[-1] == "2018-09-24"


@pytest.fixture(scope="module")
def ml_runs(tmp_path_factory):
    """The DAG through Airflow on ratings since 2018-01-01 (49 users, ~3.3k rated movies,
    ~1.1k posters), for the last two logical dates."""
    tmp = tmp_path_factory.mktemp("ml")
    raw, wh = tmp / "raw", tmp / "wh"
    adapt_movielens(ML, raw, since=dt.date(2018, 1, 1), rated_only=True)
    cfg = tmp / "vrec.yaml"
    cfg.write_text(f"paths: {{raw_root: {raw}, image_root: {raw}, warehouse_root: {wh}}}\n"
                   "spark: {master: 'local[2]', quick_jit: true, conf: {spark.sql.shuffle.partitions: '4', "
                   "spark.ui.enabled: 'false'}}\n"
                   # MovieLens users rate in single sessions: hold out each user's latest
                   "eval: {split: user}\n")
    env = airflow_env(tmp / "airflow", config=cfg, spark_master="local[2]")
    migrate(env)
    days = ["2018-09-23", "2018-09-24"]
    rcs = [dags_test(d, env, log_path=tmp / f"{d}.log") for d in days]
    return {"raw": raw, "wh": wh, "days": days, "rcs": rcs, "tmp": tmp}


def test_movielens_dag_publishes_valid_recs(ml_runs):
    logs = [(ml_runs["tmp"] / f"{d}.log").read_text()[-3000:] for d in ml_runs["days"]]
    assert ml_runs["rcs"] == [0, 0], logs
    wh, raw, ds = ml_runs["wh"], ml_runs["raw"], ml_runs["days"][-1]
    recs = W.read_table(wh, "user_recs", ds)
    events = pd.concat(pd.read_parquet(raw / "events" / f"ds={p}")
                       for p in list_partitions(raw, "events"))
    assert set(recs[C.USER_ID]) == set(events[C.USER_ID])
    assert (recs.groupby(C.USER_ID)["rank"].apply(sorted).apply(lambda r: r == list(range(1, 11)))).all()
    rated = set(zip(events[C.USER_ID], events[C.ITEM_ID]))
    assert not rated & set(zip(recs[C.USER_ID], recs[C.ITEM_ID]))
    items = W.read_table(wh, "items", ds)
    assert set(recs[C.ITEM_ID]) <= set(items[C.ITEM_ID])
    # the evaluate stage measured every model with the per-user split (titles: a text
    # model); the gate ran
    from vrec.core.models import MODELS
    from vrec.executor import RunLayout

    for d in ml_runs["days"]:
        m = W.read_table(wh, "eval_metrics", d)
        # the user split measures the night's ranker: a row when one was trained
        ranker = RunLayout(wh, d).record("train_cf")["ranker"]
        print(f"\nMovieLens DAG {d}: ranker {ranker.get('skipped') or ranker.get('validation')}")
        expect = set(MODELS) - (set() if ranker.get("chosen") is not None else {"ranker"})
        assert set(m.loc[m["slice"] == "all", "model"]) == expect
        assert W.manifest(wh, d)["evaluation"]["split"] == "user"
        print(f"\nMovieLens DAG {d}: gate {W.manifest(wh, d)['quality_gate']['message']}")
    assert (wh / "reports" / "runs" / f"vrec_report_{ds}.html").is_file()


def test_movielens_posters_are_embedded_once(ml_runs):
    wh, days = ml_runs["wh"], ml_runs["days"]
    first = W.read_stage_stats(wh, days[0]).set_index("stage").loc["embed_items"]
    second = W.read_stage_stats(wh, days[1]).set_index("stage").loc["embed_items"]
    items = W.read_table(wh, "items", days[1])
    posters = items[C.IMAGE_URI].notna().sum()
    assert first["embedded_new"] >= 0.95 * posters and second["embedded_new"] == 0
    q = W.read_table(wh, "quarantine", days[1])
    assert (q[q["source"] == "images"]["reason"] == "no_image_uri").sum() == len(items) - posters
    sims = W.read_table(wh, "item_similar", days[1])
    assert sims[C.ITEM_ID].nunique() >= 0.95 * posters


def test_movielens_poster_embeddings_quality_report(ml_runs):
    """Share embedded, quarantine by reason, and top-1 visual neighbour cosine vs random
    pairs on the real posters (numbers printed for the closing note)."""
    import sys

    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from harness import neighbour_contrast

    wh, ds = ml_runs["wh"], ml_runs["days"][-1]
    items = W.read_table(wh, "items", ds)
    vec = pd.read_parquet(W.run_dir(wh, ds) / "item_vectors")
    q = W.read_table(wh, "quarantine", ds)
    reasons = q[q["source"] == "images"]["reason"].value_counts().to_dict()
    with_image = items[C.IMAGE_URI].notna().sum()
    emb = np.stack(vec["embedding"].to_numpy()).astype(np.float32)
    top1, rand = neighbour_contrast(emb)
    print(f"\nMovieLens posters: {len(vec)}/{with_image} embedded "
          f"({len(vec) / with_image:.3f} of items with a poster; {len(items)} items), "
          f"quarantine {reasons}, mean top-1 cosine {top1:.3f} vs random pairs {rand:.3f}")
    assert len(vec) / with_image >= 0.98
    assert top1 > rand + 0.1


def _eval(dataset, **kw):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import harness as evaluation
    from realdata_embeddings import DATASETS, dataset_embeddings

    vec = dataset_embeddings(dataset)  # cached in benchmarks/.cache after the first run
    if dataset == "movielens":
        return evaluation.run_movielens(DATASETS / "movielens-small", vec)
    return evaluation.run_fashion(DATASETS / "fashion-small", vec, **kw)


def test_nightly_evaluation_on_movielens_hybrid_not_worse_than_als_and_beats_popularity():
    """The models of the nightly evaluate stage on all of MovieLens-small with the
    per-user split (the table in benchmarks/README.md: benchmarks/eval_models.py)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import harness as evaluation
    from realdata_embeddings import DATASETS, dataset_embeddings

    from vrec.core.models import MODELS

    frame, info = evaluation.run_movielens_models(DATASETS / "movielens-small",
                                                  dataset_embeddings("movielens"))

    def v(model, metric="ndcg", slice_="all", k=10):
        m = frame[(frame["model"] == model) & (frame["slice"] == slice_) & (frame["k"] == k)
                  & (frame["metric"] == metric)]
        return float(m["value"].iloc[0])

    print("\nMovieLens NDCG@10: " + ", ".join(f"{m} {v(m):.4f}" for m in MODELS
                                              if m in set(frame["model"]))
          + f"; slices {info['slices']}; blend {info['blend']}; slots_off {info['slots_off']}")
    assert info["evaluated_users"] > 550 and info["slices"]["cold_items"] > 100
    assert v("hybrid") >= v("als") - 2 * v("hybrid", "ndcg_se")  # not worse than ALS only
    assert v("hybrid") - v("popularity") > 2 * np.hypot(v("hybrid", "ndcg_se"),
                                                       v("popularity", "ndcg_se"))
    assert v("als") > 2 * v("visual")  # posters are a weak taste signal
    # titles, genres and tags reach items nobody rated before, which ALS cannot
    assert v("text", slice_="cold_items") > 0 and v("als", slice_="cold_items") == 0
    assert v("hybrid", "recall", k=50) > v("hybrid", "recall", k=10)


def test_hybrid_on_movielens_never_loses_to_als():
    """Posters are a weak taste signal and titles, genres and tags a modest one: the
    hybrid tuned forward in time must not lose to ALS (configured or tuned) beyond noise,
    and a cold-start map no better than chance must not take list places."""
    r = _eval("movielens")
    print(f"\nMovieLens hybrid: {r['ndcg_all']} vs {r['hybrid_vs']} "
          f"map {r['map_quality']} cf {r['cf_tuning']['chosen']} blend {r['tuning']['chosen']} "
          f"slots_off {r['slots_off']} estimates {r['estimate_vs_holdout']}")
    assert r["users"] > 550
    n = r["ndcg_all"]
    for peer in ("als_configured", "als_tuned"):
        d = r["hybrid_vs"][peer]
        assert d["diff"] >= -2 * d["stderr"], peer
    assert r["tuning"]["chosen_ndcg"] >= r["tuning"]["cf_only_ndcg"]
    t = r["cf_tuning"]
    if t.get("full_grid"):  # screened: plain points on short fits, the prior's on full ones
        start = next(iter(t["full_grid"]))  # the best plain point, fit again in full
        assert t["grid"][start] >= t["configured_ndcg"]
        assert t["chosen_ndcg"] >= t["full_grid"][start]
    else:
        assert t["chosen_ndcg"] >= t["configured_ndcg"]
    if r["map_quality"]["auc_mapped"] < 0.55:
        assert r["new_arrival_slots"] == 0 and r["slots_off"]
    assert n["als_tuned"] > 2 * n["visual"]
    # the model the night would publish (the learned ranker only when it won its
    # validation) never loses to the tuned ALS beyond noise either
    d = r["published_vs"]["als_tuned"]
    assert d["diff"] >= -2 * d["stderr"], d


def test_pictures_pay_on_fashion_forward_in_time():
    """Real photos, simulated shoppers, opaque titles (the content side sees only the
    pictures): tuned on the week before the holdout, the image-regularised CF model and
    the hybrid beat the tuned ALS beyond noise on the following week; the learned
    preference beats the mean profile; new arrivals (which ALS cannot recommend) are
    reached; and the tuning's estimates agree with the holdout."""
    r = _eval("fashion", titles="opaque")
    n, vs = r["ndcg_all"], r["hybrid_vs"]
    print(f"\nfashion (opaque titles): {n} vs {vs} cf {r['cf_tuning']['chosen']} "
          f"blend {r['tuning']['chosen']} cold {r['cold']} agree {r['estimate_vs_holdout']}")
    assert r["cf_tuning"]["chosen"]["visual_prior"] > 0  # the tuning takes the image prior
    assert vs["als_tuned"]["diff"] > 2 * vs["als_tuned"]["stderr"]
    assert vs["als_configured"]["diff"] > 2 * vs["als_configured"]["stderr"]
    p = r["paired"]["visual_pref vs visual"]
    assert p["diff"] > 2 * p["stderr"]
    cold = r["cold"]
    assert cold["users_with_new_relevant"] > 300
    assert cold["recall_at_k"]["als"] == 0 and cold["recall_at_k"]["visual_pref"] > 0
    for m in ("als", "hybrid"):  # what the tuning expected is what the next week shows
        assert abs(r["estimate_vs_holdout"][m]["z"]) < 3, m
    # the learned ranker, trained the week before the tuning window, wins its validation
    # against the blend; on the holdout week the published lists stay within noise of
    # the hybrid and above the tuned ALS (2,000 shoppers resolve neither gain with
    # pictures only: +0.0039 ± 0.0020 over the tuned ALS here; the 10,000-shopper
    # benchmark measures them, at 10 SE and more)
    rk = r["ranker"]
    print(f"ranker {rk['chosen']} validation {rk['validation']} vs hybrid {r['ranker_vs']['hybrid']}")
    assert rk["chosen"]["use"] and rk["train"]["queries"] >= 500
    d = r["published_vs"]["hybrid"]
    assert d["diff"] > -2 * d["stderr"], d
    d = r["published_vs"]["als_tuned"]
    assert d["diff"] > d["stderr"], d


def test_titles_as_shops_write_them_pay_on_fashion():
    """The same shoppers with titles as shops write them ("Navy Blue Shirts"): the text
    side sees article type and colour, so the text model beats the picture-only
    preference beyond noise and the hybrid stays above the tuned ALS."""
    r = _eval("fashion", titles="shop")
    n, vs = r["ndcg_all"], r["hybrid_vs"]
    print(f"\nfashion (shop titles): {n} vs {vs} cf {r['cf_tuning']['chosen']} "
          f"blend {r['tuning']['chosen']} paired {r['paired']}")
    t = r["paired"]["text vs visual"]
    assert t["diff"] > 2 * t["stderr"]
    assert vs["als_tuned"]["diff"] > 2 * vs["als_tuned"]["stderr"]
    # the learned ranker wins its validation and publishes; on the holdout week the
    # published lists stay within noise of the hybrid and above the tuned ALS beyond
    # noise. 2,000 shoppers do not resolve the ranker's gain over the hybrid: fit on
    # under 2,000 queries it moved from +0.0058 to +0.0002 (SE 0.002) with changes meant
    # to leave the lists as they were; the 10,000-shopper benchmark measures it
    # (benchmarks/README.md, "The learned ranker")
    rk = r["ranker"]
    print(f"ranker {rk['chosen']} validation {rk['validation']} vs hybrid {r['ranker_vs']['hybrid']}")
    assert rk["chosen"]["use"]
    d = r["published_vs"]["hybrid"]
    assert d["diff"] > -2 * d["stderr"], d
    d = r["published_vs"]["als_tuned"]
    assert d["diff"] > 2 * d["stderr"], d


def test_movielens_runs_pass_every_suite_and_build_data_docs(ml_runs):
    """The GX suites run in the DAG on real data: all six pass (warnings recorded)."""
    import json

    from vrec.io.validation import docs_index

    wh = ml_runs["wh"]
    for ds in ml_runs["days"]:
        stats = W.read_table(wh, "run_stats", ds).set_index("stage")
        suites = {**json.loads(stats.loc["validate_inputs", "details"])["validation"],
                  **json.loads(stats.loc["validate_outputs", "details"])["validation"]}
        print(f"\nMovieLens {ds} validation: " + "; ".join(
            f"{s}: rows={r['rows']} ok={r['success']} warnings={r['warnings']}"
            for s, r in suites.items()))
        assert set(suites) == {"raw_events", "raw_catalog", "item_embeddings", "user_recs",
                               "user_lists", "item_similar"}
        assert all(r["success"] and r["rows"] > 0 for r in suites.values())
    assert docs_index(wh).is_file()
