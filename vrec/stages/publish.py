"""publish: the quality gate on hybrid NDCG (docs/evaluation.md), then run_stats,
quarantine and the model staged as published (user ids pseudonymised when
``privacy.pseudonymize`` is on), and every table of ds with the model published with one
commit point (docs/operations.md "Atomic publish"). A refused gate writes the run report
and fails before anything is published."""

from __future__ import annotations

import json
import shutil

import pandas as pd

from vrec.io import warehouse as W

# published table -> the staged artifact it comes from (the pseudonymised form replaces
# user_recs and user_profile when privacy.pseudonymize is on)
PUBLISHED_FROM = {"user_recs": "user_recs", "item_similar": "item_similar",
                  "item_popularity": "item_popularity", "user_profile": "user_profile",
                  "items": "catalog", "image_duplicates": "image_duplicates",
                  "run_stats": "run_stats", "quarantine": "quarantine_table",
                  "eval_metrics": "eval_metrics", "realised_metrics": "realised_metrics"}
PSEUDONYMIZED = {"user_recs": "user_recs_pseudonymized",
                 "user_profile": "user_profile_pseudonymized"}
MODEL_ARTIFACT = "published_model"  # published as models/ds=<ds> with the tables


def run(ctx) -> dict:
    from vrec.gate import QualityGateError, quality_gate
    from vrec.io.validation import docs_index

    wh, ds, s = ctx.warehouse, ctx.ds, ctx.settings
    evaluation = ctx.layout.record("evaluate").get("evaluation") or {}
    # the gate judges the model that ranked the lists (build_recs says which)
    gate = quality_gate(wh, ds, pd.read_parquet(ctx.input("eval_metrics")), s.eval,
                        split=evaluation.get("split"),
                        model=ctx.layout.record("build_recs").get("ranked_by") or "hybrid",
                        override=bool(ctx.params.get("override_gate")),
                        reason=str(ctx.params.get("override_reason") or ""))
    # the verdict goes into publish's own record (refused: the failed record) and the manifest
    ctx.stats["quality_gate"] = gate
    print(f"[vrec] {ds} {gate['message']}", flush=True)
    if gate["status"] == "refused":
        _report_quietly(ctx, gate)
        raise QualityGateError(gate["message"])
    from vrec.privacy import pseudonymize_model, pseudonymize_quarantine, resolve_salt

    pseudo = s.privacy.pseudonymize
    if pseudo and not ctx.has("user_recs_pseudonymized"):
        raise W.PublishError(f"privacy.pseudonymize is on but build_recs for {ds} staged clear "
                             "user ids only (it ran with pseudonymisation off): rerun build_recs")
    salt = resolve_salt(s.privacy)
    stats = W.run_stats_frame(wh, ds)
    W.write_table_folder(stats, ctx.output("run_stats"))
    quarantine = W.staged_quarantine(wh, ds)
    W.write_table_folder(pseudonymize_quarantine(quarantine, salt) if salt else quarantine,
                         ctx.output("quarantine_table"))
    for artifact in ("run_stats", "quarantine_table"):  # before anything becomes visible
        ctx.check_output(artifact)
    if salt:
        pseudonymize_model(ctx.input("model"), ctx.output(MODEL_ARTIFACT), salt)
    else:
        shutil.copytree(ctx.input("model"), ctx.output(MODEL_ARTIFACT))
    staged = {}
    for table, artifact in PUBLISHED_FROM.items():
        source = PSEUDONYMIZED[table] if pseudo and table in PSEUDONYMIZED else artifact
        staged[table] = ctx.output(source) if source in ctx.stage.outputs else ctx.input(source)
    model_meta = json.loads((ctx.input("model") / "model.json").read_text())
    # the model is published with the tables (models/ds=<ds>): analysts can reload it
    m = W.publish(wh, ds, staged, model=ctx.output(MODEL_ARTIFACT), run_id=ctx.run_id, extra={
        "model_version": model_meta["version"],
        "blend": json.loads(ctx.input("blend").read_text()),
        "data_docs": str(docs_index(wh)),
        "quality_gate": gate,
        "realised": ctx.layout.record("evaluate").get("realised") or {},
        "evaluation": {k: evaluation.get(k) for k in ("split", "ks", "evaluated_users",
                                                      "train_end")},
        "stage_stats": json.loads(stats.drop(columns=["details"]).to_json(orient="records"))})
    removed = []
    if s.publish.retention_days:
        removed = W.apply_retention(wh, ds, s.publish.retention_days, run_id=ctx.run_id)
        if removed:
            print(f"[vrec] retention {s.publish.retention_days} days: removed partitions "
                  f"{removed}", flush=True)
    rows = sum(t["rows"] for t in m["tables"].values())
    ctx.record(rows, rows, 0, version=m["version"], retention_removed=removed, quality_gate=gate)
    return m


def _report_quietly(ctx, gate: dict) -> None:
    """Write the run report of a refused run (publish's inputs are the report's); a failure
    here must not hide the gate's message."""
    from vrec.report import write_report

    try:
        path = write_report(ctx.settings, ctx.ds, ctx.input, gate)
        print(f"[vrec] {ctx.ds} run report: {path}", flush=True)
    except Exception as exc:  # noqa: BLE001 - reported, the gate error follows
        print(f"[vrec] {ctx.ds} run report could not be written: {exc!r}", flush=True)
