"""Text as a content signal: the vectors, the fusion with the images, and what the
ranker does with them (docs/ranking.md, "Content: images and text")."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from vrec import columns as C
from vrec.config import ContentSettings, RecsSettings, Settings, VisualSettings
from vrec.core.text import grams, item_text, text_vectors, tfidf, truncated_svd
from vrec.core.visual import content_features


def _catalog():
    colours = ["Red", "Navy Blue", "Green"]
    kinds = ["Shirts", "Jeans", "Sandals"]
    rows = []
    for j in range(60):
        rows.append({C.ITEM_ID: f"i{j:02d}", C.TITLE: f"{colours[j % 3]} {kinds[(j // 3) % 3]}",
                     C.CATEGORY: "Apparel", C.DESCRIPTION: None if j % 2 else f"size {j}"})
    return pd.DataFrame(rows)


def test_item_text_joins_title_category_and_description_and_ignores_numbers():
    cat = _catalog()
    assert item_text(cat).iloc[0] == "Red Shirts Apparel size 0"
    assert item_text(cat.drop(columns=[C.DESCRIPTION])).iloc[1] == "Navy Blue Shirts Apparel"
    g = grams("Navy Blue T-Shirts 42")
    assert "w:navy" in g and "b:navy blue" in g and "c: na" in g
    assert not any("42" in x for x in g)  # a size or product code names no taste


def test_text_vectors_are_deterministic_and_put_shared_words_close():
    cat = _catalog()
    ids, z, has = text_vectors(cat, 8)
    ids2, z2, _ = text_vectors(cat, 8)
    assert has.all() and z.shape == (60, 8) and np.array_equal(z, z2)
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    same = zn[0] @ zn[9]  # both "Red Shirts"
    other = zn[0] @ zn[4]  # "Navy Blue Jeans"
    assert same > 0.85 and same > other + 0.3
    # an empty text is a zero row and has no text
    cat.loc[5, [C.TITLE, C.CATEGORY, C.DESCRIPTION]] = None
    _, z3, has3 = text_vectors(cat, 8)
    assert not has3[5] and not z3[5].any()


def test_truncated_svd_matches_the_exact_svd_on_a_small_matrix():
    x = tfidf(item_text(_catalog()).tolist())
    u = truncated_svd(x, 5, n_iter=6)
    dense = x.toarray()
    s = np.linalg.svd(dense, compute_uv=False)[:5]
    assert np.allclose(np.sort(np.linalg.norm(u, axis=0))[::-1], s, rtol=1e-3)


def test_fusion_settings_choose_images_text_or_both():
    cat = _catalog()
    rng = np.random.default_rng(0)
    # pictures for the first 40 items only: the last 20 have a title and no picture
    vec = pd.DataFrame({C.ITEM_ID: cat[C.ITEM_ID][:40],
                        "embedding": list(rng.normal(size=(40, 16)).astype(np.float32))})
    v = VisualSettings(dim=6)
    img = content_features(vec, cat, v, ContentSettings(features="image"))
    txt = content_features(vec, cat, v, ContentSettings(features="text", text_dim=4))
    both = content_features(vec, cat, v, ContentSettings(features="both", text_dim=4,
                                                         text_weight=2.0))
    assert img.text_dims == 0 and len(img.ids) == 40 and img.text_only() is None
    assert txt.text_dims == 4 and len(txt.ids) == 60 and txt.z.shape[1] == 4
    # items without a picture but with a title are no longer invisible to the content side
    assert both.z.shape == (60, 6 + 4) and both.text_dims == 4
    z, has = both.lookup(["i50", "i01"])
    assert has.all() and not z[0, :6].any() and z[0, 6:].any() and z[1, :6].any()
    # each block has a mean squared row norm of 1, the text block then x text_weight
    assert np.mean((both.z[:40, :6] ** 2).sum(1)) == pytest.approx(1.0, rel=1e-4)
    assert np.mean((both.z[:, 6:] ** 2).sum(1)) == pytest.approx(4.0, rel=1e-4)
    assert np.array_equal(both.text_only().z, both.z[:, 6:])


def test_staged_content_features_read_back_the_same(tmp_path):
    """embed_items stages the content features once (vrec.stages.common.write_content);
    what the later stages read is what was computed: ids, features and the text block,
    and "none" stays none."""
    from vrec.core.visual import load_features, save_features

    cat = _catalog()
    vec = pd.DataFrame({C.ITEM_ID: cat[C.ITEM_ID][:40], "embedding": list(
        np.random.default_rng(1).normal(size=(40, 16)).astype(np.float32))})
    both = content_features(vec, cat, VisualSettings(dim=6),
                            ContentSettings(features="both", text_dim=4))
    save_features(both, tmp_path / "content.npz")
    back = load_features(tmp_path / "content.npz")
    assert back.ids.tolist() == both.ids.tolist() and back.text_dims == 4
    assert back.z.dtype == both.z.dtype and np.array_equal(back.z, both.z)
    save_features(None, tmp_path / "none.npz")
    assert load_features(tmp_path / "none.npz") is None


def _red_taste():
    """Six users who bought red items, titles naming the colour, pictures as noise: the
    batch, space, policy, visual settings, the red item ids and the model lists."""
    from vrec.core.cf import CFModel
    from vrec.core.itemspace import build_item_space
    from vrec.core.models import variant_lists
    from vrec.core.users import pairs_by_user, user_batch

    cat = _catalog()
    rng = np.random.default_rng(1)
    vec = pd.DataFrame({C.ITEM_ID: cat[C.ITEM_ID],
                        "embedding": list(rng.normal(size=(60, 16)).astype(np.float32))})
    red = cat[C.ITEM_ID][cat[C.TITLE].str.startswith("Red")].tolist()
    t = pd.Timestamp("2026-11-01", tz="UTC")
    pairs = pd.DataFrame([(f"u{u}", i, 1.0, t) for u in range(6) for i in red[u:u + 4]]
                         + [("v0", "i01", 1.0, t), ("v0", "i04", 1.0, t)],
                         columns=[C.USER_ID, C.ITEM_ID, "weight", "last_ts"])
    model = CFModel(np.array([]), np.array([]), np.zeros((0, 4), np.float32),
                    np.zeros((0, 4), np.float32), {}, "none")
    recs = RecsSettings(k=5, candidates=20, new_arrival_slots=0)
    visual = VisualSettings(dim=6, regularization=1.0)
    feats = content_features(vec, cat, visual, ContentSettings(text_dim=8))
    space, _ = build_item_space(model, cat, vec, pairs, list(cat[C.ITEM_ID]), recs,
                                visual=visual, content=feats)
    users = np.array([f"u{u}" for u in range(6)], dtype=object)
    batch = user_batch(pairs_by_user(pairs, users), space, model, recs, t)
    return batch, space, recs, visual, red, variant_lists(batch, space, recs, visual, (5,))


def test_the_text_model_learns_a_taste_the_pictures_do_not_show():
    """Pictures are noise; titles name the colour. Users who bought red items get red
    items first from the text preference (the ``text`` model), not from the pictures."""
    *_, red, lists = _red_taste()
    hit = lambda m: np.mean([np.isin(v, red).mean() for v in lists[(m, 5)].values()])  # noqa: E731
    assert hit("text") == 1.0  # every recommended item is red
    assert hit("visual") < 0.6  # the pictures carry no colour


def test_model_lists_in_forked_processes_equal_the_lists_in_one(monkeypatch):
    """variant_lists with workers cuts the users into parts, one forked process per
    part and variant; every model's lists are the ones the single process gives."""
    from vrec.core import models
    from vrec.progress import progress

    batch, space, recs, visual, _, one = _red_taste()
    monkeypatch.setattr(models, "MIN_USERS_PER_WORKER", 2)
    pids = []
    real = models._variant_lists
    monkeypatch.setattr(models, "_variant_lists",
                        lambda *a: (pids.append(1), real(*a))[1])
    with progress("lists", len(one), "lists") as bar:
        forked = models.variant_lists(batch, space, recs, visual, (5,), bar, workers=3)
        assert bar.n == len(one)
    assert forked == one and len(one) >= 5
    assert not pids  # every part ran in a child (the parent's patched function never ran)


def test_the_old_tuning_splits_name_their_replacement():
    with pytest.raises(ValueError, match="recs.window_days"):
        Settings.model_validate({"recs": {"tune_split": "time"}})
    assert Settings().recs.window_days == 7 and Settings().content.features == "both"


def test_the_text_preference_fit_on_the_text_columns_alone_equals_the_zero_padded_fit():
    """ItemSpace.text_only keeps the text columns alone: the image columns (zeros there)
    would only add zeros to every product and solve."""
    from vrec.core.visual import fit_preferences, gram

    rng = np.random.default_rng(2)
    z = rng.normal(size=(300, 10)).astype(np.float32)
    z[:, :6] = 0.0  # the text space of old: the image block zeroed, the last 4 text
    z[rng.random(300) < 0.2] = 0.0  # items without text
    w = sp.random(50, 300, density=0.05, format="csr", random_state=3, dtype=np.float32)
    w.data[:] = rng.integers(1, 4, len(w.data))
    has = np.abs(z).sum(1) > 0
    pad, has_pad = fit_preferences(w, z, gram(z[has]), regularization=1.0, alpha=2.0)
    zt = np.ascontiguousarray(z[:, 6:])
    narrow, has_narrow = fit_preferences(w, zt, gram(zt[has]), regularization=1.0, alpha=2.0)
    assert np.array_equal(has_pad, has_narrow) and has_pad.sum() > 30
    assert not pad[:, :6].any()
    assert np.allclose(pad[:, 6:], narrow, rtol=1e-5, atol=1e-6)
    assert np.allclose(pad @ z.T, narrow @ zt.T, rtol=1e-5, atol=1e-6)
    # and the space's text view is those columns
    from vrec.core.itemspace import ItemSpace

    full = z.copy()
    full[:, :6] = rng.normal(size=(300, 6))
    n = len(full)
    space = ItemSpace(np.asarray([f"i{j}" for j in range(n)]), np.zeros((n, 3), np.float32),
                      np.zeros(n, bool), np.zeros((n, 2), np.float32), np.zeros(n, bool),
                      np.ones(n, bool), np.zeros(n, np.int64), np.arange(n), np.asarray(["c"]),
                      full, np.ones(n, bool), gram(full), np.asarray([4]))
    text = space.text_only()
    assert np.array_equal(text.pref_z, zt) and np.array_equal(text.has_z, has)
    assert np.array_equal(text.new, has) and np.allclose(text.pref_gram, gram(zt[has]))


def test_model_lists_in_processes_after_openmp_work_in_the_parent():
    """A fork of a process that has run OpenMP code hangs in the child's first OpenMP
    region (LightGBM's model parsing). At 10M the evaluation's refit (implicit) ran
    first and its forked list processes hung; they now start from a fork server. Run
    in a subprocess with a timeout, so that a hang fails the test."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    code = textwrap.dedent("""
        import lightgbm as lgb, numpy as np
        from tests.test_text import _red_taste
        from vrec.core import models
        from vrec.core.ranker import FEATURES, Ranker
        rng = np.random.default_rng(0)
        x = rng.random((5000, len(FEATURES)))
        # OpenMP threads in this process before the list processes start
        booster = lgb.train({"num_threads": 2, "verbose": -1},
                            lgb.Dataset(x, rng.random(5000)), 20)
        batch, space, recs, visual, _, _ = _red_taste()
        models.MIN_USERS_PER_WORKER = 2
        # the processes parse the model themselves (at 10M: hung there), then one process
        two = models.variant_lists(batch, space, recs, visual, (5,), workers=2,
                                   ranker=Ranker(booster.model_to_string()))
        one = models.variant_lists(batch, space, recs, visual, (5,),
                                   ranker=Ranker(booster.model_to_string()))
        assert two == one and ("ranker", 5) in two, sorted(two)
        print("lists equal")
    """)
    res = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0 and "lists equal" in res.stdout, res.stderr[-3000:]
