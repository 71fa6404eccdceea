"""The feedback loop's rules on hand-made data with answers worked out by hand: realised
metrics, exposure rotation, dismissals with near-duplicates, the drop warning, and the
rules file."""

import numpy as np
import pandas as pd
import pytest

from vrec import columns as C
from vrec.config import ConfigError, load_rules
from vrec.core.feedback import dismissed_pairs, drop_warning, realised_metrics, rested_pairs


def _t(s):
    return pd.Timestamp(s, tz="UTC")


def _lists():
    # list of 11-19: a [x collaborative, y trending], b [x collaborative, z trending],
    # c [w, y]; list of 11-18: a [y]
    rows = [("2026-11-19", "a", 1, "x", "collaborative", "m2", "warm"),
            ("2026-11-19", "a", 2, "y", "trending", "m2", "warm"),
            ("2026-11-19", "b", 1, "x", "collaborative", "m2", "cold"),
            ("2026-11-19", "b", 2, "z", "trending", "m2", "cold"),
            ("2026-11-19", "c", 1, "w", "collaborative", "m2", "warm"),
            ("2026-11-19", "c", 2, "y", "trending", "m2", "warm"),
            ("2026-11-18", "a", 1, "y", "similar_to_history", "m1", "warm")]
    return pd.DataFrame(rows, columns=[C.LIST_DS, C.USER_ID, "rank", C.ITEM_ID, "reason",
                                       "model_version", "segment"])


def _engaged():
    return pd.DataFrame([
        ("a", "x", _t("2026-11-19 12:00")),  # before the end of 11-19: only the 11-18 list's
        ("a", "y", _t("2026-11-20 10:00")),
        ("b", "q", _t("2026-11-20 11:00")),  # an item no list of b held
        ("a", "z", _t("2026-11-21 09:00")),  # after the night: never counted
    ], columns=[C.USER_ID, C.ITEM_ID, C.TS])


def test_realised_metrics_hand_example():
    imp = pd.DataFrame([("a", "x", "2026-11-19", 1, _t("2026-11-20 09:00")),
                        ("a", "y", "2026-11-19", 2, _t("2026-11-20 09:00")),
                        ("b", "x", "2026-11-19", 1, _t("2026-11-20 09:00"))],
                       columns=[C.USER_ID, C.ITEM_ID, C.LIST_DS, C.POSITION, C.TS])
    got = realised_metrics(_lists(), _engaged(), "2026-11-20", impressions=imp)
    v = got.set_index([C.LIST_DS, "slice", "metric"])["value"]
    d = "2026-11-19"
    # active users of the 11-19 lists: a (y) and b (q); c did nothing
    assert v[d, "all", "users"] == 2
    assert v[d, "all", "hit_rate"] == 0.5
    assert v[d, "all", "precision"] == 0.25                     # (1/2 + 0/2) / 2
    assert v[d, "all", "ndcg"] == pytest.approx((1 / np.log2(3)) / 2)  # a: hit at rank 2
    assert v[d, "all", "demand_coverage"] == 0.5                # y of {y, q} was listed
    assert v[d, "segment:warm", "users"] == 1 and v[d, "segment:warm", "hit_rate"] == 1.0
    assert v[d, "segment:cold", "users"] == 1 and v[d, "segment:cold", "hit_rate"] == 0.0
    assert (v[d, "reason:collaborative", "rows"], v[d, "reason:collaborative", "hits"]) == (2, 0)
    assert (v[d, "reason:trending", "rows"], v[d, "reason:trending", "hits"]) == (2, 1)
    assert v[d, "all", "impressions"] == 3 and v[d, "all", "ctr"] == pytest.approx(1 / 3)
    assert v[d, "position:1", "ctr"] == 0.0 and v[d, "position:2", "ctr"] == 1.0
    assert v[d, "reason:trending", "ctr"] == 1.0
    # the 11-18 list over two days: a engaged with x and y; the list held y at rank 1
    old = got[got[C.LIST_DS] == "2026-11-18"]
    assert set(old["horizon_days"]) == {2} and set(old["model_version"]) == {"m1"}
    o = old.set_index(["slice", "metric"])["value"]
    assert o["all", "users"] == 1 and o["all", "ndcg"] == 1.0 and o["all", "precision"] == 1.0
    assert set(got.loc[got[C.LIST_DS] == d, "horizon_days"]) == {1}


def test_a_click_before_the_impression_is_no_click_through():
    imp = pd.DataFrame([("a", "y", "2026-11-19", 2, _t("2026-11-20 10:30"))],
                       columns=[C.USER_ID, C.ITEM_ID, C.LIST_DS, C.POSITION, C.TS])
    got = realised_metrics(_lists(), _engaged(), "2026-11-20", impressions=imp)
    v = got.set_index([C.LIST_DS, "slice", "metric"])["value"]
    assert v["2026-11-19", "all", "ctr"] == 0.0


def _imp(rows):
    return pd.DataFrame(rows, columns=[C.USER_ID, C.ITEM_ID, C.LIST_DS])


def test_rotation_rests_items_shown_twice_without_engagement_and_brings_them_back():
    imp = _imp([("u", "i", "2026-11-18"), ("u", "i", "2026-11-19"),   # two unengaged shows
                ("u", "j", "2026-11-18"), ("u", "j", "2026-11-19"),   # engaged in between
                ("u", "k", "2026-11-10"), ("u", "k", "2026-11-19"),   # one show too old
                ("u", "m", "2026-11-19"), ("u", "m", "2026-11-19")])  # one night, twice
    engaged = pd.DataFrame([("u", "j", _t("2026-11-19 15:00"))],
                           columns=[C.USER_ID, C.ITEM_ID, C.TS])
    got = rested_pairs(imp, engaged, "2026-11-20", max_shows=2, rest_days=7)
    assert got[[C.USER_ID, C.ITEM_ID, "shows"]].values.tolist() == [["u", "i", 2]]
    # a week on, the shows have left the window: the item may come back
    assert rested_pairs(imp, engaged, "2026-11-26", max_shows=2, rest_days=7).empty
    assert len(rested_pairs(imp, engaged, "2026-11-24", max_shows=2, rest_days=7)) == 1
    assert rested_pairs(imp, engaged, "2026-11-20", max_shows=0, rest_days=7).empty
    # one show is enough at max_shows 1, except where the user engaged after it
    one = rested_pairs(imp, engaged, "2026-11-20", max_shows=1, rest_days=7)
    assert set(one[C.ITEM_ID]) == {"i", "j", "k", "m"}
    late = pd.DataFrame([("u", "j", _t("2026-11-20 08:00"))], columns=[C.USER_ID, C.ITEM_ID, C.TS])
    assert "j" not in set(rested_pairs(imp, late, "2026-11-20", max_shows=1, rest_days=7)[C.ITEM_ID])


def test_dismissals_leave_out_the_item_and_its_near_duplicates_for_their_window():
    ids = np.array(["a", "b", "c", "d"])
    emb = np.array([[1, 0, 0], [0.95, 0.31, 0], [0, 1, 0], [0, 0, 0]], dtype=np.float32)
    has = np.array([True, True, True, False])
    index = {v: i for i, v in enumerate(ids)}
    dis = pd.DataFrame([("u", "a", _t("2026-11-19 10:00")), ("v", "d", _t("2026-11-19 10:00")),
                        ("w", "zz", _t("2026-11-19 10:00"))],  # not in the catalog any more
                       columns=[C.USER_ID, C.ITEM_ID, C.TS])
    kw = dict(index=index, item_ids=ids, emb=emb, has_vec=has, similarity=0.9)
    got = dismissed_pairs(dis, "2026-11-20", days=30, **kw)
    assert sorted(map(tuple, got[[C.USER_ID, C.ITEM_ID, "dismissed"]].values.tolist())) == [
        ("u", "a", "a"), ("u", "b", "a"), ("v", "d", "d")]
    # the window is the last `days` days, ds included: on 11-20, 2 days reach 11-19, 1 does not
    assert len(dismissed_pairs(dis, "2026-11-20", days=2, **kw)) == 3
    assert dismissed_pairs(dis, "2026-11-20", days=1, **kw).empty
    assert dismissed_pairs(dis, "2026-11-21", days=2, **kw).empty
    assert len(dismissed_pairs(dis, "2026-11-20", days=30, **{**kw, "similarity": 0.99})) == 2


def _history(values, users=100):
    rows = []
    for i, v in enumerate(values):
        d = f"2026-11-{10 + i:02d}"
        rows += [(d, 1, "all", "ndcg", v), (d, 1, "all", "users", users),
                 (d, 2, "all", "ndcg", 0.0)]  # other horizons are not compared
    return pd.DataFrame(rows, columns=[C.LIST_DS, "horizon_days", "slice", "metric", "value"])


def test_drop_warning_compares_the_latest_list_with_the_median_before_it():
    w = drop_warning(_history([0.20, 0.22, 0.18, 0.05]), drop=0.5, min_users=30)
    assert w["list_ds"] == "2026-11-13" and w["median_before"] == 0.2 and w["nights_before"] == 3
    assert "below 50% of the median" in w["message"]
    assert drop_warning(_history([0.20, 0.22, 0.18, 0.15]), drop=0.5, min_users=30) is None
    assert drop_warning(_history([0.20, 0.22, 0.18, 0.05], users=10), drop=0.5,
                        min_users=30) is None
    assert drop_warning(_history([0.05]), drop=0.5, min_users=30) is None


def test_rules_file_reads_items_and_categories_and_names_what_is_wrong(tmp_path):
    f = tmp_path / "rules.yaml"
    f.write_text("excluded_items: [i1, 42]\nexcluded_categories: [gift cards]\n")
    r = load_rules(f)
    assert r.excluded_items == {"i1", "42"} and r.excluded_categories == {"gift cards"}
    assert load_rules(None).excluded_items == frozenset()
    f.write_text("excluded_item: [i1]\n")
    with pytest.raises(ConfigError, match="excluded_item"):
        load_rules(f)
    f.write_text("excluded_items: i1\n")
    with pytest.raises(ConfigError, match="must be a list"):
        load_rules(f)
    with pytest.raises(ConfigError, match="not found"):
        load_rules(tmp_path / "missing.yaml")


def test_paired_lists_scores_each_user_once_by_the_realised_rule():
    # benchmarks/paired_lists.py: two versions of a night's lists against the day after
    from benchmarks.paired_lists import compare

    def lists(rows):
        return pd.DataFrame(rows, columns=[C.USER_ID, "rank", C.ITEM_ID])

    a = lists([("u1", 1, "i1"), ("u1", 2, "i2"), ("u2", 1, "i3"), ("u3", 1, "i5"),
               ("u3", 2, "i6")])
    b = lists([("u1", 1, "i2"), ("u1", 2, "i1"), ("u2", 1, "i3"), ("u3", 1, "i5"),
               ("u3", 2, "i6")])
    events = pd.DataFrame({C.USER_ID: ["u1", "u3", "u1", "u3"],
                           C.ITEM_ID: ["i1", "i6", "i2", "i5"],
                           C.TS: pd.to_datetime(["2026-11-20T10:00", "2026-11-20T11:00",
                                                 "2026-11-19T09:00",  # before: not counted
                                                 "2026-11-22T09:00"],  # after the window
                                                utc=True)})
    out = compare(a, b, events, "2026-11-19", days=1)
    assert out["active_users"] == 2  # u2 engaged with nothing after the lists
    # u1: its item at rank 1 in a, rank 2 in b; u3: the same list, its item at rank 2
    lost = 1 / np.log2(3) - 1.0
    assert out["ndcg"]["a"] == pytest.approx((1.0 + 1 / np.log2(3)) / 2, abs=1e-5)
    assert out["ndcg"]["diff"] == pytest.approx(lost / 2, abs=1e-5)
    assert out["ndcg"]["se"] == pytest.approx(abs(lost) / 2, abs=1e-5)  # sd of (lost, 0) / sqrt 2
    assert out["hit_rate"]["diff"] == 0.0 and not out["rows_equal"]
    assert compare(a, a, events, "2026-11-19")["rows_equal"]
