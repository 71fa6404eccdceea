"""Collaborative filtering: weighting math, reweighting parity with implicit, the
threshold top-K against brute force, seen-item exclusion, determinism, both engines."""

import importlib.util
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from vrec import columns as C
from vrec.config import CFSettings, EventWeights, RecsSettings, VisualSettings
from vrec.core.cf import CFModel, build_matrix, fit_implicit
from vrec.core.topk import TopK, _sort_packed, topk_blocked
from vrec.executor import run_stage
from vrec.io import warehouse as W
from vrec.spark.cf import fit_cf, training_pairs
from vrec.spark.interactions import aggregate_interactions

from .conftest import TINY

DS = TINY.end_date.isoformat()
EVENT_SCHEMA = "user_id string, item_id string, event_type string, value double, ts timestamp"


def _brute(q, it, k, excl):
    s = q @ it.T
    out = []
    for r in range(len(q)):
        row = s[r].copy()
        row[list(excl[r])] = -np.inf
        want = np.argsort(-row, kind="stable")[:k]
        out.append([int(w) for w in want if np.isfinite(row[w])])
    return out


@pytest.mark.parametrize("k,m,block,tail", [
    (10, 3000, 64, False), (50, 3000, 1000, False), (10, 100, 7, False), (5, 3001, 3, False),
    (10, 20000, 256, True), (50, 9000, 100, True)])
def test_threshold_topk_equals_brute_force(k, m, block, tail):
    """Same item sets and order as a full sort, for the threshold path (m >= 8k) and the
    argpartition path, across block sizes, with per-user exclusions given as a CSR; with
    ``tail``, item norms are long-tailed like ALS factors so norm pruning skips most of
    the catalog for most users."""
    rng = np.random.default_rng(k + m)
    q = rng.normal(size=(120, 16)).astype(np.float32)
    it = rng.normal(size=(m, 16)).astype(np.float32)
    if tail:
        it *= (rng.pareto(1.5, m) + 0.01)[:, None].astype(np.float32)
        q[:5] = -q[:5]  # some rows whose best scores may be negative
    it[1] = it[0]  # a tie: the lower index must come first, as in a stable sort
    excl = [set(rng.choice(m, size=int(rng.integers(0, 30)), replace=False).tolist()) for _ in q]
    csr = sp.csr_matrix((np.ones(sum(map(len, excl)), np.int8),
                         (np.repeat(np.arange(len(q)), [len(e) for e in excl]),
                          np.concatenate([sorted(e) for e in excl]).astype(int))), shape=(len(q), m))
    idx, sc = topk_blocked(q, it, k, exclude=csr, block_size=block)
    want = _brute(q, it, k, excl)
    for r in range(len(q)):
        assert idx[r].tolist() == want[r]
        assert np.allclose(sc[r], (q[r] @ it.T)[want[r]], rtol=1e-5, atol=1e-5)
        assert not set(idx[r].tolist()) & excl[r]
    full, _ = topk_blocked(q, it, k, exclude=csr, block_size=block, prune=False)
    assert np.array_equal(full, idx)


def test_topk_when_nearly_everything_is_excluded():
    rng = np.random.default_rng(3)
    q, it = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(500, 4)).astype(np.float32)
    excl = [np.arange(498), np.arange(500), np.array([], dtype=int)]
    idx, sc = topk_blocked(q, it, 10, exclude=excl)
    assert sorted(idx[0][:2].tolist()) == [498, 499] and (idx[0][2:] == -1).all()
    assert (idx[1] == -1).all() and np.isneginf(sc[1]).all()
    assert idx[2].tolist() == _brute(q[2:], it, 10, [set()])[0]


def _wide_unit_items(rng, m: int, dims: int, rank: int) -> np.ndarray:
    """Unit rows with most of their energy in ``rank`` directions, like CNN embeddings."""
    x = rng.normal(size=(m, rank)) @ rng.normal(size=(rank, dims)) \
        + 0.3 * rng.normal(size=(m, dims))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("reduce", [None, 48])
def test_two_pass_topk_equals_brute_force(reduce):
    """Wide unit vectors take the two-pass search (by default from 768 dimensions and 4,096
    items; here also with a 48-d basis): the same items in the same order as a full sort,
    exclusions respected (a row with all but three items excluded included), ties to the
    lower index, while the second pass scores exactly only a small share of the items."""
    rng = np.random.default_rng(7)
    it = _wide_unit_items(rng, 5000, 800, 24)
    it[11] = it[10]  # a tie: the lower index first
    q = it[rng.choice(5000, 60, replace=False)] + 0.05 * rng.normal(size=(60, 800))
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    q[0] = it[10]
    excl = [set(rng.choice(5000, size=int(rng.integers(0, 40)), replace=False).tolist())
            for _ in q]
    excl[1] = set(range(5000)) - {3, 4000, 4999}
    index = TopK(it, prune=False, reduce=reduce)
    assert index.reduced is not None and index.reduced.shape[1] == (reduce or 256)
    idx, sc = index.search(q, 20, exclude=[np.array(sorted(e), dtype=int) for e in excl],
                           block_size=16)
    want = _brute(q, it, 20, excl)
    for r in range(len(q)):
        assert idx[r][idx[r] >= 0].tolist() == want[r]
        assert np.allclose(sc[r][:len(want[r])], (q[r] @ it.T)[want[r]], atol=1e-5)
    assert idx[0][:2].tolist() == [10, 11]
    assert sorted(idx[1][:3].tolist()) == [3, 4000, 4999] and (idx[1][3:] == -1).all()
    # the bound prunes: far fewer exact products than the full product's
    assert 0 < index.rescored < 0.05 * len(q) * len(it)
    one, _ = TopK(it, prune=False, reduce=0).search(q, 20, exclude=[np.array(sorted(e), dtype=int)
                                                                    for e in excl])
    assert np.array_equal(one, idx)


def _true_top_sets(q, it, k, excl):
    """Each row's top k by the exact score (float64 products of the float32 vectors, one
    sum per item), ties by the lower index, excluded items left out."""
    out = []
    for r in range(len(q)):
        s = (it.astype(np.float64) * q[r].astype(np.float64)).sum(axis=1)
        s[list(excl[r])] = -np.inf
        order = np.lexsort((np.arange(len(it)), -s))
        out.append({int(i) for i in order[:k] if np.isfinite(s[i])})
    return out


@pytest.mark.parametrize("kind", ["grouped", "pruned", "two_pass"])
def test_search_set_is_the_exact_top_k_whatever_the_batch(kind):
    """search_set (what retrieval uses) gives each row the exact top-k set, ties by the
    lower index, and the same set whichever rows share its call and wherever it sits in
    them: float32 products round by the row's place in the block, which decided ties
    among equal vectors before. Kinds: a catalog of few distinct vectors (grouped: text
    features of items with equal titles), long-tailed norms (pruned, like CF factors) with
    equal and nearly equal items, and wide unit vectors (the two-pass search) with
    duplicates."""
    rng = np.random.default_rng({"grouped": 1, "pruned": 2, "two_pass": 3}[kind])
    if kind == "grouped":
        distinct = rng.normal(size=(150, 16)).astype(np.float32)
        it = distinct[rng.integers(0, 150, 3000)]
        q = rng.normal(size=(90, 16)).astype(np.float32)
        index = TopK(it, prune=False)
    elif kind == "pruned":
        it = rng.normal(size=(6000, 16)).astype(np.float32)
        it *= (rng.pareto(1.5, 6000) + 0.01)[:, None].astype(np.float32)
        q = rng.normal(size=(90, 16)).astype(np.float32)
        s = q @ it.T
        top = np.argsort(-s, axis=1)[:, 19]  # copies of each row's 20th item: ties at k
        it = np.vstack([it, it[top[:30]], it[top[:30]] * np.float32(1 + 1e-7)])
        index = TopK(it, prune=True)
    else:
        it = _wide_unit_items(rng, 5000, 800, 24)
        it[rng.choice(5000, 400, replace=False)] = it[rng.choice(5000, 400, replace=False)]
        q = it[rng.choice(5000, 90, replace=False)] + 0.05 * rng.normal(size=(90, 800))
        q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
        index = TopK(it, prune=False)
        assert index.reduced is not None
    assert (index._equal_groups() is not None) == (kind == "grouped")
    m = len(it)
    excl = [set(rng.choice(m, size=int(rng.integers(0, 60)), replace=False).tolist())
            for _ in q]
    whole = index.search_set(q, 20, exclude=[np.array(sorted(e), dtype=int) for e in excl])
    want = _true_top_sets(q, it, 20, excl)
    for r in range(len(q)):
        got = whole[r][whole[r] >= 0]
        assert len(set(got.tolist())) == len(got) and set(got.tolist()) == want[r], r
    for cuts in ([7, 40, 90], [1, 2, 3, 89, 90], [45, 90]):  # other batches, other places
        start = 0
        for end in cuts:
            part = index.search_set(q[start:end], 20, exclude=[np.array(sorted(e), dtype=int)
                                                               for e in excl[start:end]])
            for r in range(end - start):
                assert set(part[r].tolist()) == set(whole[start + r].tolist())
            start = end


def test_search_set_skips_excluded_members_of_a_group_of_equal_items():
    """In a grouped index a row takes a group's members by ascending index, passing over
    the ones excluded for it; a group wholly excluded gives none; groups of equal score
    give their members in one run by index; too few items pad -1."""
    v = np.eye(4, dtype=np.float32)
    it = v[[0, 0, 0, 1, 1, 2, 0, 3, 1, 0, 2, 3, 3, 0, 1, 2, 0, 1]]  # 18 items, 4 vectors
    index = TopK(it, prune=False)
    assert index._equal_groups() is not None
    q = np.array([[3, 2, 1, 0], [3, 2, 1, 0], [0, 0, 0, 1]], dtype=np.float32)
    excl = [np.array([0, 2, 6]), np.flatnonzero((it[:, 0] == 1) | (it[:, 1] == 1)),
            np.array([], dtype=int)]
    got = index.search_set(q, 5, exclude=excl)
    assert got[0].tolist() == [1, 9, 13, 16, 3]  # vector 0's members not excluded, then 1's
    assert got[1].tolist() == [5, 10, 15, 7, 11]  # vectors 0 and 1 wholly excluded
    # vectors 0, 1 and 2 all score 0 for row 2: after vector 3's items, 0 and 1 by index
    assert got[2].tolist() == [7, 11, 12, 0, 1]
    q2 = np.array([[1, 1, 0, 0]], dtype=np.float32)  # vectors 0 and 1 tie: by index
    assert index.search_set(q2, 6, exclude=[np.array([0])])[0].tolist() == [1, 2, 3, 4, 6, 8]
    assert index.search_set(q[:1], 20, exclude=[np.arange(17)])[0].tolist() == [17] + [-1] * 19


def test_narrow_or_few_items_take_the_one_pass_search():
    rng = np.random.default_rng(8)
    assert TopK(_wide_unit_items(rng, 5000, 192, 8), prune=False).reduced is None
    assert TopK(_wide_unit_items(rng, 1000, 1280, 8), prune=False).reduced is None
    assert TopK(_wide_unit_items(rng, 5000, 1280, 8), prune=True).reduced is None
    with pytest.raises(ValueError, match="unpruned items wider"):
        TopK(_wide_unit_items(rng, 100, 64, 4), prune=False, reduce=64)


def test_packed_sort_matches_lexsort():
    """The packed 64-bit key sorts as ``np.lexsort((c, -v, r))``: ties by the lower column,
    negative scores, zeros of both signs and tiny (subnormal) scores."""
    rng = np.random.default_rng(9)
    n = 20000
    r, c = rng.integers(0, 1024, n), rng.integers(0, 1 << 22, n)
    v = np.round(rng.normal(size=n), 1).astype(np.float32)  # many ties
    v[::11], v[1::13], v[2::17] = 0.0, -0.0, np.float32(1e-40)
    order = np.lexsort((c, -v, r))
    rr, cc, vv = _sort_packed(r, c, v)
    assert np.array_equal(rr, r[order]) and np.array_equal(cc, c[order])
    assert np.array_equal(vv, v[order])


def _events(spark, rows):
    return spark.createDataFrame(rows, EVENT_SCHEMA)


def _ts(s):
    return pd.Timestamp(s, tz="UTC").to_pydatetime()


def test_every_engagement_type_is_spelled_out_and_the_pairs_aggregate_without_objects(spark):
    """Each pair's event types are its distinct types in sorted order, every engagement
    type included, and the aggregation is Spark's fixed-width hash aggregate (a set of
    strings per pair fell back to the object aggregate, 2.5x slower at 10M events)."""
    ts = _ts("2026-11-20 10:00")
    rows = [("u", "all", t, 4.0 if t == "rating" else None, ts) for t in C.ENGAGEMENT_TYPES]
    rows += [("u", "all", "view", None, ts), ("u", "two", "rating", 5.0, ts),
             ("u", "two", "click", None, ts), ("v", "one", "add_to_cart", None, ts)]
    agg = aggregate_interactions(_events(spark, rows), EventWeights(), "2026-11-20")
    got = {(r.user_id, r.item_id): (r.event_types, r.n_events) for r in agg.collect()}
    assert got == {("u", "all"): (sorted(C.ENGAGEMENT_TYPES), 6),
                   ("u", "two"): (["click", "rating"], 2), ("v", "one"): (["add_to_cart"], 1)}
    plan = agg._jdf.queryExecution().executedPlan().toString()
    assert "HashAggregate" in plan and "ObjectHashAggregate" not in plan \
        and "SortAggregate" not in plan


def test_weighting_hand_example_with_decay_and_low_ratings(spark):
    """view 1 now + purchase 8 fourteen days ago at a 7-day half-life = 1 + 8/4 = 3;
    a 2-star rating is weak (0.25 of 2*2/5) instead of excluded."""
    w = EventWeights(half_life_days=7.0, low_rating_weight=0.25)
    end = pd.Timestamp("2026-11-21", tz="UTC")
    ev = _events(spark, [
        ("u", "a", "view", None, (end - pd.Timedelta(seconds=1)).to_pydatetime()),
        ("u", "a", "purchase", None, (end - pd.Timedelta(days=14)).to_pydatetime()),
        ("u", "b", "rating", 5.0, (end - pd.Timedelta(days=7)).to_pydatetime()),
        ("u", "c", "rating", 2.0, (end - pd.Timedelta(days=7)).to_pydatetime()),
    ])
    got = {r.item_id: r for r in aggregate_interactions(ev, w, "2026-11-20").collect()}
    assert got["a"].weight == pytest.approx(1 * 0.5 ** (1 / 86400 / 7) + 8 * 0.25, rel=1e-9)
    assert got["a"].event_types == ["purchase", "view"] and got["a"].purchased
    assert got["b"].weight == pytest.approx(2.0 * 5 / 5 * 0.5, rel=1e-9)
    assert got["c"].weight == pytest.approx(0.25 * 2.0 * 2 / 5 * 0.5, rel=1e-9)
    # without decay the same events weigh their type weights
    plain = {r.item_id: r.weight for r in aggregate_interactions(ev, EventWeights(), "2026-11-20").collect()}
    assert plain == {"a": 9.0, "b": 2.0, "c": 0.0}


def test_min_events_filters_items_then_users(spark):
    inter = spark.createDataFrame(pd.DataFrame({
        C.USER_ID: ["u1", "u1", "u2", "u2", "u3"], C.ITEM_ID: ["x", "y", "x", "z", "x"],
        "weight": [1.0, 1.0, 1.0, 1.0, 1.0], "n_events": [1, 1, 2, 1, 1]}))
    got = training_pairs(inter, CFSettings(min_item_events=2, min_user_events=2)).toPandas()
    # item x has 4 events (kept), y and z one each (dropped); then u1 and u3 have 1 event left
    assert set(zip(got[C.USER_ID], got[C.ITEM_ID])) == {("u2", "x")}


@pytest.mark.parametrize("mode", ["bm25", "tfidf"])
def test_reweighting_matches_implicit(spark, mode):
    from implicit.nearest_neighbours import bm25_weight, tfidf_weight

    rng = np.random.default_rng(5)
    pairs = pd.DataFrame({C.USER_ID: [f"u{i}" for i in rng.integers(0, 40, 400)],
                          C.ITEM_ID: [f"i{i:02d}" for i in rng.integers(0, 60, 400)],
                          "weight": rng.uniform(0.5, 5, 400)})
    pairs = pairs.groupby([C.USER_ID, C.ITEM_ID], as_index=False)["weight"].sum()
    cf = CFSettings(reweight=mode, bm25_k1=50.0, bm25_b=0.6)
    got = training_pairs(spark.createDataFrame(pairs), cf).toPandas()
    users, items, mat = build_matrix(pairs, alpha=0.0)  # alpha 0: data are ones; rebuild weights
    w = sp.csr_matrix((pairs["weight"].to_numpy(), (pd.Categorical(pairs[C.USER_ID]).codes,
                                                     pd.Categorical(pairs[C.ITEM_ID]).codes)))
    ref = (bm25_weight(w.T, K1=50.0, B=0.6) if mode == "bm25" else tfidf_weight(w.T)).tocsr().T.tocoo()
    want = {(users[r], items[c]): v for r, c, v in zip(ref.row, ref.col, ref.data) if v > 0}
    have = dict(zip(zip(got[C.USER_ID], got[C.ITEM_ID]), got["weight"]))
    assert have.keys() == want.keys() and len(want) > 100
    assert np.allclose([have[k] for k in want], list(want.values()), rtol=1e-9)


def test_implicit_fit_is_deterministic_with_a_seed():
    rng = np.random.default_rng(0)
    mat = sp.random(200, 150, density=0.05, random_state=1, format="csr", dtype=np.float32)
    mat.data = 1 + 4 * rng.random(mat.nnz).astype(np.float32)
    a = fit_implicit(mat, CFSettings(factors=8, iterations=5, random_state=7, gpu="off"))
    b = fit_implicit(mat, CFSettings(factors=8, iterations=5, random_state=7, gpu="off"))
    c = fit_implicit(mat, CFSettings(factors=8, iterations=5, random_state=8, gpu="off"))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == "cpu"
    assert not np.allclose(a[1], c[1])


def test_gpu_setting_follows_cuda_availability():
    import implicit.gpu

    from vrec.core.cf import use_gpu

    assert use_gpu("off") is False
    assert use_gpu("auto") is bool(implicit.gpu.HAS_CUDA)
    if implicit.gpu.HAS_CUDA:
        assert use_gpu("on") is True
    else:
        with pytest.raises(RuntimeError, match="cf.gpu is 'on'"):
            fit_implicit(sp.eye(3, format="csr", dtype=np.float32), CFSettings(gpu="on"))


def test_auto_skips_the_cuda_imports_without_an_nvidia_device():
    """cf.gpu: auto on a machine without an NVIDIA device node decides without importing
    torch and implicit's CUDA module (about 2 s of every CPU fit); where a device is
    visible it imports them and asks implicit."""
    import subprocess
    import sys

    from vrec.core.cf import nvidia_device_visible

    code = ("import sys\nfrom vrec.core.cf import use_gpu\n"
            "print(use_gpu('auto'), 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    gpu, torch_imported = r.stdout.split()
    assert torch_imported == str(nvidia_device_visible())
    hidden = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert hidden.stdout.split() == ["False", "False"], hidden.stderr[-2000:]


def _has_cuda() -> bool:
    from vrec.core.cf import implicit_gpu

    return bool(implicit_gpu().HAS_CUDA)


@pytest.mark.skipif(importlib.util.find_spec("rmm") is None,
                    reason="the gpu extra (rmm) is not installed: pip install -e '.[gpu]'")
def test_implicit_cuda_module_loads_when_the_gpu_extra_is_installed():
    """With the gpu extra (rmm), implicit's CUDA module must find cuBLAS: imported before
    torch it fails ("libcublas.so.13: cannot open shared object file") and cf.gpu: auto
    never engages even on a GPU machine. Loading the module needs no GPU; a fresh process
    so that nothing imported torch earlier."""
    import subprocess
    import sys

    code = ("import sys\nfrom vrec.core.cf import implicit_gpu; implicit_gpu()\n"
            "print('implicit.gpu._cuda' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    # without a GPU, implicit then reports the missing driver: the module itself loaded
    assert "cannot open shared object file" not in r.stderr, r.stderr[-2000:]
    assert r.returncode == 0 and r.stdout.strip() == "True", r.stderr[-2000:]


@pytest.mark.skipif(not _has_cuda(),
                    reason="no CUDA: implicit's GPU support is not installed or no GPU is visible")
def test_cuda_fit_matches_the_cpu_fit():
    """On a GPU: the CUDA fit recommends what the CPU fit does (the two differ in float
    order only). Tolerance (docs/ranking.md): top-10 lists overlap at least 90%."""
    import implicit.gpu

    rng = np.random.default_rng(3)
    mat = sp.random(2000, 500, density=0.02, format="csr", dtype=np.float32, random_state=rng)
    mat.data = 1 + 4 * mat.data
    cpu = fit_implicit(mat, CFSettings(factors=32, iterations=15, gpu="off", conjugate_gradient=False))
    gpu = fit_implicit(mat, CFSettings(factors=32, iterations=15, gpu="on", conjugate_gradient=False))
    assert gpu[2] == "cuda" and implicit.gpu.HAS_CUDA
    top = [np.argsort(-(u @ i.T), axis=1)[:, :10] for u, i, _ in (cpu, gpu)]
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(*top)])
    assert overlap >= 0.9, overlap


@pytest.fixture(scope="module")
def tiny_run(spark, tiny_raw, tmp_path_factory):
    """build_interactions on the tiny sample (its interactions feed the engine tests)."""
    from .conftest import settings_for

    tmp = tmp_path_factory.mktemp("cf")
    s = settings_for(tiny_raw, tmp / "wh", tmp)
    for stage in ("validate_inputs", "build_interactions"):
        run_stage(s, stage, DS, spark=spark)
    return s


def test_driver_read_and_spark_prep_build_the_same_matrix(spark, tiny_run):
    from vrec.spark.cf import read_pairs_local

    path = W.run_dir(tiny_run.paths.warehouse_root, DS) / "interactions"
    a = build_matrix(read_pairs_local(path), alpha=2.0)
    b = build_matrix(training_pairs(spark.read.parquet(str(path)), CFSettings()).toPandas(), alpha=2.0)
    assert list(a[0]) == list(b[0]) and list(a[1]) == list(b[1]) and a[2].nnz > 50
    assert abs(a[2] - b[2]).max() < 1e-6


def _candidates(spark, tmp_path, s, model: CFModel, recs: RecsSettings) -> pd.DataFrame:
    """The candidates stage's Spark retrieval for every user of the tiny run, CF only (no
    images: an empty item space of vectors), as a frame of user_id, item_id, cf."""
    from vrec.core.itemspace import build_item_space
    from vrec.dates import end_of_ds
    from vrec.spark.candidates import write_candidates

    rd = W.run_dir(s.paths.warehouse_root, DS)
    catalog = pd.read_parquet(rd / "catalog", columns=[C.ITEM_ID, C.CATEGORY])
    pairs = pd.read_parquet(rd / "interactions")
    no_vectors = pd.DataFrame({C.ITEM_ID: pd.Series(dtype=str), "embedding": []})
    space, _ = build_item_space(model, catalog, no_vectors, pairs, [], recs)
    model_dir, space_dir = model.save(tmp_path / "model"), space.save(tmp_path / "space")
    users, n = write_candidates(spark, rd / "interactions", tmp_path / "candidates",
                                space_dir=space_dir,
                                model_dir=model_dir, recs=recs, visual=VisualSettings(),
                                end=pd.Timestamp(end_of_ds(DS)))
    out = pd.read_parquet(tmp_path / "candidates")
    assert (users, n) == (len(out), int(out["items"].map(len).sum()))
    assert len({f.name for f in (tmp_path / "candidates").glob("*.parquet")}) <= 4
    long = out[[C.USER_ID, "items", "cf"]].explode(["items", "cf"]).dropna(subset=["items"])
    return pd.DataFrame({C.USER_ID: long[C.USER_ID].to_numpy(),
                         C.ITEM_ID: space.item_ids[long["items"].astype(int).to_numpy()],
                         "cf": long["cf"].astype(float).to_numpy()})


@pytest.mark.parametrize("engine", ["implicit", "spark_mllib"])
def test_both_engines_feed_the_candidates_with_the_exact_cf_top_n(spark, tiny_run, engine,
                                                                  tmp_path):
    s = tiny_run
    path = W.run_dir(s.paths.warehouse_root, DS) / "interactions"
    cf = CFSettings(engine=engine, factors=8, iterations=5)
    model = fit_cf(path, cf, spark=spark, ds=DS)
    assert model.version.startswith(f"{engine}-als-{DS}-")
    assert model.user_factors.shape == (len(model.user_ids), 8)
    assert np.isfinite(model.item_factors).all() and np.abs(model.item_factors).sum() > 0
    loaded = CFModel.load(model.save(tmp_path / engine))
    assert np.array_equal(loaded.item_factors, model.item_factors)
    assert list(loaded.user_ids) == list(model.user_ids) == sorted(model.user_ids)
    assert loaded.params["engine"] == engine and loaded.version == model.version
    n = 10
    cands = _candidates(spark, tmp_path, s, loaded, RecsSettings(candidates=n))
    inter = spark.read.parquet(str(path)).toPandas()
    # every user with history (the model's users) gets CF candidates; a user whose pairs
    # all weigh 0 (the sample's newcomers: only low ratings) has no factors and none
    assert set(cands[C.USER_ID]) == set(inter.loc[inter["weight"] > 0, C.USER_ID]) \
        == set(loaded.user_ids)
    assert inter[C.USER_ID].nunique() > len(loaded.user_ids)
    assert not set(zip(inter[C.USER_ID], inter[C.ITEM_ID])) & set(zip(cands[C.USER_ID], cands[C.ITEM_ID]))
    # each user's candidates are exactly the model's top n unseen items, scored x_u . y_i
    uf = {u: loaded.user_factors[i] for i, u in enumerate(loaded.user_ids)}
    seen = inter.groupby(C.USER_ID)[C.ITEM_ID].apply(set)
    for u, got in cands.groupby(C.USER_ID):
        scores = loaded.item_factors @ uf[u]
        order = [loaded.item_ids[j] for j in np.argsort(-scores, kind="stable")
                 if loaded.item_ids[j] not in seen[u]]
        assert set(got[C.ITEM_ID]) == set(order[:n]), u
        j = list(loaded.item_ids).index(got[C.ITEM_ID].iloc[0])
        assert got["cf"].iloc[0] == pytest.approx(float(scores[j]), rel=1e-4)


def test_seen_event_types_decide_what_is_excluded(spark, tiny_run, tmp_path):
    """With only purchases counting as seen, a merely viewed item may come back."""
    s = tiny_run
    path = W.run_dir(s.paths.warehouse_root, DS) / "interactions"
    model = fit_cf(path, CFSettings(factors=8, iterations=5), spark=spark, ds=DS)
    cands = _candidates(spark, tmp_path, s, model,
                        RecsSettings(candidates=40, seen_event_types=("purchase",)))
    inter = spark.read.parquet(str(path)).toPandas()
    got = set(zip(cands[C.USER_ID], cands[C.ITEM_ID]))
    bought = inter[inter["event_types"].apply(lambda t: "purchase" in list(t))]
    viewed_only = inter[inter["event_types"].apply(lambda t: "purchase" not in list(t))]
    assert not got & set(zip(bought[C.USER_ID], bought[C.ITEM_ID]))
    assert got & set(zip(viewed_only[C.USER_ID], viewed_only[C.ITEM_ID]))


def test_train_cf_stage_with_mllib_engine_feeds_the_rest_of_the_run(spark, tiny_run, tmp_path):
    """cf.engine=spark_mllib through the stages: same model format, same retrieval and
    ranking, output validation passes, and the tuning and evaluation refits use MLlib too."""
    s = tiny_run
    wh = tmp_path / "wh"
    shutil.copytree(s.paths.warehouse_root, wh, symlinks=True)
    s2 = s.model_copy(update={"paths": s.paths.model_copy(update={"warehouse_root": wh}),
                              "cf": s.cf.model_copy(update={"engine": "spark_mllib"})})
    # a two-point CF grid: each MLlib fit costs seconds, and what is checked is that the
    # tuning, the blend tuning and the evaluation fit with MLlib, not the grid's choice
    s2 = s2.model_copy(update={"recs": s2.recs.model_copy(update={"tune_min_users": 5}),
                               "eval": s2.eval.model_copy(update={"split": "user"}),
                               "cf": s2.cf.model_copy(update={
                                   "tune_alpha": (1.0, 2.0), "tune_regularization": (),
                                   "tune_factors": (), "tune_visual_prior": ()})})
    run_stage(s2, "embed_items", DS, spark=spark)  # the blend tuning needs the vectors
    res = run_stage(s2, "train_cf", DS, spark=spark)
    assert res["engine"] == "spark_mllib" and res["version"].startswith("spark_mllib-als-")
    for stage in ("candidates", "build_recs", "evaluate", "validate_outputs"):
        run_stage(s2, stage, DS, spark=spark)
    from vrec.executor import RunLayout

    run = RunLayout(wh, DS)
    recs = pd.read_parquet(run.path("user_recs"))
    assert recs["model_version"].str.startswith("spark_mllib-als-").all()
    assert CFModel.load(run.path("model")).params["device"] == "spark"
    cf_tuning = run.record("train_cf")["cf_tuning"]
    assert len(cf_tuning["grid"]) == 2 and cf_tuning["chosen"], cf_tuning  # two MLlib fits
    tuned = run.record("train_cf")["blend"]
    assert tuned["cf"] == {"engine": "spark_mllib", "device": "spark"}, tuned
    assert run.record("evaluate")["evaluation"]["cf"] == {"engine": "spark_mllib", "device": "spark"}
