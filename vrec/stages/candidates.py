"""candidates: the run's item space (CF factors, image embeddings, the content features of
images and text, categories, trending order, item stats, the cold-start map and its gate)
and, for every user, the CF, visual-profile, content-preference, text-preference and
new-arrival top-N, with the learned ranker on also the trending and last-items top-N,
with raw scores (Spark, the exact top-k kernel). build_recs ranks them.

Blocked items (the catalog's ``blocked``: unavailable or excluded by the rules file) are in
no source and no fill. Each user's own leave-outs (exposure rotation and dismissals,
:mod:`vrec.core.feedback`) are excluded like seen items, so lists stay full from the next
candidates."""

from __future__ import annotations


def run(ctx) -> dict:
    import gc
    import json

    import pandas as pd

    from vrec import columns as C
    from vrec.core.cf import CFModel
    from vrec.core.itemspace import block_items, build_item_space, gate_new_arrivals, ranking_policy
    from vrec.core.retrieval import profile_source
    from vrec.dates import end_of_ds
    from vrec.io import warehouse as W
    from vrec.spark.candidates import write_candidates
    from vrec.stages.common import driver_inputs, run_content

    spark, ds, r = ctx.spark, ctx.ds, ctx.settings.recs
    with ctx.phase("read inputs"):
        model = CFModel.load(ctx.input("model"))
        inp = driver_inputs(ctx, pairs=[C.USER_ID, C.ITEM_ID, "weight", "last_ts"])
    with ctx.phase("item space"):
        space, map_quality = build_item_space(model, inp.catalog, inp.vectors, inp.pairs,
                                              inp.trending, r, visual=ctx.settings.visual,
                                              content=run_content(ctx),
                                              end=pd.Timestamp(end_of_ds(ds)))
    # the pandas inputs (all interaction pairs: GBs at 10M) are not needed past this point;
    # drop them before the Spark job so the driver does not hold them beside the workers
    del inp, model
    gc.collect()
    blend = json.loads(ctx.input("blend").read_text())
    space, slots_off = gate_new_arrivals(space, map_quality, r.new_arrival_min_auc, blend)
    with ctx.phase("rules and feedback"):
        cat = W.read_folder(ctx.input("catalog"), [C.ITEM_ID, "blocked"])
        space = block_items(space, cat.loc[cat["blocked"].notna(), C.ITEM_ID].astype(str))
        exclude, left_out = feedback_exclusions(ctx.settings.feedback, ds,
                                                ctx.input("feedback"), ctx.input("events"),
                                                space)
    if ctx.settings.privacy.pseudonymize:  # the record is published: no clear user id in it
        left_out.pop("rested_example", None)
    with ctx.phase("save item space"):
        space.save(ctx.output("item_space"), meta={"map_quality": map_quality,
                                                   "slots_off": slots_off})
    # the mean profile's own top-N is retrieved only when the blend gives it a share
    profile = profile_source(ranking_policy(r, blend, slots_off))
    with ctx.phase("retrieve (Spark, written)"):
        worker_s: dict[str, float] = {}
        n_users, n_cands = write_candidates(
            spark, ctx.input("interactions"), ctx.output("candidates"),
            space_dir=ctx.output("item_space"), model_dir=ctx.input("model"), recs=r,
            visual=ctx.settings.visual, end=pd.Timestamp(end_of_ds(ds)), exclude=exclude,
            profile=profile, extra=ctx.settings.ranker.enabled, seconds=worker_s)
    print(f"[vrec] {ds} candidates: the tasks' seconds, summed over tasks: "
          + ", ".join(f"{k} {v:.1f}" for k, v in worker_s.items()), flush=True)
    ctx.record(n_users, int(n_cands), 0, items=int(space.n), new_arrivals=int(space.new.sum()),
               cold_start_map=map_quality, new_arrival_slots_off=slots_off,
               candidates_per_source=r.candidates, profile_source=profile,
               blocked_items=int(space.blocked.sum()), left_out=left_out,
               worker_seconds=worker_s)
    return {"users": n_users, "candidates": int(n_cands), "new_arrivals": int(space.new.sum())}


def feedback_exclusions(f, ds: str, feedback_dir, events_dir, space):
    """(user_id, item_id) pairs the feedback rules (``f``: FeedbackSettings) leave out of
    the lists of ``ds``, from the staged feedback and engagement events, and their counts
    for the record (with one rested pair as an example)."""
    import datetime as dt

    import pandas as pd

    from vrec import columns as C
    from vrec.core.feedback import dismissed_pairs, rested_pairs
    from vrec.dates import end_of_ds
    from vrec.io import warehouse as W

    fb = W.read_folder(feedback_dir, [C.USER_ID, C.ITEM_ID, C.EVENT_TYPE, C.TS,
                                               C.LIST_DS])
    imp = fb[fb[C.EVENT_TYPE] == C.IMPRESSION]
    rested = pd.DataFrame(columns=[C.USER_ID, C.ITEM_ID, "shows"])
    if len(imp) and f.max_unengaged_shows:
        engaged = W.read_folder(events_dir, [C.USER_ID, C.ITEM_ID, C.TS],
                                since=end_of_ds(ds) - dt.timedelta(days=f.rest_days + 1))
        rested = rested_pairs(imp, engaged, ds, max_shows=f.max_unengaged_shows,
                              rest_days=f.rest_days)
    dismissed = dismissed_pairs(fb[fb[C.EVENT_TYPE] == C.DISMISS], ds, days=f.dismiss_days,
                                index={str(v): i for i, v in enumerate(space.item_ids)},
                                item_ids=space.item_ids, emb=space.emb,
                                has_vec=space.has_vec, similarity=f.dismiss_similarity)
    pairs = pd.concat([rested[[C.USER_ID, C.ITEM_ID]], dismissed[[C.USER_ID, C.ITEM_ID]]],
                      ignore_index=True).drop_duplicates()
    counts = {"impressions": int(len(imp)), "rested_pairs": int(len(rested)),
              "dismissed_pairs": int((dismissed[C.ITEM_ID] == dismissed["dismissed"]).sum()),
              "near_duplicate_pairs": int((dismissed[C.ITEM_ID] != dismissed["dismissed"]).sum()),
              "users": int(pairs[C.USER_ID].nunique())}
    if len(rested):
        ex = rested.sort_values([C.USER_ID, C.ITEM_ID]).iloc[0]
        counts["rested_example"] = {"user_id": str(ex[C.USER_ID]),
                                    "item_id": str(ex[C.ITEM_ID]), "shows": int(ex["shows"])}
    return pairs, counts
