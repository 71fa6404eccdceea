"""The learned visual preference model, the image-regularised CF model and their tuning
(issue 15), on hand-made examples."""

from __future__ import annotations

import functools
import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from vrec import columns as C
from vrec.config import CFSettings, ContentSettings, RecsSettings, VisualSettings
from vrec.core.cf import refine_with_images
from vrec.core.coldstart import auc, l2_normalise
from vrec.core.ranking import greedy_pick
from vrec.core.tuning import (
    blend_settings_key,
    settings_key,
    tune_cf,
    tuning_reusable,
)
from vrec.core.visual import fit_pca, fit_preferences, gram, image_features

from .test_hybrid import _taste_pairs, _taste_window


def test_pca_keeps_a_plane_and_whitening_gives_unit_variance():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(6, 2)))[0].T  # an orthonormal plane in 6-D
    coef = rng.normal(size=(500, 2)) * np.array([3.0, 1.0])
    x = coef @ basis + 5.0
    pca = fit_pca(x, 2)
    assert pca.explained == pytest.approx(1.0, abs=1e-6)
    z = pca.project(x)
    # the two components span the plane: the projection loses no distance
    d_x = np.linalg.norm(x[:50, None] - x[None, :50], axis=-1)
    d_z = np.linalg.norm(z[:50, None] - z[None, :50], axis=-1)
    assert np.allclose(d_x, d_z, atol=1e-3)
    assert z[:, 0].var() > z[:, 1].var()  # ordered by variance
    zw = fit_pca(x, 2, whiten=True).project(x)
    assert np.allclose(zw.var(axis=0, ddof=1), 1.0, atol=1e-3)
    assert fit_pca(x, 50).components.shape == (6, 6)  # never more than the columns


def test_preference_is_the_weighted_least_squares_solution():
    """The closed form equals the dense implicit-feedback least squares solved directly:
    min Σ_i c_i (p_i - x·z_i)² + λ|x|², over all items with a picture."""
    rng = np.random.default_rng(1)
    z = rng.normal(size=(9, 3))
    z[7] = 0.0  # an item without a picture
    w = sp.csr_matrix(np.array([[0, 2.0, 0, 0, 1.0, 0, 0, 3.0, 0],
                                [0, 0, 0, 0, 0, 0, 0, 0, 0],
                                [0, 0, 0, 0, 0, 0, 0, 4.0, 0]]))
    has_pic = np.abs(z).sum(1) > 0
    x, has = fit_preferences(w, z, gram(z[has_pic]), regularization=0.5, alpha=3.0)
    assert has.tolist() == [True, False, False]  # no history / only an item without picture
    p = (w.toarray()[0] > 0).astype(float)
    c = 1.0 + 3.0 * w.toarray()[0]
    zp, cp, pp = z[has_pic], c[has_pic], p[has_pic]
    expected = np.linalg.solve(zp.T @ (cp[:, None] * zp) + 0.5 * np.eye(3), zp.T @ (cp * pp))
    assert np.allclose(x[0], expected, atol=1e-5)
    assert not x[1].any() and not x[2].any()


def test_preference_short_and_long_histories_equal_the_direct_solve():
    """Histories of at most half the dimensions go through Woodbury's identity, longer
    ones through the d × d solve; both equal the dense least squares, including a
    history with an item of weight 0 (confidence 1: the direct path)."""
    rng = np.random.default_rng(5)
    n, d = 400, 24
    z = rng.normal(size=(n, d)).astype(np.float32)
    sizes = [1, 3, d // 2, d // 2 + 1, 60]
    rows = [rng.choice(n, h, replace=False) for h in sizes] + [np.array([7, 9])]
    data = [rng.uniform(0.2, 3.0, len(r)) for r in rows[:-1]] + [np.array([0.0, 2.0])]
    w = sp.csr_matrix((np.concatenate(data), (np.repeat(np.arange(len(rows)), [len(r) for r in rows]),
                                              np.concatenate(rows))), shape=(len(rows), n))
    w.sort_indices()
    x, has = fit_preferences(w, z, gram(z), regularization=2.0, alpha=4.0)
    assert has.all()
    zz = z.astype(np.float64)
    for r in range(len(rows)):
        c = 1.0 + 4.0 * w.toarray()[r]
        p = (np.arange(n)[:, None] == w.indices[w.indptr[r]:w.indptr[r + 1]]).any(1)
        expected = np.linalg.solve(zz.T @ (c[:, None] * zz) + 2.0 * np.eye(d), zz.T @ (c * p))
        assert np.allclose(x[r], expected, rtol=1e-5, atol=1e-6), sizes[r] if r < 5 else "zero"


def test_preference_ranks_unseen_items_of_the_users_look_above_the_rest():
    """Three looks in image space; a user who picked items of look 0 scores the other
    look-0 items (new arrivals included, never interacted with) above the others."""
    rng = np.random.default_rng(2)
    centres = l2_normalise(rng.normal(size=(3, 16)))
    look = np.arange(90) % 3
    emb = l2_normalise(centres[look] + 0.1 * rng.normal(size=(90, 16)))
    vectors = pd.DataFrame({C.ITEM_ID: [f"i{j}" for j in range(90)], "embedding": list(emb)})
    feats = image_features(vectors, 8)
    picked = np.flatnonzero(look == 0)[:5]
    w = sp.csr_matrix((np.ones(5), (np.zeros(5, int), picked)), shape=(1, 90))
    x, _ = fit_preferences(w, feats.z, gram(feats.z), regularization=1.0, alpha=5.0)
    s = feats.z @ x[0]
    rest = np.setdiff1d(np.arange(90), picked)
    assert auc(s[rest][look[rest] == 0], s[rest][look[rest] != 0]) > 0.95


def test_image_prior_lets_sparse_items_borrow_from_items_that_look_like_them():
    """Users like one of four looks. Well-sold items are clicked by their look's users;
    sparse items got one click each, from a user of another look (noise). Plain ALS puts
    a sparse item next to that one clicker; the image prior pulls it towards the items
    that look like it, so the users of its look rank it higher."""
    import implicit.cpu.als  # noqa: F401 - the engine the prior refines

    from vrec.core.cf import fit_implicit

    rng = np.random.default_rng(3)
    n_look, n_users, n_dense, n_sparse = 4, 200, 160, 40
    n_items = n_dense + n_sparse
    centres = l2_normalise(rng.normal(size=(n_look, 24)))
    look = np.arange(n_items) % n_look
    emb = l2_normalise(centres[look] + 0.35 * rng.normal(size=(n_items, 24)))
    user_look = np.arange(n_users) % n_look
    rows, cols = [], []
    for u in range(n_users):
        pool = np.flatnonzero(look[:n_dense] == user_look[u])
        for i in rng.choice(pool, 8, replace=False):
            rows.append(u)
            cols.append(i)
    for i in range(n_dense, n_items):  # one off-look click per sparse item
        u = rng.choice(np.flatnonzero(user_look != look[i]))
        rows.append(u)
        cols.append(i)
    mat = sp.csr_matrix((np.full(len(rows), 1.0 + 2.0 * 1.0), (rows, cols)),
                        shape=(n_users, n_items))
    cf = CFSettings(factors=8, regularization=0.1, iterations=15, alpha=2.0)
    uf, itf, _ = fit_implicit(mat, cf)
    feats = fit_pca(emb, 12).project(emb)
    uf2, itf2, facts = refine_with_images(uf, itf, mat, feats, np.ones(n_items, bool),
                                          regularization=cf.regularization, prior=100.0)
    assert facts["applied"] and facts["projection_items"] == n_dense

    def sparse_auc(u_f, i_f):
        s = u_f @ i_f[n_dense:].T
        return np.mean([auc(s[u][look[n_dense:] == user_look[u]],
                            s[u][look[n_dense:] != user_look[u]]) for u in range(n_users)])

    plain, prior = sparse_auc(uf, itf), sparse_auc(uf2, itf2)
    assert prior > 0.9 and prior > plain + 0.1
    # without the prior (strength 0) the model is returned as fit
    same = refine_with_images(uf, itf, mat, feats, np.ones(n_items, bool),
                              regularization=0.1, prior=0.0)
    assert same[2]["applied"] is False and same[1] is itf


def test_the_image_priors_solves_side_by_side_give_the_same_factors_to_the_bit():
    """half_step solves blocks of rows, in order of their length, in threads: every row's
    vector is the definition's solution (the normal equations over all columns, with the
    prior), through the direct solve or Woodbury's identity, and two threads give the
    very same float32 factors as one, prior or not."""
    from vrec.core.cf import SOLVE_ROWS, _row_blocks, half_step

    rng = np.random.default_rng(5)
    n_rows, n_cols, k = 3 * SOLVE_ROWS + 17, 60, 12  # several blocks, the last one short
    # histories of 0 to about 20 pairs: shorter and longer than half the dimensions
    density = rng.choice([0.02, 0.1, 0.3], size=n_rows)[:, None]
    dense = np.where(rng.random((n_rows, n_cols)) < density,
                     1.0 + 4.0 * rng.random((n_rows, n_cols)), 0.0)
    dense[5] = 0.0  # a row without pairs: zeros without a prior, the prior's pull with one
    dense[9] = 0.0
    dense[9, [3, 7]] = [1.0, 2.5]  # a short history with a confidence of 1: the direct path
    conf = sp.csr_matrix(dense)
    f = rng.normal(size=(n_cols, k)).astype(np.float32)
    mean, weight = rng.normal(size=(n_rows, k)), np.where(rng.random(n_rows) < 0.5, 3.0, 0.0)
    weight[5] = 3.0
    lens = np.diff(conf.indptr)
    assert (2 * lens <= k).any() and (2 * lens > k).any()
    for prior in ((), (mean, weight)):
        blocks = _row_blocks(conf, k, prior[1] if prior else None)
        solved = np.concatenate(blocks)
        assert len(blocks) >= 3 and len(set(solved)) == len(solved)  # each row once
        assert (5 in solved) == bool(prior) and all(len(b) <= SOLVE_ROWS for b in blocks)
        assert (np.diff(lens[solved]) >= 0).all()  # in order of length
        for woodbury in (False, True):
            one = half_step(f, conf, 0.2, *prior, woodbury=woodbury, threads=1)
            two = half_step(f, conf, 0.2, *prior, woodbury=woodbury, threads=2)
            assert one.dtype == np.float32 and np.array_equal(one, two)
            pw = prior[1] if prior else np.zeros(n_rows)
            mu = prior[0] if prior else np.zeros((n_rows, k))
            f64 = f.astype(np.float64)
            for r in range(n_rows):
                c = np.where(dense[r] > 0, dense[r], 1.0)  # confidence 1 where no pair
                p = (dense[r] > 0).astype(float)
                a = f64.T @ (c[:, None] * f64) + (0.2 + pw[r]) * np.eye(k)
                want = np.linalg.solve(a, f64.T @ (c * p) + pw[r] * mu[r])
                np.testing.assert_allclose(one[r], want, rtol=1e-4, atol=1e-5, err_msg=str(r))
            assert not one[5].any() if not prior else one[5].any()  # empty: zeros or the pull


def test_a_half_steps_blocks_hold_their_systems_within_the_bound():
    """Rows per block are capped so that a block's k × k systems stay within
    BLOCK_VALUES float64 values (wide features: fewer rows a block)."""
    from vrec.core.cf import BLOCK_VALUES, SOLVE_ROWS, _row_blocks

    conf = sp.random(1000, 50, density=0.2, format="csr", random_state=1)
    assert max(len(b) for b in _row_blocks(conf, 16, None)) == SOLVE_ROWS
    wide = _row_blocks(conf, 1280, None)
    assert max(len(b) for b in wide) == BLOCK_VALUES // 1280 ** 2
    assert sorted(np.concatenate(wide)) == list(np.flatnonzero(np.diff(conf.indptr)))


def test_cf_tuning_moves_off_an_underfitting_rank_and_never_below_the_start():
    """Two factors cannot hold fifteen tastes; the tuning raises the rank, and what it
    chooses scores at least what it started from on the window."""
    from vrec.spark.cf import fit_cf

    pairs, _, _, trending = _taste_pairs(n_users=300)
    recs = RecsSettings(k=5, tune_min_users=10)
    cf = CFSettings(factors=2, iterations=5, regularization=0.1, alpha=2.0,
                    tune_factors=(2, 16), tune_regularization=(0.1,),
                    tune_alpha=(2.0,), tune_visual_prior=(0.0,))
    window = _taste_window(pairs, trending)
    out = tune_cf(window, cf, recs, lambda c: (lambda p: fit_cf(p, c)))
    assert out["chosen"]["factors"] == 16
    assert out["chosen_ndcg"] > out["configured_ndcg"]
    assert set(out["grid"]) == {"f2/r0.1/a2/p0", "f16/r0.1/a2/p0"}
    # a grid holding only the configured values keeps them
    same = tune_cf(window, cf.model_copy(update={"tune_factors": (2,)}), recs,
                   lambda c: (lambda p: fit_cf(p, c)))
    assert same["chosen"]["factors"] == 2 and same["chosen_ndcg"] == same["configured_ndcg"]


def test_cf_tuning_screens_with_fewer_sweeps_and_fits_the_chosen_point_in_full():
    """With cf.tune_iterations below cf.iterations every grid point is fit with the
    screening sweeps, the chosen one once more with all of them, and that full fit (not a
    screening one) is what the caller keeps; the screening does not change what a stored
    tuning is reused by."""
    from vrec.spark.cf import fit_cf

    pairs, _, _, trending = _taste_pairs(n_users=300)
    recs = RecsSettings(k=5, tune_min_users=10)
    cf = CFSettings(factors=2, iterations=6, tune_iterations=2, regularization=0.1,
                    alpha=2.0, tune_factors=(2, 16), tune_regularization=(0.1,),
                    tune_alpha=(2.0,), tune_visual_prior=(0.0,))
    window = _taste_window(pairs, trending)
    fits, kept = [], []

    def fit_with(c):
        def fit(p):
            model = fit_cf(p, c)
            fits.append((c.factors, c.iterations, model))
            return model
        return fit

    out = tune_cf(window, cf, recs, fit_with, keep=lambda c, m: kept.append((c, m)))
    assert [f[:2] for f in fits] == [(2, 2), (16, 2), (16, 6)]
    assert out["screen_iterations"] == 2 and out["chosen"]["factors"] == 16
    assert len(kept) == 1 and kept[0][0].iterations == 6 and kept[0][0].factors == 16
    assert kept[0][1] is fits[-1][2]
    # the full fit scores the chosen point on the window apart from its screening score
    full = tune_cf(window, cf.model_copy(update={"factors": 16, "tune_iterations": None}),
                   recs, lambda c: (lambda p: fit_cf(p, c)))
    assert "chosen_full_ndcg" not in full and full["screen_iterations"] == 6
    assert out["chosen_full_ndcg"] == full["configured_ndcg"]
    assert out["grid"]["f16/r0.1/a2/p0"] != out["chosen_full_ndcg"]
    assert settings_key(cf, ContentSettings()) == \
        settings_key(cf.model_copy(update={"tune_iterations": 15}), ContentSettings())


def test_a_screened_tuning_searches_the_image_prior_on_full_fits(monkeypatch):
    """Screening shortens only the plain points: the best of them is fit again with all
    sweeps, and the prior points refine that full fit (one ALS fit for all of them), so
    a refinement's extra sweeps never compete against a short fit. The full scores are
    kept apart from the screening ones, and the chosen model handed over is a full one."""
    import vrec.spark.cf as spark_cf
    from vrec.core.visual import ImageFeatures

    pairs, _, vectors, trending = _taste_pairs(n_users=300)
    feats = ImageFeatures(vectors[C.ITEM_ID].to_numpy(),
                          np.stack(vectors["embedding"].to_numpy()).astype(np.float32)[:, :8])
    recs = RecsSettings(k=5, tune_min_users=10)
    cf = CFSettings(factors=2, iterations=6, tune_iterations=2, regularization=0.1,
                    alpha=2.0, tune_factors=(2, 16), tune_regularization=(0.1,),
                    tune_alpha=(2.0,), tune_visual_prior=(0.0, 30.0, 100.0))
    als, real = [], spark_cf.fit_implicit
    monkeypatch.setattr(spark_cf, "fit_implicit",
                        lambda mat, c: als.append((c.factors, c.iterations)) or real(mat, c))
    scored, kept = [], []

    def fit_with(c):
        def fit(p):
            model = spark_cf.fit_cf(p, c, images=feats)
            scored.append((c.factors, c.iterations, c.visual_prior, model))
            return model
        return fit

    out = tune_cf(_taste_window(pairs, trending), cf, recs, fit_with,
                  keep=lambda c, m: kept.append((c, m)))
    assert [f[:3] for f in scored] == [(2, 2, 0.0), (16, 2, 0.0), (16, 6, 0.0),
                                       (16, 6, 30.0), (16, 6, 100.0)]
    assert als == [(2, 2), (16, 2), (16, 6)]  # the prior points refine the full fit
    assert set(out["grid"]) == {"f2/r0.1/a2/p0", "f16/r0.1/a2/p0"}
    assert list(out["full_grid"]) == ["f16/r0.1/a2/p0", "f16/r0.1/a2/p30", "f16/r0.1/a2/p100"]
    chosen = f"f16/r0.1/a2/p{out['chosen']['visual_prior']:g}"
    assert out["chosen_ndcg"] == out["chosen_full_ndcg"] == out["full_grid"][chosen]
    assert kept and kept[-1][0].iterations == 6
    assert kept[-1][0].visual_prior == out["chosen"]["visual_prior"]
    assert any(kept[-1][1] is f[3] for f in scored if f[1] == 6)


def test_fits_that_differ_only_in_the_image_prior_share_one_als_fit(monkeypatch):
    """Inside sharing_plain_fits, fits of the same pairs frame at several prior strengths
    fit ALS once and refine that fit, giving the very factors separate fits give; another
    frame (even an equal copy) or another setting fits again, and nothing is shared
    outside. The CF tuning's prior points run this way."""
    import vrec.spark.cf as spark_cf
    from vrec.core.cf import plain_fits, sharing_plain_fits
    from vrec.core.visual import ImageFeatures

    pairs, _, vectors, _ = _taste_pairs(n_users=120)
    feats = ImageFeatures(vectors[C.ITEM_ID].to_numpy(),
                          np.stack(vectors["embedding"].to_numpy()).astype(np.float32)[:, :8])
    cf = CFSettings(factors=4, iterations=4, regularization=0.1, alpha=2.0)
    calls, real = [], spark_cf.fit_implicit
    monkeypatch.setattr(spark_cf, "fit_implicit",
                        lambda mat, c: calls.append(c.visual_prior) or real(mat, c))
    apart = {p: spark_cf.fit_cf(pairs, cf.model_copy(update={"visual_prior": p}), images=feats)
             for p in (0.0, 30.0, 100.0)}
    assert len(calls) == 3
    calls.clear()
    with sharing_plain_fits():
        shared = {p: spark_cf.fit_cf(pairs, cf.model_copy(update={"visual_prior": p}),
                                     images=feats) for p in (0.0, 30.0, 100.0)}
        assert calls == [0.0]
        spark_cf.fit_cf(pairs.copy(), cf.model_copy(update={"visual_prior": 30.0}), images=feats)
        spark_cf.fit_cf(pairs, cf.model_copy(update={"alpha": 5.0, "visual_prior": 30.0}),
                        images=feats)
        assert calls == [0.0, 30.0, 30.0]
    assert plain_fits() is None
    for p, m in shared.items():
        assert m.version == apart[p].version
        np.testing.assert_array_equal(m.user_factors, apart[p].user_factors)
        np.testing.assert_array_equal(m.item_factors, apart[p].item_factors)
    assert shared[30.0].params["image_prior"]["applied"]
    assert not np.array_equal(shared[30.0].item_factors, shared[0.0].item_factors)


def test_a_tuning_is_reused_only_for_the_same_settings_a_recent_earlier_day_and_similar_data():
    cf = CFSettings()
    key = settings_key(cf, ContentSettings())
    rec = {"as_of": "2026-11-10", "key": key, "chosen": {"factors": 128},
           "size": {"pairs": 1000, "users": 100, "items": 50}}
    size = dict(pairs=1100, users=95, items=50)

    def ok(record=rec, as_of="2026-11-11", age=7, k=key, sz=size):
        return tuning_reusable(record, as_of=as_of, max_age_days=age, key=k, size=sz)

    assert ok(as_of="2026-11-10") and ok(as_of="2026-11-17")
    assert not ok(as_of="2026-11-18")  # too old
    assert not ok(as_of="2026-11-09")  # a backfill: never a later day's tuning
    assert not ok(sz={**size, "pairs": 1300})  # the data grew 30%
    assert not ok(k=settings_key(cf.model_copy(update={"alpha": 7.0}),
                                 ContentSettings()))  # other settings
    # text features feed the image prior: another content setting tunes again
    assert not ok(k=settings_key(cf, ContentSettings(features="image")))
    assert not ok(age=0)  # tune every run
    assert not ok(record=None) and not ok(record={**rec, "chosen": None})
    # a blend tuning depends on the CF model it ranks with, and on the list settings
    recs, visual = RecsSettings(), VisualSettings()
    base = blend_settings_key(recs, visual, cf, ContentSettings())
    assert base == blend_settings_key(recs, visual, cf, ContentSettings())
    assert base != blend_settings_key(recs, visual, cf.model_copy(update={"factors": 32}),
                                      ContentSettings())
    assert base != blend_settings_key(recs.model_copy(update={"k": 5}), visual, cf,
                                      ContentSettings())
    assert base != blend_settings_key(recs, visual, cf, ContentSettings(text_weight=2.0))


def test_tunings_are_kept_per_day_and_the_newest_reusable_one_is_found(tmp_path):
    """Each tuning is its own file (a later night never overwrites an earlier one): a
    rerun of a day finds what it used, and a backfill never sees a later day's tuning."""
    from vrec.io import tunings

    key, size = {"s": 1}, {"pairs": 100, "users": 10, "items": 5}
    for day, chosen in (("2026-11-10", {"w": 1}), ("2026-11-14", {"w": 2})):
        tunings.save(tmp_path, "blend", {"as_of": day, "key": key, "size": size,
                                         "chosen": chosen})
    find = functools.partial(tunings.reusable, tmp_path, "blend", max_age_days=7, key=key,
                             size=size)
    assert find(as_of="2026-11-12")["chosen"] == {"w": 1}  # rerun of 11-12 after 11-14
    assert find(as_of="2026-11-16")["chosen"] == {"w": 2}
    assert find(as_of="2026-11-09") is None
    assert find(as_of="2026-11-22") is None  # 8 days after the newest
    assert sorted(p.name for p in tunings.tuning_dir(tmp_path, "blend").iterdir()) == [
        "2026-11-10.json", "2026-11-14.json"]
    with pytest.raises(ValueError, match="unknown tuning kind"):
        tunings.tuning_dir(tmp_path, "rankers")
    # a warehouse of the earlier layout: its one CF tuning is read as the record of its day
    legacy = tmp_path / "_state" / "cf_tuning.json"
    legacy.write_text(json.dumps({"ds": "2026-11-10", "settings": key, "size": size,
                                  "chosen": {"factors": 32}}))
    found = tunings.reusable(tmp_path, "cf", as_of="2026-11-12", max_age_days=7, key=key,
                             size=size)
    assert found["chosen"] == {"factors": 32} and found["as_of"] == "2026-11-10"
    assert tunings.reusable(tmp_path, "cf", as_of="2026-11-09", max_age_days=7, key=key,
                            size=size) is None


def test_a_day_takes_the_tuning_it_pinned_and_nothing_stored_is_overwritten(tmp_path):
    """A day's run pins the record it took; its rerun takes that record again even when a
    tuning stored later (here one with the same day, from a forced re-tune) is what the
    rule prefers now. A second tuning of the same day gets its own file."""
    from vrec.io import tunings

    key, size = {"s": 1}, {"pairs": 100, "users": 10, "items": 5}
    first = tunings.save(tmp_path, "blend", {"as_of": "2026-11-10", "key": key, "size": size,
                                             "chosen": {"w": 1}})
    tunings.pin(tmp_path, "2026-11-12", "blend", first["id"])
    again = tunings.save(tmp_path, "blend", {"as_of": "2026-11-12", "key": key, "size": size,
                                             "chosen": {"w": 2}})
    later = tunings.save(tmp_path, "blend", {"as_of": "2026-11-12", "key": key, "size": size,
                                             "chosen": {"w": 3}})
    assert (first["id"], again["id"], later["id"]) == ("2026-11-10", "2026-11-12", "2026-11-12.1")
    find = functools.partial(tunings.reusable, tmp_path, "blend", as_of="2026-11-12",
                             max_age_days=7, key=key, size=size)
    assert find()["chosen"] == {"w": 3}  # newest first, the re-tune counter included
    pinned = tunings.pinned(tmp_path, "2026-11-12", "blend")
    assert pinned == "2026-11-10" and find(pinned=pinned)["chosen"] == {"w": 1}
    assert tunings.pinned(tmp_path, "2026-11-12", "cf") is None
    # the pinned record no longer fits (other settings): the rule decides again
    assert tunings.reusable(tmp_path, "blend", as_of="2026-11-12", max_age_days=7,
                            key={"s": 2}, size=size, pinned=pinned) is None


def test_reserved_slot_picks_by_its_own_key():
    """The slot goes to the new arrival with the largest slot key, not the largest gain."""
    blend = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    is_new = np.array([False, False, False, True, True])
    emb = np.eye(5)
    args = dict(k=3, slots=1, mmr_penalty=0.0, max_per_category=0)
    pick, _ = greedy_pick(blend, emb, np.zeros(5, int), is_new, **args)
    assert pick.tolist() == [0, 1, 3]
    pick, _ = greedy_pick(blend, emb, np.zeros(5, int), is_new,
                          slot_key=np.array([0, 0, 0, 0.1, 0.9]), **args)
    assert pick.tolist() == [0, 1, 4]


def test_blend_tuning_reaches_past_the_grid_edge_when_the_best_sits_on_it():
    """Tastes are visual clusters and CF has two factors: the best visual weight is on
    a grid that stops at 0.05, so the tuning tries larger ones."""
    from vrec.core.tuning import tune_blend
    from vrec.spark.cf import fit_cf

    pairs, catalog, vectors, trending = _taste_pairs()
    recs = RecsSettings(k=5, candidates=20, new_arrival_slots=0, tune_min_users=10,
                        tune_grid=(0.0, 0.05), tune_shrink_grid=(0.0,))
    cf = CFSettings(factors=2, iterations=5)
    out = tune_blend(_taste_window(pairs, trending), catalog, vectors, recs=recs,
                     visual=VisualSettings(dim=8), fit=lambda p: fit_cf(p, cf))
    assert out["extended_to"] is not None and out["extended_to"] > 0.05
    assert out["chosen"]["visual_weight"] > 0.05
    assert any(key.startswith(f"{out['extended_to']:g}/") for key in out["grid"])


def test_a_user_with_only_a_preference_vector_is_ranked_by_it():
    """A history too old for the decayed profile still has a preference vector: the
    visual part then uses it whatever pref_mix says (not ties in catalog order)."""
    from vrec.core.ranking import rank
    from vrec.core.retrieval import RankInput

    from .test_hybrid import ListPolicy, _space

    space, _, _ = _space(n_warm=30, n_new=0)
    cand = np.arange(10, 20)
    pref = np.linspace(0.0, 1.0, 10)  # the last candidate is preferred most
    one = lambda a: [np.asarray(a)]  # noqa: E731
    inp = RankInput(np.array(["u"]), np.array([False]), np.array([False]), np.array([True]),
                    np.array([False]), np.array([3]), one(np.array([0, 1, 2])), one(np.array([0, 1, 2])),
                    one(np.zeros(0, np.int64)), one(cand), one(np.full(10, np.nan)),
                    one(np.full(10, np.nan)), one(pref), one(np.full(10, np.nan)))
    out = rank(inp, space, ListPolicy(k=3, new_arrival_slots=0, visual_weight=1.0,
                                      pref_mix=0.0))
    assert out.sort_values("rank")["item"].tolist() == [19, 18, 17]
