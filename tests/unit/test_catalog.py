"""The catalog: every table registered once, by group; the lists the commands use come from it."""
import dataclasses

import pytest

from ulv_spark import catalog
from ulv_spark.config import FeaturesConf, SourcesConf
from ulv_spark.schemas import Col, TableContract


def test_every_table_is_registered_once_in_group_order():
    assert catalog.names() == (
        "orders", "orders_rejects", "events", "events_rejects", "campaign_exposures", "campaign_exposures_rejects",
        "user_attributes", "user_attributes_rejects", "products", "products_rejects", "reviews", "reviews_rejects",
        "order_lines", "user_features", "training_examples", "token_vocabulary",
        "user_day", "score_predictions", "user_value", "user_churn", "promo_uplift", "user_segments", "promo_plan",
        "campaign_forecast", "evaluation_metrics", "truth_users", "truth_uplift", "product_embeddings",
        "review_embeddings", "text_projection", "user_embeddings", "segment_profiles", "segment_transitions")
    assert catalog.names(catalog.DERIVED) == ("order_lines",)
    assert catalog.names(catalog.TEXT) == ("product_embeddings", "review_embeddings", "text_projection")
    assert catalog.names(catalog.SCORES) == ("user_value", "user_churn", "promo_uplift", "user_segments")
    assert catalog.names(catalog.PLANS) == ("promo_plan", "campaign_forecast")
    assert catalog.names(catalog.SEGMENTS) == ("user_embeddings", "segment_profiles", "segment_transitions")
    assert catalog.names(catalog.FEATURES) == ("user_features", "training_examples", "token_vocabulary")
    assert catalog.latest_views() == ("user_features", "user_value", "user_churn", "promo_uplift", "user_segments",
                                      "promo_plan", "campaign_forecast", "user_embeddings", "segment_profiles",
                                      "segment_transitions")


def test_each_bronze_table_brings_its_rejects_table():
    bronze = catalog.names(catalog.BRONZE)
    assert catalog.names(catalog.REJECTS) == tuple(f"{name}_rejects" for name in bronze)
    for name in bronze:
        rejects = catalog.contract(f"{name}_rejects")
        assert rejects.column_names == ["raw", "user_id", "reject_reason", "run_id", "rejected_at", "as_of_date"]


def test_each_bronze_table_is_a_source_in_conf():
    assert tuple(f.name for f in dataclasses.fields(SourcesConf)) == catalog.names(catalog.BRONZE)


def test_feature_tables_follow_the_features_conf():
    short = FeaturesConf(windows_days=[7, 30], event_types=["view"])
    attr = (Col("attr_age", "DOUBLE", True, "age"),)
    contract = catalog.contract("user_features", short, attr)
    assert "orders_30d" in contract.column_names and "orders_90d" not in contract.column_names
    assert contract.column_names.index("attr_age") == contract.column_names.index("seq_tokens") - 1
    assert catalog.contract("user_features") is catalog.USER_FEATURES
    assert catalog.contract("token_vocabulary", short) is catalog.TOKEN_VOCABULARY  # conf-independent


def test_registering_a_name_twice_or_an_unknown_group_fails():
    with pytest.raises(ValueError, match="registered twice"):
        catalog.register(catalog.SCORES, catalog.USER_VALUE)
    with pytest.raises(ValueError, match="unknown table group"):
        catalog.register("silver", TableContract("x", "", ()))
    with pytest.raises(KeyError, match="no table 'nope' in the catalog"):
        catalog.table("nope")
    with pytest.raises(ValueError, match="unknown table group"):
        catalog.names("silver")


def test_the_simulator_writes_catalog_tables():
    from ulv_spark.synthetic.generator import TABLES
    from ulv_spark.synthetic.job import RAW_TABLES

    assert RAW_TABLES == catalog.names(catalog.BRONZE)
    assert set(TABLES) == set(catalog.names(catalog.BRONZE, catalog.TRUTH))


def test_every_column_comment_fits_the_hive_metastore():
    """A permanent view stores its columns' comments in the Hive metastore (COLUMNS_V2.COMMENT, 256 characters).

    A longer comment makes every CREATE OR REPLACE VIEW over the table fail inside the metastore and
    retry for 20 s (10 x hive.hmshandler.retry.interval) before Spark gives up on the Hive layout: the
    nightly's latest_user_features view once cost 20 s a night that way.
    """
    attr = (Col("attr_age", "DOUBLE", True, "age"),)
    wide = FeaturesConf(text_dims=12)
    too_long = [(t.name, c.name, len(c.comment))
                for t in catalog.tables() for features in (None, wide)
                for c in (catalog.contract(t.name, features, attr) if features else t.contract).columns
                if len(c.comment) > 256]
    assert not too_long
