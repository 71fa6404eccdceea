"""The nightly stages as plain functions: each reads the run's staging area and the raw
zone, writes its outputs and a stats record, and returns a small summary dict.

Run staging for ds (``warehouse/_runs/<ds>/``)::

    events/ catalog/ interactions/ item_popularity/ user_profile/   build_interactions
    item_vectors/                        embed_items
    model/ (model/blend.json)            train_cf (+ blend tuning)
    cf_candidates/                       score_users
    hybrid/ out/user_recs/ out/item_similar/ out/item_popularity/ out/user_profile/
                                         build_recs
    validation/*.json                    validate_inputs, validate_outputs
    out/eval_metrics/                    evaluate (holdout metrics of four models)
    stats/*.json quarantine/*.parquet    every stage
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from vrec import columns as C
from vrec.config import Settings
from vrec.io import warehouse as W
from vrec.io.validation import docs_index


def _rd(settings: Settings, ds: str) -> Path:
    return W.run_dir(settings.paths.warehouse_root, ds)


def _write(df, path: Path, *, files: int = 1, sort: list[str] | None = None) -> None:
    out = df.repartition(files)
    if sort:
        out = out.sortWithinPartitions(*sort)
    out.write.mode("overwrite").parquet(str(path))


# ---------------------------------------------------------------- validate_inputs

def validate_inputs(spark, settings: Settings, ds: str) -> dict:
    """GX on the day's landed events (Spark) and the catalog snapshot (pandas); a
    critical failure fails the task before anything downstream runs."""
    from vrec.io.rawio import catalog_snapshot_ds, partition_dir
    from vrec.io.validation import catalog_frame, events_frame, raise_on_failure, validate_all

    raw, wh = settings.paths.raw_root, settings.paths.warehouse_root
    timer = W.StageTimer(wh, ds, "validate_inputs")
    snap = catalog_snapshot_ds(raw, ds)
    catalog = pd.read_parquet(partition_dir(raw, "catalog", snap))
    ev_dir = partition_dir(raw, "events", ds)
    if not ev_dir.is_dir() or not any(ev_dir.glob("*.parquet")):
        raise FileNotFoundError(f"no events landed for ds={ds}: {ev_dir} has no Parquet files "
                                "(an upstream export failed, or the date is outside the data)")
    ids = catalog[C.ITEM_ID].dropna().astype(str) if C.ITEM_ID in catalog else pd.Series([], dtype=str)
    catalog_ids = spark.createDataFrame(pd.DataFrame({C.ITEM_ID: ids.unique()}),
                                        schema="item_id string")
    events = events_frame(spark, ev_dir, catalog_ids, ds,
                          settings.validation.max_event_age_days).cache()
    try:
        n_events = events.count()
        results = validate_all(wh, ds, {
            "raw_catalog": (catalog_frame(catalog, settings.paths.image_root), len(catalog)),
            "raw_events": (events, n_events)}, {"event_types": list(C.EVENT_TYPES)},
            _rd(settings, ds) / "validation")
    finally:  # a cached plan would serve stale rows to a rerun after the files changed
        events.unpersist()
    warnings = sum(len(r.warnings) for r in results)
    timer.record(n_events + len(catalog), n_events + len(catalog), 0, warnings=warnings,
                 catalog_snapshot=snap, validation=_summary(results),
                 data_docs=str(docs_index(wh)))
    raise_on_failure(results)
    return {"events": n_events, "catalog": len(catalog), "warnings": warnings}


def _summary(results) -> dict:
    return {r.suite: {"success": r.success, "rows": r.rows, "evaluated": r.evaluated,
                      "failed": [f["expectation"] for f in r.failures],
                      "warnings": [f["expectation"] for f in r.warnings]} for r in results}


# ---------------------------------------------------------------- build_interactions

def build_interactions(spark, settings: Settings, ds: str) -> dict:
    """Clean and weight events as of ds; write catalog, interactions, item_popularity
    and user_profile."""
    from vrec.spark.interactions import item_popularity, run_build_interactions, user_profile

    wh, rd = settings.paths.warehouse_root, _rd(settings, ds)
    with W.StageTimer(wh, ds, "build_interactions") as timer:
        out = run_build_interactions(spark, settings.paths.raw_root, ds, settings.weights)
        _write(out["catalog"], rd / "catalog")
        # the cleaned events as of ds: the evaluate stage splits them at a time cutoff
        _write(out["events"].select(C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.VALUE, C.TS),
               rd / "events", sort=[C.TS])
        _write(out["interactions"], rd / "interactions", sort=[C.USER_ID, C.ITEM_ID])
        inter = spark.read.parquet(str(rd / "interactions"))
        _write(item_popularity(out["events"], out["catalog"], ds,
                               settings.recs.trending_half_life_days),
               rd / "item_popularity", sort=["trending_rank"])
        _write(user_profile(out["events"], inter, out["catalog"]), rd / "user_profile",
               sort=[C.USER_ID])
        qe = out["events_quarantine"].toPandas()
        qc = out["catalog_quarantine"].toPandas()
        nq = W.write_quarantine(wh, ds, "events", qe) + W.write_quarantine(wh, ds, "catalog", qc)
        n_in = out["events_today"].count()
        n_pairs = inter.count()
        n_users = inter.select(C.USER_ID).distinct().count()
        timer.record(n_in, n_pairs, nq, users=n_users,
                     events_used=int(out["events"].count()),
                     reasons=qe["reason"].value_counts().to_dict() if len(qe) else {})
    return {"pairs": n_pairs, "users": n_users, "quarantined": nq}


# ---------------------------------------------------------------- embed_items

def embed_items(spark, settings: Settings, ds: str) -> dict:
    """Embed new or changed catalog images; write the run's item vectors and the
    near-duplicate image pairs."""
    from vrec.images.embed import QualityPolicy, run_embed_items

    wh, rd = settings.paths.warehouse_root, _rd(settings, ds)
    e = settings.embed
    with W.StageTimer(wh, ds, "embed_items") as timer:
        catalog = spark.read.parquet(str(rd / "catalog"))
        res = run_embed_items(
            spark, catalog, warehouse=wh, image_root=settings.paths.image_root,
            backbone=e.backbone, batch_size=e.batch_size, ds=ds,
            weights_path=str(e.weights_path) if e.weights_path else None,
            allow_download=e.allow_download, arrow_batch=e.arrow_batch,
            policy=QualityPolicy(e.min_side, e.blank_std, e.duplicate_hamming,
                                 e.duplicate_min_cosine))
        W.write_table_folder(res["vectors"], rd / "item_vectors")
        W.write_table_folder(res["duplicates"], rd / "out" / "image_duplicates")
        nq = W.write_quarantine(wh, ds, "images", res["quarantine"])
        q = res["quarantine"]["reason"].value_counts().to_dict()
        timer.record(res["items"], len(res["vectors"]), nq, embedded_new=res["embedded_new"],
                     reused=res["reused"], model_version=res["model_version"],
                     near_duplicates=len(res["duplicates"]), reasons=q)
    return {"vectors": len(res["vectors"]), "embedded_new": res["embedded_new"],
            "reused": res["reused"], "near_duplicates": len(res["duplicates"])}


# ---------------------------------------------------------------- shared driver inputs

def _driver_inputs(rd: Path) -> dict:
    """Catalog (item_id, category), item vectors, interaction pairs and the trending
    order of a run, read on the driver with pyarrow."""
    def read(name: str, columns: list[str] | None = None) -> pd.DataFrame:
        return W.read_folder(rd / name, columns)

    pop = read("item_popularity", [C.ITEM_ID, "trending_rank"]).sort_values("trending_rank")
    return {"catalog": read("catalog", [C.ITEM_ID, C.CATEGORY]),
            "vectors": read("item_vectors", [C.ITEM_ID, "embedding"]),
            "pairs": read("interactions", [C.USER_ID, C.ITEM_ID, "weight", "last_ts"]),
            "trending": pop[C.ITEM_ID].astype(str).tolist()}


# ---------------------------------------------------------------- train_cf

def train_cf(spark, settings: Settings, ds: str) -> dict:
    """Train the configured CF engine on the run's interactions and save the model."""
    from vrec.core.cf import train_cf_model

    wh, rd = settings.paths.warehouse_root, _rd(settings, ds)
    with W.StageTimer(wh, ds, "train_cf") as timer:
        model = train_cf_model(spark, rd / "interactions", settings.cf, ds=ds,
                               extra_params={"weights": settings.weights.model_dump(mode="json")})
        model.save(rd / "model")
        n_pairs = spark.read.parquet(str(rd / "interactions")).count()
        blend = None
        if settings.recs.tune_blend:
            from vrec.core.tuning import tune_blend
            from vrec.spark.interactions import end_of_ds

            inp = _driver_inputs(rd)
            blend = tune_blend(inp["pairs"], inp["catalog"], inp["vectors"], inp["trending"],
                               cf=settings.cf, recs=settings.recs,
                               end=pd.Timestamp(end_of_ds(ds)))
            W.write_json(rd / "model" / "blend.json", blend)
            print(f"[vrec] {ds} blend tuning: {blend.get('skipped') or blend['chosen']} "
                  f"grid {blend['grid']}", flush=True)
        timer.record(n_pairs, len(model.user_ids), 0, items=len(model.item_ids),
                     model_version=model.version, engine=settings.cf.engine,
                     device=model.params["device"], fit_seconds=model.params["fit_seconds"],
                     blend=blend)
    return {"users": len(model.user_ids), "items": len(model.item_ids), "version": model.version,
            "engine": settings.cf.engine, "blend": (blend or {}).get("chosen")}


# ---------------------------------------------------------------- score_users

def score_users(spark, settings: Settings, ds: str) -> dict:
    """All-user CF top-N candidates with seen items excluded."""
    from vrec.core.cf import CFModel
    from vrec.spark.candidates import score_all_users

    wh, rd = settings.paths.warehouse_root, _rd(settings, ds)
    r = settings.recs
    with W.StageTimer(wh, ds, "score_users") as timer:
        model = CFModel.load(rd / "model", mmap=True)
        cands = score_all_users(spark, rd / "model", rd / "interactions", n=r.candidates,
                                block_size=r.block_size,
                                block_memory_mb=r.block_memory_mb,
                                seen_event_types=r.seen_event_types)
        _write(cands, rd / "cf_candidates", files=max(1, spark.sparkContext.defaultParallelism))
        n = spark.read.parquet(str(rd / "cf_candidates")).count()
        timer.record(len(model.user_ids), n, 0)
    return {"candidates": n}


# ---------------------------------------------------------------- build_recs

def build_recs(spark, settings: Settings, ds: str) -> dict:
    """Hybrid lists for every user (CF, visual profile, new arrivals, diversity, reasons),
    item_similar, and the analyst tables item_popularity and user_profile."""
    from pyspark.sql import functions as F

    from vrec.core.cf import CFModel
    from vrec.core.tuning import gate_new_arrivals, policy_from
    from vrec.privacy import pseudonym_col, resolve_salt
    from vrec.spark.ranking import build_item_space, build_user_recs, item_similar, save_space, user_inputs

    wh, rd = settings.paths.warehouse_root, _rd(settings, ds)
    r = settings.recs
    with W.StageTimer(wh, ds, "build_recs") as timer:
        salt = resolve_salt(settings.privacy)  # fail before any work when misconfigured
        model = CFModel.load(rd / "model")
        inp = _driver_inputs(rd)
        space, categories, map_quality = build_item_space(
            model, inp["catalog"], inp["vectors"], inp["pairs"], inp["trending"],
            cold_item_max_users=r.cold_item_max_users, map_min_users=r.map_min_users)
        blend_file = rd / "model" / "blend.json"
        blend = json.loads(blend_file.read_text()) if blend_file.is_file() else None
        ranked, policy, slots_off = gate_new_arrivals(space, policy_from(r, blend), map_quality,
                                                      r.new_arrival_min_auc)
        save_space(ranked, rd / "hybrid")
        version = f"{model.version}+vw{policy.visual_weight:g}h{policy.history_shrink:g}"
        users = user_inputs(spark.read.parquet(str(rd / "interactions")),
                            spark.read.parquet(str(rd / "user_profile")),
                            seen_event_types=r.seen_event_types,
                            half_life_days=r.profile_half_life_days, ds=ds)
        recs = build_user_recs(spark, users, space_dir=rd / "hybrid", model_dir=rd / "model",
                               categories=categories, policy=policy, model_version=version)
        clear = rd / ("user_recs_clear" if salt else "out/user_recs")
        _write(recs, clear, sort=[C.USER_ID, "rank"])
        profile = spark.read.parquet(str(rd / "user_profile"))
        if salt:  # pseudonyms sort differently: rewrite sorted by them
            out = spark.read.parquet(str(clear)).withColumn(
                C.USER_ID, pseudonym_col(F.col(C.USER_ID), salt))
            profile = profile.withColumn(C.USER_ID, pseudonym_col(F.col(C.USER_ID), salt))
            _write(out, rd / "out" / "user_recs", sort=[C.USER_ID, "rank"])
        _write(profile, rd / "out" / "user_profile", sort=[C.USER_ID])
        _write(spark.read.parquet(str(rd / "item_popularity")), rd / "out" / "item_popularity",
               sort=["trending_rank"])
        sim, recall = item_similar(spark, inp["vectors"], r.similar_k, min_similarity=r.similar_min,
                                   engine=r.similar_engine)
        _write(sim, rd / "out" / "item_similar", sort=[C.ITEM_ID, "rank"])
        if recall is not None and recall < r.faiss_recall_floor:
            raise RuntimeError(f"FAISS item_similar recall@{r.similar_k} {recall:.3f} is below "
                               f"recs.faiss_recall_floor {r.faiss_recall_floor}")
        facts = list_facts(spark, spark.read.parquet(str(rd / "out" / "user_recs")), space,
                           spark.read.parquet(str(rd / "user_profile")))
        n_sim = spark.read.parquet(str(rd / "out" / "item_similar")).count()
        timer.record(facts["users"], facts["rows"], 0, item_similar_rows=n_sim,
                     similar_engine=r.similar_engine, faiss_recall=recall,
                     model_version=version, blend={"visual_weight": policy.visual_weight,
                                                   "history_shrink": policy.history_shrink,
                                                   "tuned": bool(blend and blend.get("chosen"))},
                     cold_start_map=map_quality, pseudonymized=bool(salt),
                     new_arrival_slots=policy.new_arrival_slots, new_arrival_slots_off=slots_off,
                     **{k: v for k, v in facts.items() if k not in ("users", "rows")})
    return {"user_recs": facts["rows"], "item_similar": n_sim, "coverage": facts["coverage"],
            "reasons": facts["reasons"]}


def list_facts(spark, recs, space, profile) -> dict:
    """Numbers about the lists for run_stats, aggregated in Spark: users, rows, catalog
    coverage (distinct recommended items / catalog items), rows per reason, the share of
    lists holding a new arrival, and the cold users (trending lists)."""
    from pyspark.sql import functions as F

    new_ids = space.item_ids[np.asarray(space.new, dtype=bool)].astype(str).tolist()
    tot = recs.agg(F.countDistinct(C.USER_ID).alias("users"), F.count("*").alias("rows"),
                   F.countDistinct(C.ITEM_ID).alias("items")).first()
    new = spark.createDataFrame([(i,) for i in new_ids], "item_id string")
    with_new = (recs.join(F.broadcast(new), C.ITEM_ID, "left_semi")
                .select(C.USER_ID).distinct().count()) if new_ids else 0
    return {"users": int(tot["users"]), "rows": int(tot["rows"]),
            "coverage": round(tot["items"] / max(1, space.n), 4),
            "reasons": {r["reason"]: int(r["count"])
                        for r in recs.groupBy("reason").count().collect()},
            "lists_with_new_arrival": round(with_new / max(1, tot["users"]), 4),
            "new_arrivals": len(new_ids),
            "cold_users": profile.where(F.col("segment") == "cold").count()}


# ---------------------------------------------------------------- validate_outputs

def validate_outputs(spark, settings: Settings, ds: str) -> dict:
    """GX on the staged user_recs, per-user lists, item_similar (Spark) and the run's item
    vectors (pandas) before publish; a critical failure fails the task."""
    from vrec.io.validation import (
        embeddings_frame,
        raise_on_failure,
        recs_frames,
        similar_frame,
        validate_all,
    )

    wh, rd = settings.paths.warehouse_root, _rd(settings, ds)
    timer = W.StageTimer(wh, ds, "validate_outputs")
    catalog_ids = spark.read.parquet(str(rd / "catalog")).select(C.ITEM_ID)
    recs, lists = recs_frames(spark.read.parquet(str(rd / "out" / "user_recs")),
                              spark.read.parquet(str(rd / "out" / "user_profile")),
                              catalog_ids, settings.recs.k)
    recs, lists = recs.cache(), lists.cache()
    sim = similar_frame(spark.read.parquet(str(rd / "out" / "item_similar"))).cache()
    vectors = pd.read_parquet(rd / "item_vectors")
    ids = set(pd.read_parquet(rd / "catalog", columns=[C.ITEM_ID])[C.ITEM_ID].astype(str))
    emb = embeddings_frame(vectors, ids)
    try:
        frames = {"user_recs": (recs, recs.count()), "user_lists": (lists, lists.count()),
                  "item_similar": (sim, sim.count()), "item_embeddings": (emb, len(emb))}
        dim = int(emb["dim"].mode().iloc[0]) if len(emb) else 0
        results = validate_all(wh, ds, frames, {"k": settings.recs.k,
                                                "similar_k": settings.recs.similar_k, "dim": dim},
                               rd / "validation")
    finally:  # a cached plan would serve stale rows to a rerun after the files changed
        for df in (recs, lists, sim):
            df.unpersist()
    rows = sum(n for _, n in frames.values())
    timer.record(rows, rows, 0, warnings=sum(len(r.warnings) for r in results),
                 validation=_summary(results), data_docs=str(docs_index(wh)))
    raise_on_failure(results)
    return {name: n for name, (_, n) in frames.items()}


# ---------------------------------------------------------------- evaluate

EVAL_COLUMNS = {"model": "str", "slice": "str", "k": "int32", "metric": "str",
                "value": "float64"}


def holdout_for(spark, settings: Settings, ds: str, pairs: pd.DataFrame):
    """The run's holdout (README "Offline evaluation"): ``time`` aggregates the staged
    events before the end of ds minus ``eval.test_days`` with the run's weights (decay
    measured from the cutoff) and tests on the events after it; ``user`` splits the
    run's interaction ``pairs`` per user."""
    import datetime as dt

    from pyspark.sql import functions as F

    from vrec.core.evaluation import time_holdout, user_holdout
    from vrec.spark.interactions import aggregate_interactions, end_of_ds, event_weight_expr

    e, rd = settings.eval, _rd(settings, ds)
    end = pd.Timestamp(end_of_ds(ds))
    if e.split == "user":
        return user_holdout(pairs, end, fraction=e.test_fraction, min_pairs=e.min_user_pairs)
    cut_ds = (dt.date.fromisoformat(ds) - dt.timedelta(days=e.test_days)).isoformat()
    cut = end_of_ds(cut_ds)
    ev = spark.read.parquet(str(rd / "events"))
    train = (aggregate_interactions(ev.where(F.col(C.TS) < F.lit(cut)), settings.weights, cut_ds)
             .select(C.USER_ID, C.ITEM_ID, "weight", "last_ts").toPandas())
    test = (ev.where(F.col(C.TS) >= F.lit(cut))
            .withColumn("weight", event_weight_expr(settings.weights))
            .groupBy(C.USER_ID, C.ITEM_ID).agg(F.max("weight").alias("weight")).toPandas())
    return time_holdout(train, test, pd.Timestamp(cut))


def evaluate(spark, settings: Settings, ds: str) -> dict:
    """Holdout metrics of popularity, ALS-only, visual-only and hybrid lists (the
    production ranker) at each K and slice: staged as ``eval_metrics``."""
    from vrec.core.evaluation import evaluate_models

    wh, rd, e = settings.paths.warehouse_root, _rd(settings, ds), settings.eval
    with W.StageTimer(wh, ds, "evaluate") as timer:
        if e.enabled:
            inp = _driver_inputs(rd)
            holdout = holdout_for(spark, settings, ds, inp["pairs"])
            frame, info = evaluate_models(holdout, inp["catalog"], inp["vectors"], cf=settings.cf,
                                          recs=settings.recs, ks=e.ks, max_users=e.max_users,
                                          tune=e.tune)
        else:
            frame, info = pd.DataFrame(columns=list(EVAL_COLUMNS)), {"skipped": "eval.enabled is false"}
        frame = frame.astype(EVAL_COLUMNS)
        W.write_table_folder(frame, rd / "out" / "eval_metrics")
        headline = _headline(frame, e.gate_k)
        print(f"[vrec] {ds} evaluate ({info.get('split', '-')} split, "
              f"{info.get('evaluated_users', 0)} test users): "
              + (", ".join(f"{m} NDCG@{e.gate_k} {v:.4f}" for m, v in headline.items())
                 or info.get("skipped", "nothing measured")), flush=True)
        timer.record(info.get("test_pairs", 0), len(frame), 0, evaluation=info,
                     headline=headline)
    return {"rows": len(frame), "users": info.get("evaluated_users", 0), "headline": headline}


def _headline(frame: pd.DataFrame, k: int) -> dict:
    """NDCG@k over all users per model."""
    m = frame[(frame["slice"] == "all") & (frame["k"] == k) & (frame["metric"] == "ndcg")]
    return {str(r.model): round(float(r.value), 5) for r in m.itertuples()}


# ---------------------------------------------------------------- publish

def publish(settings: Settings, ds: str, *, override_gate: bool = False,
            override_reason: str = "") -> dict:
    """Check the quality gate, stage run_stats and quarantine, then publish all tables
    for ds atomically. A refused gate writes the run report and raises
    :class:`vrec.gate.QualityGateError` before anything is published."""
    from vrec.gate import QualityGateError, quality_gate

    wh, rd = settings.paths.warehouse_root, _rd(settings, ds)
    timer = W.StageTimer(wh, ds, "publish")
    eval_dir = rd / "out" / "eval_metrics"
    if not eval_dir.is_dir():
        raise W.PublishError(f"no staged eval_metrics for {ds} ({eval_dir}): run the evaluate "
                             "stage before publish")
    evaluation = (W.stage_records(wh, ds).get("evaluate") or {}).get("evaluation") or {}
    gate = quality_gate(wh, ds, pd.read_parquet(eval_dir), settings.eval,
                        split=evaluation.get("split"), override=override_gate,
                        reason=override_reason)
    W.StageTimer(wh, ds, "quality_gate").record(0, 0, 0, **gate)
    print(f"[vrec] {ds} {gate['message']}", flush=True)
    if gate["status"] == "refused":
        _report_quietly(settings, ds)
        raise QualityGateError(gate["message"])
    stats = W.run_stats_frame(wh, ds)
    quarantine = W.staged_quarantine(wh, ds)
    W.write_table_folder(stats, rd / "out" / "run_stats")
    W.write_table_folder(quarantine, rd / "out" / "quarantine")
    model_meta = json.loads((rd / "model" / "model.json").read_text())
    staged = {name: rd / "out" / name for name in W.PUBLISHED_TABLES if name != "items"}
    staged["items"] = rd / "catalog"
    # keep the model next to the tables: analysts and later stages can reload it
    model_dir = Path(wh) / "models" / f"ds={ds}"
    model_dir.mkdir(parents=True, exist_ok=True)
    for f in (rd / "model").iterdir():
        (model_dir / f.name).write_bytes(f.read_bytes())
    blend_file = rd / "model" / "blend.json"
    m = W.publish(wh, ds, staged, extra={
        "model_version": model_meta["version"],
        "blend": json.loads(blend_file.read_text()) if blend_file.is_file() else None,
        "data_docs": str(docs_index(wh)),
        "quality_gate": gate,
        "evaluation": {k: evaluation.get(k) for k in ("split", "ks", "evaluated_users",
                                                      "train_end")},
        "stage_stats": json.loads(stats.drop(columns=["details"]).to_json(orient="records"))})
    removed = []
    if settings.publish.retention_days:
        removed = W.apply_retention(wh, ds, settings.publish.retention_days)
        if removed:
            print(f"[vrec] retention {settings.publish.retention_days} days: removed "
                  f"partitions {removed}", flush=True)
    timer.record(sum(t["rows"] for t in m["tables"].values()),
                 sum(t["rows"] for t in m["tables"].values()), 0, version=m["version"],
                 retention_removed=removed)
    return m


def _report_quietly(settings: Settings, ds: str) -> None:
    """Write the run report; a failure here must not hide the gate's message."""
    from vrec.io.report import write_report

    try:
        print(f"[vrec] {ds} run report: {write_report(settings, ds)}", flush=True)
    except Exception as exc:  # noqa: BLE001 - reported, the gate error follows
        print(f"[vrec] {ds} run report could not be written: {exc!r}", flush=True)


# ---------------------------------------------------------------- report

def report(settings: Settings, ds: str) -> dict:
    """Write the self-contained HTML run report of ds (README "Run report")."""
    from vrec.io.report import write_report

    path = write_report(settings, ds)
    print(f"[vrec] {ds} run report: {path}", flush=True)
    return {"report": str(path)}
