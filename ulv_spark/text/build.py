"""Pure DataFrame steps of the embed job: texts per product / review, what changed, the output rows.

No reads, writes or actions here; the job (`text/job.py`) does the IO. Text normalisation and
hashing are Spark SQL (`normalise.normalised_text_col` / `text_hash_col`), so finding the rows to
embed needs no Python.
"""
from __future__ import annotations

import datetime as dt
from typing import Optional, Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ulv_spark.schemas import RUN_ID, USER_ID
from ulv_spark.text.contracts import (DIM, EMBEDDED_AT, EMBEDDING, HAS_TEXT, MODEL_ID, N_TOKENS, PRODUCT_ID,
                                      REVIEW_TS, TEXT_HASH, TRUNCATED)
from ulv_spark.text.normalise import normalised_text_col, text_hash_col
from ulv_spark.text.udf import TEXT

PRODUCT_TEXT_SEPARATOR = ". "


def _nonempty(col: str):
    normalised = normalised_text_col(col)
    return F.when(normalised != F.lit(""), normalised)


def product_texts(products: DataFrame) -> DataFrame:
    """The text to embed per product: normalised title and description joined by '. ' (either may be missing).

    Grain: one row per input row. Columns: product_id, text ('' when neither has text), text_hash.
    """
    text = F.concat_ws(PRODUCT_TEXT_SEPARATOR, _nonempty("title"), _nonempty("description"))
    return (products.select(F.col(PRODUCT_ID), text.alias(TEXT))
            .select(PRODUCT_ID, TEXT, text_hash_col(TEXT).alias(TEXT_HASH)))


def review_texts(reviews: DataFrame) -> DataFrame:
    """The text to embed per review: its normalised text.

    Grain: one row per input row. Columns: user_id, product_id, review_ts, rating, text, text_hash.
    """
    return (reviews.select(USER_ID, PRODUCT_ID, REVIEW_TS, F.col("rating").cast("double").alias("rating"),
                           normalised_text_col("text").alias(TEXT))
            .select(USER_ID, PRODUCT_ID, REVIEW_TS, "rating", TEXT, text_hash_col(TEXT).alias(TEXT_HASH)))


def pending_rows(texts: DataFrame, existing: Optional[DataFrame], *, keys: Sequence[str], tracked: Sequence[str],
                 model_id: str) -> DataFrame:
    """Rows of `texts` that the embeddings table lacks: a new key, or a change in a tracked column
    (text_hash, rating...) or in the encoder (`model_id`).

    Grain: the rows of `texts` (a left anti join, so their columns unchanged) with no stored row of
    the same key, the same tracked values (null-safe) and this model_id.

    Args:
        texts: product_texts / review_texts output.
        existing: the current embeddings table, or None when it does not exist yet.
        keys: the table's key columns.
        tracked: non-key columns whose change means the row must be written again.
        model_id: the encoder's model_id.
    """
    if existing is None:
        return texts
    stored = existing.filter(F.col(MODEL_ID) == F.lit(model_id)).select(*keys, *tracked)
    same_key = [texts[k] == stored[k] for k in keys]
    same_values = [texts[c].eqNullSafe(stored[c]) for c in tracked]
    condition = same_key[0]
    for part in same_key[1:] + same_values:
        condition = condition & part
    return texts.join(stored, on=condition, how="left_anti")


def distinct_texts(pending: DataFrame) -> DataFrame:
    """One row per text_hash of `pending` with its text: each distinct text is embedded once."""
    return pending.groupBy(TEXT_HASH).agg(F.min(TEXT).alias(TEXT)).select(TEXT_HASH, TEXT)


def embedding_rows(pending: DataFrame, vectors: DataFrame, *, key_columns: Sequence[str], model_id: str, dim: int,
                   embedded_at: dt.datetime, run_id: str) -> DataFrame:
    """The rows to MERGE: each pending row with the embedding of its text.

    Grain: one row per pending row (vectors has one row per text_hash). Columns: `key_columns`,
    then text_hash, has_text, n_tokens, truncated, model_id, dim, embedding, embedded_at, run_id
    (the embedding contracts' order).
    """
    joined = pending.join(vectors, on=TEXT_HASH, how="inner")
    return joined.select(*key_columns, TEXT_HASH, HAS_TEXT, N_TOKENS, TRUNCATED,
                         F.lit(model_id).alias(MODEL_ID), F.lit(int(dim)).alias(DIM), EMBEDDING,
                         F.lit(embedded_at).cast("timestamp").alias(EMBEDDED_AT), F.lit(run_id).alias(RUN_ID))
