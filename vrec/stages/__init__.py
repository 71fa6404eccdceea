"""The nightly stages, declared once.

Every consumer iterates :data:`STAGES`: the Airflow DAG (one task per stage, in this
order), the runner behind ``jobs/stage.py`` and ``vrec run-stage``, the run report, the
demo and the tests. A stage is a module ``vrec/stages/<name>.py`` with a function
``run(ctx)`` (see :mod:`vrec.executor` for ``ctx``) plus one entry here naming its
engine and the staged artifacts it reads and writes. The runner enforces the entry: a
stage can open only the inputs it declares, each must come from a stage that succeeded
for the same ds, and its declared outputs are cleared before it runs.

Artifacts live under ``<warehouse>/_runs/<ds>/`` at the paths of
:data:`vrec.executor.ARTIFACTS`. This module imports nothing heavy: the scheduler
parses the DAG, which imports it, all the time.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Stage:
    """One nightly stage: its name (and module), engine, staged inputs and outputs, the
    stages that must have succeeded for the same ds first (beyond those producing its
    inputs), and one line on what it does. What is special about a stage is said here,
    not by its name elsewhere: ``needs_salt`` (it gets the pseudonymisation salt from the
    orchestrator), ``publishes`` (it holds the quality gate and makes the tables visible;
    the DAG declares the Assets on it)."""

    name: str
    engine: Literal["spark", "local"]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    summary: str
    requires: tuple[str, ...] = ()
    needs_salt: bool = False
    publishes: bool = False

    @property
    def module(self) -> str:
        return f"vrec.stages.{self.name}"

    def function(self):
        """The stage's ``run(ctx)`` (imported on call)."""
        return importlib.import_module(self.module).run


STAGES: tuple[Stage, ...] = (
    Stage("validate_inputs", "spark", (), (),
          "Great Expectations on the day's events (Spark) and the catalog snapshot; "
          "critical failures stop the run"),
    Stage("build_interactions", "spark", (),
          ("events", "catalog", "interactions", "item_popularity", "user_profile", "feedback"),
          "events as of the end of ds -> cleaned, weighted (user, item) pairs of the "
          "engagements; impressions and dismisses apart; bad rows quarantined; the catalog "
          "with what the rules block; item_popularity and user_profile",
          requires=("validate_inputs",)),
    Stage("embed_items", "spark", ("catalog",), ("item_vectors", "image_duplicates", "content"),
          "new or changed item images -> CNN vectors (incremental cache); bad images "
          "quarantined; near-duplicate pairs (a memo of the verdicts: only new pictures are "
          "compared); the content features (image PCA, text LSA)"),
    Stage("train_cf", "spark",
          ("events", "interactions", "catalog", "item_vectors", "item_popularity", "content"),
          ("model", "blend", "ranker"),
          "ALS (implicit on one node, or Spark MLlib) with factors, regularization and alpha "
          "tuned on the forward window of the tunings' day T (the evaluation's cutoff, "
          "else ds; features as of T - h, labels after it); the blend tuned on the same "
          "window; the learned ranker trained as of T - 2h, validated against the blend "
          "on that window and refit on it"),
    Stage("candidates", "spark",
          ("interactions", "catalog", "item_vectors", "item_popularity", "model", "blend",
           "events", "feedback", "content"),
          ("item_space", "candidates"),
          "the item space (factors, images, content features of images and text, cold-start "
          "map; blocked items out) and every user's CF, visual-profile, content-preference, "
          "text-preference, new-arrival, trending and last-items top-N with raw scores, "
          "leaving out what the user saw, what rotation rests and what they dismissed"),
    Stage("build_recs", "spark",
          ("candidates", "item_space", "model", "blend", "ranker", "user_profile",
           "item_vectors", "catalog"),
          ("user_recs", "item_similar", "user_recs_pseudonymized", "user_profile_pseudonymized"),
          "rank each user's candidates (the learned ranker when it won its validation, else "
          "the blend; diversity, new-arrival slots, reasons, trending fill) -> user_recs; "
          "visual neighbours -> item_similar",
          needs_salt=True),
    Stage("evaluate", "spark",
          ("events", "interactions", "catalog", "item_vectors", "item_popularity", "model",
           "ranker", "feedback", "content"),
          ("eval_metrics", "realised_metrics"),
          "a holdout as of ds: popularity, ALS, visual profile, content preference, text, "
          "hybrid and the learned ranker through the same retrieval and ranking, on the "
          "cutoff night's features and model (else refit) and the night's own tunings "
          "(train_cf's, as of the holdout's cutoff), beside the tuning window's estimates -> "
          "eval_metrics; the lists published on the last feedback.horizon_days nights "
          "against the events after them -> realised_metrics",
          needs_salt=True),
    Stage("validate_outputs", "spark",
          ("user_recs", "user_profile", "item_similar", "item_vectors", "catalog"), (),
          "Great Expectations on user_recs, per-user lists, item_similar and the item "
          "vectors; critical failures stop the run before publish"),
    Stage("publish", "local",
          ("user_recs", "item_similar", "item_popularity", "user_profile", "catalog",
           "image_duplicates", "eval_metrics", "realised_metrics", "model", "blend",
           "user_recs_pseudonymized",
           "user_profile_pseudonymized", "interactions"),
          ("run_stats", "quarantine_table", "published_model"),
          "quality gate on the published model's NDCG (the ranker's or the hybrid's; "
          "refused: the run report, from these inputs, and nothing published), then every "
          "table of ds and the model published with one commit point",
          requires=("validate_outputs",), needs_salt=True, publishes=True),
    Stage("report", "local",
          ("catalog", "user_recs", "user_profile", "interactions", "item_similar",
           "item_popularity", "eval_metrics", "realised_metrics"), (),
          "one self-contained HTML report of the run",
          requires=("publish",)),
)

NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)
RAW_READERS = ("validate_inputs", "build_interactions")
# the stages that run Great Expectations (the executor starts its import before Spark)
GX_STAGES = ("validate_inputs", "validate_outputs")
"""The stages that read the raw landing zone (outside the staging area)."""


def get(name: str) -> Stage:
    """The stage called ``name`` (ValueError listing the stages otherwise)."""
    for s in STAGES:
        if s.name == name:
            return s
    raise ValueError(f"unknown stage {name!r}; stages: {', '.join(NAMES)}")


def publisher() -> Stage:
    """The one stage that publishes."""
    return next(s for s in STAGES if s.publishes)


def producer(artifact: str) -> Stage:
    """The one stage that writes ``artifact``."""
    for s in STAGES:
        if artifact in s.outputs:
            return s
    raise ValueError(f"no stage writes {artifact!r}")


def stage_table() -> str:
    """The stage table of docs/operations.md (``python -m vrec.docgen`` writes it)."""
    lines = ["| stage | engine | reads | writes | also needs | what it does |",
             "|---|---|---|---|---|---|"]
    for s in STAGES:
        reads = ", ".join(s.inputs) or ("the raw zone" if s.name in RAW_READERS else "-")
        lines.append(f"| {s.name} | {s.engine} | {reads} | {', '.join(s.outputs) or '-'} | "
                     f"{', '.join(s.requires) or '-'} | {s.summary} |")
    return "\n".join(lines)
