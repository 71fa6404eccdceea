"""The schema registry (vrec/schemas.py): every staged artifact is declared, the GX raw suites ask for the contract's columns, the footer
check catches each kind of mismatch, the runner fails a stage whose output does not match,
an optional raw column may be left out, and reasons come from one vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vrec import schemas as S
from vrec.executor import ARTIFACTS, RunLayout, _run_locked
from vrec.io import warehouse as W
from vrec.stages import Stage

from .conftest import settings_for

ROOT = Path(__file__).resolve().parents[1]


def test_every_staged_artifact_is_declared_tabular_or_not():
    assert set(S.STAGED) | set(S.NON_TABULAR) == set(ARTIFACTS)
    assert not set(S.STAGED) & set(S.NON_TABULAR)


def test_raw_suites_ask_for_the_contracts_columns():
    for source, table in S.RAW.items():
        suite = json.loads((ROOT / "expectations" / "expectations" / f"raw_{source}.json")
                           .read_text())
        exist = [e["kwargs"]["column"] for e in suite["expectations"]
                 if e["type"] == "expect_column_to_exist"]
        assert exist == table.names(), source


def test_derived_forms_agree():
    t = S.USER_RECS
    assert t.ddl().startswith("user_id string, rank int, item_id string, score double")
    assert t.arrow().names == t.names()
    assert t.arrow().field("rank").type == pa.int32()
    assert not t.arrow().field("user_id").nullable and t.arrow().field("cf_score").nullable
    assert list(t.empty().columns) == t.names() and t.empty().dtypes["rank"] == np.int32
    assert S.arrow_type("array<float>") == pa.list_(pa.float32())
    with pytest.raises(ValueError, match="unknown column type"):
        S.arrow_type("decimal(10,2)")


def _recs(**over) -> pd.DataFrame:
    df = pd.DataFrame({"user_id": ["u1", "u1"], "rank": np.array([1, 2], np.int32),
                       "item_id": ["a", "b"], "score": [0.9, 0.5], "cf_score": [0.1, None],
                       "visual_score": [None, 0.2], "reason": ["collaborative", "trending"],
                       "reason_item_id": ["a", None], "model_version": ["m", "m"]})
    for k, v in over.items():
        df[k] = v
    return df


@pytest.mark.parametrize("bad, message", [
    (lambda d: d.drop(columns=["reason"]), r"lacks column\(s\) \['reason'\]"),
    (lambda d: d.assign(extra=1), r"undeclared column\(s\) \['extra'\]"),
    (lambda d: d.assign(rank=d["rank"].astype("int64")), "column rank is bigint .* declares int"),
    (lambda d: d.assign(score=d["score"].astype(str)), "column score is string .* declares double"),
    (lambda d: d.assign(item_id=["a", None]), r"column item_id holds 1 null\(s\)"),
])
def test_footer_check_names_the_column(tmp_path, bad, message):
    ok = tmp_path / "ok" / "part-0.parquet"
    ok.parent.mkdir()
    _recs().to_parquet(ok)
    assert S.check_parquet(S.USER_RECS, ok.parent, "user_recs") == 2
    wrong = tmp_path / "bad" / "part-0.parquet"
    wrong.parent.mkdir()
    bad(_recs()).to_parquet(wrong)
    with pytest.raises(S.SchemaMismatch, match=message):
        S.check_parquet(S.USER_RECS, wrong.parent, "staged output user_recs")


def test_footer_check_accepts_any_timestamp_unit(tmp_path):
    for unit in ("ns", "us", "ms"):
        f = tmp_path / f"{unit}.parquet"
        pq.write_table(pa.table({
            "user_id": ["u"], "item_id": ["i"], "event_type": ["view"], "value": [None],
            "ts": pa.array([0], pa.timestamp(unit, tz="UTC"))},
            schema=pa.schema([("user_id", pa.string()), ("item_id", pa.string()),
                              ("event_type", pa.string()), ("value", pa.float64()),
                              ("ts", pa.timestamp(unit, tz="UTC"))])), f)
        assert S.check_parquet(S.EVENTS, f, "events") == 1


class _Writes(Stage):
    """A registered stage's contract with a given body: what the runner checks after it."""

    def __init__(self, body):
        super().__init__("evaluate", "local", (), ("eval_metrics",), "test body")
        object.__setattr__(self, "_body", body)

    def function(self):
        return self._body


def test_the_runner_fails_a_stage_whose_output_does_not_match(tmp_path):
    s = settings_for(tmp_path / "raw", tmp_path / "wh", tmp_path)
    layout = RunLayout(tmp_path / "wh", "2026-11-20")
    layout.root.mkdir(parents=True)

    def good(ctx):
        frame = pd.DataFrame({"model": ["als"], "slice": ["all"], "k": [10], "metric": ["ndcg"],
                              "value": [0.1]}).astype(S.EVAL_METRICS.dtypes())
        W.write_table_folder(frame, ctx.output("eval_metrics"))

    def wrong_type(ctx):
        frame = pd.DataFrame({"model": ["als"], "slice": ["all"], "k": ["10"],
                              "metric": ["ndcg"], "value": [0.1]})
        W.write_table_folder(frame, ctx.output("eval_metrics"))

    _run_locked(_Writes(good), s, layout, None, None, "run1")
    assert layout.record("evaluate")["status"] == "succeeded"
    with pytest.raises(S.SchemaMismatch, match="staged output eval_metrics: column k is string"):
        _run_locked(_Writes(wrong_type), s, layout, None, None, "run1")
    rec = layout.record("evaluate")
    assert rec["status"] == "failed" and "column k is string" in rec["error"]


def test_an_optional_raw_column_may_be_left_out(tmp_path, spark):
    from vrec.spark.rawread import read_raw

    cat = pd.DataFrame({"item_id": ["a", "b"], "title": ["A", "B"], "category": ["x", "y"],
                        "image_uri": [None, None],
                        "updated_at": pd.to_datetime(["2026-11-01", "2026-11-02"], utc=True)})
    f = tmp_path / "part-0.parquet"
    cat.to_parquet(f)
    df = read_raw(spark, "catalog", [f])
    assert df.columns == S.RAW["catalog"].names()
    assert [r.price for r in df.collect()] == [None, None]
    # a required column is not filled: it stays missing for validation to name
    cat.drop(columns=["title"]).to_parquet(f)
    assert "title" not in read_raw(spark, "catalog", [f]).columns


def test_reasons_come_from_one_vocabulary(tmp_path):
    from vrec.images.imagequality import ImageError

    assert S.reason("events", "duplicate_event") == "duplicate_event"
    with pytest.raises(ValueError, match="not a images quarantine reason"):
        ImageError("blurry")
    with pytest.raises(ValueError, match="not a events quarantine reason"):
        W.write_quarantine(tmp_path, "2026-11-20", "events",
                           pd.DataFrame({"key": ["k"], "reason": ["made_up"]}))
    # an adapter's reject keeps the adapter's reason
    n = W.write_quarantine(tmp_path, "2026-11-20", "events",
                           pd.DataFrame({"key": ["f:1"], "reason": ["malformed_line"],
                                         "found_by": ["landing"]}))
    assert n == 1


def test_every_image_reason_is_explained():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "embeddings.md").read_text()
    missing = [r for r in S.QUARANTINE_REASONS["images"] if f"| `{r}`" not in text
               and f", `{r}` |" not in text]
    assert not missing, f"docs/embeddings.md lacks {missing}"
