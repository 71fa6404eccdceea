"""Retrieval and the hybrid ranker, the user builder, the cold-start map, blend tuning and
privacy (numpy; no Spark except where a Spark expression must match its Python twin)."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from vrec import columns as C
from vrec.config import CFSettings, PrivacySettings, RecsSettings, VisualSettings
from vrec.core.coldstart import auc, fit_ridge_map, l2_normalise
from vrec.core.itemspace import ItemSpace
from vrec.core.ranking import greedy_pick, rank, user_visual_weight
from vrec.core.retrieval import retrieve
from vrec.core.users import UserBatch
from vrec.core.visual import fit_pca, gram
from vrec.privacy import PrivacyError, pseudonym, pseudonym_col, resolve_salt

RNG = np.random.default_rng(7)
DIM, F = 12, 6


def ListPolicy(**kw) -> RecsSettings:  # noqa: N802 - reads like the settings it builds
    """The ``recs`` settings of a test list (no history shrink unless given)."""
    return RecsSettings(**{"history_shrink": 0.0, **kw})


VISUAL = VisualSettings(dim=8)


def rank_batch(batch, space, policy, visual=VISUAL):
    """Retrieval then ranking, as the candidates and build_recs stages run them."""
    return rank(retrieve(batch, space, policy.candidates, visual), space, policy)


def _space(n_warm=60, n_new=10, n_cat=3, seed=0):
    """Items in n_cat visual clusters; ALS factors follow the clusters (so the picture
    predicts the factors); the last n_new items are new arrivals with predicted factors."""
    rng = np.random.default_rng(seed)
    n = n_warm + n_new
    cat = np.arange(n) % n_cat
    centres = l2_normalise(rng.normal(size=(n_cat, DIM)))
    emb = l2_normalise(centres[cat] + 0.25 * rng.normal(size=(n, DIM)))
    proj = rng.normal(size=(DIM, F))
    factors = (emb @ proj + 0.05 * rng.normal(size=(n, F))).astype(np.float32)
    warm = np.arange(n) < n_warm
    new = ~warm
    liked = sp.random(40, n_warm, density=0.2, format="csr", random_state=seed)
    if n_new:
        m = fit_ridge_map(emb[warm], factors[warm], rng.normal(size=(40, F)), liked, seed=seed)
        factors[new] = m.predict(emb[new])
    pca = fit_pca(emb, 8)
    z = pca.project(emb)
    space = ItemSpace(item_ids=np.array([f"i{j:03d}" for j in range(n)]), emb=emb,
                      has_vec=np.ones(n, bool), factors=factors, warm=warm, new=new,
                      category=cat.astype(np.int64), trending=np.arange(n)[::-1].copy(),
                      category_names=np.array([f"c{c}" for c in range(n_cat)]),
                      pref_z=z, has_z=np.ones(n, bool), pref_gram=gram(z),
                      text_dims=np.array([0]))
    return space, proj, centres


def _batch(space, hist_rows, uf, in_model=None, touched=None):
    b = len(hist_rows)
    rows = [r for r, h in enumerate(hist_rows) for _ in h]
    cols = [i for h in hist_rows for i in h]
    hist = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(b, space.n))
    return UserBatch(np.array([f"u{r}" for r in range(b)]), np.asarray(uf, np.float32),
                     np.ones(b, bool) if in_model is None else np.asarray(in_model),
                     hist, (hist > 0).astype(np.int8).tocsr(), touched or [])


def _user_of_cluster(space, proj, c, n_hist=6):
    hist = [i for i in np.flatnonzero(space.category == c) if space.warm[i]][:n_hist]
    return hist, (space.emb[hist].mean(0) @ proj)


def test_cold_item_reaches_users_whose_history_looks_like_it():
    space, proj, _ = _space()
    ha, ua = _user_of_cluster(space, proj, 0)
    hb, ub = _user_of_cluster(space, proj, 1)
    out = rank_batch(_batch(space, [ha, hb], [ua, ub]), space,
                     ListPolicy(k=10, candidates=20, new_arrival_slots=2))
    for user, c in (("u0", 0), ("u1", 1)):
        rows = out[out["user_id"] == user]
        new_rows = rows[rows["reason"] == C.REASON_NEW_ARRIVAL]
        assert len(new_rows) >= 2, rows
        assert (space.new[new_rows["item"]]).all()
        # the new arrivals picked look like the user's history cluster
        assert (space.category[new_rows["item"]] == c).all(), new_rows
        assert (space.category[new_rows["reason_item"]] == c).all()


def test_reserved_slots_bring_new_arrivals_that_would_not_rank_on_merit():
    space, proj, _ = _space()
    h, u = _user_of_cluster(space, proj, 0)
    space.factors[space.new] *= 0.01  # weak predicted scores: never in the top 10 on merit
    batch = _batch(space, [h], [u])
    without = rank_batch(batch, space, ListPolicy(k=10, new_arrival_slots=0, visual_weight=0))
    with_slots = rank_batch(batch, space, ListPolicy(k=10, new_arrival_slots=3, visual_weight=0))
    assert not space.new[without["item"]].any()
    assert space.new[with_slots["item"]].sum() == 3
    assert (with_slots["reason"] == C.REASON_NEW_ARRIVAL).sum() == 3
    assert (np.diff(with_slots["score"]) <= 1e-12).all()


def test_a_source_builds_its_index_only_when_a_user_searches_it():
    """A batch with CF factors and no history (the evaluation's ``als`` users) builds the
    CF index and no picture or content index; a user with a history builds them, and the
    lists are those of a space whose indexes were all built beforehand."""
    from vrec.core.retrieval import source

    space, proj, _ = _space()
    h, u = _user_of_cluster(space, proj, 0)
    cf_only = _batch(space, [[]], [u])
    retrieve(cf_only, space, 20, VISUAL)
    built = {k for k, v in space.cache.items() if getattr(v, "_index", None) is not None}
    assert built == {"warm", "new"}
    assert space.cache["visual"]._index is None and space.cache["pref"]._index is None
    lazy = rank_batch(_batch(space, [h], [u]), space, ListPolicy(k=10))
    assert space.cache["visual"]._index is not None
    eager, *_ = _space()
    for name in ("warm", "visual", "new", "new_visual", "pref", "new_pref"):
        assert source(eager, name).index is not None
    assert lazy.equals(rank_batch(_batch(eager, [h], [u]), eager, ListPolicy(k=10)))


def test_each_reason_appears_when_its_score_dominates():
    space, proj, _ = _space(n_new=0)
    h, u = _user_of_cluster(space, proj, 0)
    batch = _batch(space, [h], [u])
    cf_heavy = rank_batch(batch, space, ListPolicy(k=10, visual_weight=0.0, new_arrival_slots=0))
    assert set(cf_heavy["reason"]) == {C.REASON_COLLABORATIVE}
    assert (cf_heavy["reason_item"] == -1).all()
    vis_heavy = rank_batch(batch, space, ListPolicy(k=10, visual_weight=1.0, new_arrival_slots=0))
    sim = vis_heavy[vis_heavy["reason"] == C.REASON_SIMILAR]
    assert len(sim) == 10
    # the reason item is the history item most similar to the recommendation
    for item, why in zip(sim["item"], sim["reason_item"]):
        assert why == h[int(np.argmax(space.emb[h] @ space.emb[item]))]
    # the reason follows the larger weighted term, row by row
    mid = rank_batch(batch, space, ListPolicy(k=10, visual_weight=0.5, new_arrival_slots=0))
    assert {C.REASON_COLLABORATIVE, C.REASON_SIMILAR} >= set(mid["reason"])


def test_no_seen_items_and_scores_non_increasing():
    space, proj, _ = _space()
    hists, ufs = zip(*[_user_of_cluster(space, proj, c, n_hist=15) for c in range(3)])
    out = rank_batch(_batch(space, list(hists), list(ufs)), space,
                     ListPolicy(k=10, new_arrival_slots=2, mmr_penalty=0.5, max_per_category=4))
    for r, user in enumerate(["u0", "u1", "u2"]):
        rows = out[out["user_id"] == user]
        assert not set(rows["item"]) & set(hists[r])
        assert list(rows["rank"]) == list(range(1, 11))
        assert (np.diff(rows["score"].to_numpy()) <= 1e-12).all()
        assert rows["item"].is_unique


def test_category_cap_holds():
    space, proj, _ = _space()
    h, u = _user_of_cluster(space, proj, 0)
    out = rank_batch(_batch(space, [h], [u]), space,
                     ListPolicy(k=9, max_per_category=3, new_arrival_slots=0))
    assert out.groupby(space.category[out["item"]]).size().max() <= 3
    uncapped = rank_batch(_batch(space, [h], [u]), space, ListPolicy(k=9, new_arrival_slots=0))
    assert uncapped.groupby(space.category[uncapped["item"]]).size().max() > 3


def test_mmr_lowers_intra_list_similarity():
    space, proj, _ = _space()
    h, u = _user_of_cluster(space, proj, 0)
    batch = _batch(space, [h], [u])

    def ils(df):
        e = space.emb[df["item"].to_numpy()]
        s = e @ e.T
        return (s.sum() - len(e)) / (len(e) * (len(e) - 1))

    plain = rank_batch(batch, space, ListPolicy(k=10, new_arrival_slots=0))
    mmr = rank_batch(batch, space, ListPolicy(k=10, new_arrival_slots=0, mmr_penalty=3.0))
    assert ils(mmr) < ils(plain) - 0.05
    assert (np.diff(mmr["score"]) <= 1e-12).all()


def test_greedy_pick_hand_example():
    blend = np.array([3.0, 2.9, 1.0, 0.5])
    emb = np.eye(4, dtype=np.float32)
    emb[1] = emb[0]  # item 1 duplicates item 0
    pick, gain = greedy_pick(blend, emb, np.array([0, 0, 1, 2]), np.array([0, 0, 0, 1], bool),
                             k=3, slots=1, mmr_penalty=2.5, max_per_category=0)
    assert list(pick) == [0, 2, 3]  # 1 is penalised by its twin; the last place is reserved
    assert np.allclose(gain, [3.0, 1.0, 0.5])


def test_the_sorted_pick_without_diversity_or_cap_equals_the_greedy_loop():
    """Without MMR or a category cap the pick is a sort (the fast path the ranker and the
    blend tuning take); it must pick what the step-by-step greedy loop picks, in the same
    order and with the same gains, ties and reserved slots included. A cap larger than
    the list forces the loop without changing what it picks."""
    rng = np.random.default_rng(5)
    for _ in range(400):
        n = int(rng.integers(1, 30))
        blend = np.round(rng.normal(size=n), 1)  # rounded: ties
        is_new = rng.random(n) < rng.choice([0.0, 0.2, 0.6])
        key = None if rng.random() < 0.3 else np.round(rng.normal(size=n), 1)
        args = dict(k=int(rng.integers(1, 12)), slots=int(rng.integers(0, 4)), mmr_penalty=0.0,
                    slot_key=key)
        emb, cat = np.eye(n), rng.integers(-1, 3, size=n)
        fast = greedy_pick(blend, emb, cat, is_new, max_per_category=0, **args)
        loop = greedy_pick(blend, emb, cat, is_new, max_per_category=n + 1, **args)
        assert fast[0].tolist() == loop[0].tolist(), (blend, is_new, key, args)
        assert np.array_equal(fast[1], loop[1])


def test_cold_users_get_trending_lists_within_touched_categories_first():
    space, _, _ = _space()
    batch = _batch(space, [[], []], np.zeros((2, F)), in_model=[False, False],
                   touched=[np.array([2]), np.array([], dtype=np.int64)])
    out = rank_batch(batch, space, ListPolicy(k=5))
    assert set(out["reason"]) == {C.REASON_TRENDING}
    a, b = out[out["user_id"] == "u0"], out[out["user_id"] == "u1"]
    assert len(a) == len(b) == 5
    assert (space.category[a["item"]] == 2).all()
    assert list(b["item"]) == list(space.trending[:5])
    assert (np.diff(a["score"]) < 0).all()


def test_history_shrink_leans_short_histories_on_the_picture():
    b = user_visual_weight(0.2, 5.0, np.array([1, 5, 100]), np.ones(3, bool), np.ones(3, bool))
    assert b[0] > b[1] > b[2] > 0.2 and np.isclose(b[1], 0.2 + 0.8 * 0.5)
    assert user_visual_weight(0.2, 5.0, np.array([3]), np.array([False]), np.array([True]))[0] == 1
    assert user_visual_weight(0.2, 5.0, np.array([3]), np.array([True]), np.array([False]))[0] == 0


def test_ridge_map_recovers_linear_factors_and_ranks_users():
    rng = np.random.default_rng(1)
    emb = l2_normalise(rng.normal(size=(400, DIM)))
    factors = (emb @ rng.normal(size=(DIM, F)) + 0.01 * rng.normal(size=(400, F))).astype(np.float32)
    uf = rng.normal(size=(200, F)).astype(np.float32)
    s = uf @ factors.T  # each user likes their 20 best items
    rows = np.repeat(np.arange(200), 20)
    liked = sp.csr_matrix((np.ones(4000), (rows, np.argsort(-s, axis=1)[:, :20].ravel())),
                          shape=(200, 400))
    m = fit_ridge_map(emb, factors, uf, liked)
    q = m.quality
    assert q["r2"] > 0.9 and q["cosine"] > 0.9
    assert q["auc_mapped"] > 0.9 and q["auc_true_factors"] > 0.95
    noise = fit_ridge_map(emb, rng.normal(size=(400, F)).astype(np.float32), uf, liked)
    assert noise.quality["r2"] < 0.1 and noise.quality["auc_mapped"] < q["auc_mapped"] - 0.2
    assert auc(np.array([3.0, 2.0]), np.array([1.0, 2.0])) == pytest.approx(0.875)


def _taste_pairs(n_users=300, seed=3, visual_signal=True, n_cat=15):
    """Users with a favourite visual cluster; when ``visual_signal`` is off, their
    choices ignore the pictures (the tuning must not pick a visual blend then)."""
    rng = np.random.default_rng(seed)
    space, _, _ = _space(n_warm=90, n_new=0, n_cat=n_cat)
    cats = space.category
    rows = []
    t0 = pd.Timestamp("2026-11-01", tz="UTC")
    for u in range(n_users):
        fav = u % n_cat
        pool = np.flatnonzero(cats == fav) if visual_signal else np.arange(space.n)
        items = rng.choice(pool, size=5, replace=False)
        for j, it in enumerate(items):
            rows.append((f"u{u:03d}", space.item_ids[it], 1.0, t0 + pd.Timedelta(hours=j)))
    pairs = pd.DataFrame(rows, columns=[C.USER_ID, C.ITEM_ID, "weight", "last_ts"])
    catalog = pd.DataFrame({C.ITEM_ID: space.item_ids, C.CATEGORY: [f"c{c}" for c in cats]})
    vectors = pd.DataFrame({C.ITEM_ID: space.item_ids, "embedding": list(space.emb)})
    return pairs, catalog, vectors, list(space.item_ids)


def _taste_window(pairs, trending, hours=3):
    """The forward window of the taste pairs: each user's first ``hours`` pairs are
    known at the cutoff, the rest are the labels."""
    from vrec.core.window import forward_window

    cut = pd.Timestamp("2026-11-01", tz="UTC") + pd.Timedelta(hours=hours)
    early = pairs["last_ts"] < cut
    return forward_window(pairs[early], pairs[~early], cut, trending=trending)


@pytest.mark.parametrize("visual_signal", [True, False])
def test_tuning_never_picks_a_blend_worse_than_cf_only(visual_signal):
    from vrec.core.tuning import tune_blend

    pairs, catalog, vectors, trending = _taste_pairs(visual_signal=visual_signal)
    recs = RecsSettings(k=5, candidates=20, new_arrival_slots=0, tune_min_users=10)
    # two factors cannot hold 15 taste clusters: CF underfits, the pictures can fill in
    from vrec.spark.cf import fit_cf

    cf = CFSettings(factors=2, iterations=5)
    out = tune_blend(_taste_window(pairs, trending), catalog, vectors, recs=recs,
                     visual=VisualSettings(dim=8), fit=lambda p: fit_cf(p, cf))
    assert out["val_users"] >= 250 and out["chosen"] is not None
    assert out["chosen_ndcg"] >= out["cf_only_ndcg"]
    chosen = (out["chosen"]["visual_weight"], out["chosen"]["history_shrink"])
    if visual_signal:  # tastes are visual clusters: the picture must help and be chosen
        assert chosen != (0.0, 0.0) and out["chosen_ndcg"] > out["cf_only_ndcg"]
        assert out["chosen_ndcg"] == max(out["grid"].values())
    else:  # choices ignore the pictures: no blend wins beyond noise, CF only is kept
        assert chosen == (0.0, 0.0)


def test_pseudonyms_stable_per_salt_different_across_salts(spark):
    a, b = "salt-one-0123456789", "salt-two-0123456789"
    assert pseudonym("42", a) == pseudonym("42", a)
    assert pseudonym("42", a) != pseudonym("42", b) and pseudonym("42", a) != pseudonym("43", a)
    assert pseudonym("42", a).startswith("u_") and "42" not in pseudonym("42", a)[2:4]
    from pyspark.sql import functions as F

    df = spark.createDataFrame([("42",), ("x y",)], "user_id string")
    got = [r[0] for r in df.select(pseudonym_col(F.col("user_id"), a)).collect()]
    assert got == [pseudonym("42", a), pseudonym("x y", a)]


def test_salt_required_when_pseudonymisation_is_on():
    on = PrivacySettings(pseudonymize=True)
    assert resolve_salt(PrivacySettings(), environ={}) is None
    with pytest.raises(PrivacyError, match="VREC_USER_SALT is unset"):
        resolve_salt(on, environ={})
    with pytest.raises(PrivacyError, match="shorter"):
        resolve_salt(on, environ={"VREC_USER_SALT": "short"})
    assert resolve_salt(on, environ={"VREC_USER_SALT": "x" * 20}) == "x" * 20


def test_the_user_builder_applies_seen_decay_and_touched_rules_on_a_hand_example():
    """One builder for production, tuning and evaluation: history = weight > 0 with the
    profile decay, seen = pairs whose event types meet recs.seen_event_types, touched =
    the top 3 categories by events (ties by name); users without pairs get empty rows."""
    from vrec.core.cf import CFModel
    from vrec.core.users import pairs_by_user, user_batch

    space, _, _ = _space(n_warm=6, n_new=0, n_cat=3)  # items i000..i005, categories c0 c1 c2 c0 c1 c2
    end = pd.Timestamp("2026-11-21", tz="UTC")
    t = lambda days: end - pd.Timedelta(days=days)  # noqa: E731
    pairs = pd.DataFrame([
        ("a", "i000", 2.0, t(10), ["view", "purchase"], 3),
        ("a", "i001", 0.0, t(1), ["rating"], 1),           # a low rating: seen, no history
        ("a", "i002", 1.0, t(0), ["view"], 1),
        ("a", "nope", 5.0, t(0), ["view"], 9),             # not in the catalog: ignored
        ("b", "i004", 1.0, t(0), ["view"], 2),
    ], columns=[C.USER_ID, C.ITEM_ID, "weight", "last_ts", "event_types", "n_events"])
    model = CFModel(np.array(["a"]), space.item_ids, np.ones((1, F), np.float32),
                    space.factors, {}, "v")
    rows = pairs_by_user(pairs, users=np.array(["a", "b", "cold"]))
    assert list(rows[C.USER_ID]) == ["a", "b", "cold"] and rows.loc[2, "items"] == []
    # the time unit of the frame does not matter (Parquet readers give us or ns)
    micros = pairs.assign(last_ts=pairs["last_ts"].astype("datetime64[us, UTC]"))
    assert pairs_by_user(micros, users=np.array(["a"]))["last_s"][0] == rows["last_s"][0]
    assert rows["last_s"][0][0] == (end - pd.Timedelta(days=10)).timestamp()
    recs = RecsSettings(profile_half_life_days=10.0, seen_event_types=("purchase", "rating"))
    b = user_batch(rows, space, model, recs, end)
    h = b.hist.toarray()
    assert np.allclose(h[0, [0, 2]], [2.0 * 0.5, 1.0]) and h[0, 1] == 0  # decay over 10 days
    assert b.seen.toarray()[0].nonzero()[0].tolist() == [0, 1]  # purchase, rating; not view
    assert b.seen.toarray()[1].sum() == 0 and list(b.n_hist) == [2, 1, 0]
    assert list(b.in_model) == [True, False, False] and np.abs(b.uf[1:]).sum() == 0
    # a: c0 has 3 events, c1 1, c2 1 (ties by name); b: c1
    assert [space.category_names[c] for c in b.touched[0]] == ["c0", "c1", "c2"]
    assert [space.category_names[c] for c in b.touched[1]] == ["c1"] and len(b.touched[2]) == 0
    # without decay the history weights are the pair weights
    plain = user_batch(rows, space, model, RecsSettings(profile_half_life_days=None), end)
    assert np.allclose(plain.hist.toarray()[0, [0, 2]], [2.0, 1.0])
    assert plain.seen.toarray()[0].nonzero()[0].tolist() == [0, 1, 2]  # every type is seen
    # the last history items, newest first; activity counts every pair, known or not
    assert [x.tolist() for x in b.last_items] == [[2, 0], [4], []]
    assert b.last_days[:2].tolist() == [0.0, 0.0] and np.isnan(b.last_days[2])
    assert b.recent.tolist() == [3, 1, 0]  # a: i001 (1 day), i002 and "nope" (today)
    # the feedback rules' leave-outs join the seen items (unknown ids are dropped)
    rows["exclude"] = [None, ["i005", "unknown", "i004"], None]
    ex = user_batch(rows, space, model, recs, end)
    assert ex.seen.toarray()[1].nonzero()[0].tolist() == [4, 5]
    assert (ex.seen.toarray()[[0, 2]] == b.seen.toarray()[[0, 2]]).all()


def test_the_trending_source_lists_each_users_first_unseen_trending_items():
    """The learned ranker's trending source: a user's first N items in trending order
    that they have not seen, padded with -1 when the catalog runs out."""
    import scipy.sparse as sp

    from vrec.core.retrieval import unseen_trending

    trending = np.array([3, 1, 4, 0, 2])
    seen = sp.csr_matrix((np.ones(3, np.int8), [1, 4, 3], [0, 2, 2, 3]), shape=(3, 5))
    assert unseen_trending(trending, seen, 2).tolist() == [[3, 0], [3, 1], [1, 4]]
    assert unseen_trending(trending, seen, 4).tolist() == [[3, 0, 2, -1], [3, 1, 4, 0],
                                                           [1, 4, 0, 2]]
    assert unseen_trending(trending, seen[:0], 2).shape == (0, 2)
