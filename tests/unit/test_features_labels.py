"""Labels from [D_k, D_k + H) only: spend, churn, campaign arm and outcome; the training examples."""
import datetime as dt

from chispa import assert_df_equality
from pyspark.sql import functions as F

from ulv_spark.config import FeaturesConf
from ulv_spark.features import build_training_examples, build_user_features, origins
from ulv_spark.features.inputs import prepare_exposures, prepare_orders
from ulv_spark.features.labels import campaign_labels, exposure_outcomes, window_labels
from ulv_spark.catalog import training_examples_contract
from ulv_spark.schemas import RUN_ID

A, B = dt.date(2024, 2, 1), dt.date(2024, 1, 25)  # H = 10: [02-01, 02-11) and [01-25, 02-04)
ORDER_DDL = "user_id string, order_id string, order_ts string, amount double, is_return boolean"
EXPOSURE_DDL = ("user_id string, campaign_id string, arm string, is_control boolean, exposed_ts string, "
                "response_window_days int, observed_converted boolean, observed_value double")


def _orders(spark, rows):
    return prepare_orders(spark.createDataFrame(rows, ORDER_DDL).withColumn("order_ts", F.to_timestamp("order_ts")))


def _exposures(spark, rows):
    df = spark.createDataFrame(rows, EXPOSURE_DDL)
    return prepare_exposures(df.withColumn("exposed_ts", F.to_timestamp("exposed_ts")))


def test_window_labels_use_exactly_the_label_window_of_each_origin(spark):
    orders = _orders(spark, [
        ("u1", "a", "2024-01-31 23:59:59", 100.0, False),   # only in B
        ("u1", "b", "2024-02-01 00:00:00", 10.0, False),    # in A and B (start included)
        ("u1", "c", "2024-02-10 23:59:59", -25.0, True),    # in A
        ("u1", "d", "2024-02-11 00:00:00", 1000.0, False),  # A's end: excluded
        ("u2", "e", "2024-02-05 00:00:00", 40.0, False),
        ("u2", "f", "2024-02-06 00:00:00", -10.0, True),
        ("u3", "g", "2024-02-03 00:00:00", -5.0, True),     # a return only: no purchase
    ])
    expected = spark.createDataFrame([
        ("u1", A, 0.0, 1, 0),      # 10 - 25 < 0: floored
        ("u1", B, 110.0, 2, 0),
        ("u2", A, 30.0, 1, 0),     # net of the return
        ("u3", A, 0.0, 0, 1),
        ("u3", B, 0.0, 0, 1),
    ], "user_id string, origin_date date, label_value double, label_purchases int, label_churned int")
    got = window_labels(orders, origins=[A, B], horizon_days=10)
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_campaign_labels_take_the_first_complete_exposure_and_prefer_observed_outcomes(spark):
    orders = _orders(spark, [
        ("u1", "a", "2024-02-03 12:00:00", 50.0, False), ("u1", "b", "2024-02-04 00:00:00", -10.0, True),
        ("u2", "c", "2024-02-09 00:00:00", 30.0, False),   # exactly at u2's response end: excluded
        ("u4", "d", "2024-02-03 00:00:00", 70.0, False), ("u5", "e", "2024-02-02 12:00:00", 5.0, False),
    ])
    exposures = _exposures(spark, [
        ("u1", "cA", "coupon", False, "2024-02-02 00:00:00", 3, None, None),
        ("u1", "cB", "control", True, "2024-02-01 00:00:00", 20, None, None),   # ends after the window
        ("u2", "cA", "control", True, "2024-02-06 00:00:00", None, None, None),  # default 3 days
        ("u3", "cA", "coupon", False, "2024-02-03 00:00:00", 5, True, 12.5),     # observed wins
        ("u4", "cA", "coupon", False, "2024-01-31 00:00:00", 3, None, None),     # before the window
        ("u4", "cC", "coupon", False, "2024-02-10 00:00:00", 3, None, None),     # ends after the window
        ("u5", "cZ", "coupon", False, "2024-02-02 00:00:00", 1, None, None),
        ("u5", "cY", "control", True, "2024-02-02 00:00:00", 1, None, None),     # tie: lower campaign id
        ("u6", "cA", "coupon", False, "2024-02-04 00:00:00", 2, False, None),
    ])
    outcomes = exposure_outcomes(exposures, orders, default_response_window_days=3)
    expected = spark.createDataFrame([
        ("u1", A, "cA", "coupon", False, 1, 40.0),
        ("u2", A, "cA", "control", True, 0, 0.0),
        ("u3", A, "cA", "coupon", False, 1, 12.5),
        ("u5", A, "cY", "control", True, 1, 5.0),
        ("u6", A, "cA", "coupon", False, 0, 0.0),
    ], "user_id string, origin_date date, campaign_id string, arm string, is_control boolean, "
       "label_converted int, label_response_value double")
    got = campaign_labels(outcomes, origins=[A], horizon_days=10)
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_training_examples_join_features_at_each_origin_with_its_labels(spark):
    as_of = dt.date(2024, 3, 1)
    cfg = FeaturesConf(training_origins=2, origin_step_days=5)
    assert origins(as_of, horizon_days=10, features_cfg=cfg) == [dt.date(2024, 2, 20), dt.date(2024, 2, 15)]
    orders = _orders(spark, [
        ("u1", "a", "2024-02-01 00:00:00", 10.0, False), ("u1", "b", "2024-02-16 00:00:00", 20.0, False),
        ("u1", "c", "2024-02-25 00:00:00", 30.0, False), ("u1", "d", "2024-03-01 00:00:00", 500.0, False),
        ("u2", "e", "2024-02-18 00:00:00", 40.0, False), ("u3", "f", "2024-02-26 00:00:00", 50.0, False),
    ])
    events = spark.createDataFrame([("u4", "2024-02-10 00:00:00", "view")], "user_id string, event_ts string, "
                                   "event_type string").withColumn("event_ts", F.to_timestamp("event_ts"))
    exposures = _exposures(spark, [("u1", "cA", "coupon", False, "2024-02-21 00:00:00", 3, None, None)])
    got = build_training_examples(orders, events, exposures, as_of=as_of, horizon_days=10, features_cfg=cfg)
    assert got.columns == [c for c in training_examples_contract(cfg).column_names if c != RUN_ID]
    rows = {(r["user_id"], r["origin_date"].isoformat()): r.asDict() for r in got.collect()}
    assert sorted(rows) == [("u1", "2024-02-15"), ("u1", "2024-02-20"), ("u2", "2024-02-20"),
                            ("u4", "2024-02-15"), ("u4", "2024-02-20")]
    labels = {key: (r["label_value"], r["label_purchases"], r["label_churned"], r["campaign_id"], r["arm"],
                    r["is_control"], r["label_converted"], r["label_response_value"]) for key, r in rows.items()}
    assert labels == {
        ("u1", "2024-02-20"): (30.0, 1, 0, "cA", "coupon", False, 0, 0.0),   # the order at D is never read
        ("u1", "2024-02-15"): (20.0, 1, 0, "cA", "coupon", False, 0, 0.0),
        ("u2", "2024-02-20"): (0.0, 0, 1, None, None, None, None, None),
        ("u4", "2024-02-20"): (0.0, 0, 1, None, None, None, None, None),
        ("u4", "2024-02-15"): (0.0, 0, 1, None, None, None, None, None),
    }
    assert {r["as_of_date"] for r in rows.values()} == {as_of}
    assert {r["horizon_days"] for r in rows.values()} == {10}
    # features are those at the origin: u1 has 2 purchase days before 02-20, one before 02-15
    assert [rows[("u1", "2024-02-20")][c] for c in ("frequency", "recency", "T", "orders_total")] == [1.0, 15.0, 18.0, 2.0]
    assert [rows[("u1", "2024-02-15")][c] for c in ("frequency", "recency", "T", "orders_total")] == [0.0, 0.0, 13.0, 1.0]
    assert rows[("u4", "2024-02-15")]["has_events"] == 1.0 and rows[("u4", "2024-02-15")]["tenure_days"] == 5.0
    assert all(len(r["seq_tokens"]) == len(r["seq_mask"]) == cfg.sequence_length for r in rows.values())


def test_a_campaign_export_without_orders_gives_examples_from_its_observed_outcomes(spark):
    as_of, cfg = dt.date(2024, 3, 1), FeaturesConf(training_origins=1, sequence_length=4)
    orders = _orders(spark, [])
    exposures = _exposures(spark, [
        ("c1", "spring", "control", True, "2024-02-20 09:00:00", 7, False, 0.0),
        ("c2", "spring", "coupon", False, "2024-02-20 09:00:00", 7, True, 25.5),
        ("c3", "spring", "coupon", False, "2024-02-20 09:00:00", 7, None, None),  # outcome from orders: none here
    ])
    attributes = spark.createDataFrame([("c1", 31), ("c2", 47), ("c3", 52), ("c4", 60)], "user_id string, age int")
    got = build_training_examples(orders, None, exposures, attributes, as_of=as_of, horizon_days=10, features_cfg=cfg)
    rows = {r["user_id"]: r.asDict() for r in got.collect()}
    assert sorted(rows) == ["c1", "c2"]  # the exposures with an observed outcome define the examples
    assert {u: (r["origin_date"], r["campaign_id"], r["arm"], r["is_control"], r["label_converted"],
                r["label_response_value"], r["label_value"], r["label_purchases"], r["label_churned"])
            for u, r in rows.items()} == {
        "c1": (dt.date(2024, 2, 20), "spring", "control", True, 0, 0.0, 0.0, 0, 1),
        "c2": (dt.date(2024, 2, 20), "spring", "coupon", False, 1, 25.5, 0.0, 0, 1)}
    # features: only what was known before the origin (the attributes), no history, no events
    assert [(rows[u]["attr_age"], rows[u]["attr_missing"], rows[u]["tenure_days"], rows[u]["has_exposures"],
             rows[u]["seq_tokens"], rows[u]["seq_mask"]) for u in ("c1", "c2")] == [
        (31.0, 0.0, 0.0, 0.0, [0, 0, 0, 0], [0, 0, 0, 0]), (47.0, 0.0, 0.0, 0.0, [0, 0, 0, 0], [0, 0, 0, 0])]
    # after the campaign its users are seen (through their observed outcome) and scored
    feats = {r["user_id"]: r.asDict() for r in build_user_features(orders, None, exposures, attributes, as_of=as_of,
                                                                    features_cfg=cfg).collect()}
    assert sorted(feats) == ["c1", "c2"]  # c3's exposure has no observed outcome: not a customer seen yet
    assert [(feats[u]["tenure_days"], feats[u]["campaign_exposures_total"], feats[u]["campaign_response_value"],
             feats[u]["attr_age"], feats[u]["seq_mask"]) for u in ("c1", "c2")] == [
        (0.0, 1.0, 0.0, 31.0, [0, 0, 0, 0]), (0.0, 1.0, 25.5, 47.0, [0, 0, 0, 0])]
