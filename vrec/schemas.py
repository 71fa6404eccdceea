"""Every table vrec reads or writes, declared once: the raw landing contract, each tabular
staged artifact and each published table, with its columns' types, nullability and
meaning.

Everything else is derived from here: Spark DDL (:meth:`Table.ddl`), column lists
(:meth:`Table.names`), pyarrow schemas (:meth:`Table.arrow`), pandas dtypes
(:meth:`Table.dtypes`), the runner's check of what a stage wrote
(:func:`check_parquet`) and ``docs/tables.md``'s column tables (``python -m vrec.docgen``
rewrites them; a test fails when they are stale).

Types are written as Spark SQL types (``string``, ``double``, ``int``, ``bigint``,
``boolean``, ``timestamp``, ``float``, ``array<...>``). A column is

* **required** unless ``optional``: an optional column may be absent from a raw file and
  is then read as nulls;
* **nullable** unless ``nullable=False``: the runner fails a stage whose output holds a
  null there.

Non-tabular artifacts (the model's arrays, ``blend.json``, ``ranker.json``, the item space) are declared
in :data:`NON_TABULAR`. This module imports nothing beyond the standard library at import
time (the DAG and ``vrec/core`` import it); pyarrow is imported by the functions that need it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vrec import columns as C


@dataclass(frozen=True)
class Column:
    """One column: name, Spark SQL type, whether it may hold nulls, whether a raw file may
    leave it out, and what it means."""

    name: str
    type: str
    doc: str = ""
    nullable: bool = True
    optional: bool = False


@dataclass(frozen=True)
class Table:
    """A table's columns in order, what one row is, and (published tables) its sort order."""

    name: str
    columns: tuple[Column, ...]
    doc: str
    sorted_by: tuple[str, ...] = field(default=())

    def names(self) -> list[str]:
        """Column names in order."""
        return [c.name for c in self.columns]

    def required(self) -> list[str]:
        """Columns that must be present."""
        return [c.name for c in self.columns if not c.optional]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}; columns: {self.names()}")

    def ddl(self) -> str:
        """Spark DDL: ``"user_id string, rank int, ..."``."""
        return ", ".join(f"{c.name} {c.type}" for c in self.columns)

    def types(self) -> dict[str, str]:
        """Column -> Spark SQL type."""
        return {c.name: c.type for c in self.columns}

    def arrow(self):
        """The pyarrow schema (timestamps in microseconds, UTC)."""
        import pyarrow as pa

        return pa.schema([pa.field(c.name, arrow_type(c.type), nullable=c.nullable)
                          for c in self.columns])

    def dtypes(self) -> dict[str, str]:
        """pandas dtypes for an (empty) frame of this table."""
        return {c.name: PANDAS_DTYPES.get(c.type, "object") for c in self.columns}

    def empty(self):
        """An empty pandas frame with this table's columns and dtypes."""
        import pandas as pd

        return pd.DataFrame({n: pd.Series(dtype=t) for n, t in self.dtypes().items()})


PANDAS_DTYPES = {"string": "object", "double": "float64", "float": "float32", "int": "int32",
                 "bigint": "int64", "boolean": "bool", "timestamp": "datetime64[ns, UTC]"}


def arrow_type(spark_type: str):
    """The pyarrow type of a Spark SQL type string."""
    import pyarrow as pa

    t = spark_type.strip()
    if t.startswith("array<") and t.endswith(">"):
        return pa.list_(arrow_type(t[6:-1]))
    simple = {"string": pa.string(), "double": pa.float64(), "float": pa.float32(),
              "int": pa.int32(), "bigint": pa.int64(), "boolean": pa.bool_(),
              "timestamp": pa.timestamp("us", tz="UTC")}
    if t not in simple:
        raise ValueError(f"unknown column type {spark_type!r}")
    return simple[t]


def _c(name: str, type_: str, doc: str = "", **kw) -> Column:
    return Column(name, type_, doc, **kw)


def _key(name: str, type_: str, doc: str = "") -> Column:
    return Column(name, type_, doc, nullable=False)


# ---------------------------------------------------------------------------------------
# Reason vocabularies: the code that assigns reasons iterates these (one per source).

QUARANTINE_REASONS: dict[str, tuple[str, ...]] = {
    # in the order a failing event is tested: the first failing one is its reason
    "events": ("null_user_id", "null_item_id", "null_ts", "unknown_event_type",
               "future_timestamp", "rating_without_value", "rating_out_of_range",
               "unknown_item_id", "duplicate_event"),
    "catalog": ("null_item_id", "duplicate_item_id"),
    "images": ("no_image_uri", "missing_image_file", "image_outside_root", "not_a_regular_file",
               "image_too_large", "empty_image_file", "image_read_error", "image_changed",
               "undecodable_image", "not_embedded", "too_small", "near_blank",
               "near_duplicate_image"),
}


def reason(source: str, name: str) -> str:
    """``name``, checked against ``source``'s quarantine vocabulary (a reason the code
    assigns that is not declared here is a bug: ValueError)."""
    if name not in QUARANTINE_REASONS.get(source, ()):
        raise ValueError(f"{name!r} is not a {source} quarantine reason; declared: "
                         f"{QUARANTINE_REASONS.get(source)} (vrec/schemas.py)")
    return name
FOUND_BY = ("landing", "run")

# ---------------------------------------------------------------------------------------
# The raw landing contract (what producers write; vrec/spark/rawread.py reads it)

RAW: dict[str, Table] = {
    "events": Table("events", (
        _c(C.USER_ID, "string", "the shopper"),
        _c(C.ITEM_ID, "string", "the item"),
        _c(C.EVENT_TYPE, "string", "one of " + ", ".join(C.EVENT_TYPES)),
        _c(C.VALUE, "double", "the rating for `rating` events"),
        _c(C.TS, "timestamp", "when it happened (UTC; no time zone means UTC)"),
        _c(C.LIST_DS, "string", "for `impression` events: the ds (YYYY-MM-DD) of the "
           "published list that was shown; a file may leave it out (read as nulls)",
           optional=True),
        _c(C.POSITION, "int", "for `impression` events: the item's position in what was "
           "shown, from 1; a file may leave it out", optional=True),
        _c(C.SURFACE, "string", "for `impression` events: where it was shown (e.g. `home`, "
           "`email`); a file may leave it out", optional=True),
    ), "one event; `raw/events/ds=YYYY-MM-DD/*.parquet`, one folder per landing day"),
    "catalog": Table("catalog", (
        _c(C.ITEM_ID, "string", "the item"),
        _c(C.TITLE, "string", "its title"),
        _c(C.CATEGORY, "string", "its category"),
        _c(C.PRICE, "double", "its price; a file may leave it out (read as nulls)",
           optional=True),
        _c(C.DESCRIPTION, "string", "free text about the item (material, fit, style), used "
           "with the title and category as its text; a file may leave it out (read as nulls)",
           optional=True),
        _c(C.IMAGE_URI, "string", "absolute path, `file://` URI, or path relative to "
           "`paths.image_root`"),
        _c(C.UPDATED_AT, "timestamp", "when the row last changed"),
        _c(C.AVAILABLE, "boolean", "false: the item must not be recommended (out of stock, "
           "withdrawn); null means available; a file may leave it out (read as nulls)",
           optional=True),
    ), "one item of a full catalog snapshot; `raw/catalog/ds=YYYY-MM-DD/*.parquet`"),
}

# ---------------------------------------------------------------------------------------
# Tables (staged, published, or both)

EVENTS = Table("events", (
    _key(C.USER_ID, "string"), _key(C.ITEM_ID, "string"),
    _key(C.EVENT_TYPE, "string", "an engagement: " + ", ".join(C.ENGAGEMENT_TYPES)),
    _c(C.VALUE, "double", "the rating for `rating` events"), _key(C.TS, "timestamp"),
), "a clean engagement event landed on or before ds (what survived the quarantine)")

FEEDBACK = Table("feedback", (
    _key(C.USER_ID, "string"), _key(C.ITEM_ID, "string"),
    _key(C.EVENT_TYPE, "string", ", ".join(C.FEEDBACK_TYPES)),
    _key(C.TS, "timestamp"), _c(C.LIST_DS, "string"), _c(C.POSITION, "int"),
    _c(C.SURFACE, "string"),
), "a clean impression or dismiss landed on or before ds, within the feedback windows "
   "(never signal: the feedback rules and the realised metrics read it)")

ITEMS = Table("items", (
    _key(C.ITEM_ID, "string"), _c(C.TITLE, "string"), _c(C.CATEGORY, "string"),
    _c(C.PRICE, "double"), _c(C.DESCRIPTION, "string"),
    _c(C.IMAGE_URI, "string", "null when the item has no picture"),
    _c(C.UPDATED_AT, "timestamp"),
    _c(C.AVAILABLE, "boolean", "false: never recommended (null: available)"),
    _c("blocked", "string", "why the item is never recommended this night: `unavailable`, "
       "`excluded_item` or `excluded_category` (the rules file); null: recommendable"),
), "one item of the catalog snapshot the run used")

INTERACTIONS = Table("interactions", (
    _key(C.USER_ID, "string"), _key(C.ITEM_ID, "string"),
    _key("weight", "double", "the pair's confidence: summed event weights with time decay"),
    _key("n_events", "bigint"), _c("last_ts", "timestamp"),
    _c("purchased", "boolean"), _c("event_types", "array<string>"),
), "one (user, item) pair with its events up to the end of ds")

ITEM_POPULARITY = Table("item_popularity", (
    _key(C.ITEM_ID, "string"), _c(C.CATEGORY, "string"),
    _c("users_1d", "bigint", "distinct users whose latest event on the item is at most 1 "
       "day old"),
    _c("users_7d", "bigint", "the same, 7 days"),
    _c("users_30d", "bigint", "the same, 30 days"),
    _key("users_all", "bigint", "distinct users ever"),
    _c("events_7d", "bigint"), _c("events_30d", "bigint"),
    _c("trend_7d", "double", "daily users of the last 7 days / daily users of the last 30: "
       "1 steady, > 1 rising; null without users in 30 days"),
    _c("trending_score", "double", "sum over users of 0.5^(age_days / "
       "recs.trending_half_life_days) of their latest event"),
    _key("trending_rank", "int", "1 = most trending; the order cold users and short lists "
         "are filled from"),
), "an item with events up to ds")

USER_PROFILE = Table("user_profile", (
    _key(C.USER_ID, "string", "a pseudonym when pseudonymisation is on"),
    _key("events", "bigint"), _key("items", "bigint", "distinct items"),
    _c("first_active", "timestamp"), _c("last_active", "timestamp"),
    _c("top_categories", "array<string>", "up to 3, by events"),
    _key("history_items", "bigint", "pairs with weight > 0: what the model and the visual "
         "profile use"),
    _key("segment", "string", "`cold` (no history in the window: a trending list) or "
         "`warm`"),
), "a user with events up to ds")

ITEM_VECTORS = Table("item_vectors", (
    _key(C.ITEM_ID, "string"), _key("content_hash", "string", "sha256 of the image bytes"),
    _key("embedding", "array<float>", "the backbone's L2-normalised vector"),
), "an item of the run's catalog with a usable picture, and its embedding")

IMAGE_DUPLICATES = Table("image_duplicates", (
    _key(C.ITEM_ID, "string"), _key("duplicate_of", "string"),
    _c("hamming", "bigint", "perceptual-hash distance in bits"),
    _c("cosine", "double", "cosine of the two embeddings"),
), "a near-duplicate image pair across different items")

CANDIDATES = Table("candidates", (
    _key(C.USER_ID, "string"),
    _key("in_model", "boolean", "the CF model knows the user"),
    _key("has_profile", "boolean", "the user has a visual profile"),
    _key("has_pref", "boolean", "the user has a learned content preference"),
    _key("has_txt", "boolean", "the user has a learned text preference"),
    _key("n_hist", "int", "history items"),
    _c("last_days", "double", "days since the user's latest event"),
    _c("recent", "int", "pairs touched in the last 7 days"),
    _c("price_ref", "double", "the mean price of the user's history items"),
    _c("hist", "array<int>", "history item indices into the item space"),
    _c("seen", "array<int>", "items never to recommend again"),
    _c("touched", "array<int>", "items with any event"),
    _c("items", "array<int>", "candidate item indices"),
    _c("cf", "array<double>", "raw CF score per candidate"),
    _c("vis", "array<double>", "raw visual-profile score per candidate"),
    _c("pref", "array<double>", "raw content-preference score per candidate"),
    _c("txt", "array<double>", "raw text-preference score per candidate"),
    _c("last", "array<double>", "raw score against the user's last items per candidate"),
    _c("cat", "array<double>", "the history's share in the candidate's category"),
), "a user's candidates from every source, with raw scores (indices into the item space)")

USER_RECS = Table("user_recs", (
    _key(C.USER_ID, "string", "a pseudonym when pseudonymisation is on"),
    _key("rank", "int", "1..K"),
    _key(C.ITEM_ID, "string"),
    _key("score", "double", "the ranker's selection value: the blended (or the learned "
         "ranker's) normalised score minus the diversity penalty; non-increasing by rank"),
    _c("cf_score", "double", "user . item factor; for a new arrival the factor predicted "
       "from its image; null for trending"),
    _c("visual_score", "double", "cosine of the user's visual profile and the item; null "
       "when either has no image"),
    _key("reason", "string", ", ".join(f"`{r}`" for r in C.REASONS)),
    _c("reason_item_id", "string", "for `similar_to_history` and `new_arrival_visual`: the "
       "history item it looks most like"),
    _key("model_version", "string", "`<cf model version>+vw<visual weight>h<history shrink>` "
         "(the blend ranked), or `<cf model version>+ranker<record id>` (the learned ranker)"),
), "one recommendation", sorted_by=(C.USER_ID, "rank"))

ITEM_SIMILAR = Table("item_similar", (
    _key(C.ITEM_ID, "string"), _key("rank", "int"), _key("similar_item_id", "string"),
    _key("similarity", "double", "cosine of image embeddings, in [-1, 1]"),
), "a visual \"more like this\" neighbour")

REALISED_METRICS = Table("realised_metrics", (
    _key(C.LIST_DS, "string", "the ds of the published lists measured"),
    _key("horizon_days", "int", "days of events after the list: ds - list_ds"),
    _key("model_version", "string", "the lists' model version (`all`: every version)"),
    _key("slice", "string", "`all`; `segment:warm`, `segment:cold`; `reason:<reason>`; "
         "`position:<n>` (impressions)"),
    _key("metric", "string", "`users` (with a list and active in the window), "
         "`hit_rate`, `precision`, `ndcg` (at K = the list length), `demand_coverage` "
         "(share of the engaged items that any list held), `rows`, `hits` (list rows, and "
         "those engaged), `impressions`, `ctr` (impressions followed by engagement); "
         "docs/operations.md \"How yesterday's lists did\""),
    _c("value", "double"),
), "one realised metric of a published list, computed on the night ds from the events "
   "after it")

EVAL_METRICS = Table("eval_metrics", (
    _key("model", "string", "`popularity`, `als`, `visual`, `visual_pref`, `text`, `hybrid`"),
    _key("slice", "string", "`all`, `cold_items`, `cold_users` (the holdout); "
         "`tuning_window` (the blend tuning's estimate on its forward window: `users`, "
         "`ndcg`, `ndcg_se` at K = recs.k)"),
    _key("k", "int", "10, 50"),
    _key("metric", "string", "`users`, `precision`, `recall`, `f1`, `ndcg`, `ndcg_se`, "
         "`map`, `hit_rate`, `coverage`, `novelty`"),
    _c("value", "double"),
), "one offline metric of ds (docs/evaluation.md)")

RUN_STATS = Table("run_stats", (
    _key("stage", "string"),
    _c("rows_in", "bigint"), _c("rows_out", "bigint"), _c("rows_quarantined", "bigint"),
    _c("seconds", "double", "inside the stage"),
    _c("details", "string", "JSON: the stage's other facts (for build_recs: coverage, rows "
       "per reason, new arrivals, cold users, the blend; for train_cf: the tunings); one "
       "row per stage before publish (publish's own record and the quality gate's verdict "
       "are in the manifest)"),
), "one stage of the run")

QUARANTINE = Table("quarantine", (
    _key("source", "string", "events, catalog, images"),
    _key("key", "string", "events: `user|item|type|ts`; catalog and images: the item id; "
         "rejects at landing: `file:line`"),
    _key("reason", "string", "why it was set aside (docs/landing.md)"),
    _key("found_by", "string", "`landing` (an adapter's reject) or `run`"),
    _c("landed_ds", "string", "the raw partition the row came from; null for images"),
    _c("detail", "string", "rejects: what was wrong and the record's text"),
), "a row dropped from the run's input, once")

ITEM_EMBEDDINGS = Table("item_embeddings", (
    _key("model_name", "string"), _key("content_hash", "string"),
    _c("dim", "int"), _c("embedding", "array<float>", "float32, L2-normalised"),
    _c("error", "string", "why the image gave no vector"),
    _c("width", "int"), _c("height", "int"), _c("pixel_std", "double"),
    _c("phash", "bigint", "64-bit perceptual hash"),
), "the incremental embedding cache: one (backbone, image content)")

# Staged artifacts (vrec/stages/__init__.py names them) -> their table, or why not tabular
STAGED: dict[str, Table] = {
    "events": EVENTS, "catalog": ITEMS, "interactions": INTERACTIONS,
    "item_popularity": ITEM_POPULARITY, "user_profile": USER_PROFILE,
    "item_vectors": ITEM_VECTORS, "image_duplicates": IMAGE_DUPLICATES,
    "candidates": CANDIDATES, "user_recs": USER_RECS, "item_similar": ITEM_SIMILAR,
    "user_recs_pseudonymized": USER_RECS, "user_profile_pseudonymized": USER_PROFILE,
    "eval_metrics": EVAL_METRICS, "run_stats": RUN_STATS, "quarantine_table": QUARANTINE,
    "feedback": FEEDBACK, "realised_metrics": REALISED_METRICS,
}
NON_TABULAR: dict[str, str] = {
    "model": "CF factors and ids (`.npy`) and `model.json`",
    "blend": "`blend.json`: the blend build_recs uses (tuned or configured)",
    "ranker": "`ranker.json`: the learned ranker's record (validation, features, importance, "
              "seconds), its model text, and whether it ranks the night's lists",
    "item_space": "catalog-indexed arrays the ranker uses (`.npy`)",
    "content": "`content.npz`: the run's content features (image PCA and text LSA, by item "
               "id), computed once by embed_items for train_cf, candidates and evaluate",
    "published_model": "the model as published (pseudonymised ids when on)",
}

# Published tables (one commit point, vrec/io/warehouse.py), in publish order
PUBLISHED: dict[str, Table] = {
    "user_recs": USER_RECS, "item_similar": ITEM_SIMILAR, "item_popularity": ITEM_POPULARITY,
    "user_profile": USER_PROFILE, "items": ITEMS, "image_duplicates": IMAGE_DUPLICATES,
    "run_stats": RUN_STATS, "quarantine": QUARANTINE, "eval_metrics": EVAL_METRICS,
    "realised_metrics": REALISED_METRICS,
}
CACHES: dict[str, Table] = {"item_embeddings": ITEM_EMBEDDINGS}


# ---------------------------------------------------------------------------------------
# Checking what was written

class SchemaMismatch(ValueError):
    """A staged output does not match its declared schema."""


def _family(t) -> str:
    """A pyarrow type compared loosely: any timestamp unit or zone is ``timestamp``; list
    element names and nullability do not count."""
    import pyarrow as pa

    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"array<{_family(t.value_type)}>"
    if pa.types.is_large_string(t):
        return "string"
    return str(arrow_type_name(t))


def arrow_type_name(t) -> str:
    """The Spark SQL name of a pyarrow type (its own name for types vrec does not use)."""
    import pyarrow as pa

    names = {pa.string(): "string", pa.float64(): "double", pa.float32(): "float",
             pa.int32(): "int", pa.int64(): "bigint", pa.bool_(): "boolean"}
    return names.get(t, str(t))


def check_parquet(table: Table, path: str | Path, what: str) -> int:
    """Check a Parquet file or folder against ``table`` from its footers alone: every
    required column present, no column undeclared, each of the declared type, and no nulls
    (by the footers' statistics) in a column declared not nullable. Returns the rows;
    raises :class:`SchemaMismatch` naming ``what`` and the column."""
    import pyarrow.parquet as pq

    p = Path(path)
    files = [p] if p.is_file() else sorted(
        f for f in p.rglob("*.parquet") if not any(part.startswith(("_", "."))
                                                   for part in f.relative_to(p).parts))
    want = {c.name: c for c in table.columns}
    rows = 0
    for f in files:
        meta = pq.read_metadata(f)
        schema = meta.schema.to_arrow_schema()
        got = {n: schema.field(n).type for n in schema.names}
        missing = [n for n in table.required() if n not in got]
        if missing:
            raise SchemaMismatch(f"{what}: {f.name} lacks column(s) {missing} of "
                                 f"{table.name} (vrec/schemas.py)")
        extra = [n for n in got if n not in want]
        if extra:
            raise SchemaMismatch(f"{what}: {f.name} has undeclared column(s) {extra}; "
                                 f"{table.name} declares {table.names()} (vrec/schemas.py)")
        for n, t in got.items():
            if _family(t) != want[n].type:
                raise SchemaMismatch(f"{what}: column {n} is {_family(t)} in {f.name}, "
                                     f"{table.name} declares {want[n].type} (vrec/schemas.py)")
        idx = {schema.names[i]: i for i in range(len(schema.names))}
        for c in table.columns:
            if c.nullable or c.name not in idx:
                continue
            nulls = 0
            for g in range(meta.num_row_groups):
                st = meta.row_group(g).column(_leaf(meta, idx[c.name])).statistics
                if st is not None and st.has_null_count:
                    nulls += st.null_count
            if nulls:
                raise SchemaMismatch(f"{what}: column {c.name} holds {nulls} null(s) in "
                                     f"{f.name}; {table.name} declares it not nullable "
                                     "(vrec/schemas.py)")
        rows += meta.num_rows
    return rows


def _leaf(meta, field_index: int) -> int:
    """The Parquet leaf column of a top-level field (a list field has one leaf)."""
    schema = meta.schema.to_arrow_schema()
    leaves = 0
    for i in range(field_index):
        leaves += _n_leaves(schema.field(i).type)
    return leaves


def _n_leaves(t) -> int:
    import pyarrow as pa

    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _n_leaves(t.value_type)
    if pa.types.is_struct(t):
        return sum(_n_leaves(t.field(i).type) for i in range(t.num_fields))
    return 1


def check_output(artifact: str, path: str | Path) -> int | None:
    """Check one staged output against :data:`STAGED` (None for a non-tabular one)."""
    if artifact in NON_TABULAR:
        return None
    if artifact not in STAGED:
        raise SchemaMismatch(f"artifact {artifact!r} is declared neither tabular nor "
                             "non-tabular in vrec/schemas.py")
    return check_parquet(STAGED[artifact], path, f"staged output {artifact}")


# ---------------------------------------------------------------------------------------
# docs/tables.md (written by ``python -m vrec.docgen``)

def markdown(table: Table) -> str:
    """One table's columns as a markdown table."""
    lines = ["| column | type | nulls | meaning |", "|---|---|---|---|"]
    for c in table.columns:
        doc = (f"*optional*: {c.doc}" if c.optional else c.doc).replace("|", "\\|")
        lines.append(f"| `{c.name}` | {c.type} | {'yes' if c.nullable else 'no'} | {doc} |")
    head = f"One row: {table.doc}."
    if table.sorted_by:
        head += f" Sorted by ({', '.join(table.sorted_by)})."
    return head + "\n\n" + "\n".join(lines)


def generated_blocks() -> dict[str, str]:
    """The generated blocks of docs/tables.md by name."""
    blocks = {f"raw {n}": markdown(t) for n, t in RAW.items()}
    blocks |= {f"table {n}": markdown(t) for n, t in PUBLISHED.items()}
    blocks |= {f"cache {n}": markdown(t) for n, t in CACHES.items()}
    staged = ["| artifact | table or content |", "|---|---|"]
    for a, t in STAGED.items():
        staged.append(f"| `{a}` | {t.name}: {', '.join(t.names())} |")
    for a, what in NON_TABULAR.items():
        staged.append(f"| `{a}` | not tabular: {what} |")
    blocks["staged artifacts"] = "\n".join(staged)
    reasons = ["| source | reasons, in the order they are tested |", "|---|---|"]
    reasons += [f"| {s} | {', '.join(f'`{r}`' for r in rs)} |"
                for s, rs in QUARANTINE_REASONS.items()]
    blocks["quarantine reasons"] = "\n".join(reasons)
    return blocks
