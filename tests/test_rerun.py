"""Re-running a day rebuilds the same tables: a day's run pins the tunings it took, and a
rerun of that day after later days (one of which re-tuned) and a newer tuning for its
day (one the reuse rule alone would now prefer) takes the pinned ones again. The night
and its evaluation share one tuning. Stage by stage
through the executor (what ``vrec run-stage`` does), not through the DAG."""

from __future__ import annotations

import pandas as pd
import pytest

from vrec import schemas as S
from vrec.executor import run_stage
from vrec.io import tunings
from vrec.io import warehouse as W
from vrec.stages import NAMES
from vrec.stages.common import tunings_day

from .conftest import settings_for

DAYS = ("2026-11-18", "2026-11-19", "2026-11-20")
THROUGH_PUBLISH = NAMES[:NAMES.index("publish") + 1]


def _night(s, ds: str, spark, **params) -> None:
    for name in THROUGH_PUBLISH:
        run_stage(s, name, ds, spark=spark, params=params)


def _tables(wh, ds: str) -> dict[str, pd.DataFrame]:
    out = {}
    for table in S.PUBLISHED:
        df = W.read_table(wh, table, ds)
        if table == "run_stats":  # seconds and facts are the run's own; rows must match
            df = df[["stage", "rows_in", "rows_out", "rows_quarantined"]]
        out[table] = df.sort_values(list(df.columns[:3])).reset_index(drop=True)
    return out


@pytest.fixture(scope="module")
def rerun(tmp_path_factory, tiny_raw, spark):
    tmp = tmp_path_factory.mktemp("rerun")
    s = settings_for(tiny_raw, tmp / "wh", tmp)
    # a few dozen users: tune the blend on what there is. The CF settings stay as
    # configured, so the blend key (which holds the CF model) is the same on every day:
    # a blend tuned by a later day's evaluate, as of the early day, is then one the
    # early day's train_cf could take (the pin is what stops it)
    s = s.model_copy(update={
        "cf": s.cf.model_copy(update={"tune": False}),
        "recs": s.recs.model_copy(update={"tune_min_users": 5}),
        "eval": s.eval.model_copy(update={"gate": False, "split": "time", "test_days": 1,
                                          "tune": True})})
    wh = s.paths.warehouse_root
    _night(s, DAYS[0], spark)
    _night(s, DAYS[1], spark)
    before = _tables(wh, DAYS[1])
    used = {u: tunings.pinned(wh, DAYS[1], u) for u in ("blend", "eval_blend")}
    records = W.stage_records(wh, DAYS[1])
    _night(s, DAYS[2], spark, retune=True)  # a later night re-tunes (as of DAYS[1])
    # a newer record for the day DAYS[1]'s tunings are for (its evaluation's cutoff,
    # DAYS[0]), on data of the same size, with other weights: what a re-tune of that day
    # under other eval settings stores. Only the pin keeps the rerun off it
    first = records["train_cf"]["blend"]
    w = first["chosen"]["visual_weight"]
    tunings.save(wh, "blend", {k: v for k, v in first.items() if k not in ("id", "reused_from")}
                 | {"chosen": {**first["chosen"], "visual_weight": 1.0 if w < 0.5 else 0.0}})
    trap = tunings.reusable(wh, "blend", as_of=tunings_day(s, DAYS[1]),
                            max_age_days=s.recs.tune_every_days,
                            key=first["key"], size=first["size"])  # what the rule alone takes
    _night(s, DAYS[1], spark)
    return {"wh": wh, "before": before, "after": _tables(wh, DAYS[1]), "used": used,
            "trap": trap, "records": records,
            "train_cf": W.stage_records(wh, DAYS[1])["train_cf"]}


def test_the_night_and_its_evaluation_share_one_tuning(rerun):
    # train_cf tunes as of the evaluation's cutoff, so the evaluation scores the tuning
    # the night published with and does not tune again
    rec = rerun["records"]
    assert rec["train_cf"]["tunings_as_of"] == DAYS[0]
    assert rec["train_cf"]["blend"]["as_of"] == DAYS[0]
    assert rerun["used"]["eval_blend"] == rerun["used"]["blend"]
    ev = rec["evaluate"]["evaluation"]
    assert ev["tunings_as_of"] == DAYS[0]
    assert ev["blend"]["tuning"]["reused_from"] == DAYS[0]


def test_the_later_retune_stored_a_tuning_the_rule_would_prefer(rerun):
    # the setup is what makes the test mean something: without the pin, the rerun of the
    # early day would take this newer record (as of the early day's tunings day) instead
    # of the one it used
    assert rerun["trap"]["as_of"] == DAYS[0] and rerun["trap"]["id"] != rerun["used"]["blend"]
    assert rerun["used"]["blend"] and rerun["used"]["eval_blend"]


def test_the_rerun_takes_the_tunings_the_day_used(rerun):
    rec = rerun["train_cf"]
    assert rec["blend"]["id"] == rerun["used"]["blend"]
    assert {u: tunings.pinned(rerun["wh"], DAYS[1], u) for u in rerun["used"]} == rerun["used"]


def test_every_published_table_of_the_rerun_day_is_the_same(rerun):
    for table, df in rerun["before"].items():
        pd.testing.assert_frame_equal(rerun["after"][table], df, check_exact=False, rtol=1e-9,
                                      obj=table)
    assert len(rerun["before"]["user_recs"]) > 0
