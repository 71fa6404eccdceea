"""Re-running a day rebuilds the same tables: a day's run pins the tunings it took, and a
rerun of that day after later days (one of which re-tuned, storing a tuning the reuse
rule would now prefer for the early day) takes the pinned ones again. Stage by stage
through the executor (what ``vrec run-stage`` does), not through the DAG."""

from __future__ import annotations

import pandas as pd
import pytest

from vrec import schemas as S
from vrec.executor import run_stage
from vrec.io import tunings
from vrec.io import warehouse as W
from vrec.stages import NAMES

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
    _night(s, DAYS[2], spark, retune=True)  # re-tunes: its evaluate stores a blend as of DAYS[1]
    first = W.stage_records(wh, DAYS[1])["train_cf"]["blend"]
    trap = tunings.reusable(wh, "blend", as_of=DAYS[1], max_age_days=s.recs.tune_every_days,
                            key=first["key"], size=first["size"])  # what the rule alone takes
    _night(s, DAYS[1], spark)
    return {"wh": wh, "before": before, "after": _tables(wh, DAYS[1]), "used": used,
            "trap": trap, "train_cf": W.stage_records(wh, DAYS[1])["train_cf"]}


def test_the_later_retune_stored_a_tuning_the_rule_would_prefer(rerun):
    # the setup is what makes the test mean something: without the pin, the rerun of the
    # early day would take this newer record (stored by the later day's evaluate, as of
    # the early day) instead of the one it used
    assert rerun["trap"]["as_of"] == DAYS[1] and rerun["trap"]["id"] != rerun["used"]["blend"]
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
