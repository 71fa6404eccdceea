"""Offline evaluation (holdouts, metrics, slices) and the quality gate on hand examples."""

import math

import numpy as np
import pandas as pd
import pytest

from vrec import columns as C
from vrec.config import EvalSettings
from vrec.core.evaluation import eval_slices, metric_rows
from vrec.core.window import forward_window, pairs_from_events, user_window
from vrec.gate import quality_gate
from vrec.io import warehouse as W


def _pairs(rows):
    return pd.DataFrame(rows, columns=[C.USER_ID, C.ITEM_ID, "weight", "last_ts"]).assign(
        last_ts=lambda d: pd.to_datetime(d["last_ts"], utc=True))


def test_metric_rows_hand_example():
    lists = {("hybrid", 2): {"u1": ["a", "b"], "u2": ["c", "d"]}}
    slices = {"all": {"u1": {"b"}, "u2": {"x"}}, "cold_items": {}}
    pop = pd.Series({"a": 3, "b": 1})  # training users per item; 3 training users
    got = metric_rows(lists, slices, n_catalog=8, popularity=pop, n_train_users=3)
    v = got[got["slice"] == "all"].set_index("metric")["value"]
    ndcg_u1 = (1 / math.log2(3)) / 1.0  # the one relevant item at rank 2
    assert v["users"] == 2
    assert v["precision"] == pytest.approx((1 / 2 + 0) / 2)
    assert v["recall"] == pytest.approx((1 + 0) / 2)
    assert v["f1"] == pytest.approx(2 * 0.25 * 0.5 / 0.75)
    assert v["ndcg"] == pytest.approx(ndcg_u1 / 2)
    assert v["ndcg_se"] == pytest.approx(np.std([ndcg_u1, 0.0], ddof=1) / math.sqrt(2))
    assert v["map"] == pytest.approx((1 / 2) / 2)  # precision at the hit, / min(|rel|, k)
    assert v["hit_rate"] == pytest.approx(0.5)
    assert v["coverage"] == pytest.approx(4 / 8)
    # self-information -log2((n + 1) / (users + 1)): a 0, b 1, c and d (no users) 2
    assert v["novelty"] == pytest.approx(((0 + 1) / 2 + (2 + 2) / 2) / 2)
    cold = got[got["slice"] == "cold_items"]
    assert cold[["metric", "value"]].values.tolist() == [["users", 0.0]]


def test_forward_window_relevant_items_exclude_seen_and_zero_weight():
    train = _pairs([("u1", "a", 1.0, "2026-11-18"), ("u1", "z", 0.0, "2026-11-18")])
    test = pd.DataFrame({C.USER_ID: ["u1", "u1", "u1", "u2", "u1"],
                         C.ITEM_ID: ["a", "b", "c", "d", "z"],
                         "weight": [2.0, 0.0, 1.0, 1.0, 3.0]})
    h = forward_window(train, test, pd.Timestamp("2026-11-19", tz="UTC"))
    # a and z were seen in training (z with weight 0: seen, never recommended); b weighs 0
    assert h.relevant == {"u1": {"c"}, "u2": {"d"}}
    assert h.info()["test_pairs"] == 2 and h.split == "forward"
    # u2 was cold at the cutoff and is scored all the same
    assert list(h.users) == ["u1", "u2"] and h.info()["cold_users"] == 1


def test_a_forward_window_never_lets_a_label_day_into_its_features():
    """Events on both sides of the cutoff: every training pair is built from events
    before it, trending and new arrivals included, and a label event is never a
    feature; a training frame that ends after the cutoff is refused."""
    ev = pd.DataFrame({
        C.USER_ID: ["u1", "u1", "u1", "u2", "u3", "u3"],
        C.ITEM_ID: ["a", "b", "a", "b", "new", "a"],
        C.TS: pd.to_datetime(["2026-11-10", "2026-11-12", "2026-11-16", "2026-11-17",
                              "2026-11-18", "2026-11-11"], utc=True),
        "weight": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]})
    cut = pd.Timestamp("2026-11-15", tz="UTC")
    train, labels = pairs_from_events(ev, cut)
    w = forward_window(train, labels, cut)
    assert (pd.to_datetime(w.train["last_ts"], utc=True) < cut).all()
    assert set(map(tuple, w.train[[C.USER_ID, C.ITEM_ID]].values)) == {
        ("u1", "a"), ("u1", "b"), ("u3", "a")}
    # u1's second click on a is a repeat (seen before the cutoff): not a label
    assert w.relevant == {"u2": {"b"}, "u3": {"new"}}
    assert w.trending_ids() == ["a", "b"]  # as of the cutoff: "new" had no user yet
    # the first three days of labels only (u3's "new" came on the fourth)
    three = w.first_days(3)
    assert three.relevant == {"u2": {"b"}} and list(three.users) == ["u2"]
    assert w.first_days(1).relevant == {}
    leaked = train.assign(last_ts=train["last_ts"].where(train[C.ITEM_ID] != "b", ev[C.TS].max()))
    with pytest.raises(ValueError, match="before it"):
        forward_window(leaked, labels, cut)


def test_user_window_holds_out_each_users_latest_pairs():
    rows = [("u1", f"i{j}", 1.0, f"2026-11-{10 + j:02d}") for j in range(10)]
    rows += [("u2", "a", 1.0, "2026-11-01"), ("u2", "b", 1.0, "2026-11-02")]  # too few pairs
    rows += [("u3", f"k{j}", 0.0 if j == 9 else 1.0, f"2026-11-{10 + j:02d}") for j in range(10)]
    h = user_window(_pairs(rows), pd.Timestamp("2026-11-30", tz="UTC"), fraction=0.2,
                    min_pairs=5)
    assert h.relevant == {"u1": {"i8", "i9"}, "u3": {"k8"}}  # k9 held out but weight 0
    assert set(h.train[C.ITEM_ID]) == {f"i{j}" for j in range(8)} | {"a", "b"} | \
        {f"k{j}" for j in range(8)}


def test_slices_cold_items_and_cold_users():
    train = _pairs([("u1", "a", 1.0, "2026-11-18"), ("u2", "b", 0.0, "2026-11-18")])
    h = forward_window(train, pd.DataFrame({C.USER_ID: ["u1", "u1", "u3"],
                                            C.ITEM_ID: ["c", "b", "a"],
                                            "weight": [1.0, 1.0, 1.0]}),
                       pd.Timestamp("2026-11-19", tz="UTC"))
    s = eval_slices(h, np.array(["u1", "u3"], dtype=object), {"a", "b", "c", "d"})
    assert s["all"] == {"u1": {"b", "c"}, "u3": {"a"}}
    assert s["cold_items"] == {"u1": {"c"}}  # b has a (zero-weight) training pair: not cold
    assert s["cold_users"] == {"u3": {"a"}}


# ---------------------------------------------------------------- the gate

def _metrics(ndcg: float, se: float = 0.0, k: int = 10, users: int = 100) -> pd.DataFrame:
    rows = [("hybrid", "all", k, "users", users), ("hybrid", "all", k, "ndcg", ndcg),
            ("hybrid", "all", k, "ndcg_se", se), ("als", "all", k, "ndcg", 0.9)]
    return pd.DataFrame(rows, columns=["model", "slice", "k", "metric", "value"])


def _publish(wh, tmp, ds: str, metrics: pd.DataFrame, split: str = "time") -> None:
    folder = tmp / f"stage-{ds}-{len(W.published_ds(wh))}"
    W.write_table_folder(metrics, folder)
    W.publish(wh, ds, {"eval_metrics": folder}, extra={"evaluation": {"split": split}})


def test_gate_first_run_passes_then_a_drop_beyond_tolerance_is_refused(tmp_path):
    wh, ev = tmp_path / "wh", EvalSettings(gate_max_drop=0.02, gate_noise_z=2.0)
    first = quality_gate(wh, "2026-11-19", _metrics(0.30), ev, split="time")
    assert first["status"] == "first_run"
    _publish(wh, tmp_path, "2026-11-19", _metrics(0.30, se=0.01))
    g = quality_gate(wh, "2026-11-20", _metrics(0.25, se=0.01), ev, split="time")
    assert g["status"] == "refused"
    assert g["previous_ds"] == "2026-11-19" and g["drop"] == pytest.approx(0.05)
    assert "0.2500" in g["message"] and "0.3000" in g["message"]  # both values
    assert "override_quality_gate" in g["message"]
    ok = quality_gate(wh, "2026-11-20", _metrics(0.29, se=0.01), ev, split="time")
    assert ok["status"] == "passed"  # 0.01 drop is within 0.02


def test_gate_ignores_drops_within_the_noise_of_two_different_days(tmp_path):
    wh = tmp_path / "wh"
    _publish(wh, tmp_path, "2026-11-19", _metrics(0.30, se=0.04))
    noisy = _metrics(0.25, se=0.04)  # drop 0.05 < 2 * hypot(0.04, 0.04) = 0.113
    assert quality_gate(wh, "2026-11-20", noisy, EvalSettings(), split="time")["status"] == "passed"
    literal = EvalSettings(gate_noise_z=0)
    assert quality_gate(wh, "2026-11-20", noisy, literal, split="time")["status"] == "refused"


def test_gate_rerun_of_a_published_day_compares_with_the_version_it_replaces(tmp_path):
    wh = tmp_path / "wh"
    _publish(wh, tmp_path, "2026-11-19", _metrics(0.10))
    _publish(wh, tmp_path, "2026-11-20", _metrics(0.30, se=0.05))
    # same day, same test users: noise does not excuse the drop
    g = quality_gate(wh, "2026-11-20", _metrics(0.25, se=0.05), EvalSettings(), split="time")
    assert g["status"] == "refused" and g["previous_ds"] == "2026-11-20"


def test_gate_override_is_recorded_and_other_statuses(tmp_path):
    wh = tmp_path / "wh"
    _publish(wh, tmp_path, "2026-11-19", _metrics(0.30))
    g = quality_gate(wh, "2026-11-20", _metrics(0.10), EvalSettings(), split="time",
                     override=True, reason="new catalog, agreed with analytics")
    assert g["status"] == "overridden" and g["override"] is True
    assert "new catalog, agreed with analytics" in g["message"]
    # a run measured with another split is not compared with this one
    assert quality_gate(wh, "2026-11-20", _metrics(0.10), EvalSettings(),
                        split="user")["status"] == "first_run"
    empty = pd.DataFrame(columns=["model", "slice", "k", "metric", "value"])
    assert quality_gate(wh, "2026-11-20", empty, EvalSettings(), split="time")["status"] == "not_measured"
    assert quality_gate(wh, "2026-11-20", _metrics(0.1), EvalSettings(gate=False),
                        split="time")["status"] == "off"
    few = quality_gate(wh, "2026-11-20", _metrics(0.1, users=12), EvalSettings(), split="time")
    assert few["status"] == "too_few_users" and "12 test users" in few["message"]


def test_gate_skips_a_previous_run_measured_on_too_few_users(tmp_path):
    wh = tmp_path / "wh"
    _publish(wh, tmp_path, "2026-11-18", _metrics(0.20))
    _publish(wh, tmp_path, "2026-11-19", _metrics(0.90, users=3))  # a near-empty holdout
    g = quality_gate(wh, "2026-11-20", _metrics(0.19), EvalSettings(), split="time")
    assert g["status"] == "passed" and g["previous_ds"] == "2026-11-18"


def test_eval_settings_reject_a_gate_k_that_is_not_measured():
    with pytest.raises(ValueError, match="gate_k"):
        EvalSettings(ks=(5, 20), gate_k=10)


def test_the_report_sets_each_tuning_estimate_beside_the_holdout():
    """The blend tuning's estimates become eval_metrics rows (slice tuning_window) and
    the report's table puts each beside the holdout's value with its z."""
    from vrec.report import estimate_vs_holdout
    from vrec.stages.evaluate import estimate_rows

    record = {"estimate_users": 900, "estimate_days": 1, "estimates": {
        "als": {"ndcg": 0.05, "se": 0.003}, "hybrid": {"ndcg": 0.07, "se": 0.004}}}
    est = estimate_rows(record, 10, 1)
    # estimates scored on 7 days of labels do not compare with a 1-day holdout
    assert estimate_rows(record, 10, 7).empty
    assert set(est["slice"]) == {"tuning_window"} and set(est["k"]) == {10}
    assert est[est["metric"] == "users"]["value"].tolist() == [900.0, 900.0]
    hold = pd.DataFrame([("als", "all", 10, "ndcg", 0.04), ("als", "all", 10, "ndcg_se", 0.004),
                         ("hybrid", "all", 10, "ndcg", 0.071),
                         ("hybrid", "all", 10, "ndcg_se", 0.003)],
                        columns=["model", "slice", "k", "metric", "value"])
    t = estimate_vs_holdout(pd.concat([hold, est], ignore_index=True)).set_index("model")
    assert t.loc["als", "difference"] == pytest.approx(-0.01)
    assert t.loc["als", "z"] == pytest.approx(-0.01 / 0.005)
    assert t.loc["hybrid", "z"] == pytest.approx(0.001 / 0.005)
    assert estimate_rows(None, 10, 1).empty and estimate_rows({"estimates": None}, 10, 1).empty


def test_a_window_without_labels_is_empty_not_an_error():
    """A cutoff before any data (e.g. the learned ranker's training window on a young
    warehouse): no labels, no users, no error."""
    train = _pairs([("u1", "i1", 1.0, "2026-11-10")])
    w = forward_window(train, pd.DataFrame(columns=[C.USER_ID, C.ITEM_ID, "weight"]),
                       pd.Timestamp("2026-11-19", tz="UTC"))
    assert w.relevant == {} and len(w.users) == 0
