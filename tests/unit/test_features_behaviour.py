"""Exact user_features values on a tiny hand-written log: every feature, every edge case."""
import datetime as dt
import math

import pytest
from pyspark.sql import functions as F

from ulv_spark.config import FeaturesConf
from ulv_spark.features import build_user_features
from ulv_spark.catalog import USER_FEATURES, user_features_contract
from ulv_spark.schemas import RUN_ID, SEQ_MASK, SEQ_TEXT, SEQ_TOKENS, feature_columns

D = dt.date(2024, 4, 1)   # windows start 7d: 03-25, 30d: 03-02, 90d: 01-02, 180d: 2023-10-04
CFG = FeaturesConf(attribute_onehot={"tier": ["gold", "silver"]})

ORDERS = [  # user, order_id, order_ts, amount, quantity, category, discount, is_return
    ("single", "s1", "2024-03-20 10:00:00", 40.0, 2.0, "books", 10.0, False),
    ("sameday", "a1", "2024-03-10 09:00:00", 20.0, 1.0, "music", None, False),
    ("sameday", "a2", "2024-03-10 18:00:00", 30.0, 1.0, "music", None, False),
    ("sameday", "a3", "2024-03-25 00:00:00", 15.0, 1.0, "books", None, False),
    ("sameday", "a4", "2024-03-28 12:00:00", -20.0, -1.0, "music", None, True),
    ("at_d", "d1", "2024-04-01 00:00:00", 99.0, 1.0, "books", None, False),
    ("at_d", "d2", "2024-03-31 23:59:59", 5.0, None, None, None, False),
    ("gaps", "g1", "2024-01-01 12:00:00", 10.0, None, None, None, False),
    ("gaps", "g2", "2024-01-11 12:00:00", 20.0, None, None, None, False),
    ("gaps", "g3", "2024-01-31 12:00:00", 60.0, None, None, None, False),
    ("future_only", "f1", "2024-04-01 00:00:00", 50.0, 1.0, None, None, False),
]
EVENTS = [  # event_id, user, event_ts, event_type, category
    ("e1", "sameday", "2024-03-10 10:00:00", "view", None),
    ("e2", "sameday", "2024-03-12 10:00:00", "view", "music"),
    ("e3", "sameday", "2024-03-12 10:00:00", "add_to_cart", "music"),
    ("e4", "events_only", "2024-02-01 00:00:00", "wishlist", None),
    ("e5", "events_only", "2024-03-30 12:00:00", "view", "books"),
    ("e6", "events_only", "2024-03-30 12:30:00", "ADD_TO_CART", None),
    ("e7", "events_only", "2024-04-01 00:00:00", "view", "books"),
]
EXPOSURES = [  # user, campaign, arm, is_control, exposed_ts, window days, observed_converted, observed_value
    ("sameday", "c1", "coupon", False, "2024-03-09 00:00:00", 3, None, None),
    ("sameday", "c2", "control", True, "2024-03-30 00:00:00", None, None, None),
    ("single", "c1", "control", True, "2024-03-18 00:00:00", 5, False, 0.0),
    ("ghost", "c1", "coupon", False, "2024-03-01 00:00:00", 3, None, None),
    ("at_d", "c3", "coupon", False, "2024-04-01 00:00:00", 3, None, None),
]
ATTRIBUTES = [("single", 30, "gold", True, "r0"), ("sameday", None, "silver", False, "r0"),
              ("ghost", 50, "gold", True, "r0")]


def make_inputs(spark):
    orders = spark.createDataFrame(ORDERS, "user_id string, order_id string, order_ts string, amount double, "
                                           "quantity double, category string, discount double, is_return boolean")
    events = spark.createDataFrame(EVENTS, "event_id string, user_id string, event_ts string, event_type string, "
                                           "category string")
    exposures = spark.createDataFrame(EXPOSURES, "user_id string, campaign_id string, arm string, is_control boolean, "
                                                 "exposed_ts string, response_window_days int, "
                                                 "observed_converted boolean, observed_value double")
    attributes = spark.createDataFrame(ATTRIBUTES, "user_id string, age int, tier string, vip boolean, run_id string")
    return (orders.withColumn("order_ts", F.to_timestamp("order_ts")),
            events.withColumn("event_ts", F.to_timestamp("event_ts")),
            exposures.withColumn("exposed_ts", F.to_timestamp("exposed_ts")), attributes)


def tok(type_index, amount_bucket, gap_bucket, category_slot):
    """Independent statement of the default layout: 5 types x 7 amount x 7 gap x 17 category slots."""
    return 4 + ((type_index * 7 + amount_bucket) * 7 + gap_bucket) * 17 + category_slot


@pytest.fixture(scope="module")
def built(spark):
    orders, events, exposures, attributes = make_inputs(spark)
    full = build_user_features(orders, events, exposures, attributes, as_of=D, features_cfg=CFG)
    orders_only = build_user_features(orders, as_of=D, features_cfg=FeaturesConf())
    both = (full.select(F.lit("full").alias("variant"), "*")
            .unionByName(orders_only.select(F.lit("orders_only").alias("variant"), "*"), allowMissingColumns=True))
    rows = both.collect()  # one Spark job for both variants
    slots = spark.sql("SELECT pmod(xxhash64('books'), 16) + 1 AS books, pmod(xxhash64('music'), 16) + 1 AS music").first()
    return {
        "full": {r["user_id"]: r.asDict() for r in rows if r["variant"] == "full"},
        "orders_only": {r["user_id"]: {k: v for k, v in r.asDict().items() if k in orders_only.columns}
                        for r in rows if r["variant"] == "orders_only"},
        "full_schema": full.schema, "orders_only_schema": orders_only.schema,
        "books": slots["books"], "music": slots["music"],
    }


def expected_features(built):
    books, music = built["books"], built["music"]
    zeros = {c.name: 0.0 for c in user_features_contract(CFG, ()).columns if c.type == "DOUBLE"}
    zeros.update({"attr_age": 0.0, "attr_vip": 0.0, "attr_tier_gold": 0.0, "attr_tier_silver": 0.0,
                  "attr_missing": 1.0})
    long_trend = 365 / 180
    users = {
        "single": dict(
            T=11.0, has_purchase=1.0, orders_total=1.0, spend_total=40.0, days_since_last_order=12.0,
            tenure_days=12.0, **{f"orders_{w}d": 1.0 for w in (30, 90, 180, 365)},
            **{f"spend_{w}d": 40.0 for w in (30, 90, 180, 365)},
            orders_trend_30_90d=3.0, spend_trend_30_90d=3.0, orders_trend_90_180d=2.0, spend_trend_90_180d=2.0,
            orders_trend_180_365d=long_trend, spend_trend_180_365d=long_trend,
            avg_order_value=40.0, avg_basket_quantity=2.0, distinct_categories=1.0, top_category_share=1.0,
            discount_share=0.2, discounted_order_share=1.0,
            has_exposures=1.0, campaign_exposures_total=1.0, days_since_last_exposure=14.0,
            attr_age=30.0, attr_vip=1.0, attr_tier_gold=1.0, attr_missing=0.0,
            seq=[tok(0, 3, 0, books)]),
        "sameday": dict(
            frequency=1.0, recency=15.0, T=21.0, monetary_value=15.0, has_purchase=1.0, orders_total=3.0,
            spend_total=45.0, days_since_last_order=7.0, tenure_days=22.0, orders_7d=1.0, spend_7d=-5.0,
            **{f"orders_{w}d": 3.0 for w in (30, 90, 180, 365)}, **{f"spend_{w}d": 45.0 for w in (30, 90, 180, 365)},
            orders_trend_7_30d=10 / 7, spend_trend_7_30d=-10 / 21, orders_trend_30_90d=3.0, spend_trend_30_90d=3.0,
            orders_trend_90_180d=2.0, spend_trend_90_180d=2.0, orders_trend_180_365d=long_trend,
            spend_trend_180_365d=long_trend, gap_mean_days=15.0, gap_std_days=0.0, gap_last_days=15.0,
            avg_order_value=65 / 3, avg_basket_quantity=1.0, distinct_categories=2.0, top_category_share=2 / 3,
            returns_total=1.0, return_rate=0.25, return_value_share=20 / 65,
            has_events=1.0, events_total=3.0, **{f"events_{w}d": 3.0 for w in (30, 90, 180, 365)},
            events_view_total=2.0, events_add_to_cart_total=1.0, days_since_last_event=20.0,
            view_purchase_day_rate=0.5,
            has_exposures=1.0, campaign_exposures_total=2.0, campaign_treated_total=1.0, days_since_last_exposure=2.0,
            campaign_responses_total=1.0, campaign_response_rate=1.0, campaign_response_value=50.0,
            attr_tier_silver=1.0, attr_missing=0.0,
            seq=[tok(0, 2, 0, music), tok(2, 0, 1, 0), tok(0, 3, 1, music), tok(2, 0, 2, music),
                 tok(3, 0, 1, music), tok(0, 2, 3, books), tok(1, 2, 2, music)]),
        "at_d": dict(
            has_purchase=1.0, orders_total=1.0, spend_total=5.0, days_since_last_order=1.0, tenure_days=1.0,
            **{f"orders_{w}d": 1.0 for w in (7, 30, 90, 180, 365)},
            **{f"spend_{w}d": 5.0 for w in (7, 30, 90, 180, 365)},
            orders_trend_7_30d=30 / 7, spend_trend_7_30d=30 / 7, orders_trend_30_90d=3.0, spend_trend_30_90d=3.0,
            orders_trend_90_180d=2.0, spend_trend_90_180d=2.0, orders_trend_180_365d=long_trend,
            spend_trend_180_365d=long_trend, avg_order_value=5.0,
            seq=[tok(0, 1, 0, 0)]),
        "gaps": dict(
            frequency=2.0, recency=30.0, T=90.0, monetary_value=40.0, has_purchase=1.0, orders_total=3.0,
            spend_total=90.0, days_since_last_order=61.0, tenure_days=91.0, orders_90d=2.0, spend_90d=80.0,
            orders_180d=3.0, spend_180d=90.0, orders_365d=3.0, spend_365d=90.0,
            orders_trend_90_180d=4 / 3, spend_trend_90_180d=16 / 9, orders_trend_180_365d=long_trend,
            spend_trend_180_365d=long_trend, gap_mean_days=15.0, gap_std_days=5.0, gap_last_days=20.0,
            avg_order_value=30.0,
            seq=[tok(0, 2, 0, 0), tok(0, 2, 3, 0), tok(0, 4, 3, 0)]),
        "events_only": dict(
            tenure_days=60.0, has_events=1.0, events_total=3.0, events_7d=2.0, events_30d=2.0, events_90d=3.0,
            events_180d=3.0, events_365d=3.0, events_view_total=1.0, events_add_to_cart_total=1.0,
            days_since_last_event=2.0,
            seq=[3, tok(2, 0, 4, books), tok(3, 0, 1, 0)]),   # 'wishlist' is not a configured type: UNK
    }
    out = {}
    for user, values in users.items():
        seq = values.pop("seq")
        out[user] = {**zeros, **values, SEQ_TOKENS: seq + [0] * (32 - len(seq)),
                     SEQ_MASK: [1] * len(seq) + [0] * (32 - len(seq)),
                     SEQ_TEXT: None}   # no text inputs: no per-event product text
    return out


def test_population_is_users_with_an_order_or_event_strictly_before_d(built):
    # future_only ordered only at D, ghost only has an exposure and attributes
    assert sorted(built["full"]) == ["at_d", "events_only", "gaps", "sameday", "single"]
    assert sorted(built["orders_only"]) == ["at_d", "gaps", "sameday", "single"]


@pytest.mark.parametrize("user", ["single", "sameday", "at_d", "gaps", "events_only"])
def test_every_feature_has_its_exact_value(built, user):
    expected = expected_features(built)[user]
    got = built["full"][user]
    assert set(got) == set(expected) | {"user_id", "as_of_date", "variant"}
    assert got["as_of_date"] == D
    for name, value in expected.items():
        if isinstance(value, list) or value is None:
            assert got[name] == value, name
        else:
            assert got[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name


def test_columns_follow_the_contract_and_are_never_null_or_nan(built):
    schema = built["full_schema"]
    contract = user_features_contract(CFG)  # without attributes: they go right before the sequence
    attr_names = ["attr_age", "attr_vip", "attr_tier_gold", "attr_tier_silver", "attr_missing"]
    base = [c for c in contract.column_names if c != RUN_ID]
    # the sequence columns close the table: tokens, mask and (features.text) the per-event product text
    assert schema.names == base[:base.index(SEQ_TOKENS)] + attr_names + [SEQ_TOKENS, SEQ_MASK, SEQ_TEXT]
    features = feature_columns(schema)
    assert features == [n for n in schema.names if n not in ("user_id", "as_of_date", SEQ_TOKENS, SEQ_MASK, SEQ_TEXT)]
    assert all(schema[n].dataType.simpleString() == "double" for n in features)
    for row in built["full"].values():
        assert all(row[n] is not None and not math.isnan(row[n]) for n in features)


def test_without_optional_inputs_the_schema_is_the_default_contract_and_their_features_are_zero(built):
    assert built["orders_only_schema"].names == [c for c in USER_FEATURES.column_names if c != RUN_ID]
    full, bare = built["full"], built["orders_only"]
    names = list(bare["sameday"])
    event_and_campaign = [n for n in names if n.startswith(("events_", "has_events", "days_since_last_e", "view_",
                                                          "has_exposures", "campaign_", "days_since_last_exp"))]
    assert len(event_and_campaign) == 12 + 7  # events: 2 + 5 windows + 3 types + 2; campaigns: 7
    for user, row in bare.items():
        assert all(row[n] == 0.0 for n in event_and_campaign), user
        order_features = [n for n in names if n not in event_and_campaign + ["tenure_days", SEQ_TOKENS, SEQ_MASK]]
        assert {n: row[n] for n in order_features} == {n: full[user][n] for n in order_features}, user
    # without events the sequence holds the orders only
    assert bare["sameday"][SEQ_MASK].count(1) == 4


def test_exact_sum_and_std_do_not_depend_on_row_order(spark):
    import numpy as np
    from pyspark.sql import functions as F

    from ulv_spark.features.inputs import exact_std_pop, exact_sum

    assert (0.1 + 0.2) + 0.3 != 0.1 + (0.2 + 0.3)  # why: a float sum depends on the order
    rows = [("a", 0.1, 3), ("a", 0.2, 10), ("a", 0.3, 4), ("b", -1.25, 7)]
    results = []
    for order in (rows, rows[::-1], [rows[1], rows[3], rows[2], rows[0]]):
        df = spark.createDataFrame(order, "k string, v double, g int").repartition(3)
        out = df.groupBy("k").agg(exact_sum(F.col("v")).alias("s"), exact_std_pop(F.col("g")).alias("sd"))
        results.append(sorted(tuple(r) for r in out.collect()))
    assert results[0] == results[1] == results[2]
    assert results[0] == [("a", 0.6, float(np.std([3, 10, 4]))), ("b", -1.25, 0.0)]
    empty = spark.createDataFrame([("c", None, None)], "k string, v double, g int").groupBy("k")
    assert tuple(empty.agg(exact_sum(F.col("v")), exact_std_pop(F.col("g"))).first()) == ("c", None, None)
