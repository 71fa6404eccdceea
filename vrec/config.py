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
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ENV_PREFIX = "VREC__"
CONFIG_ENV = "VREC_CONFIG"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Paths(_Section):
    """Where raw inputs, images and the warehouse live."""

    raw_root: Path = Path("data/raw")
    warehouse_root: Path = Path("data/warehouse")
    image_root: Path = Path("data/raw")


class SparkSettings(_Section):
    """How jobs build their Spark session (the master for Airflow runs comes from the
    Airflow connection; this one is used by ``vrec`` commands and tests)."""

    master: str = "local[*]"
    conf: dict[str, str] = Field(
        default_factory=lambda: {
            "spark.sql.shuffle.partitions": "8",
            "spark.driver.memory": "4g",
            "spark.sql.session.timeZone": "UTC",
            "spark.ui.showConsoleProgress": "false",
        }
    )


class EmbedSettings(_Section):
    """Image embedding stage: backbone (efficientnet_lite0, resnet18, resnet50,
    efficientnet_b0, convnext_tiny), optional local weights file, batch sizes and the
    image quality thresholds (minimum side in pixels, near-blank grey-level standard
    deviation, near-duplicate perceptual-hash Hamming distance)."""

    backbone: str = "efficientnet_lite0"
    weights_path: Path | None = None
    allow_download: bool = True
    batch_size: int = Field(32, ge=1)
    arrow_batch: int = Field(64, ge=1)
    min_side: int = Field(32, ge=1)
    blank_std: float = Field(2.0, ge=0)
    duplicate_hamming: int = Field(4, ge=0, le=64)
    duplicate_min_cosine: float = Field(0.95, ge=-1, le=1)


class EventWeights(_Section):
    """Interaction weight of one event (see README "Interaction weighting").

    ``rating`` events weigh ``rating * value / 5`` when ``value >= min_rating``, else
    ``low_rating_weight * rating * value / 5`` (0 = excluded from training, still seen).
    With ``half_life_days`` set, each event is multiplied by ``0.5 ** (age_days /
    half_life_days)``, age measured from the end of the run's ds. With ``history_days``
    set, events older than that weigh 0: still "seen", no longer history (a user with
    nothing newer is a cold user and gets trending items).
    """

    view: float = Field(1.0, ge=0)
    click: float = Field(2.0, ge=0)
    add_to_cart: float = Field(4.0, ge=0)
    purchase: float = Field(8.0, ge=0)
    rating: float = Field(2.0, ge=0)
    min_rating: float = 3.0
    low_rating_weight: float = Field(0.0, ge=0)
    half_life_days: float | None = Field(None, gt=0)
    history_days: float | None = Field(None, gt=0)


class CFSettings(_Section):
    """Collaborative filtering: engine, ALS hyper-parameters, matrix filters, reweighting.

    Confidence = 1 + alpha * w, where w is the pair weight (after optional BM25/TF-IDF
    reweighting). ``engine`` is ``implicit`` (one node, CPU or CUDA) or ``spark_mllib``.
    """

    engine: Literal["implicit", "spark_mllib"] = "implicit"
    factors: int = Field(64, ge=1)
    regularization: float = Field(0.05, ge=0)
    alpha: float = Field(2.0, ge=0)
    iterations: int = Field(15, ge=1)
    random_state: int = 42
    conjugate_gradient: bool = True
    gpu: Literal["auto", "off", "on"] = "auto"
    num_threads: int = Field(0, ge=0)
    reweight: Literal["none", "bm25", "tfidf"] = "none"
    bm25_k1: float = Field(100.0, gt=0)
    bm25_b: float = Field(0.8, ge=0, le=1)
    min_user_events: int = Field(1, ge=1)
    min_item_events: int = Field(1, ge=1)


class RecsSettings(_Section):
    """Scoring, the hybrid blend, new arrivals, diversity and blend tuning (README
    "How a list is built")."""

    k: int = Field(10, ge=1)
    candidates: int = Field(50, ge=1)
    visual_weight: float = Field(0.2, ge=0, le=1)
    history_shrink: float = Field(5.0, ge=0)
    normalize: Literal["zscore", "rank"] = "zscore"
    profile_half_life_days: float | None = Field(60.0, gt=0)
    new_arrival_slots: int = Field(1, ge=0)
    new_arrival_min_auc: float = Field(0.55, ge=0, le=1)
    cold_item_max_users: int = Field(0, ge=0)
    map_min_users: int = Field(2, ge=1)
    mmr_penalty: float = Field(0.0, ge=0)
    max_per_category: int = Field(0, ge=0)
    cold_user_categories: bool = True
    trending_half_life_days: float = Field(7.0, gt=0)
    tune_blend: bool = True
    tune_grid: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.35, 0.5)
    tune_shrink_grid: tuple[float, ...] = (0.0, 5.0)
    tune_split: Literal["user", "time"] = "user"
    tune_fraction: float = Field(0.2, gt=0, lt=1)
    tune_days: float = Field(7.0, gt=0)
    tune_max_users: int = Field(2000, ge=1)
    tune_min_users: int = Field(20, ge=1)
    tune_min_gain_se: float = Field(3.0, ge=0)
    similar_k: int = Field(10, ge=1)
    similar_min: float = Field(0.0, ge=-1, le=1)
    similar_engine: Literal["exact", "faiss"] = "exact"
    faiss_recall_floor: float = Field(0.9, ge=0, le=1)
    block_size: int = Field(512, ge=1)
    block_memory_mb: int = Field(256, ge=1)
    seen_event_types: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase", "rating")

    @field_validator("seen_event_types", "tune_grid", "tune_shrink_grid", mode="before")
    @classmethod
    def _split_csv(cls, v: Any) -> Any:
        """Accept ``purchase,add_to_cart`` from an environment override."""
        return tuple(p.strip() for p in v.split(",") if p.strip()) if isinstance(v, str) else v


class LandingSettings(_Section):
    """How the nightly DAG waits for a day's events (README "Landing data"): the first
    task waits until ``raw/events/ds=<ds>/_SUCCESS`` exists or, when ``quiet_minutes`` is
    not null, until the folder's data files have been untouched that long; it checks every
    ``poke_seconds`` without holding a worker slot and fails after ``wait_timeout_minutes``
    with the path it expected."""

    quiet_minutes: float | None = Field(30.0, ge=0)
    wait_timeout_minutes: float = Field(360.0, gt=0)
    poke_seconds: float = Field(120.0, gt=0)


class ValidationSettings(_Section):
    """Validation knobs that are run parameters rather than suite thresholds (those are
    the ``mostly`` values in ``expectations/expectations/*.json``)."""

    max_event_age_days: float | None = Field(None, gt=0)


class PrivacySettings(_Section):
    """Pseudonymisation of user ids in published tables (README "Privacy")."""

    pseudonymize: bool = False
    salt_env: str = "VREC_USER_SALT"


class PublishSettings(_Section):
    """Publishing: ``retention_days`` removes partitions older than that many days
    before the published ds (None keeps everything)."""

    retention_days: int | None = Field(None, ge=1)


class EvalSettings(_Section):
    """Offline evaluation on a holdout, the quality gate before publish and the run
    report (README "Offline evaluation, quality gate and run report").

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
    split: Literal["time", "user"] = "time"
    test_days: int = Field(1, ge=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)
    min_user_pairs: int = Field(5, ge=2)
    ks: tuple[int, ...] = (10, 50)
    max_users: int = Field(5000, ge=1)
    tune: bool = True
    gate: bool = True
    gate_k: int = Field(10, ge=1)
    gate_max_drop: float = Field(0.02, ge=0)
    gate_noise_z: float = Field(2.0, ge=0)
    gate_min_users: int = Field(30, ge=1)
    report_users: int = Field(6, ge=0)
    report_history: int = Field(8, ge=1)
    report_similar: int = Field(4, ge=0)
    thumb_px: int = Field(96, ge=16, le=512)

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
    landing: LandingSettings = LandingSettings()
    validation: ValidationSettings = ValidationSettings()
    privacy: PrivacySettings = PrivacySettings()
    publish: PublishSettings = PublishSettings()
    eval: EvalSettings = EvalSettings()

    def resolved(self, base: Path) -> Settings:
        """Return a copy whose relative paths are made absolute against ``base``."""
        paths = {
            name: (value if Path(value).is_absolute() else (base / value).resolve())
            for name, value in self.paths.model_dump().items()
        }
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
