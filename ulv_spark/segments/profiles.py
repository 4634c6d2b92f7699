"""Pure DataFrame functions: segment_profiles and the rule-based segment names, segment_transitions.

Nothing here reads, writes, collects or looks at config; every input is one night's rows.
"""
from __future__ import annotations

from typing import Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from ulv_spark.names import CHURN_PROBABILITY, EXPECTED_VALUE
from ulv_spark.schemas import ARM, USER_ID
from ulv_spark.segments.contracts import FROM_SEGMENT, LEARNED_SEGMENT, TO_SEGMENT, USERS

# profile column -> the user_features column averaged (null in the profile when the column is absent)
FEATURE_MEANS = {
    "mean_recency_days": "days_since_last_order",
    "mean_frequency": "orders_total",
    "mean_tenure_days": "tenure_days",
    "mean_distinct_categories": "distinct_categories",
    "mean_top_category_share": "top_category_share",
}
TREND_PREFIX = "orders_trend_"  # the first orders_trend_<a>_<b>d feature gives mean_orders_trend
# name rules: value level by the segment's mean expected value over the night's mean per user
HIGH_VALUE_RATIO, LOW_VALUE_RATIO = 1.5, 0.5
RISING_TREND, DECLINING_TREND = 1.2, 0.8
PROFILE_COLUMNS = (LEARNED_SEGMENT, "name", USERS, "share", "mean_expected_value", "total_expected_value",
                   "mean_churn_probability", "mean_uplift_value", "mean_recency_days", "mean_frequency",
                   "mean_tenure_days", "mean_orders_trend", "mean_distinct_categories", "mean_top_category_share")


def trend_column(columns: Sequence[str]) -> str | None:
    """The orders_trend_* feature the profiles use (the shortest window first, by name order), if any."""
    trends = sorted(c for c in columns if c.startswith(TREND_PREFIX))
    return trends[0] if trends else None


def segment_profiles(members: DataFrame, uplift: DataFrame, features: DataFrame, *,
                     risk_tiers: Sequence[float]) -> DataFrame:
    """One row per learned segment (columns PROFILE_COLUMNS) with its rule-based name.

    Args:
        members: user_id, learned_segment, expected_value, churn_probability (one row per user).
        uplift: promo_uplift rows of the night (user_id, arm, uplift_value); may be empty.
        features: user_features rows of the night (user_id and any of the FEATURE_MEANS columns
            and orders_trend_*); users missing here count as nulls in the feature means.
        risk_tiers: score.risk_tiers (low | medium | high churn cut points) for the churn words.
    """
    trend = trend_column(features.columns)
    wanted = {**FEATURE_MEANS, **({"mean_orders_trend": trend} if trend else {})}
    feats = features.select(USER_ID, *[F.col(src).cast("double").alias(dst) for dst, src in wanted.items()
                                       if src in features.columns])
    joined = members.join(feats, USER_ID, "left")
    means = [F.avg(dst).alias(dst) if dst in feats.columns else F.lit(None).cast("double").alias(dst)
             for dst in (*FEATURE_MEANS, "mean_orders_trend")]
    base = joined.groupBy(LEARNED_SEGMENT).agg(
        F.count(F.lit(1)).alias(USERS),
        F.avg(EXPECTED_VALUE).alias("mean_expected_value"),
        F.sum(EXPECTED_VALUE).alias("total_expected_value"),
        F.avg(CHURN_PROBABILITY).alias("mean_churn_probability"),
        *means)
    arms = (uplift.join(members.select(USER_ID, LEARNED_SEGMENT), USER_ID, "inner")
            .groupBy(LEARNED_SEGMENT, ARM).agg(F.avg("uplift_value").alias("_mean"))
            .groupBy(LEARNED_SEGMENT)
            .agg(F.map_from_entries(F.array_sort(F.collect_list(F.struct(F.col(ARM), F.col("_mean")))))
                 .alias("mean_uplift_value")))
    totals = base.agg(F.sum(USERS).alias("_all_users"), F.sum("total_expected_value").alias("_all_value"))
    profiled = (base.join(arms, LEARNED_SEGMENT, "left").crossJoin(totals)
                .withColumn("mean_uplift_value", F.coalesce(F.col("mean_uplift_value"),
                                                            F.create_map().cast("map<string,double>")))
                .withColumn("share", F.col(USERS) / F.col("_all_users")))
    overall_mean = F.col("_all_value") / F.col("_all_users")
    named = profiled.withColumn("name", segment_name(overall_mean, risk_tiers))
    # segments with the same words get the behaviour they stand out by among them (distinguishing_word); any
    # still alike are told apart by their id
    same = Window.partitionBy("name")
    named = named.withColumn("name", F.when(F.count(F.lit(1)).over(same) > 1,
                                            F.concat_ws(", ", F.col("name"), distinguishing_word(named, same)))
                             .otherwise(F.col("name")))
    named = named.withColumn("name", F.when(F.count(F.lit(1)).over(same) > 1,
                                            F.concat(F.col("name"), F.lit(" #"), F.col(LEARNED_SEGMENT).cast("string")))
                             .otherwise(F.col("name")))
    return named.select(*PROFILE_COLUMNS)


# profile column -> (word when the segment's mean is above its group's, word when below)
STAND_OUT_WORDS = {
    "mean_recency_days": ("lapsed", "recent"),
    "mean_frequency": ("frequent", "infrequent"),
    "mean_tenure_days": ("long-standing", "new"),
    "mean_distinct_categories": ("broad", "narrow"),
    "mean_top_category_share": ("category-loyal", "varied"),
}


def distinguishing_word(profiles: DataFrame, group: Window) -> Column:
    """The word of the behaviour a segment stands out by most within its ``group`` (the segments
    sharing its name): the STAND_OUT_WORDS column whose segment mean is furthest, as
    |ln(segment mean / group mean)|, from the group's user-weighted mean (ties: STAND_OUT_WORDS
    order); null when no such mean is positive on both sides.

    ``profiles`` has one row per segment with ``users`` and the profile means.
    """
    candidates = []
    for rank, (column, (above, below)) in enumerate(STAND_OUT_WORDS.items()):
        if column not in profiles.columns:
            continue
        group_mean = (F.sum(F.col(column) * F.col(USERS)).over(group)
                      / F.sum(F.when(F.col(column).isNotNull(), F.col(USERS))).over(group))
        ok = (F.col(column) > 0) & (group_mean > 0)
        score = F.when(ok, F.abs(F.log(F.col(column) / group_mean)))
        word = F.when(F.col(column) > group_mean, F.lit(above)).otherwise(F.lit(below))
        candidates.append(F.struct(F.coalesce(score, F.lit(-1.0)).alias("score"), F.lit(-rank).alias("order"),
                                   F.when(ok, word).alias("word")))
    if not candidates:
        return F.lit(None).cast("string")
    best = F.sort_array(F.array(*candidates), asc=False)[0]
    return F.when(best["score"] > 0, best["word"])


def segment_name(overall_mean_value: Column, risk_tiers: Sequence[float]) -> Column:
    """'<value level>, <churn level>[, rising|declining][, <arm>-responsive|not promo-responsive]'.

    value: high (mean expected value >= 1.5 x the night's mean per user), low (<= 0.5 x), else mid;
    churn: loyal (mean churn < risk_tiers[0]), at risk (>= risk_tiers[1]), else wavering;
    trend: rising (mean orders trend > 1.2), declining (< 0.8), else nothing;
    promotion: the arm with the highest positive mean uplift_value, "not promo-responsive" when
    none is positive, nothing without arms.
    """
    low_cut, high_cut = float(risk_tiers[0]), float(risk_tiers[1])
    ratio = F.when(overall_mean_value > 0, F.col("mean_expected_value") / overall_mean_value).otherwise(F.lit(1.0))
    value = (F.when(ratio >= HIGH_VALUE_RATIO, F.lit("high value"))
             .when(ratio <= LOW_VALUE_RATIO, F.lit("low value")).otherwise(F.lit("mid value")))
    churn = (F.when(F.col("mean_churn_probability") < low_cut, F.lit("loyal"))
             .when(F.col("mean_churn_probability") >= high_cut, F.lit("at risk")).otherwise(F.lit("wavering")))
    trend = (F.when(F.col("mean_orders_trend") > RISING_TREND, F.lit("rising"))
             .when(F.col("mean_orders_trend") < DECLINING_TREND, F.lit("declining")))
    entries = F.map_entries(F.col("mean_uplift_value"))
    # highest mean first, then arm name: the first entry is the best arm
    best = F.element_at(F.array_sort(entries, lambda a, b: F.when(a["value"] > b["value"], -1)
                                     .when(a["value"] < b["value"], 1)
                                     .when(a["key"] < b["key"], -1).when(a["key"] > b["key"], 1).otherwise(0)), 1)
    promo = (F.when(F.size(entries) == 0, F.lit(None).cast("string"))
             .when(best["value"] > 0, F.concat(best["key"], F.lit("-responsive")))
             .otherwise(F.lit("not promo-responsive")))
    return F.concat_ws(", ", value, churn, trend, promo)


def segment_transitions(previous: DataFrame, current: DataFrame) -> DataFrame:
    """Users per (from_segment, to_segment) between two nights.

    Args:
        previous, current: user_id, learned_segment of each night (one row per user).

    Returns:
        from_segment (null: user not in `previous`), to_segment (null: not in `current`), users.
    """
    prev = previous.select(USER_ID, F.col(LEARNED_SEGMENT).alias(FROM_SEGMENT))
    cur = current.select(USER_ID, F.col(LEARNED_SEGMENT).alias(TO_SEGMENT))
    return (prev.join(cur, USER_ID, "full_outer").groupBy(FROM_SEGMENT, TO_SEGMENT)
            .agg(F.count(F.lit(1)).alias(USERS)))
