"""Contracts of the text tables: bronze products / reviews (read by embed) and the two embedding tables.

Kept here until the table catalog lands; then they are registered there unchanged.
"""
from __future__ import annotations

from ulv_spark.schemas import RUN_ID, USER_ID, Col, TableContract

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


def _c(name: str, type_: str, comment: str, nullable: bool = True) -> Col:
    return Col(name, type_, nullable, comment)


PRODUCTS = TableContract(
    name="products",
    comment=("Bronze product catalog. Grain: one row per product_id. Title and description may each be "
             "missing; the embed job embeds title + '. ' + description (normalised). Written by jobs/ingest.py "
             "with MERGE on product_id (from a products source, or derived from line-level order logs)."),
    columns=(
        _c(PRODUCT_ID, "STRING", "Product id (SKU) as given by the source; orders and events refer to it", False),
        _c("title", "STRING", "Product title / name as given by the source"),
        _c("description", "STRING", "Longer product description"),
        _c("category", "STRING", "Product category as given by the source"),
        _c("price", "DOUBLE", "List price in the source currency"),
        _c(RUN_ID, "STRING", "Id of the ingest run that last wrote the row", False),
    ),
    keys=PRODUCT_KEYS,
)

REVIEWS = TableContract(
    name="reviews",
    comment=("Bronze product reviews. Grain: one row per (user_id, product_id, review_ts). Written by "
             "jobs/ingest.py with MERGE on that key."),
    columns=(
        _c(USER_ID, "STRING", "Customer id of the reviewer", False),
        _c(PRODUCT_ID, "STRING", "Product reviewed", False),
        _c(REVIEW_TS, "TIMESTAMP", "When the review was written (UTC)", False),
        _c("rating", "DOUBLE", "Star rating as given by the source (e.g. 1-5); null when none"),
        _c("text", "STRING", "Review text; may be missing or empty"),
        _c(RUN_ID, "STRING", "Id of the ingest run that last wrote the row", False),
    ),
    keys=REVIEW_KEYS,
)


def _embedding_cols() -> tuple[Col, ...]:
    return (
        _c(TEXT_HASH, "STRING", "Hex SHA-256 of the normalised text's UTF-8 bytes (ulv_spark.text.normalise); "
                                "equal texts have equal hashes", False),
        _c(HAS_TEXT, "BOOLEAN", "False when the text is missing or empty after normalisation: then the "
                                "embedding is all zeros and should be left out of averages", False),
        _c(N_TOKENS, "INT", "Tokens embedded, special tokens included (at most the encoder's max_length); "
                            "0 without text", False),
        _c(TRUNCATED, "BOOLEAN", "True when the text had more tokens than max_length: only its start "
                                 "was embedded", False),
        _c(MODEL_ID, "STRING", "Encoder that produced the embedding: <name>@<16 hex of a SHA-256 over weights, "
                               "tokenizer, config and max_length>", False),
        _c(DIM, "INT", "Length of embedding (384 for all-MiniLM-L6-v2)", False),
        _c(EMBEDDING, "ARRAY<FLOAT>", "Sentence embedding: mean-pooled last hidden states, L2-normalised "
                                      "(norm 1; all zeros when has_text is false)", False),
        _c(EMBEDDED_AT, "TIMESTAMP", "When this row's embedding was computed (UTC)", False),
        _c(RUN_ID, "STRING", "Id of the embed run that wrote the row", False),
    )


PRODUCT_EMBEDDINGS = TableContract(
    name="product_embeddings",
    comment=("Gold product text embeddings. Grain: one row per product_id of the products table, embedded "
             "by the current encoder (model_id). Text: title + '. ' + description, normalised. Written "
             "incrementally by jobs/embed.py (MERGE on product_id): only products whose text_hash or "
             "model_id differ from the stored row are embedded again."),
    columns=(
        _c(PRODUCT_ID, "STRING", "Product id (key; as in products, orders and events)", False),
        *_embedding_cols(),
    ),
    keys=PRODUCT_KEYS,
)

REVIEW_EMBEDDINGS = TableContract(
    name="review_embeddings",
    comment=("Gold review text embeddings. Grain: one row per review (user_id, product_id, review_ts) of the "
             "reviews table, embedded by the current encoder (model_id). Written incrementally by "
             "jobs/embed.py (MERGE on the key): only reviews whose text_hash, rating or model_id differ "
             "from the stored row are written again."),
    columns=(
        _c(USER_ID, "STRING", "Customer id of the reviewer (key)", False),
        _c(PRODUCT_ID, "STRING", "Product reviewed (key)", False),
        _c(REVIEW_TS, "TIMESTAMP", "When the review was written, UTC (key); features use reviews strictly "
                                   "before their as_of_date", False),
        _c("rating", "DOUBLE", "Star rating copied from reviews; null when none"),
        *_embedding_cols(),
    ),
    keys=REVIEW_KEYS,
)

TEXT_CONTRACTS = (PRODUCTS, REVIEWS, PRODUCT_EMBEDDINGS, REVIEW_EMBEDDINGS)
