"""report: the self-contained HTML report of the run (docs/evaluation.md "Run report")."""

from __future__ import annotations


def run(ctx) -> dict:
    from vrec.report import write_report

    for artifact in ctx.stage.inputs:  # the report reads these: fail clearly when one is missing
        ctx.input(artifact)
    path = write_report(ctx.settings, ctx.ds, ctx.input)
    print(f"[vrec] {ctx.ds} run report: {path}", flush=True)
    return {"report": str(path)}
