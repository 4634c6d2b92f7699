"""Event-token sequences: each user's last L orders and behaviour events as integer tokens.

A token encodes (event type, amount bucket, gap bucket, category slot):

* event type: 0 = purchase, 1 = return, 2 + i = the i-th of ``features.event_types``; a
  behaviour event of any other type becomes the UNK token;
* amount bucket: 0 = no amount (behaviour events); 1 + the number of cut points of
  ``features.amount_buckets`` that |amount| reaches (orders);
* gap bucket: 0 = the user's first event; 1 + the number of cut points of
  ``features.gap_buckets_days`` that the days since the user's previous event (order or
  behaviour, over the whole history before D) reach;
* category slot: 0 = no category; 1 + pmod(xxhash64(category), ``features.max_categories``)
  (deterministic, no list of categories to collect or store).

token_id = 4 + ((type * A + amount) * G + gap) * C + category with A, G, C the bucket counts;
ids 0-3 are reserved: PAD (padding), MASK (masked-event pretraining), CLS (prepended by the
model, never stored), UNK. Sequences are oldest first and right-padded with PAD to exactly
L = ``features.sequence_length``; the mask is 1 on events and 0 on padding.

Per-event text (``seq_text``, with order text vectors, see features.text.order_text_vectors):
the k = ``features.text_dims`` projected product-text components of every event of the
sequence, flattened in the same order (event i at [i * k, (i + 1) * k)), zeros for an event
without product text (behaviour events, orders without a product with text) and for padding;
null when none of the user's L events has one. The model projects and adds them to the event
token embeddings (train.text_fusion).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Optional

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from ulv_spark.config import FeaturesConf
from ulv_spark.features.inputs import days_between
from ulv_spark.names import CLS_ID, FIRST_EVENT_ID, MASK_ID, PAD_ID, RESERVED_TOKENS, UNK_ID
from ulv_spark.schemas import AS_OF_DATE, SEQ_MASK, SEQ_TEXT, SEQ_TOKENS, USER_ID

__all__ = ["CLS_ID", "MASK_ID", "PAD_ID", "UNK_ID", "token_types", "bucket_counts", "vocab_size",
           "vocabulary_fingerprint", "encode_token", "category_slot", "sequence_events", "token_expr",
           "user_sequences", "build_token_vocabulary"]

_SCHEME_VERSION = 1  # bump when the token layout below changes


def token_types(features_cfg: FeaturesConf) -> list[str]:
    """Event types with their own tokens, in type-index order: purchase, return, configured types."""
    return ["purchase", "return"] + [t.strip().lower() for t in features_cfg.event_types]


def bucket_counts(features_cfg: FeaturesConf) -> tuple[int, int, int, int]:
    """(types, amount buckets, gap buckets, category slots) of the token layout."""
    return (len(token_types(features_cfg)), len(features_cfg.amount_buckets) + 2,
            len(features_cfg.gap_buckets_days) + 2, features_cfg.max_categories + 1)


def vocab_size(features_cfg: FeaturesConf) -> int:
    """Number of token ids (reserved ids included): embeddings need exactly this many rows."""
    n_types, n_amount, n_gap, n_cat = bucket_counts(features_cfg)
    return FIRST_EVENT_ID + n_types * n_amount * n_gap * n_cat


def vocabulary_fingerprint(features_cfg: FeaturesConf) -> str:
    """Stable hash (16 hex chars) of the vocabulary definition; equal fingerprints = same tokens."""
    definition = {
        "scheme": _SCHEME_VERSION,
        "reserved": list(RESERVED_TOKENS),
        "types": token_types(features_cfg),
        "amount_buckets": [float(x) for x in features_cfg.amount_buckets],
        "gap_buckets_days": [float(x) for x in features_cfg.gap_buckets_days],
        "category_slots": features_cfg.max_categories,
        "category_hash": "pmod(xxhash64(category), category_slots) + 1",
        "layout": "4 + ((type * A + amount) * G + gap) * C + category",
    }
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def encode_token(features_cfg: FeaturesConf, event_type: str, amount_bucket: int, gap_bucket: int,
                 category_slot: int) -> int:
    """The token id of one (event type, amount bucket, gap bucket, category slot); UNK for other types."""
    types = token_types(features_cfg)
    if event_type not in types:
        return UNK_ID
    _, n_amount, n_gap, n_cat = bucket_counts(features_cfg)
    for name, value, size in (("amount_bucket", amount_bucket, n_amount), ("gap_bucket", gap_bucket, n_gap),
                              ("category_slot", category_slot, n_cat)):
        if not 0 <= value < size:
            raise ValueError(f"{name} must be in [0, {size}), got {value}")
    return FIRST_EVENT_ID + ((types.index(event_type) * n_amount + amount_bucket) * n_gap + gap_bucket) * n_cat + category_slot


def _cuts_reached(value: Column, cuts) -> Column:
    reached = F.lit(0)
    for cut in cuts:
        reached = reached + F.when(value >= F.lit(float(cut)), F.lit(1)).otherwise(F.lit(0))
    return reached


def category_slot(category: Column, max_categories: int) -> Column:
    """0 for a null category, else 1 + pmod(xxhash64(category), max_categories) (INT)."""
    slot = F.pmod(F.xxhash64(category), F.lit(max_categories)) + F.lit(1)
    return F.when(category.isNull(), F.lit(0)).otherwise(slot).cast("int")


def sequence_events(order_history: DataFrame, event_history: Optional[DataFrame]) -> DataFrame:
    """Orders and behaviour events of the keyed histories (inputs.history) as one stream.

    Grain: one row per (order or event, as_of_date) strictly before as_of_date.

    Returns:
        user_id, as_of_date, ts, source (0 = order, 1 = event: orders first at equal times),
        tie (order or event id, the last tie-breaker), event_type, amount (null for events),
        category.
    """
    order_rows = order_history.select(
        USER_ID, AS_OF_DATE, F.col("order_ts").alias("ts"), F.lit(0).alias("source"), F.col("order_id").alias("tie"),
        F.when(F.col("is_return"), F.lit("return")).otherwise(F.lit("purchase")).alias("event_type"),
        "amount", "category")
    if event_history is None:
        return order_rows
    event_rows = event_history.select(
        USER_ID, AS_OF_DATE, F.col("event_ts").alias("ts"), F.lit(1).alias("source"), F.col("event_id").alias("tie"),
        "event_type", F.lit(None).cast("double").alias("amount"), "category")
    return order_rows.unionByName(event_rows)


def token_expr(features_cfg: FeaturesConf, *, event_type: Column, amount: Column, gap_days: Column,
               category: Column) -> Column:
    """Spark expression of the token id (INT) of one event; mirrors `encode_token`."""
    types = token_types(features_cfg)
    _, n_amount, n_gap, n_cat = bucket_counts(features_cfg)
    type_index = F.lit(None).cast("int")
    for i, name in reversed(list(enumerate(types))):
        type_index = F.when(event_type == F.lit(name), F.lit(i)).otherwise(type_index)
    amount_bucket = F.when(amount.isNull(), F.lit(0)).otherwise(
        F.lit(1) + _cuts_reached(F.abs(amount), features_cfg.amount_buckets))
    gap_bucket = F.when(gap_days.isNull(), F.lit(0)).otherwise(
        F.lit(1) + _cuts_reached(gap_days, features_cfg.gap_buckets_days))
    token = (F.lit(FIRST_EVENT_ID)
             + ((type_index * F.lit(n_amount) + amount_bucket) * F.lit(n_gap) + gap_bucket) * F.lit(n_cat)
             + category_slot(category, features_cfg.max_categories))
    return F.when(type_index.isNull(), F.lit(UNK_ID)).otherwise(token).cast("int")


def user_sequences(order_history: DataFrame, event_history: Optional[DataFrame], *,
                   features_cfg: FeaturesConf, order_vectors: Optional[DataFrame] = None) -> DataFrame:
    """Each user's last L events before as_of_date as tokens plus attention mask (and per-event text).

    Grain: one row per (user_id, as_of_date) with an order or event in the keyed histories
    (inputs.history: rows strictly before as_of_date).

    Args:
        order_vectors: features.text.order_text_vectors output (user_id, order_id, text_vector
            ARRAY<FLOAT> of k = features_cfg.text_dims), or None: no seq_text column.

    Returns:
        user_id, as_of_date, seq_tokens ARRAY<INT> and seq_mask ARRAY<INT>, both of length
        exactly L = features_cfg.sequence_length (oldest first, PAD = 0 after the last event);
        with `order_vectors` also seq_text ARRAY<FLOAT> of length L * k (see the module
        docstring; null when no event of the L has a text vector).
    """
    length = features_cfg.sequence_length
    keys = (USER_ID, AS_OF_DATE)
    # lag() / row_number() have fixed frames; the count uses the whole partition explicitly
    ordered = Window.partitionBy(*keys).orderBy("ts", "source", "tie")
    whole = ordered.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    stream = sequence_events(order_history, event_history).select(
        "*",
        days_between(F.col("ts"), F.lag("ts").over(ordered)).alias("gap_days"),
        F.row_number().over(ordered).alias("position"),
        F.count(F.lit(1)).over(whole).alias("n_events"))
    last = stream.filter(F.col("position") > F.col("n_events") - F.lit(length)).select(
        *keys, "position", "source", "tie",
        token_expr(features_cfg, event_type=F.col("event_type"), amount=F.col("amount"),
                   gap_days=F.col("gap_days"), category=F.col("category")).alias("token"))
    step = ["position", "token"]
    if order_vectors is not None:  # only orders (source 0) carry a vector; an event id may equal an order id
        vectors = order_vectors.select(USER_ID, F.col("order_id").alias("tie"), F.lit(0).alias("source"),
                                       "text_vector")
        last = last.join(vectors, on=[USER_ID, "tie", "source"], how="left")
        step.append("text_vector")
    collected = (last.groupBy(*keys)
                 .agg(F.sort_array(F.collect_list(F.struct(*step))).alias("steps")))
    tokens = F.transform("steps", lambda s: s["token"])
    padding = F.lit(length) - F.size("steps")
    columns = [
        F.concat(tokens, F.array_repeat(F.lit(PAD_ID), padding)).cast("array<int>").alias(SEQ_TOKENS),
        F.concat(F.array_repeat(F.lit(1), F.size("steps")), F.array_repeat(F.lit(0), padding))
        .cast("array<int>").alias(SEQ_MASK),
    ]
    if order_vectors is not None:
        dims = features_cfg.text_dims
        zero = F.lit(0.0).cast("float")
        none = F.array_repeat(zero, dims)
        flat = F.flatten(F.transform("steps", lambda s: F.coalesce(s["text_vector"], none)))
        any_text = F.exists("steps", lambda s: s["text_vector"].isNotNull())
        columns.append(F.when(any_text, F.concat(flat, F.array_repeat(zero, padding * F.lit(dims))))
                       .cast("array<float>").alias(SEQ_TEXT))
    return collected.select(*keys, *columns)


def build_token_vocabulary(spark, features_cfg: FeaturesConf, *, as_of: dt.date) -> DataFrame:
    """The token vocabulary for `features_cfg` as rows (decoded from the id, the inverse of `token_expr`).

    Grain: one row per token_id in 0..vocab_size - 1, the reserved ids first.

    Returns:
        as_of_date, token_id INT, event_type, amount_bucket, gap_bucket, category_slot, fingerprint.
    """
    _, n_amount, n_gap, n_cat = bucket_counts(features_cfg)
    types = token_types(features_cfg)
    offset = F.col("id") - F.lit(FIRST_EVENT_ID)
    reserved = F.col("id") < F.lit(FIRST_EVENT_ID)

    def part(divisor: int, modulus: Optional[int]) -> Column:
        value = F.floor(offset / F.lit(divisor)).cast("int")
        value = F.pmod(value, F.lit(modulus)) if modulus is not None else value
        return F.when(reserved, F.lit(None)).otherwise(value).cast("int")

    type_index = part(n_cat * n_gap * n_amount, None)
    event_type = F.when(reserved, F.element_at(F.array(*[F.lit(t) for t in RESERVED_TOKENS]), F.col("id").cast("int") + 1)) \
        .otherwise(F.element_at(F.array(*[F.lit(t) for t in types]), type_index + 1))
    return spark.range(vocab_size(features_cfg)).select(
        F.lit(as_of).alias(AS_OF_DATE),
        F.col("id").cast("int").alias("token_id"),
        event_type.alias("event_type"),
        part(n_cat * n_gap, n_amount).alias("amount_bucket"),
        part(n_cat, n_gap).alias("gap_bucket"),
        part(1, n_cat).alias("category_slot"),
        F.lit(vocabulary_fingerprint(features_cfg)).alias("fingerprint"),
    )
