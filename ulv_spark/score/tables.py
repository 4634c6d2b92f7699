"""Pure DataFrame functions that turn per-user predictions into the four gold score tables.

Input everywhere is the staging frame `score_predictions` (grain: one row per (user_id,
as_of_date)): user_id, as_of_date, model_version, run_id, expected_value, p_purchase,
value_p10, value_p90, churn_probability, arm_conversion / arm_value (ARRAY<DOUBLE>, one entry
per model arm, control first). Nothing here reads, writes, collects or looks at config.

Deciles are exact and deterministic without a single global window: users are put into value
buckets by cut points (from `approxQuantile`, computed by the job), ranked inside their bucket
(a window partitioned by bucket), and offset by the sizes of the buckets above. The cut points
only split the work; the ranks (order: expected_value desc, user_id asc) and the deciles (the
bucket sizes of SQL `ntile(10)`: the first n % 10 deciles get one extra user) do not depend on them.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from ulv_spark.names import (ARM_CONVERSION, ARM_VALUE, ARM_VALUE_LONG, CHURN_PROBABILITY, EXPECTED_VALUE, P_PURCHASE,
                             VALUE_P10, VALUE_P90)
from ulv_spark.schemas import AS_OF_DATE, HORIZON_DAYS, MODEL_VERSION, RISK_TIER, RUN_ID, USER_ID, VALUE_DECILE

RISK_TIER_NAMES = ("low", "medium", "high")
VALUE_BANDS = (("high", 1, 2), ("mid", 3, 6), ("low", 7, 10))  # band, first decile, last decile
# value band x churn band -> segment (the names in the USER_SEGMENTS contract comment)
SEGMENT_GRID = {
    ("high", "low"): "champion",
    ("high", "medium"): "at_risk_high_value",
    ("high", "high"): "at_risk_high_value",
    ("mid", "low"): "promising",
    ("mid", "medium"): "needs_attention",
    ("mid", "high"): "hibernating",
    ("low", "low"): "promising",
    ("low", "medium"): "hibernating",
    ("low", "high"): "lost",
}
_BUCKET, _RANK, _OFFSET, _TOTAL = "_bucket", "_rank_in_bucket", "_bucket_offset", "_n_users"


def check_risk_tiers(risk_tiers: Sequence[float]) -> tuple[float, float]:
    """The two churn-probability cut points (low < a <= medium < b <= high), validated.

    Raises:
        ValueError: not exactly two increasing values inside (0, 1).
    """
    cuts = tuple(float(t) for t in risk_tiers)
    if len(cuts) != 2 or not 0.0 < cuts[0] < cuts[1] < 1.0:
        raise ValueError(f"score.risk_tiers must be two increasing probabilities in (0, 1) "
                         f"(low/medium and medium/high cut points), got {list(risk_tiers)}")
    return cuts


def add_value_decile(predictions: DataFrame, *, cut_points: Sequence[float] = (),
                     value_col: str = EXPECTED_VALUE, deciles: int = 10) -> DataFrame:
    """Add `value_decile` (1 = top) with exactly the bucket sizes of `ntile(deciles)`.

    Grain: unchanged (one row per user_id of one as_of_date). Users are ordered by `value_col`
    descending, then user_id ascending, so ties are broken the same way on every run.

    Args:
        predictions: one as_of_date's rows; user_id unique.
        cut_points: values splitting the users into rank buckets (any values, any order; an
            empty list gives one bucket, i.e. one window over all users).
        value_col: the column ranked.
        deciles: number of quantile groups.
    """
    cuts = sorted({float(c) for c in cut_points})
    value = F.col(value_col)
    # bucket 0 holds the highest values: the number of cut points above the value
    bucket = (F.size(F.filter(F.array(*[F.lit(c) for c in cuts]), lambda c: c > value)) if cuts
              else F.lit(0))
    bucketed = predictions.withColumn(_BUCKET, bucket.cast("int"))
    in_bucket = (Window.partitionBy(_BUCKET).orderBy(value.desc(), F.col(USER_ID).asc())
                 .rowsBetween(Window.unboundedPreceding, Window.currentRow))
    ranked = bucketed.withColumn(_RANK, F.row_number().over(in_bucket) - 1)
    sizes = bucketed.groupBy(_BUCKET).agg(F.count(F.lit(1)).alias("_size"))
    # a window over the handful of buckets (not over users) turns sizes into offsets
    above = Window.orderBy(_BUCKET).rowsBetween(Window.unboundedPreceding, -1)
    everything = Window.orderBy(_BUCKET).rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    offsets = sizes.select(
        _BUCKET,
        F.coalesce(F.sum("_size").over(above), F.lit(0)).cast("long").alias(_OFFSET),
        F.sum("_size").over(everything).cast("long").alias(_TOTAL))
    joined = ranked.join(F.broadcast(offsets), on=_BUCKET, how="inner")
    return joined.select(*predictions.columns,
                         _ntile(F.col(_OFFSET) + F.col(_RANK), F.col(_TOTAL), deciles).alias(VALUE_DECILE))


def _ntile(rank0: Column, n: Column, groups: int) -> Column:
    """1-based group of 0-based rank `rank0` among `n`, with SQL ntile's group sizes."""
    small = F.floor(n / F.lit(groups)).cast("long")           # users per group
    extra = (n - small * F.lit(groups)).cast("long")          # first `extra` groups get one more
    boundary = extra * (small + 1)
    in_big = (F.floor(rank0 / (small + 1)) + 1).cast("int")
    in_small = (extra + F.floor((rank0 - boundary) / F.greatest(small, F.lit(1))) + 1).cast("int")
    return F.when(rank0 < boundary, in_big).otherwise(in_small)


def risk_tier(churn_probability: Column, risk_tiers: Sequence[float]) -> Column:
    """low below the first cut point, high at or above the second, medium between."""
    low_cut, high_cut = check_risk_tiers(risk_tiers)
    return (F.when(churn_probability < F.lit(low_cut), F.lit(RISK_TIER_NAMES[0]))
            .when(churn_probability < F.lit(high_cut), F.lit(RISK_TIER_NAMES[1]))
            .otherwise(F.lit(RISK_TIER_NAMES[2])))


def value_band(decile: Column) -> Column:
    """high / mid / low for deciles 1-2 / 3-6 / 7-10."""
    expr = None
    for band, first, last in VALUE_BANDS:
        cond = decile.between(first, last)
        expr = F.when(cond, F.lit(band)) if expr is None else expr.when(cond, F.lit(band))
    return expr


def user_value_table(scored: DataFrame, *, horizon_days: int) -> DataFrame:
    """`user_value` rows. Grain: one row per (user_id, as_of_date).

    Args:
        scored: predictions with `value_decile` (see add_value_decile).
        horizon_days: the model's prediction horizon.
    """
    return scored.select(
        USER_ID, AS_OF_DATE, F.lit(horizon_days).cast("int").alias(HORIZON_DAYS),
        EXPECTED_VALUE, P_PURCHASE, VALUE_P10, VALUE_P90, VALUE_DECILE, MODEL_VERSION, RUN_ID)


def user_churn_table(predictions: DataFrame, *, horizon_days: int, risk_tiers: Sequence[float]) -> DataFrame:
    """`user_churn` rows: churn probability and its risk tier. Grain: one row per (user_id, as_of_date)."""
    return predictions.select(
        USER_ID, AS_OF_DATE, F.lit(horizon_days).cast("int").alias(HORIZON_DAYS), CHURN_PROBABILITY,
        risk_tier(F.col(CHURN_PROBABILITY), risk_tiers).alias(RISK_TIER), MODEL_VERSION, RUN_ID)


def user_segments_table(scored: DataFrame, *, risk_tiers: Sequence[float]) -> DataFrame:
    """`user_segments` rows from the value x churn grid (SEGMENT_GRID). Grain: one row per (user_id, as_of_date).

    Args:
        scored: predictions with `value_decile` and `churn_probability`.
        risk_tiers: the two churn cut points (score.risk_tiers).
    """
    banded = scored.select(
        USER_ID, AS_OF_DATE, MODEL_VERSION, RUN_ID,
        value_band(F.col(VALUE_DECILE)).alias("value_band"),
        risk_tier(F.col(CHURN_PROBABILITY), risk_tiers).alias("churn_band"))
    segment = None
    for (v_band, c_band), name in SEGMENT_GRID.items():
        cond = (F.col("value_band") == F.lit(v_band)) & (F.col("churn_band") == F.lit(c_band))
        segment = F.when(cond, F.lit(name)) if segment is None else segment.when(cond, F.lit(name))
    return banded.select(USER_ID, AS_OF_DATE, segment.alias("segment"), "value_band", "churn_band",
                         MODEL_VERSION, RUN_ID)


def promo_uplift_table(predictions: DataFrame, *, arms: Sequence[str], arm_campaigns: Mapping[str, str],
                       margin: float, arm_costs: Mapping[str, float]) -> DataFrame:
    """`promo_uplift` rows: every non-control arm vs the control (arms[0]).

    Grain: one row per (user_id, as_of_date, campaign_id, arm) for arms[1:]; no rows when the
    model has fewer than two arms. uplift = arm outcome - control outcome (uplift_value_long:
    over the horizon, null without the model's long-term head); expected_profit =
    uplift_value * margin - arm_costs.get(arm, 0); recommended marks, per user, the arm with
    the highest positive expected_profit (on a tie the one listed first in `arms`).

    Args:
        predictions: with arm_conversion / arm_value arrays in the order of `arms`.
        arms: the model's arms, control first.
        arm_campaigns: arm -> campaign_id.
        margin: share of incremental spend that is profit.
        arm_costs: arm -> cost of sending it (missing arms cost 0).
    """
    treated = list(arms[1:])
    columns = [USER_ID, AS_OF_DATE, "campaign_id", "arm", "uplift_conversion", "uplift_value", "uplift_value_long",
               "expected_profit", "recommended", MODEL_VERSION, RUN_ID]
    if not treated:
        empty = predictions.where(F.lit(False))
        return empty.select(USER_ID, AS_OF_DATE, *[F.lit(None).cast(t).alias(c) for c, t in (
            ("campaign_id", "string"), ("arm", "string"), ("uplift_conversion", "double"),
            ("uplift_value", "double"), ("uplift_value_long", "double"), ("expected_profit", "double"),
            ("recommended", "boolean"))], MODEL_VERSION, RUN_ID).select(*columns)
    missing = [a for a in treated if a not in arm_campaigns]
    if missing:
        raise ValueError(f"arm(s) {missing} have no campaign in the model's arm_campaigns")
    conv, val = F.col(ARM_CONVERSION), F.col(ARM_VALUE)
    # element_at is 1-based; index 1 is the control
    uplift_conv = {a: F.element_at(conv, i + 2) - F.element_at(conv, 1) for i, a in enumerate(treated)}
    uplift_val = {a: F.element_at(val, i + 2) - F.element_at(val, 1) for i, a in enumerate(treated)}
    # long term: null when the model has no long-term head (its arm_value_long arrays are empty)
    long = F.col(ARM_VALUE_LONG) if ARM_VALUE_LONG in predictions.columns else F.array().cast("array<double>")
    has_long = F.coalesce(F.size(long), F.lit(0)) > F.lit(len(treated))
    uplift_long = {a: F.when(has_long, F.element_at(long, i + 2) - F.element_at(long, 1))
                   for i, a in enumerate(treated)}
    profit = {a: uplift_val[a] * F.lit(float(margin)) - F.lit(float(arm_costs.get(a, 0.0))) for a in treated}
    best = F.greatest(*profit.values()) if len(treated) > 1 else profit[treated[0]]
    structs = []
    for i, arm in enumerate(treated):
        is_best = (profit[arm] > F.lit(0.0)) & (profit[arm] == best)
        for earlier in treated[:i]:
            is_best = is_best & (profit[earlier] != best)
        structs.append(F.struct(
            F.lit(arm_campaigns[arm]).alias("campaign_id"), F.lit(arm).alias("arm"),
            uplift_conv[arm].alias("uplift_conversion"), uplift_val[arm].alias("uplift_value"),
            uplift_long[arm].cast("double").alias("uplift_value_long"),
            profit[arm].alias("expected_profit"), is_best.alias("recommended")))
    exploded = predictions.select(USER_ID, AS_OF_DATE, MODEL_VERSION, RUN_ID, F.inline(F.array(*structs)))
    return exploded.select(*columns)
