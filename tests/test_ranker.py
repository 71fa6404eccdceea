"""The learned ranker (vrec.core.ranker): it learns what predicts the label, the features
of a window never see a label day, it publishes only when it beats the blend, and its
reasons come from the candidates' sources."""

from __future__ import annotations

import numpy as np
import pandas as pd

from vrec import columns as C
from vrec.config import CFSettings, RankerSettings, RecsSettings, VisualSettings
from vrec.core.ranker import (
    FEATURES,
    features,
    fit_ranker,
    fit_window,
    labels,
    train_ranker,
    training_rows,
)
from vrec.core.ranking import rank
from vrec.core.retrieval import RankInput
from vrec.core.window import forward_window, pairs_from_events

from .test_hybrid import ListPolicy, _space

SETTINGS = RankerSettings(rounds=60, min_data_in_leaf=5)


def _inputs(space, n_users: int, seed: int) -> tuple[RankInput, dict[str, set[str]]]:
    """Users with 30 candidates each: CF and visual scores are noise, and the label is 1
    exactly for the candidates whose last-items score is above 0.8 (about one in five)."""
    rng = np.random.default_rng(seed)
    users, items, cf, vis, last, rel = [], [], [], [], [], {}
    for u in range(n_users):
        cand = np.sort(rng.choice(space.n, 30, replace=False))
        lv = rng.uniform(0, 1, 30)
        users.append(f"u{seed}_{u}")
        items.append(cand)
        cf.append(rng.normal(size=30))
        vis.append(rng.normal(size=30))
        last.append(lv)
        rel[users[-1]] = set(space.item_ids[cand[lv > 0.8]].astype(str))
    n = len(users)
    nan = [np.full(30, np.nan) for _ in users]
    inp = RankInput(np.asarray(users), np.ones(n, bool), np.ones(n, bool), np.zeros(n, bool),
                    np.zeros(n, bool), np.full(n, 5), [np.zeros(0, np.int64)] * n,
                    [np.zeros(0, np.int64)] * n, [np.zeros(0, np.int64)] * n, items, cf, vis,
                    nan, nan, last=last)
    return inp, rel


def _ndcg(lists, rel, k=5):
    from vrec.core.metrics import ndcg_at_k

    return float(np.mean([ndcg_at_k(lists.get(u, [])[:k], r, k) for u, r in rel.items() if r]))


def test_the_ranker_learns_that_a_feature_predicts_the_label():
    from vrec.core.ranking import lists_by_user

    space, _, _ = _space(n_warm=60, n_new=0)
    train, rel_train = _inputs(space, 200, seed=1)
    test, rel_test = _inputs(space, 100, seed=2)
    X, y, groups = training_rows(train, space, rel_train, negatives=10, max_rows=100_000)
    assert groups.sum() == len(y) and (y > 0).sum() > 0
    ranker, facts = fit_ranker(X, y, groups, SETTINGS, k=5)
    # the feature that decides the label carries most of the gain
    top = next(iter(facts["importance"]))
    assert top in ("last", "last_rank"), facts["importance"]
    policy = ListPolicy(k=5, new_arrival_slots=0, visual_weight=0.5)
    learned = _ndcg(lists_by_user(rank(test, space, policy, ranker), space), rel_test)
    blend = _ndcg(lists_by_user(rank(test, space, policy), space), rel_test)
    assert learned > 0.95, learned  # every positive scores above every negative
    assert blend < 0.6, blend  # the blend of the noise scores cannot know it


def test_compiled_trees_score_as_lightgbm(tmp_path, monkeypatch):
    """The ranker predicts with its trees compiled to machine code: the same scores as
    LightGBM's predictor (features with NaN included) to float64 rounding; a second
    ranker of the same model and a pickled one (as Spark ships it) load the compiled
    code from the cache instead of compiling; a compile that fails falls back to LightGBM."""
    import pickle
    import tempfile

    from vrec.core import ranker as R

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    space, _, _ = _space(n_warm=60, n_new=0)
    train, rel_train = _inputs(space, 200, seed=1)
    X, y, groups = training_rows(train, space, rel_train, negatives=10, max_rows=100_000)
    ranker, _ = fit_ranker(X, y, groups, SETTINGS, k=5)
    test, _ = _inputs(space, 50, seed=3)
    Xt = features(test, space)
    assert np.isnan(Xt).any()
    assert ranker.engine == "compiled"
    assert np.allclose(ranker.predict(Xt), ranker.predict_lightgbm(Xt), rtol=0, atol=1e-12)
    assert len(list((tmp_path / "vrec-compiled-rankers").glob("*.o"))) == 1
    calls = []
    monkeypatch.setattr(R, "compiled_trees", lambda m: calls.append(m) or None)
    shipped = pickle.loads(pickle.dumps(ranker))
    assert shipped.engine == "lightgbm" and len(calls) == 1  # not shipped compiled
    monkeypatch.undo()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    (binary,) = (tmp_path / "vrec-compiled-rankers").glob("*.o")
    stamp = binary.stat().st_mtime_ns
    again = R.Ranker(ranker.model)
    assert again.engine == "compiled" and binary.stat().st_mtime_ns == stamp
    assert np.array_equal(again.predict(Xt), ranker.predict(Xt))
    assert R.compiled_trees("not a model") is None


def test_training_rows_sample_negatives_keep_positives_and_cap_rows():
    space, _, _ = _space(n_warm=60, n_new=0)
    inp, rel = _inputs(space, 50, seed=3)
    y_all = labels(inp, space, rel)
    X, y, groups = training_rows(inp, space, rel, negatives=4, max_rows=10_000)
    assert X.shape[1] == len(FEATURES)
    # every query keeps its positives and at most 4 negatives
    assert y.sum() == y_all.sum()
    assert len(groups) == sum(1 for u in inp.user_ids if rel[u])
    assert (groups <= 4 + 30).all() and len(y) - y.sum() <= 4 * len(groups)
    _, _, capped = training_rows(inp, space, rel, negatives=4, max_rows=60)
    assert 0 < capped.sum() <= 60


def _events(n_users=40, n_items=30, days=20, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-11-01", tz="UTC")
    rows = []
    for u in range(n_users):
        for _ in range(12):
            d = rng.integers(0, days)
            rows.append((f"u{u}", f"i{rng.integers(0, n_items):03d}",
                         start + pd.Timedelta(days=int(d), hours=int(rng.integers(0, 24)))))
    ev = pd.DataFrame(rows, columns=[C.USER_ID, C.ITEM_ID, C.TS])
    ev["weight"] = 1.0
    return ev


def _window_features(ev, cut, catalog):
    from vrec.core.tuning import window_candidates
    from vrec.spark.cf import fit_cf

    train, lab = pairs_from_events(ev, cut)
    w = forward_window(train, lab, cut)
    recs = RecsSettings(candidates=10, tune_min_users=1)
    cf = CFSettings(factors=4, iterations=3, tune=False)
    c = window_candidates(w, catalog, pd.DataFrame(columns=[C.ITEM_ID, "embedding"]),
                          recs=recs, visual=VisualSettings(), fit=lambda p: fit_cf(p, cf),
                          extra=True)
    return w, c, features(c.inp, c.space)


def test_no_label_day_reaches_the_features():
    """The features of a window as of a cutoff are the same whatever happens after it:
    events on the label days (more of them, on other items) change the labels only."""
    ev = _events()
    cut = pd.Timestamp("2026-11-14", tz="UTC")
    catalog = pd.DataFrame({C.ITEM_ID: [f"i{j:03d}" for j in range(30)],
                            C.TITLE: [f"item {j}" for j in range(30)],
                            C.CATEGORY: [f"c{j % 3}" for j in range(30)],
                            C.PRICE: np.linspace(5, 50, 30)})
    rng = np.random.default_rng(9)
    after = ev[ev[C.TS] >= cut]
    burst = pd.DataFrame({C.USER_ID: rng.choice(ev[C.USER_ID].unique(), 300),
                          C.ITEM_ID: rng.choice([f"i{j:03d}" for j in range(20, 30)], 300),
                          C.TS: cut + pd.to_timedelta(rng.integers(0, 5 * 86400, 300), unit="s"),
                          "weight": 1.0})
    w1, c1, X1 = _window_features(ev, cut, catalog)
    w2, c2, X2 = _window_features(pd.concat([ev, burst], ignore_index=True), cut, catalog)
    assert len(after) and w1.relevant != w2.relevant  # the label days differ
    # the same users are scored in both (the window's users are those with labels)
    both = sorted(set(c1.inp.user_ids) & set(c2.inp.user_ids))
    assert len(both) >= 10

    def rows_of(c, X):
        sizes = [len(i) for i in c.inp.items]
        starts = np.concatenate([[0], np.cumsum(sizes)])
        at = {u: r for r, u in enumerate(c.inp.user_ids)}
        return {u: (c.inp.items[at[u]], X[starts[at[u]]:starts[at[u] + 1]]) for u in both}

    a, b = rows_of(c1, X1), rows_of(c2, X2)
    for u in both:
        assert np.array_equal(a[u][0], b[u][0]), u
        np.testing.assert_allclose(a[u][1], b[u][1], rtol=1e-5, equal_nan=True)
    # the item facts count only pairs before the cutoff: users of the last day
    col = FEATURES.index("users_1d")
    before = ev[(ev[C.TS] < cut) & (ev[C.TS] >= cut - pd.Timedelta(days=1))]
    expect = before.groupby(C.ITEM_ID)[C.USER_ID].nunique()
    ids = c1.space.item_ids
    u0 = both[0]
    for j, it in enumerate(a[u0][0]):
        assert a[u0][1][j, col] == expect.get(ids[it], 0)


def test_the_ranker_publishes_only_when_it_beats_the_blend():
    """On a window where the label follows a feature the blend does not use, the ranker
    wins and is chosen; where the labels are noise, it is not, and the record says why."""
    from types import SimpleNamespace

    space, _, _ = _space(n_warm=60, n_new=0)

    def cands(seed, n, noise=False):
        inp, rel = _inputs(space, n, seed)
        if noise:
            rng = np.random.default_rng(seed + 100)
            rel = {u: set(space.item_ids[rng.choice(inp.items[r], 3, replace=False)].astype(str))
                   for r, u in enumerate(inp.user_ids)}
        w = forward_window(pd.DataFrame(columns=[C.USER_ID, C.ITEM_ID, "weight", "last_ts"]),
                           pd.DataFrame([(u, i, 1.0) for u, s in rel.items() for i in s],
                                        columns=[C.USER_ID, C.ITEM_ID, "weight"]),
                           pd.Timestamp("2026-11-10", tz="UTC"))
        return SimpleNamespace(window=w, inp=inp, space=space)

    policy = ListPolicy(k=5, new_arrival_slots=0, visual_weight=0.5)
    won = train_ranker(fit_window(cands(1, 200), SETTINGS, k=5), cands(2, 150), policy, SETTINGS)
    assert won["chosen"] == {"use": True, "new_arrival_slots": 0}, won.get("reason")
    assert won["validation"]["gain"] > won["validation"]["se"] > 0
    assert won["model"] and won["refit"]["rows"] > 0 and won["importance"]
    lost = train_ranker(fit_window(cands(3, 200, noise=True), SETTINGS, k=5),
                        cands(4, 150, noise=True), policy, SETTINGS)
    assert lost["chosen"]["use"] is False
    assert "is not >" in lost["reason"]


def test_the_first_fit_keeps_nothing_of_its_window():
    """fit_window's record holds the ranker and facts only: once the caller drops the
    first window's candidates they are freed (train_cf builds the second window's after
    it; at 10M holding both took the stage over 8 GB), and the protocol still runs."""
    import gc
    import weakref
    from types import SimpleNamespace

    space, _, _ = _space(n_warm=60, n_new=0)

    def cands(seed, n):
        inp, rel = _inputs(space, n, seed)
        w = forward_window(pd.DataFrame(columns=[C.USER_ID, C.ITEM_ID, "weight", "last_ts"]),
                           pd.DataFrame([(u, i, 1.0) for u, s in rel.items() for i in s],
                                        columns=[C.USER_ID, C.ITEM_ID, "weight"]),
                           pd.Timestamp("2026-11-10", tz="UTC"))
        return SimpleNamespace(window=w, inp=inp, space=space)

    train = cands(1, 200)
    held = [weakref.ref(train.inp), weakref.ref(train.window)]
    first = fit_window(train, SETTINGS, k=5)
    assert first["train"]["rows"] > 0 and first["train_window"]["scored_users"] == 200
    del train
    gc.collect()
    assert [r() for r in held] == [None, None]
    out = train_ranker(first, cands(2, 150), ListPolicy(k=5, new_arrival_slots=0,
                                                        visual_weight=0.5), SETTINGS)
    assert out["train_window"] == first["train_window"] and out["model"]
    assert out["seconds"] >= first["seconds"]
    skipped = fit_window(cands(3, 200), SETTINGS.model_copy(update={"min_queries": 10_000}),
                         k=5)
    assert "ranker" not in skipped and "min_queries 10000" in skipped["skipped"]
    assert train_ranker(skipped, cands(4, 150), ListPolicy(k=5, new_arrival_slots=0),
                        SETTINGS)["skipped"] == skipped["skipped"]


def test_ranker_reasons_come_from_the_sources():
    """A pick that only the trending source brought says trending; one whose content rank
    beats its CF rank says similar_to_history with a history anchor; a new arrival says
    so."""
    from vrec.core.ranker import Ranker

    space, _, _ = _space(n_warm=30, n_new=5)
    new_item = int(np.flatnonzero(space.new)[0])
    cand = np.array([3, 4, 5, new_item])
    nan = np.nan
    inp = RankInput(np.array(["u"]), np.array([True]), np.array([True]), np.array([False]),
                    np.array([False]), np.array([2]), [np.array([0, 1])], [np.array([0, 1])],
                    [np.zeros(0, np.int64)], [cand],
                    [np.array([0.9, 0.1, nan, 0.5])],      # cf
                    [np.array([0.2, 0.9, nan, 0.4])],      # visual profile
                    [np.full(4, nan)], [np.full(4, nan)])
    # a model that ranks the candidates in their given order
    X = features(inp, space)
    y = np.array([3, 2, 1, 0], dtype=np.float32)
    ranker, _ = fit_ranker(np.tile(X, (30, 1)), np.tile(y, 30), np.full(30, 4),
                           RankerSettings(rounds=20, min_data_in_leaf=1), k=4)
    out = rank(inp, space, ListPolicy(k=4, new_arrival_slots=0), Ranker(ranker.model, slots=0))
    by_item = dict(zip(out["item"], out["reason"]))
    anchor = dict(zip(out["item"], out["reason_item"]))
    assert by_item[3] == "collaborative" and anchor[3] == -1
    assert by_item[4] == "similar_to_history" and anchor[4] in (0, 1)
    assert by_item[5] == "trending" and anchor[5] == -1
    assert by_item[new_item] == "new_arrival_visual"


def test_a_space_with_blocked_items_ranks_and_fills_without_them():
    """Blocked items (unavailable, excluded) keep their trending rank as a feature, but
    neither the learned ranker nor the trending fill lists them."""
    from vrec.core.itemspace import block_items, open_trending
    from vrec.core.ranking import lists_by_user

    space, _, _ = _space(n_warm=60, n_new=0)
    train, rel_train = _inputs(space, 200, seed=1)
    ranker, _ = fit_ranker(*training_rows(train, space, rel_train, negatives=10,
                                          max_rows=100_000), SETTINGS, k=5)
    gone = space.item_ids[np.asarray(space.trending)[:10]]  # the ten most trending
    blocked = block_items(space, gone)
    assert len(blocked.trending) == space.n and len(open_trending(blocked)) == space.n - 10
    assert np.allclose(features(_inputs(space, 5, 3)[0], space),
                       features(_inputs(blocked, 5, 3)[0], blocked), equal_nan=True)
    # users whose candidates are too few for a list: the fill tops them up, never blocked
    test, _ = _inputs(blocked, 20, seed=4)
    test.items = [c[:2] for c in test.items]
    for s in ("cf", "vis", "pref", "txt", "last", "cat"):
        setattr(test, s, [v[:2] for v in getattr(test, s)])
    lists = lists_by_user(rank(test, blocked, ListPolicy(k=5, new_arrival_slots=0), ranker),
                          blocked)
    assert all(len(v) == 5 for v in lists.values())
    assert not set(gone) & {i for v in lists.values() for i in v}


def test_one_sort_gives_the_rank_features_and_the_blend_ranks_on_a_hand_example():
    """A list's places by a score (NaN: none; ties keep list order) give both the
    ranker's rank feature (place / count, 1 best) and the blend's rank normalisation
    (1 best .. -1 worst, 0 without a score), worked out by hand."""
    from vrec.core.ranker import _ranks
    from vrec.core.ranking import normalise, rank_scale
    from vrec.core.retrieval import score_positions

    x = np.array([0.2, np.nan, 0.9, 0.2, -1.0])
    places, m = score_positions(x)
    assert m == 4 and np.array_equal(places, [1.0, np.nan, 0.0, 2.0, 3.0], equal_nan=True)
    assert np.array_equal(_ranks(places, m), [0.5, np.nan, 0.25, 0.75, 1.0], equal_nan=True)
    want = [1 - 2 / 3, 0.0, 1.0, 1 - 4 / 3, -1.0]
    assert np.allclose(rank_scale(places, m), want) and np.allclose(normalise(x, "rank"), want)
    assert not rank_scale(*score_positions(np.array([np.nan, 3.0]))).any()  # one score: 0
    assert np.isnan(_ranks(*score_positions(np.array([np.nan, np.nan])))).all()
