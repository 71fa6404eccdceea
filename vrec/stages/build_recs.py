"""build_recs: rank every user's candidates (the learned ranker when train_cf's record
says it won its validation, else the blend; diversity, reserved new-arrival slots,
reasons, trending fill) into user_recs; the visual neighbours into item_similar (a
blocked item is never a neighbour);
pseudonymised copies of user_recs and user_profile when privacy.pseudonymize is on."""

from __future__ import annotations


def run(ctx) -> dict:
    import json

    from pyspark.sql import functions as F

    from vrec import columns as C
    from vrec.core.itemspace import ItemSpace, ranking_policy
    from vrec.core.ranker import Ranker
    from vrec.io import warehouse as W
    from vrec.privacy import pseudonym_col, resolve_salt
    from vrec.spark.ranking import list_facts, rank_all
    from vrec.spark.similar import item_similar
    from vrec.stages.common import published_by, write

    spark, s, r = ctx.spark, ctx.settings, ctx.settings.recs
    salt = resolve_salt(s.privacy)  # fail before any work when misconfigured
    cf_version = json.loads((ctx.input("model") / "model.json").read_text())["version"]
    meta = ItemSpace.meta(ctx.input("item_space"))
    blend = json.loads(ctx.input("blend").read_text())
    policy = ranking_policy(r, blend, meta.get("slots_off"))
    ranker = json.loads(ctx.input("ranker").read_text())
    ranked_by = published_by(ranker, s.ranker.enabled)
    version = f"{cf_version}+vw{policy.visual_weight:g}h{policy.history_shrink:g}"
    if ranked_by == "ranker":  # names the ranker: the day its data ended and its record
        version = f"{cf_version}+ranker{ranker.get('id') or ranker.get('as_of')}"
    with ctx.phase("rank (Spark, written)"):
        recs = rank_all(spark, ctx.input("candidates"),
                        space_dir=ctx.input("item_space"), policy=policy, model_version=version,
                        ranker=Ranker.from_record(ranker) if ranked_by == "ranker" else None)
        write(recs, ctx.output("user_recs"), sort=[C.USER_ID, "rank"])
    recs = spark.read.parquet(str(ctx.output("user_recs")))
    profile = spark.read.parquet(str(ctx.input("user_profile")))
    if salt:  # published forms; pseudonyms sort differently, so each is sorted anew
        write(recs.withColumn(C.USER_ID, pseudonym_col(F.col(C.USER_ID), salt)),
              ctx.output("user_recs_pseudonymized"), sort=[C.USER_ID, "rank"])
        write(profile.withColumn(C.USER_ID, pseudonym_col(F.col(C.USER_ID), salt)),
              ctx.output("user_profile_pseudonymized"), sort=[C.USER_ID])
    with ctx.phase("item_similar"):
        vectors = W.read_folder(ctx.input("item_vectors"), [C.ITEM_ID, "embedding"])
        cat = W.read_folder(ctx.input("catalog"), [C.ITEM_ID, "blocked"])
        blocked = set(cat.loc[cat["blocked"].notna(), C.ITEM_ID].astype(str))
        sim, recall = item_similar(spark, vectors, r.similar_k, min_similarity=r.similar_min,
                                   engine=r.similar_engine, recall_floor=r.faiss_recall_floor,
                                   blocked=blocked)
        write(sim, ctx.output("item_similar"), sort=[C.ITEM_ID, "rank"])
    with ctx.phase("list facts"):
        space = ItemSpace.load(ctx.input("item_space"))
        facts = list_facts(spark, recs, space, profile)
        n_sim = spark.read.parquet(str(ctx.output("item_similar"))).count()
    ctx.record(facts["users"], facts["rows"], 0, item_similar_rows=n_sim,
               similar_engine=r.similar_engine, faiss_recall=recall, model_version=version,
               ranked_by=ranked_by, ranker_reason=ranker.get("reason") or ranker.get("skipped"),
               blend={"visual_weight": policy.visual_weight,
                      "history_shrink": policy.history_shrink,
                      "tuned": bool(blend.get("chosen"))},
               cold_start_map=meta.get("map_quality"), pseudonymized=bool(salt),
               new_arrival_slots=policy.new_arrival_slots,
               new_arrival_slots_off=meta.get("slots_off"),
               **{k: v for k, v in facts.items() if k not in ("users", "rows")})
    return {"user_recs": facts["rows"], "item_similar": n_sim, "coverage": facts["coverage"],
            "reasons": facts["reasons"]}
