"""Feature declarations: the contract comes from them, an undeclared-but-missing feature fails, nulls reach the gate."""
import datetime as dt

import pytest
from pyspark.sql import functions as F

from ulv_spark import catalog, gates
from ulv_spark.config import FeaturesConf
from ulv_spark.features import build, build_user_features
from ulv_spark.features.declare import EVENTS, Feature, block, expand
from ulv_spark.schemas import feature_columns

D = dt.date(2024, 4, 1)
ORDERS_DDL = "user_id string, order_id string, order_ts timestamp, amount double"


def _orders(spark, rows):
    return spark.createDataFrame([(u, o, dt.datetime.fromisoformat(ts), a) for u, o, ts, a in rows], ORDERS_DDL)


def test_blocks_expand_over_the_conf_in_table_order():
    cfg = FeaturesConf(windows_days=[7, 30, 90], event_types=["View", "add to cart"], view_event_type="view")
    windows = block(Feature("orders_{w}d", "orders in {w} days"), Feature("spend_{w}d", "spend in {w} days"),
                    per="window")
    pairs = block(Feature("trend_{a}_{b}d", "{a} over {b}"), per="trend_pair")
    types = block(Feature("events_{type_slug}_total", "type '{type}', views are '{cfg.view_event_type}'"),
                  source=EVENTS, per="event_type")
    declared = expand((windows, pairs, types), cfg)
    assert [d.name for d in declared] == ["orders_7d", "spend_7d", "orders_30d", "spend_30d", "orders_90d",
                                          "spend_90d", "trend_7_30d", "trend_30_90d", "events_view_total",
                                          "events_add_to_cart_total"]
    assert declared[-1].comment == "type 'add to cart', views are 'view'" and declared[-1].source == EVENTS
    assert windows.names(30) == ("orders_30d", "spend_30d")
    with pytest.raises(ValueError, match=r"\['orders_7d'\] declared more than once"):
        expand((windows, block(Feature("orders_7d", "again"))), cfg)
    with pytest.raises(ValueError, match="unknown feature source"):
        block(Feature("x", "y"), source="clicks")


def test_the_feature_contract_is_generated_from_the_declarations():
    cfg = FeaturesConf()
    declared = [d.name for d in build.declared_features(cfg)]
    contract = catalog.user_features_contract(cfg)
    assert feature_columns([(c.name, c.type) for c in contract.columns]) == declared
    assert declared[:6] == ["frequency", "recency", "T", "monetary_value", "has_purchase", "orders_total"]
    without_text = [d.name for d in build.declared_features(FeaturesConf(text=False))]
    assert len(without_text) == 58 and without_text[-1] == "campaign_response_value"
    assert declared == without_text + ["has_product_text"] + [f"text_dim_{i}" for i in range(8)] + [
        "review_count", "review_mean_rating", "review_sentiment"]


def test_a_declared_feature_that_no_builder_produces_is_an_error(spark, monkeypatch):
    orders = _orders(spark, [("u1", "o1", "2024-03-01 10:00:00", 10.0)])
    phantom = block(Feature("phantom_score", "declared, never computed"))
    monkeypatch.setattr(build, "FEATURE_BLOCKS", build.FEATURE_BLOCKS + (phantom,))
    with pytest.raises(ValueError, match="feature 'phantom_score' is declared \\(source orders\\) but no builder"):
        build_user_features(orders, as_of=D, features_cfg=FeaturesConf())


def test_a_feature_of_an_absent_source_is_its_default_and_of_a_present_one_an_error(spark, monkeypatch):
    orders = _orders(spark, [("u1", "o1", "2024-03-01 10:00:00", 10.0)])
    events = spark.createDataFrame([("u1", dt.datetime(2024, 3, 2), "view")], "user_id string, event_ts timestamp, "
                                                                               "event_type string")
    phantom = block(Feature("phantom_events", "declared, never computed", default=-1.0), source=EVENTS)
    monkeypatch.setattr(build, "FEATURE_BLOCKS", build.FEATURE_BLOCKS + (phantom,))
    without_events = build_user_features(orders, as_of=D, features_cfg=FeaturesConf())
    assert [tuple(r) for r in without_events.select("user_id", "phantom_events").collect()] == [("u1", -1.0)]
    with pytest.raises(ValueError, match="feature 'phantom_events' is declared \\(source events\\)"):
        build_user_features(orders, events, as_of=D, features_cfg=FeaturesConf())


def test_the_null_gate_sees_a_null_a_builder_produces(spark):
    # u2's only order has no amount: its spend features are null, not 0 (the old builder made them 0)
    orders = _orders(spark, [("u1", "o1", "2024-03-01 10:00:00", 10.0), ("u1", "o2", "2024-03-05 10:00:00", 5.0),
                             ("u2", "o3", "2024-03-03 10:00:00", None)])
    feats = build_user_features(orders, as_of=D, features_cfg=FeaturesConf())
    rows = {r["user_id"]: r for r in feats.collect()}
    assert rows["u2"]["spend_total"] is None and rows["u2"]["orders_total"] == 0.0  # not a purchase either
    assert rows["u1"]["spend_total"] == 15.0
    shares = gates.null_shares(feats, feature_columns(feats.schema))
    assert shares["spend_total"] == 0.5 and shares["orders_total"] == 0.0 and shares["events_total"] == 0.0
    gate = gates.null_share_gate(shares, 0.2)
    assert not gate.passed and gate.value == 0.5


def test_without_optional_sources_their_features_are_zero_not_null(spark):
    orders = _orders(spark, [("u1", "o1", "2024-03-01 10:00:00", 10.0)])
    feats = build_user_features(orders, as_of=D, features_cfg=FeaturesConf())
    shares = gates.null_shares(feats, feature_columns(feats.schema))
    assert set(shares.values()) == {0.0}
    row = feats.select("has_events", "events_total", "has_exposures", "gap_mean_days",
                       F.col("campaign_response_rate")).first()
    assert tuple(row) == (0.0, 0.0, 0.0, 0.0, 0.0)
