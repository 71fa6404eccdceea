"""Pseudonymisation end to end: with privacy.pseudonymize on, no clear user id is left in
any published file (tables, quarantine keys, the model, reports, manifests), and the salt
never enters a Spark plan or the run's output."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from vrec import columns as C
from vrec.io import warehouse as W

from .conftest import TINY, run_through_publish, settings_for

SALT = "a-privacy-test-salt-0123456789"
DS = TINY.end_date.isoformat()


@pytest.fixture(scope="module")
def published(spark, tiny_raw, tmp_path_factory):
    """A run over the tiny sample (dirty events included, so the quarantine has user
    keys) with pseudonymisation on, through publish and the report; the clear ids."""
    tmp = tmp_path_factory.mktemp("privacy")
    ev = pd.concat(pd.read_parquet(p) for p in (tiny_raw / "events").glob("ds=*"))
    clear = {u for u in ev[C.USER_ID].dropna().astype(str) if u}
    s = settings_for(tiny_raw, tmp / "wh", tmp)
    s = s.model_copy(update={"privacy": s.privacy.model_copy(update={"pseudonymize": True})})
    mp = pytest.MonkeyPatch()
    mp.setenv("VREC_USER_SALT", SALT)
    try:
        import contextlib
        import io

        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            run_through_publish(spark, s, DS)
            from vrec.executor import run_stage

            run_stage(s, "report", DS, spark=spark)
    finally:
        mp.undo()
    return {"wh": tmp / "wh", "clear": clear, "log": out.getvalue()}


def _strings(path) -> list[str]:
    """Every text a published file holds: Parquet string cells, .npy strings, file text."""
    if path.suffix == ".parquet":
        t = pq.read_table(path)
        return [str(v) for col in t.columns for v in col.to_pylist()
                if isinstance(v, str) or isinstance(v, list)]
    if path.suffix == ".npy":
        arr = np.load(path)
        return [str(v) for v in arr.ravel()] if arr.dtype.kind in "US" else []
    return [path.read_text(errors="replace")]


def test_no_clear_user_id_in_any_published_file(published):
    wh, clear = published["wh"], published["clear"]
    files = [p for p in wh.rglob("*") if p.is_file()
             and p.relative_to(wh).parts[0] not in ("_runs", "item_embeddings", "_locks")]
    kinds = {p.suffix for p in files}
    assert {".parquet", ".npy", ".json", ".html"} <= kinds
    assert any("quarantine" in str(p) for p in files) and any("models" in str(p) or "model" in
                                                                p.parts for p in files)
    leaks = []
    import re

    pattern = re.compile("|".join(sorted(map(re.escape, clear), key=len, reverse=True)))
    for p in files:
        for text in _strings(p):
            m = pattern.search(text)
            if m:
                leaks.append(f"{p.relative_to(wh)}: {m.group(0)!r} in {text[:80]!r}")
    assert leaks == []
    # the scan finds clear ids where they are (the unpublished staging keeps them)
    staged = next((wh / "_runs" / DS / "user_recs").glob("*.parquet"))
    assert any(pattern.search(t) for t in _strings(staged))


def test_the_published_quarantine_and_model_carry_pseudonyms(published):
    from vrec.privacy import pseudonym

    wh, clear = published["wh"], published["clear"]
    q = W.read_table(wh, "quarantine", DS)
    users = {k.split("|")[0] for k in q.loc[q["source"] == "events", "key"]} - {"null"}
    assert users and users <= {pseudonym(u, SALT) for u in clear}
    ids = np.load(wh / "models" / f"ds={DS}" / "user_ids.npy")
    recs = W.read_table(wh, "user_recs", DS)
    pseudonyms = {pseudonym(u, SALT) for u in clear}
    # the model's users (those with history) all have lists; cold users have lists too
    assert set(ids.astype(str)) <= set(recs[C.USER_ID]) <= pseudonyms
    assert len(ids) > 0


def test_the_salt_is_not_in_the_spark_plan_nor_the_output(published, spark, capsys):
    from pyspark.sql import functions as F

    from vrec.privacy import pseudonym_col

    df = spark.createDataFrame([("u1",)], "user_id string").select(
        pseudonym_col(F.col("user_id"), SALT).alias("p"))
    df.explain(True)
    plan = capsys.readouterr().out
    assert "pseudonymize" in plan and SALT not in plan
    assert SALT not in published["log"]
    for p in published["wh"].rglob("*.json"):
        assert SALT not in p.read_text()
    assert json.loads((published["wh"] / "_manifests" / "latest.json").read_text())["ds"] == DS
