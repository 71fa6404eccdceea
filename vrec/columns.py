"""One vocabulary: column names, event types and table names used everywhere."""

from __future__ import annotations

USER_ID = "user_id"
ITEM_ID = "item_id"
EVENT_TYPE = "event_type"
VALUE = "value"
TS = "ts"
DS = "ds"
TITLE = "title"
CATEGORY = "category"
PRICE = "price"
IMAGE_URI = "image_uri"
UPDATED_AT = "updated_at"

EVENT_TYPES: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase", "rating")

EVENT_COLUMNS: tuple[str, ...] = (USER_ID, ITEM_ID, EVENT_TYPE, VALUE, TS)
CATALOG_COLUMNS: tuple[str, ...] = (ITEM_ID, TITLE, CATEGORY, PRICE, IMAGE_URI, UPDATED_AT)

# Published warehouse tables (partitioned by ds) and their column order.
TABLES: dict[str, tuple[str, ...]] = {
    "user_recs": (
        USER_ID, "rank", ITEM_ID, "score", "cf_score", "visual_score",
        "reason", "reason_item_id", "model_version",
    ),
    "item_similar": (ITEM_ID, "rank", "similar_item_id", "similarity"),
    "item_popularity": (ITEM_ID, CATEGORY, "users_1d", "users_7d", "users_30d", "users_all",
                        "events_7d", "events_30d", "trend_7d", "trending_score", "trending_rank"),
    "user_profile": (USER_ID, "events", "items", "first_active", "last_active",
                     "top_categories", "history_items", "segment"),
    "run_stats": ("stage", "rows_in", "rows_out", "rows_quarantined", "seconds", "details"),
    "quarantine": ("source", "key", "reason", "found_by", "landed_ds", "detail"),
    "eval_metrics": ("model", "slice", "k", "metric", "value"),
}

# The tables publish makes visible together under one commit point (vrec.io.warehouse).
PUBLISHED_TABLES = ("user_recs", "item_similar", "item_popularity", "user_profile", "items",
                    "image_duplicates", "run_stats", "quarantine", "eval_metrics")

# Reasons attached to each recommendation row.
REASON_COLLABORATIVE = "collaborative"
REASON_SIMILAR = "similar_to_history"
REASON_TRENDING = "trending"
REASON_NEW_ARRIVAL = "new_arrival_visual"
REASONS = (REASON_COLLABORATIVE, REASON_SIMILAR, REASON_NEW_ARRIVAL, REASON_TRENDING)
