"""Event-token sequences: exact tokens, truncation to the last L, padding, and the vocabulary."""
import dataclasses
import datetime as dt

import pytest
from pyspark.sql import functions as F

from ulv_spark.config import FeaturesConf
from ulv_spark.features import sequences
from ulv_spark.features.inputs import history, prepare_events, prepare_orders
from ulv_spark.features.sequences import (CLS_ID, MASK_ID, PAD_ID, UNK_ID, build_token_vocabulary, encode_token,
                                          vocab_size, vocabulary_fingerprint)

CFG = FeaturesConf(sequence_length=3)
D = dt.date(2024, 9, 1)
EARLY = dt.date(2024, 2, 1)


def tok(type_index, amount_bucket, gap_bucket, category_slot):
    """Independent statement of the default layout: 5 types x 7 amount x 7 gap x 17 category slots."""
    return 4 + ((type_index * 7 + amount_bucket) * 7 + gap_bucket) * 17 + category_slot


def test_reserved_ids_and_vocabulary_size():
    assert (PAD_ID, MASK_ID, CLS_ID, UNK_ID) == (0, 1, 2, 3)
    # purchase, return, view, add_to_cart, search x (5 cuts + 2) x (5 cuts + 2) x (16 + 1) + 4 reserved
    assert vocab_size(FeaturesConf()) == 4 + 5 * 7 * 7 * 17 == 4169
    assert vocab_size(FeaturesConf(event_types=["view"], amount_buckets=[10.0], gap_buckets_days=[1, 7],
                                   max_categories=4)) == 4 + 3 * 3 * 4 * 5


def test_fingerprint_is_stable_and_tracks_only_the_vocabulary_definition():
    base = FeaturesConf()
    assert vocabulary_fingerprint(base) == vocabulary_fingerprint(FeaturesConf())
    assert vocabulary_fingerprint(base) == "eb844eea3bf038ce"  # pinned: a change here breaks stored models
    same = [dataclasses.replace(base, sequence_length=8), dataclasses.replace(base, windows_days=[30]),
            dataclasses.replace(base, training_origins=1)]
    different = [dataclasses.replace(base, amount_buckets=[10.0, 25.0]),
                 dataclasses.replace(base, gap_buckets_days=[1, 7, 30]),
                 dataclasses.replace(base, max_categories=8),
                 dataclasses.replace(base, event_types=["view", "search", "add_to_cart"])]
    assert {vocabulary_fingerprint(c) for c in same} == {vocabulary_fingerprint(base)}
    assert len({vocabulary_fingerprint(c) for c in different} | {vocabulary_fingerprint(base)}) == 5


def test_encode_token_layout_unknown_types_and_bounds():
    cfg = FeaturesConf()
    assert encode_token(cfg, "purchase", 0, 0, 0) == 4
    assert encode_token(cfg, "search", 6, 6, 16) == vocab_size(cfg) - 1
    assert encode_token(cfg, "return", 2, 3, 5) == tok(1, 2, 3, 5)
    assert encode_token(cfg, "wishlist", 1, 1, 1) == UNK_ID
    with pytest.raises(ValueError, match="gap_bucket"):
        encode_token(cfg, "view", 0, 7, 0)


def test_last_l_events_become_exact_tokens_with_padding_at_two_dates(spark):
    orders = spark.createDataFrame([
        ("long", "o1", "2024-01-01 00:00:00", 5.0, None, False),
        ("long", "o2", "2024-01-01 06:00:00", 300.0, "books", False),   # gap 0.25 d
        ("long", "o3", "2024-01-03 06:00:00", 30.0, None, False),       # gap 2 d
        ("long", "o4", "2024-02-15 06:00:00", -60.0, None, True),       # gap 43 d, a return
        ("tie", "o5", "2024-05-01 00:00:00", 10.0, None, False),
        ("short", "o6", "2024-09-01 00:00:00", 10.0, None, False),      # at D: excluded
    ], "user_id string, order_id string, order_ts string, amount double, category string, is_return boolean")
    events = spark.createDataFrame([
        ("e1", "long", "2024-08-20 06:00:00", "search"),                # gap 187 d
        ("e2", "short", "2024-08-31 00:00:00", "view"),
        ("e9", "tie", "2024-05-01 00:00:00", "view"),                   # same time as o5: the order first
    ], "event_id string, user_id string, event_ts string, event_type string")
    orders = prepare_orders(orders.withColumn("order_ts", F.to_timestamp("order_ts")))
    events = prepare_events(events.withColumn("event_ts", F.to_timestamp("event_ts")))
    got = sequences.user_sequences(history(orders, "order_ts", [D, EARLY]), history(events, "event_ts", [D, EARLY]),
                                   features_cfg=CFG)
    rows = {(r["user_id"], r["as_of_date"]): (r["seq_tokens"], r["seq_mask"]) for r in got.collect()}
    books = spark.sql("SELECT pmod(xxhash64('books'), 16) + 1").first()[0]
    assert rows == {
        # the last 3 of 5; gaps still measured from the events before the window
        ("long", D): ([tok(0, 3, 2, 0), tok(1, 4, 4, 0), tok(4, 0, 6, 0)], [1, 1, 1]),
        ("long", EARLY): ([tok(0, 1, 0, 0), tok(0, 6, 1, books), tok(0, 3, 2, 0)], [1, 1, 1]),
        ("tie", D): ([tok(0, 2, 0, 0), tok(2, 0, 1, 0), PAD_ID], [1, 1, 0]),
        ("short", D): ([tok(2, 0, 0, 0), PAD_ID, PAD_ID], [1, 0, 0]),
    }


def test_vocabulary_rows_decode_every_token_id(spark):
    cfg = FeaturesConf(event_types=["view"], amount_buckets=[10.0], gap_buckets_days=[1, 7], max_categories=4)
    rows = build_token_vocabulary(spark, cfg, as_of=D).collect()
    assert [r["token_id"] for r in rows] == list(range(vocab_size(cfg)))
    assert {r["fingerprint"] for r in rows} == {vocabulary_fingerprint(cfg)}
    assert {r["as_of_date"] for r in rows} == {D}
    assert [r["event_type"] for r in rows[:4]] == ["[PAD]", "[MASK]", "[CLS]", "[UNK]"]
    assert all(r["amount_bucket"] is None and r["category_slot"] is None for r in rows[:4])
    for r in rows[4:]:
        assert encode_token(cfg, r["event_type"], r["amount_bucket"], r["gap_bucket"], r["category_slot"]) == r["token_id"]
    assert {r["event_type"] for r in rows[4:]} == {"purchase", "return", "view"}


def test_order_text_vectors_are_amount_weighted_means_of_the_lines_products(spark):
    from ulv_spark.features.text import order_text_vectors

    lines = spark.createDataFrame([
        ("u1", "o1", "P1", 30.0), ("u1", "o1", "P2", 10.0),   # (30 * [1, 0] + 10 * [0, 2]) / 40
        ("u1", "o2", "P1", -20.0), ("u1", "o2", "NOVEC", 50.0),  # return line: |amount|; no vector: left out
        ("u1", "o3", "P2", 0.0), ("u1", "o4", None, 5.0),     # zero amount, no product: no vector
    ], "user_id string, order_id string, product_id string, amount double")
    vectors = spark.createDataFrame([("P1", 1.0, 0.0), ("P2", 0.0, 2.0)],
                                    "product_id string, text_dim_0 double, text_dim_1 double")
    got = {(r["user_id"], r["order_id"]): r["text_vector"] for r in order_text_vectors(lines, vectors, dims=2).collect()}
    assert got == {("u1", "o1"): [0.75, 0.5], ("u1", "o2"): [1.0, 0.0]}


def test_seq_text_carries_each_events_order_vector_in_token_order_zeros_elsewhere(spark):
    orders = spark.createDataFrame([
        ("u1", "o1", "2024-01-01 00:00:00", 5.0, None, False),    # no text vector
        ("u1", "o2", "2024-01-02 00:00:00", 30.0, None, False),
        ("u1", "o3", "2024-01-05 00:00:00", 20.0, None, False),
        ("u2", "o4", "2024-01-03 00:00:00", 10.0, None, False),   # no text vector: seq_text null
    ], "user_id string, order_id string, order_ts string, amount double, category string, is_return boolean")
    events = spark.createDataFrame([
        ("o3", "u1", "2024-01-04 00:00:00", "view"),              # an event whose id equals an order's
    ], "event_id string, user_id string, event_ts string, event_type string")
    vectors = spark.createDataFrame([("u1", "o2", [0.5, -1.0]), ("u1", "o3", [2.0, 0.25])],
                                    "user_id string, order_id string, text_vector array<float>")
    orders = prepare_orders(orders.withColumn("order_ts", F.to_timestamp("order_ts")))
    events = prepare_events(events.withColumn("event_ts", F.to_timestamp("event_ts")))
    cfg = FeaturesConf(sequence_length=5, text_dims=2)
    got = sequences.user_sequences(history(orders, "order_ts", [D]), history(events, "event_ts", [D]),
                                   features_cfg=cfg, order_vectors=vectors)
    rows = {r["user_id"]: (r["seq_mask"], r["seq_text"]) for r in got.collect()}
    # u1: o1, o2, view (o3's id), o3, padding -> 5 x 2 floats
    assert rows == {"u1": ([1, 1, 1, 1, 0], [0.0, 0.0, 0.5, -1.0, 0.0, 0.0, 2.0, 0.25, 0.0, 0.0]),
                    "u2": ([1, 0, 0, 0, 0], None)}
    # the tokens are the same as without vectors
    plain = sequences.user_sequences(history(orders, "order_ts", [D]), history(events, "event_ts", [D]),
                                     features_cfg=cfg)
    assert "seq_text" not in plain.columns
    assert sorted(map(tuple, plain.select("user_id", "seq_tokens").collect())) == \
        sorted(map(tuple, got.select("user_id", "seq_tokens").collect()))
    # truncation keeps the vectors of the last L events
    short = sequences.user_sequences(history(orders, "order_ts", [D]), history(events, "event_ts", [D]),
                                     features_cfg=FeaturesConf(sequence_length=2, text_dims=2), order_vectors=vectors)
    assert short.filter("user_id = 'u1'").first()["seq_text"] == [0.0, 0.0, 2.0, 0.25]
