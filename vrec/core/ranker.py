"""The learned ranker: LightGBM lambdarank over each user's candidates (docs/ranking.md
"The learned ranker").

The candidates and their raw scores come from the production retrieval
(vrec.core.retrieval); :func:`features` turns them into one row per (user, candidate)
of :data:`FEATURES`:

* each source's raw score and its rank among the user's candidates (1 best, scaled to
  (0, 1]; NaN when the source has no score): CF, visual profile, content preference,
  text preference and the last items;
* the item's users over 1, 7 and 30 days, its 7-day trend, the days it has been known,
  its trending rank (log) and whether it is a new arrival (vrec.core.itemspace.STATS);
* the user's history size, pairs of the last 7 days, days since the latest event and
  whether the CF model knows them;
* the history's share in the item's category, and log(price / the user's usual price).

:func:`training_rows` labels the rows of a forward window's candidates (1: the user
interacted with the item after the cutoff), keeps queries with a positive, samples
``negatives`` negatives per query and caps the rows. :func:`fit_ranker` fits LightGBM
(early stopping on a fifth of the queries when there are enough). :func:`fit_window`
and :func:`train_ranker` are the nightly protocol: fit on the window as of T - 2h,
validate on the window as of T - h against the tuned blend (paired per-user NDCG@k),
refit on that window with the rounds found (T: the tunings' day,
vrec.stages.common.tunings_day).
vrec.core.ranking.rank ranks with a :class:`Ranker` in place of the blend.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from vrec.config import RankerSettings, RecsSettings
from vrec.core.itemspace import STATS, ItemSpace
from vrec.core.retrieval import RankInput

SOURCES = ("cf", "vis", "pref", "txt", "last")
FEATURES = (*SOURCES, *(f"{s}_rank" for s in SOURCES), "users_1d", "users_7d", "users_30d",
            "trend_7d", "days_known", "trending_rank", "is_new", "n_hist", "recent",
            "last_days", "in_model", "cat_share", "price_ratio")
# LightGBM's lambdarank refuses queries of more rows than this
MAX_QUERY_ROWS = 10_000


@dataclass
class Ranker:
    """A fitted model (LightGBM's text form) over :data:`FEATURES`, and the reserved
    new-arrival slots its lists keep (None: the list policy's)."""

    model: str
    slots: int | None = None
    _booster: object = field(default=None, init=False, repr=False, compare=False)
    # the trees compiled to machine code (compiled_trees); False: not available here
    _compiled: object = field(default=None, init=False, repr=False, compare=False)

    def __getstate__(self) -> dict:
        """Pickled (to Spark's workers) without the compiled code: each process loads it
        from the machine's cache."""
        return {**self.__dict__, "_compiled": None}

    @classmethod
    def from_record(cls, record: dict) -> Ranker:
        """The ranker of a :func:`train_ranker` record (with its chosen slots)."""
        return cls(record["model"], (record.get("chosen") or {}).get("new_arrival_slots"))

    @property
    def engine(self) -> str:
        """What scores the rows: ``compiled`` (the trees as machine code, lleaves) or
        ``lightgbm`` (where compiling failed)."""
        if self._compiled is None:
            self._compiled = compiled_trees(self.model) or False
        return "compiled" if self._compiled else "lightgbm"

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Scores of feature rows (larger: rank higher), one thread. The compiled trees
        give LightGBM's scores up to float64 rounding of the sum over trees (about 1e-15)
        in a half to a seventh of the time (benchmarks/README.md)."""
        if len(X) == 0:
            return np.zeros(0)
        if self.engine == "compiled":
            return self._compiled.predict(np.asarray(X, dtype=np.float64), n_jobs=1)
        return self.predict_lightgbm(X)

    def predict_lightgbm(self, X: np.ndarray) -> np.ndarray:
        """The scores by LightGBM's own predictor."""
        import lightgbm as lgb

        if self._booster is None:
            self._booster = lgb.Booster(model_str=self.model)
        if len(X) == 0:
            return np.zeros(0)
        return np.asarray(self._booster.predict(X, num_threads=1), dtype=np.float64)


def compiled_trees(model: str):
    """The model's trees compiled to machine code for this machine's CPU (lleaves, an LLVM
    compiler for LightGBM's text form), or None when that fails (the reason is logged;
    LightGBM then predicts). A compile takes a few seconds; its result is cached in the
    temporary folder under a key of the model, the compiler's versions and the CPU, so
    the processes of a night (Spark's workers, the evaluation's list processes) compile
    each ranker once."""
    import hashlib
    import logging
    import os
    import tempfile
    from importlib.metadata import version
    from pathlib import Path

    try:
        import lleaves
        from llvmlite import binding

        binding.initialize_native_target()
        cpu = f"{binding.get_host_cpu_name()} {binding.get_host_cpu_features().flatten()}"
        key = hashlib.sha256("\0".join([model, version("lleaves"), version("llvmlite"), cpu])
                             .encode()).hexdigest()[:24]
        folder = Path(tempfile.gettempdir()) / "vrec-compiled-rankers"
        folder.mkdir(exist_ok=True)
        text, binary = folder / f"{key}.txt", folder / f"{key}.o"
        if not text.exists():
            part = folder / f"{key}.{os.getpid()}.txt"
            part.write_text(model)
            os.replace(part, text)
        compiled = lleaves.Model(model_file=str(text))
        if binary.exists():
            compiled.compile(cache=str(binary))
        else:  # compiled here, then moved into place whole: another process may read it
            part = folder / f"{key}.{os.getpid()}.o"
            compiled.compile(cache=str(part))
            os.replace(part, binary)
        return compiled
    except Exception as e:  # noqa: BLE001 - any failure: LightGBM predicts instead
        logging.getLogger(__name__).warning(
            "the ranker's trees could not be compiled (%s: %s); LightGBM predicts instead",
            type(e).__name__, e)
        return None


def _ranks(places: np.ndarray, m: int) -> np.ndarray:
    """Rank of each score among the non-NaN ones (1 best) over their count; NaN stays
    (from :func:`vrec.core.retrieval.score_positions`)."""
    return (places + 1.0) / m if m else places


def features(inp: RankInput, space: ItemSpace) -> np.ndarray:
    """One row of :data:`FEATURES` per (user, candidate), users in order, each user's
    candidates in ``inp.items`` order (float32; NaN = unknown)."""
    sizes = np.asarray([len(c) for c in inp.items], dtype=np.int64)
    n = int(sizes.sum())
    X = np.full((n, len(FEATURES)), np.nan, dtype=np.float32)
    if n == 0:
        return X
    col = {f: j for j, f in enumerate(FEATURES)}
    items = np.concatenate(inp.items).astype(np.int64)
    for s in SOURCES:
        X[:, col[s]] = np.concatenate(getattr(inp, s))
        X[:, col[f"{s}_rank"]] = np.concatenate([_ranks(*p) for p in inp.positions(s)])
    stats = np.asarray(space.stats)
    for name in ("users_1d", "users_7d", "users_30d", "trend_7d", "days_known"):
        X[:, col[name]] = stats[items, STATS.index(name)]
    if "trend_pos" not in space.cache:
        pos = np.empty(space.n, dtype=np.float32)
        pos[np.asarray(space.trending)] = np.arange(space.n, dtype=np.float32)
        space.cache["trend_pos"] = np.log1p(pos)
    X[:, col["trending_rank"]] = space.cache["trend_pos"][items]
    X[:, col["is_new"]] = np.asarray(space.new)[items]
    owner = np.repeat(np.arange(len(sizes)), sizes)
    X[:, col["n_hist"]] = np.asarray(inp.n_hist)[owner]
    X[:, col["recent"]] = np.asarray(inp.recent)[owner]
    X[:, col["last_days"]] = np.asarray(inp.last_days)[owner]
    X[:, col["in_model"]] = np.asarray(inp.in_model)[owner]
    X[:, col["cat_share"]] = np.concatenate(inp.cat)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = stats[items, STATS.index("price")] / np.asarray(inp.price_ref)[owner]
        X[:, col["price_ratio"]] = np.where(ratio > 0, np.log(ratio), np.nan)
    return X


def labels(inp: RankInput, space: ItemSpace, relevant: dict[str, set[str]]) -> np.ndarray:
    """1 for each (user, candidate) row whose item the user interacted with after the
    cutoff (``relevant``: a window's labels), else 0; the rows of :func:`features`."""
    ids = np.asarray(space.item_ids).astype(str)
    out = [np.isin(ids[c], list(relevant.get(str(u), ()))) for u, c in
           zip(inp.user_ids, inp.items)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def training_rows(inp: RankInput, space: ItemSpace, relevant: dict[str, set[str]], *,
                  negatives: int, max_rows: int, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X, y, query sizes) for LightGBM: the queries (users) with a positive candidate,
    every positive and at most ``negatives`` sampled negatives each (and at most
    :data:`MAX_QUERY_ROWS`), queries taken in a seeded order until ``max_rows``."""
    X, y = features(inp, space), labels(inp, space, relevant)
    sizes = np.asarray([len(c) for c in inp.items], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    rng = np.random.default_rng(seed)
    keep, groups, total = [], [], 0
    for q in rng.permutation(len(sizes)):
        rows = np.arange(starts[q], starts[q] + sizes[q])
        pos, neg = rows[y[rows] > 0], rows[y[rows] == 0]
        if len(pos) == 0 or len(neg) == 0:
            continue
        neg = rng.choice(neg, min(len(neg), negatives, MAX_QUERY_ROWS - len(pos)), replace=False)
        rows = np.sort(np.concatenate([pos[:MAX_QUERY_ROWS - 1], neg]))
        if total + len(rows) > max_rows:
            break
        keep.append(rows)
        groups.append(len(rows))
        total += len(rows)
    idx = np.concatenate(keep) if keep else np.zeros(0, np.int64)
    return X[idx], y[idx], np.asarray(groups, dtype=np.int64)


def fit_ranker(X: np.ndarray, y: np.ndarray, groups: np.ndarray, settings: RankerSettings, *,
               k: int, rounds: int | None = None, seed: int = 0, threads: int = 0
               ) -> tuple[Ranker, dict]:
    """LightGBM lambdarank on the rows; with ``rounds`` None the number of rounds is
    chosen by early stopping (NDCG@k) on a seeded fifth of the queries, when there are
    at least 20 queries (otherwise ``settings.rounds``). Returns the ranker and facts
    (rounds, rows, queries, positives, feature importance by gain)."""
    import lightgbm as lgb

    params = {"objective": "lambdarank", "metric": "ndcg", "eval_at": [k],
              "learning_rate": settings.learning_rate, "num_leaves": settings.num_leaves,
              "min_data_in_leaf": settings.min_data_in_leaf, "seed": seed,
              "deterministic": True, "force_row_wise": True, "num_threads": threads,
              "verbose": -1}
    facts = {"rows": int(len(y)), "queries": int(len(groups)), "positives": int(y.sum())}
    if rounds is None and len(groups) >= 20:
        starts = np.concatenate([[0], np.cumsum(groups)[:-1]])
        held = np.zeros(len(groups), dtype=bool)
        held[np.random.default_rng(seed).choice(len(groups), len(groups) // 5,
                                                replace=False)] = True
        rows = [np.arange(s, s + g) for s, g in zip(starts, groups)]
        tr = np.concatenate([r for r, h in zip(rows, held) if not h])
        va = np.concatenate([r for r, h in zip(rows, held) if h])
        dtrain = lgb.Dataset(X[tr], y[tr], group=groups[~held], feature_name=list(FEATURES),
                             free_raw_data=False)
        dvalid = lgb.Dataset(X[va], y[va], group=groups[held], reference=dtrain)
        probe = lgb.train(params, dtrain, num_boost_round=settings.rounds, valid_sets=[dvalid],
                          callbacks=[lgb.early_stopping(30, verbose=False)])
        rounds = max(1, int(probe.best_iteration or settings.rounds))
        facts["early_stopping_ndcg"] = round(float(probe.best_score["valid_0"][f"ndcg@{k}"]), 5)
    rounds = rounds or settings.rounds
    booster = lgb.train(params, lgb.Dataset(X, y, group=groups, feature_name=list(FEATURES)),
                        num_boost_round=rounds)
    gain = booster.feature_importance("gain")
    total = float(gain.sum()) or 1.0
    facts["rounds"] = int(rounds)
    facts["importance"] = {f: round(float(g) / total, 4) for f, g in
                           sorted(zip(FEATURES, gain), key=lambda fg: -fg[1]) if g > 0}
    return Ranker(booster.model_to_string()), facts


def window_rows(c, settings: RankerSettings, seed: int = 0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`training_rows` of a forward window's candidates (vrec.core.tuning
    .WindowCandidates), labelled with the window's sampled users' labels."""
    users = set(c.window.users)
    rel = {u: v for u, v in c.window.relevant.items() if u in users}
    return training_rows(c.inp, c.space, rel, negatives=settings.negatives,
                         max_rows=settings.max_rows, seed=seed)


def fit_window(train, settings: RankerSettings, *, k: int, seed: int = 0,
               threads: int = 0) -> dict:
    """The protocol's first step (:func:`train_ranker`): the ranker fit on the candidates
    of the window as of T - 2h (``train``, vrec.core.tuning.WindowCandidates). Returns
    ``train_window`` (the window's facts), ``ranker`` and ``train`` (the fit's facts), or
    ``skipped`` when too few users have a label among their candidates. Only this record
    outlives the step, so a caller that drops ``train`` frees the window's candidates,
    item space and CF model before the validation window's are built (at 10M each is
    gigabytes on the driver)."""
    t0 = time.perf_counter()
    out: dict = {"train_window": train.window.info()}
    Xt, yt, gt = window_rows(train, settings, seed)
    if len(gt) < settings.min_queries:
        out["skipped"] = (f"{len(gt)} users of the training window (as of "
                          f"{train.window.end.date()}) have a label among their candidates < "
                          f"ranker.min_queries {settings.min_queries}")
    else:
        out["ranker"], out["train"] = fit_ranker(Xt, yt, gt, settings, k=k, seed=seed,
                                                 threads=threads)
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def train_ranker(first: dict, valid, policy: RecsSettings, settings: RankerSettings, *,
                 slots: int = 0, seed: int = 0, threads: int = 0) -> dict:
    """The nightly protocol on two forward windows' candidates (vrec.core.tuning
    .WindowCandidates): ``first``, :func:`fit_window`'s fit on the window as of T - 2h
    (labels up to T - h), and ``valid``, the window as of T - h (labels up to T; T: the
    tunings' day). Score the ranker's lists and the blend's (``policy``: the tuned blend)
    on ``valid``'s users; refit on ``valid`` with the same rounds (the night's model).
    ``chosen`` says whether it
    publishes (only when it beats the blend by more than ``settings.min_gain_se``
    paired SE; ``reason`` says why not) and how many reserved new-arrival slots its
    lists keep: ``policy``'s own
    ``new_arrival_slots``, or with none there the configured ``slots`` when the space
    has new arrivals and the ranker's lists with them are not worse than without by
    more than one paired SE (the ranker picks the new arrivals for them). ``model`` is
    the refit model's text; ``seconds`` counts both steps."""
    from vrec.core.ranking import lists_by_user, rank

    t0 = time.perf_counter()
    k = policy.k
    out: dict = {"chosen": None, "train_window": first["train_window"],
                 "valid_window": valid.window.info(), "features": list(FEATURES)}
    if "skipped" in first:
        out["skipped"] = first["skipped"]
        out["seconds"] = round(first["seconds"] + time.perf_counter() - t0, 2)
        return out
    ranker, fit_facts = first["ranker"], first["train"]

    def ndcg(pol, model=None):
        return valid.window.ndcg(lists_by_user(rank(valid.inp, valid.space, pol, model),
                                               valid.space), k)

    b, r = ndcg(policy), ndcg(policy, ranker)
    n_slots = policy.new_arrival_slots
    if n_slots == 0 and slots > 0 and np.asarray(valid.space.new).any():
        with_slots = ndcg(policy.model_copy(update={"new_arrival_slots": slots}), ranker)
        dd = r - with_slots
        se_s = float(dd.std(ddof=1) / np.sqrt(len(dd))) if len(dd) > 1 else 0.0
        out["slots"] = {"with": round(float(with_slots.mean()), 5),
                        "without": round(float(r.mean()), 5), "se": round(se_s, 5)}
        if not dd.mean() > se_s:  # the slots cost no more than one SE: keep them
            n_slots, r = slots, with_slots
    d = r - b
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    wins = bool(len(d) > 1 and d.mean() > settings.min_gain_se * se and d.mean() > 0)
    out["validation"] = {"users": int(len(d)), "k": k, "ranker_ndcg": round(float(r.mean()), 5),
                         "blend_ndcg": round(float(b.mean()), 5),
                         "gain": round(float(d.mean()), 5), "se": round(se, 5)}
    out["train"] = fit_facts
    Xv, yv, gv = window_rows(valid, settings, seed)
    refit, refit_facts = (fit_ranker(Xv, yv, gv, settings, k=k, rounds=fit_facts["rounds"],
                                     seed=seed, threads=threads) if len(gv) >= settings.min_queries
                          else (ranker, fit_facts))
    out["refit"] = {key: refit_facts[key] for key in ("rows", "queries", "positives", "rounds")}
    out["importance"] = refit_facts["importance"]
    out["model"] = refit.model
    out["chosen"] = {"use": wins, "new_arrival_slots": int(n_slots)}
    if not wins:
        out["reason"] = (f"ranker NDCG@{k} {r.mean():.5f} vs blend {b.mean():.5f} on the "
                         f"validation window: gain {d.mean():+.5f} is not > "
                         f"{settings.min_gain_se:g} x SE {se:.5f}")
    out["seconds"] = round(first["seconds"] + time.perf_counter() - t0, 2)
    return out
