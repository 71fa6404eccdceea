"""One vocabulary: column names, event types and recommendation reasons used everywhere
(the tables themselves: :mod:`vrec.schemas`)."""

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
DESCRIPTION = "description"
IMAGE_URI = "image_uri"
UPDATED_AT = "updated_at"

LIST_DS = "list_ds"
POSITION = "position"
SURFACE = "surface"
AVAILABLE = "available"

ENGAGEMENT_TYPES: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase", "rating")
"""What a user did with an item: the only events that are signal (pairs, popularity,
profiles, labels) and that count as engagement with a shown list."""
IMPRESSION = "impression"
DISMISS = "dismiss"
FEEDBACK_TYPES: tuple[str, ...] = (IMPRESSION, DISMISS)
"""What the shop's front end reports about the lists: an item was shown (``impression``,
with the list's ds, the position and the surface) or the user said "not for me"
(``dismiss``). Never positive signal: they reach only the feedback rules and the realised
metrics."""
EVENT_TYPES: tuple[str, ...] = ENGAGEMENT_TYPES + FEEDBACK_TYPES

# Column lists, types and the published tables are declared in vrec/schemas.py.

# Reasons attached to each recommendation row.
REASON_COLLABORATIVE = "collaborative"
REASON_SIMILAR = "similar_to_history"
REASON_TRENDING = "trending"
REASON_NEW_ARRIVAL = "new_arrival_visual"
REASONS = (REASON_COLLABORATIVE, REASON_SIMILAR, REASON_NEW_ARRIVAL, REASON_TRENDING)
