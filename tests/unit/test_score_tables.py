"""score/tables.py on tiny hand-written prediction frames: exact deciles, tiers, segments, uplift."""
import datetime as dt

import pytest
from chispa import assert_df_equality
from pyspark.sql import Window
from pyspark.sql import functions as F

from ulv_spark.score import tables

D = dt.date(2025, 10, 1)
PRED_SCHEMA = ("user_id string, as_of_date date, model_version string, run_id string, expected_value double, "
               "p_purchase double, value_p10 double, value_p90 double, churn_probability double, "
               "arm_conversion array<double>, arm_value array<double>, arm_value_long array<double>")


def _preds(spark, rows):
    """rows: (user_id, expected_value, churn_probability[, arm_conversion, arm_value[, arm_value_long]])."""
    full = []
    for r in rows:
        uid, ev, churn = r[:3]
        conv, val = (r[3], r[4]) if len(r) > 3 else ([], [])
        long = r[5] if len(r) > 5 else []
        full.append((uid, D, "m1", "r1", ev, 0.5, 0.0, ev * 2, churn, conv, val, long))
    return spark.createDataFrame(full, PRED_SCHEMA)


def _deciles(df):
    return {r["user_id"]: r["value_decile"] for r in df.select("user_id", "value_decile").collect()}


def test_value_decile_matches_ntile_sizes_with_top_decile_first(spark):
    # 12 users, values 12..1: ntile(10) gives the first two deciles two users each
    preds = _preds(spark, [(f"u{v:02d}", float(v), 0.1) for v in range(1, 13)])
    expected = {"u12": 1, "u11": 1, "u10": 2, "u09": 2, "u08": 3, "u07": 4, "u06": 5, "u05": 6,
                "u04": 7, "u03": 8, "u02": 9, "u01": 10}
    assert _deciles(tables.add_value_decile(preds)) == expected
    # cut points only split the work: any set gives the same deciles
    assert _deciles(tables.add_value_decile(preds, cut_points=[3.0, 7.5, 11.0, 11.0, 100.0])) == expected
    assert _deciles(tables.add_value_decile(preds, cut_points=[6.0])) == expected


def test_value_decile_breaks_ties_by_user_id_and_handles_fewer_users_than_deciles(spark):
    preds = _preds(spark, [("b", 5.0, 0.1), ("a", 5.0, 0.1), ("c", 9.0, 0.1), ("d", 0.0, 0.1)])
    assert _deciles(tables.add_value_decile(preds, cut_points=[5.0])) == {"c": 1, "a": 2, "b": 3, "d": 4}


def test_value_decile_equals_sql_ntile_over_a_global_window(spark):
    values = [(f"u{i:03d}", float((i * 37) % 23), 0.2) for i in range(137)]  # many ties
    preds = _preds(spark, values)
    reference = _deciles(preds.select("user_id", F.ntile(10).over(
        Window.orderBy(F.col("expected_value").desc(), F.col("user_id").asc())).alias("value_decile")))
    assert sorted(reference.values())[::14] == list(range(1, 11))  # 137 users: sizes 14 x 7, 13 x 3
    for cuts in ([], [2.0, 9.0, 15.0], [float(v) for v in range(23)]):
        assert _deciles(tables.add_value_decile(preds, cut_points=cuts)) == reference


def test_user_value_table_columns_and_horizon(spark):
    preds = _preds(spark, [("u1", 10.0, 0.1), ("u2", 30.0, 0.7)])
    out = tables.user_value_table(tables.add_value_decile(preds), horizon_days=90)
    expected = spark.createDataFrame(
        [("u1", D, 90, 10.0, 0.5, 0.0, 20.0, 2, "m1", "r1"), ("u2", D, 90, 30.0, 0.5, 0.0, 60.0, 1, "m1", "r1")],
        "user_id string, as_of_date date, horizon_days int, expected_value double, p_purchase double, "
        "value_p10 double, value_p90 double, value_decile int, model_version string, run_id string")
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


def test_user_churn_risk_tiers_at_the_cut_points(spark):
    preds = _preds(spark, [("a", 1.0, 0.1), ("b", 1.0, 0.3), ("c", 1.0, 0.59), ("d", 1.0, 0.6), ("e", 1.0, 0.95)])
    out = tables.user_churn_table(preds, horizon_days=30, risk_tiers=[0.3, 0.6])
    expected = spark.createDataFrame(
        [("a", D, 30, 0.1, "low", "m1", "r1"), ("b", D, 30, 0.3, "medium", "m1", "r1"),
         ("c", D, 30, 0.59, "medium", "m1", "r1"), ("d", D, 30, 0.6, "high", "m1", "r1"),
         ("e", D, 30, 0.95, "high", "m1", "r1")],
        "user_id string, as_of_date date, horizon_days int, churn_probability double, risk_tier string, "
        "model_version string, run_id string")
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.parametrize("bad", [[0.6, 0.3], [0.3], [0.0, 0.5], [0.3, 0.6, 0.9], [0.5, 1.0]])
def test_risk_tiers_must_be_two_increasing_probabilities(bad):
    with pytest.raises(ValueError, match="score.risk_tiers"):
        tables.check_risk_tiers(bad)


def test_user_segments_cover_the_value_by_churn_grid(spark):
    # 10 users -> one per decile; churn chosen to hit every grid cell
    rows = [("d01", 100.0, 0.1), ("d02", 90.0, 0.7), ("d03", 80.0, 0.1), ("d04", 70.0, 0.4),
            ("d05", 60.0, 0.8), ("d06", 50.0, 0.2), ("d07", 40.0, 0.1), ("d08", 30.0, 0.5),
            ("d09", 20.0, 0.9), ("d10", 10.0, 0.45)]
    out = tables.user_segments_table(tables.add_value_decile(_preds(spark, rows)), risk_tiers=[0.3, 0.6])
    expected = spark.createDataFrame([
        ("d01", D, "champion", "high", "low"), ("d02", D, "at_risk_high_value", "high", "high"),
        ("d03", D, "promising", "mid", "low"), ("d04", D, "needs_attention", "mid", "medium"),
        ("d05", D, "hibernating", "mid", "high"), ("d06", D, "promising", "mid", "low"),
        ("d07", D, "promising", "low", "low"), ("d08", D, "hibernating", "low", "medium"),
        ("d09", D, "lost", "low", "high"), ("d10", D, "hibernating", "low", "medium")],
        "user_id string, as_of_date date, segment string, value_band string, churn_band string")
    assert_df_equality(out.drop("model_version", "run_id"), expected, ignore_row_order=True, ignore_nullable=True)
    assert {r[0] for r in out.select("model_version").distinct().collect()} == {"m1"}


def test_promo_uplift_profit_and_single_recommended_arm(spark):
    arms = ["control", "coupon", "ship"]
    campaigns = {"control": "c1", "coupon": "c1", "ship": "c2"}
    preds = _preds(spark, [
        # coupon: uplift 8 -> profit 8*0.5-1 = 3; ship: uplift 4 -> 2  => coupon recommended;
        # long term: coupon 30 - 40 = -10 (the window's gain is paid back later), ship 45 - 40 = 5
        ("u1", 1.0, 0.1, [0.25, 0.5, 0.375], [2.0, 10.0, 6.0], [40.0, 30.0, 45.0]),
        # both profits negative -> nothing recommended; no long-term head: null long-term uplift
        ("u2", 1.0, 0.1, [0.5, 0.25, 0.5], [4.0, 2.0, 4.0]),
        # tie at profit 2 (coupon 6*0.5-1, ship 4*0.5) -> the arm listed first wins
        ("u3", 1.0, 0.1, [0.0, 0.5, 0.5], [0.0, 6.0, 4.0], [0.0, 6.0, 4.0]),
    ])
    out = tables.promo_uplift_table(preds, arms=arms, arm_campaigns=campaigns, margin=0.5,
                                    arm_costs={"coupon": 1.0, "unused": 9.0})
    expected = spark.createDataFrame([
        ("u1", D, "c1", "coupon", 0.25, 8.0, -10.0, 3.0, True, "m1", "r1"),
        ("u1", D, "c2", "ship", 0.125, 4.0, 5.0, 2.0, False, "m1", "r1"),
        ("u2", D, "c1", "coupon", -0.25, -2.0, None, -2.0, False, "m1", "r1"),
        ("u2", D, "c2", "ship", 0.0, 0.0, None, 0.0, False, "m1", "r1"),
        ("u3", D, "c1", "coupon", 0.5, 6.0, 6.0, 2.0, True, "m1", "r1"),
        ("u3", D, "c2", "ship", 0.5, 4.0, 4.0, 2.0, False, "m1", "r1")],
        "user_id string, as_of_date date, campaign_id string, arm string, uplift_conversion double, "
        "uplift_value double, uplift_value_long double, expected_profit double, recommended boolean, "
        "model_version string, run_id string")
    assert_df_equality(out, expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.parametrize("arms", [[], ["control"]])
def test_promo_uplift_is_empty_without_treatment_arms(spark, arms):
    out = tables.promo_uplift_table(_preds(spark, [("u1", 1.0, 0.1)]), arms=arms, arm_campaigns={},
                                    margin=0.3, arm_costs={})
    assert out.count() == 0
    assert out.columns == ["user_id", "as_of_date", "campaign_id", "arm", "uplift_conversion", "uplift_value",
                           "uplift_value_long", "expected_profit", "recommended", "model_version", "run_id"]


def test_promo_uplift_names_arms_without_campaign(spark):
    with pytest.raises(ValueError, match=r"\['ship'\]"):
        tables.promo_uplift_table(_preds(spark, [("u1", 1.0, 0.1, [0.0, 0.1], [0.0, 1.0])]),
                                  arms=["control", "ship"], arm_campaigns={}, margin=0.3, arm_costs={})
