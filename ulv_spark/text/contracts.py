"""Column names of the text tables (products, reviews and their embeddings).

The table contracts themselves are registered in ``ulv_spark.catalog`` (group ``text``).
"""
from __future__ import annotations

from ulv_spark.schemas import USER_ID

PRODUCT_ID = "product_id"
REVIEW_TS = "review_ts"
TEXT_HASH = "text_hash"
MODEL_ID = "model_id"
EMBEDDING = "embedding"
HAS_TEXT = "has_text"
N_TOKENS = "n_tokens"
TRUNCATED = "truncated"
DIM = "dim"
EMBEDDED_AT = "embedded_at"

PRODUCT_KEYS = (PRODUCT_ID,)
REVIEW_KEYS = (USER_ID, PRODUCT_ID, REVIEW_TS)
