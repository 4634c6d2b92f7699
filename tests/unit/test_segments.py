"""segments/: exact small cases of the centroid matching, the profiles, names and transitions."""
import datetime as dt

import pytest
from chispa import assert_approx_df_equality, assert_df_equality

from ulv_spark.segments.matching import match_centroids
from ulv_spark.segments.profiles import PROFILE_COLUMNS, segment_profiles, segment_transitions

D = dt.date(2025, 10, 1)


# ---- matching ---------------------------------------------------------------------------------
def test_matching_follows_the_centroids_not_the_labels():
    previous = {0: [0.0, 0.0], 1: [10.0, 0.0], 2: [0.0, 10.0]}
    new = {0: [0.0, 9.5], 1: [0.2, 0.0], 2: [9.0, 1.0]}
    assert match_centroids(previous, new) == {0: 2, 1: 0, 2: 1}


def test_matching_is_the_global_optimum_not_greedy():
    # greedy by label would give new 0 -> id 0 (cost 1) and new 1 -> id 1 (cost 16): total 17;
    # the assignment minimising the total is new 0 -> id 1 (4) and new 1 -> id 0 (1): total 5
    assert match_centroids({0: [0.0], 1: [3.0]}, {0: [1.0], 1: [-1.0]}) == {0: 1, 1: 0}


def test_extra_new_clusters_get_fresh_ids_after_the_largest_and_missing_ones_retire():
    assert match_centroids({3: [0.0, 0.0], 7: [5.0, 5.0]},
                           {0: [5.0, 4.0], 1: [0.1, 0.0], 2: [100.0, 100.0]}) == {0: 7, 1: 3, 2: 8}
    # a far-away newcomer takes a remaining id when that lowers the total ...
    assert match_centroids({3: [0.0], 7: [5.0]}, {0: [5.0], 1: [50.0]}) == {0: 3, 1: 7}
    # ... unless max_distance says it is a new segment
    assert match_centroids({3: [0.0], 7: [5.0]}, {0: [5.0], 1: [50.0]}, next_id=12, max_distance=10.0) == {0: 7, 1: 12}
    # fewer new clusters: the previous id with no partner (1, centroid 10) is not handed out
    assert match_centroids({0: [0.0], 1: [10.0], 2: [20.0]}, {0: [19.0], 1: [1.0]}) == {0: 2, 1: 0}


def test_without_previous_segments_ids_are_numbered_in_label_order():
    assert match_centroids({}, {1: [0.0], 0: [3.0]}) == {0: 0, 1: 1}
    assert match_centroids({}, {0: [0.0], 1: [3.0]}, next_id=5) == {0: 5, 1: 6}


def test_matching_rejects_centroids_of_different_lengths():
    with pytest.raises(ValueError, match="centroids differ in length: previous 2, new 3"):
        match_centroids({0: [0.0, 0.0]}, {0: [0.0, 0.0, 0.0]})


# ---- profiles -------------------------------------------------------------------------------
MEMBERS = "user_id string, learned_segment int, expected_value double, churn_probability double"
UPLIFT = "user_id string, arm string, uplift_value double"
FEATURES = ("user_id string, days_since_last_order int, orders_total bigint, tenure_days double, "
            "orders_trend_30_90d double")
PROFILE = ("learned_segment int, name string, users bigint, share double, mean_expected_value double, "
           "total_expected_value double, mean_churn_probability double, mean_uplift_value map<string,double>, "
           "mean_recency_days double, mean_frequency double, mean_tenure_days double, mean_orders_trend double, "
           "mean_distinct_categories double, mean_top_category_share double")


def _members(spark):
    rows = ([(f"u{i}", 0, 100.0 * i, 0.1 if i <= 2 else 0.2) for i in range(1, 5)]            # 100..400
            + [(f"u{i}", 1, 10.0 * (i - 4), c) for i, c in zip(range(5, 9), (0.7, 0.8, 0.9, 0.6))]  # 10..40
            + [(f"u{i}", 2, 100.0, 0.4) for i in range(9, 13)])
    return spark.createDataFrame(rows, MEMBERS)


def _uplift(spark):
    rows = []
    for i in range(1, 13):
        coupon, ship = ((2.0 if i % 2 else 4.0, 1.0) if i <= 4 else (-1.0, -2.0) if i <= 8 else (0.5, 2.5))
        rows += [(f"u{i}", "coupon", coupon), (f"u{i}", "ship", ship)]
    return spark.createDataFrame(rows, UPLIFT)


def _features(spark):
    rows = ([(f"u{i}", 10 * i, 5, 100.0 * i, 1.5) for i in range(1, 5)]
            + [(f"u{i}", r, 1, 50.0, 0.5) for i, r in zip(range(5, 9), (100, 100, 200, 200))]
            + [(f"u{i}", r, f, 300.0, 1.0) for i, r, f in zip(range(9, 12), (30, 60, 90), (2, 3, 4))])  # u12: none
    return spark.createDataFrame(rows, FEATURES)


def test_profiles_aggregate_each_segment_and_name_it_from_the_profile(spark):
    out = segment_profiles(_members(spark), _uplift(spark), _features(spark), risk_tiers=[0.3, 0.6])
    assert out.columns == list(PROFILE_COLUMNS)
    # night: 12 users, total expected value 1000 + 100 + 400 = 1500, i.e. 125 per user
    expected = spark.createDataFrame([
        (0, "high value, loyal, rising, coupon-responsive", 4, 1 / 3, 250.0, 1000.0, 0.15,
         {"coupon": 3.0, "ship": 1.0}, 25.0, 5.0, 250.0, 1.5, None, None),
        (1, "low value, at risk, declining, not promo-responsive", 4, 1 / 3, 25.0, 100.0, 0.75,
         {"coupon": -1.0, "ship": -2.0}, 150.0, 1.0, 50.0, 0.5, None, None),
        # u12 has no user_features row: the feature means are over u9..u11
        (2, "mid value, wavering, ship-responsive", 4, 1 / 3, 100.0, 400.0, 0.4,
         {"coupon": 0.5, "ship": 2.5}, 60.0, 3.0, 300.0, 1.0, None, None)], PROFILE)
    assert_approx_df_equality(out.orderBy("learned_segment"), expected, precision=1e-12, ignore_nullable=True)


def test_profiles_without_arms_or_features_and_duplicate_names_get_the_id(spark):
    members = spark.createDataFrame([("a", 4, 10.0, 0.5), ("b", 4, 10.0, 0.5), ("c", 9, 10.0, 0.5)], MEMBERS)
    out = segment_profiles(members, spark.createDataFrame([], UPLIFT), spark.createDataFrame([], "user_id string"),
                           risk_tiers=[0.3, 0.6])
    expected = spark.createDataFrame([
        (4, "mid value, wavering #4", 2, 2 / 3, 10.0, 20.0, 0.5, {}, None, None, None, None, None, None),
        (9, "mid value, wavering #9", 1, 1 / 3, 10.0, 10.0, 0.5, {}, None, None, None, None, None, None)], PROFILE)
    assert_approx_df_equality(out.orderBy("learned_segment"), expected, precision=1e-12, ignore_nullable=True)


def test_same_named_segments_get_the_behaviour_they_stand_out_by(spark):
    # three "low value, wavering" segments; their means (users-weighted): recency (10+10+100+50)/4 = 42.5,
    # orders (2+2+2+8)/4 = 3.5, tenure 200 everywhere; a fourth, "high value", is not in their mean
    members = spark.createDataFrame([("a", 0, 10.0, 0.5), ("b", 0, 10.0, 0.5), ("c", 1, 10.0, 0.5),
                                     ("d", 2, 10.0, 0.5)], MEMBERS)
    features = spark.createDataFrame([("a", 10, 2, 200.0, 1.0), ("b", 10, 2, 200.0, 1.0), ("c", 100, 2, 200.0, 1.0),
                                      ("d", 50, 8, 200.0, 1.0)], FEATURES)
    members = members.union(spark.createDataFrame([("e", 3, 1000.0, 0.5)], MEMBERS))
    features = features.union(spark.createDataFrame([("e", 1, 100, 5.0, 1.0)], FEATURES))
    out = segment_profiles(members, spark.createDataFrame([], UPLIFT), features, risk_tiers=[0.3, 0.6])
    names = dict(out.select("learned_segment", "name").collect())
    assert names.pop(3) == "high value, wavering"
    # 0: recency ln(42.5/10) = 1.45 beats orders ln(3.5/2) = 0.56 -> recent
    # 1: recency ln(100/42.5) = 0.86 beats 0.56 -> lapsed; 2: orders ln(8/3.5) = 0.83 beats ln(50/42.5) = 0.16
    assert names == {0: "low value, wavering, recent", 1: "low value, wavering, lapsed",
                     2: "low value, wavering, frequent"}


def test_transitions_count_moves_new_and_gone_users(spark):
    schema = "user_id string, learned_segment int"
    previous = spark.createDataFrame([("a", 0), ("b", 0), ("c", 1), ("d", 2), ("f", 1)], schema)
    current = spark.createDataFrame([("a", 0), ("b", 1), ("c", 1), ("e", 2), ("f", 1)], schema)
    expected = spark.createDataFrame([(0, 0, 1), (0, 1, 1), (1, 1, 2), (2, None, 1), (None, 2, 1)],
                                     "from_segment int, to_segment int, users bigint")
    assert_df_equality(segment_transitions(previous, current), expected, ignore_row_order=True, ignore_nullable=True)


# ---- segment quality (evaluate/segments.py) ---------------------------------------------------
def test_between_share_of_variance_and_segment_mean_auc_by_hand():
    from ulv_spark.evaluate.segments import between_share_of_variance, segment_mean_auc

    # mean 4; total SS 9 + 1 + 1 + 9 = 20; between 2 * (2 - 4)^2 + 2 * (6 - 4)^2 = 16
    assert between_share_of_variance(["a", "a", "b", "b"], [1.0, 3.0, 5.0, 7.0]) == pytest.approx(0.8, abs=1e-15)
    assert between_share_of_variance([0, 1, 2, 3], [1.0, 3.0, 5.0, 7.0]) == pytest.approx(1.0, abs=1e-15)
    assert between_share_of_variance([0, 0, 1], [2.0, 2.0, 2.0]) is None
    # segment means a 0.5, b 1, c 0: of the 6 churned/stayed pairs, 5 ranked right and 1 tied
    assert segment_mean_auc(["a", "a", "b", "b", "c"], [1, 0, 1, 1, 0]) == pytest.approx(5.5 / 6, abs=1e-15)
    assert segment_mean_auc([0, 1], [1, 1]) is None


def test_rfm_quintile_segments_and_the_grid_by_hand():
    import pandas as pd

    from ulv_spark.evaluate.segments import grid_segments, rfm_quintile_segments

    test = pd.DataFrame({"user_id": list("ABCD"), "frequency": [0, 1, 3, 5], "recency": [0, 50, 90, 99],
                         "T": [100] * 4, "monetary_value": [0.0, 10.0, 50.0, 100.0]})
    # with 2 quantiles R (-100, -50, -10, -1), F and M each score 1, 1, 2, 2: totals 3, 3, 6, 6
    assert rfm_quintile_segments(test, 2, quantiles=2).tolist() == [0, 0, 1, 1]
    # the same users and cells as tests/unit/test_score_tables.py's Spark grid
    pred = pd.DataFrame({"user_id": [f"d{i:02d}" for i in range(1, 11)],
                         "expected_value": [100.0, 90, 80, 70, 60, 50, 40, 30, 20, 10],
                         "churn_probability": [0.1, 0.7, 0.1, 0.4, 0.8, 0.2, 0.1, 0.5, 0.9, 0.45]})
    assert grid_segments(pred.iloc[::-1].reset_index(drop=True), [0.3, 0.6]).tolist() == [
        "hibernating", "lost", "hibernating", "promising", "promising", "hibernating", "needs_attention",
        "promising", "at_risk_high_value", "champion"]


def test_seeded_sample_keeps_everyone_when_small_and_picks_the_same_users_whatever_the_partitioning(spark):
    from ulv_spark.segments.fit import seeded_sample

    df = spark.createDataFrame([(f"u{i}",) for i in range(400)], "user_id string")
    assert seeded_sample(df, 400, 400, 7) is df
    picked = {r[0] for r in seeded_sample(df, 400, 100, 7).collect()}
    assert picked == {r[0] for r in seeded_sample(df.repartition(3), 400, 100, 7).collect()}
    assert 60 <= len(picked) <= 140  # about a quarter
    assert {r[0] for r in seeded_sample(df, 400, 100, 8).collect()} != picked
