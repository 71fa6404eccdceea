"""embed_items: embed new or changed catalog images (Spark + the CNN, incremental cache);
write the run's item vectors, the near-duplicate image pairs and the run's content
features (image PCA and text; vrec.stages.common.write_content); quarantine bad images."""

from __future__ import annotations


def run(ctx) -> dict:
    from vrec.io import warehouse as W
    from vrec.spark.embed import run_embed_items
    from vrec.stages.common import write_content

    spark, ds, e = ctx.spark, ctx.ds, ctx.settings.embed
    res = run_embed_items(spark, spark.read.parquet(str(ctx.input("catalog"))),
                          warehouse=ctx.warehouse, image_root=ctx.settings.paths.image_root,
                          image_roots=ctx.settings.paths.allowed_image_roots(), embed=e, ds=ds,
                          phase=ctx.phase)
    with ctx.phase("write"):
        W.write_table_folder(res["vectors"], ctx.output("item_vectors"))
        W.write_table_folder(res["duplicates"], ctx.output("image_duplicates"))
    with ctx.phase("content features"):
        write_content(ctx)
    nq = W.write_quarantine(ctx.warehouse, ds, "images", res["quarantine"])
    ctx.record(res["items"], len(res["vectors"]), nq, embedded_new=res["embedded_new"],
               reused=res["reused"], model_version=res["model_version"],
               near_duplicates=len(res["duplicates"]),
               pictures_compared=res["pictures_compared"],
               reasons=res["quarantine"]["reason"].value_counts().to_dict())
    return {"vectors": len(res["vectors"]), "embedded_new": res["embedded_new"],
            "reused": res["reused"], "near_duplicates": len(res["duplicates"])}
