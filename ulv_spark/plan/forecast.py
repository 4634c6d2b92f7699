"""What a plan is expected to bring, with bootstrap intervals over users, beside send-all and send-none.

Point estimates are sums of the model's per-user expectations (uplift_conversion, uplift_value,
uplift_value_long, cost) over the users a scenario sends an arm. The intervals are a Poisson
bootstrap over users: replicate r weighs user u by w(u, r) ~ Poisson(1), drawn from
``xxhash64(user_id, seed, r)`` by the inverse CDF (a hash, so the same users get the same weights
in every scenario, on every executor, in every re-run); each replicate is a weighted sum (a Spark
aggregation over users × replicates), and the bounds are exact percentiles over the replicates.
Sums are added up in decimal (per-user values to 1e-12), so a re-run writes bit-identical
totals whatever order Spark adds the rows in. Nothing user-level is collected.
"""
from __future__ import annotations

import math
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from ulv_spark.plan.contracts import (ALL_ARMS, COST, SCENARIO, SCENARIO_PLAN, SCENARIO_SEND_ALL, SCENARIO_SEND_NONE,
                                      UPLIFT_CONVERSION, UPLIFT_VALUE, UPLIFT_VALUE_LONG)
from ulv_spark.schemas import ARM, USER_ID

_DECIMAL = "decimal(24,12)"  # per-user values to 1e-12 (up to 1e12); decimal sums are exact, so order-free
_MAX_WEIGHT = 10  # Poisson(1) weights are capped here (P(w > 10) < 1e-8)
_MEASURES = {"conversions": UPLIFT_CONVERSION, "revenue": UPLIFT_VALUE}
FORECAST_COLUMNS = ("scenario", "arm", "users_targeted", "expected_conversions", "conversions_low", "conversions_high",
                    "expected_revenue", "revenue_low", "revenue_high", "expected_revenue_long", "cost",
                    "expected_profit", "profit_low", "profit_high", "expected_profit_long", "roi")


def poisson_weight(seed: int, replicate: Column) -> Column:
    """w(user_id, r) ~ Poisson(1), a pure function of (user_id, seed, r)."""
    uniform = F.pmod(F.xxhash64(F.col(USER_ID), F.lit(int(seed)), replicate), F.lit(2 ** 53)).cast("double") / float(
        2 ** 53)
    weight = F.lit(0)
    cdf = 0.0
    for k in range(_MAX_WEIGHT):
        cdf += math.exp(-1.0) / math.factorial(k)
        weight = weight + F.when(uniform >= F.lit(cdf), 1).otherwise(0)
    return weight


def _exact(col) -> Column:
    return (F.col(col) if isinstance(col, str) else col).cast(_DECIMAL)


def exact_sum(col) -> Column:
    """Sum as a double, added up in decimal: the same total whatever the order of the rows (re-runs are equal)."""
    return F.sum(_exact(col)).cast("double")


def scenario_targets(plan: DataFrame, send_all: DataFrame) -> DataFrame:
    """Grain: one row per (scenario, user sent an arm): scenario, user_id, arm, the uplift columns and cost."""
    cols = [USER_ID, ARM, UPLIFT_CONVERSION, UPLIFT_VALUE, UPLIFT_VALUE_LONG, COST]
    return plan.select(F.lit(SCENARIO_PLAN).alias(SCENARIO), *cols).unionByName(
        send_all.select(F.lit(SCENARIO_SEND_ALL).alias(SCENARIO), *cols))


def campaign_forecast(targets: DataFrame, *, margin: float, replicates: int, seed: int, interval: float,
                      long_term: bool) -> DataFrame:
    """Per (scenario, arm) and per scenario total (arm 'all'): FORECAST_COLUMNS.

    Grain: one row per (scenario, arm) with users, plus one total row for each of plan,
    send_all_best_arm and send_none (send_none has only its total, all zeros).

    Args:
        targets: scenario_targets(...).
        margin: score.margin (profit = revenue * margin - cost).
        replicates: bootstrap replicates R.
        seed: seeds the bootstrap weights.
        interval: central coverage of the bounds, e.g. 0.9 -> the 5th and 95th percentiles.
        long_term: whether uplift_value_long is real (else the long columns are null).
    """
    spark = targets.sparkSession
    profit = F.col(UPLIFT_VALUE) * F.lit(float(margin)) - F.col(COST)
    both = targets.select(SCENARIO, ARM, USER_ID, UPLIFT_CONVERSION, UPLIFT_VALUE, UPLIFT_VALUE_LONG, COST,
                          profit.alias("_profit")).unionByName(
        targets.select(SCENARIO, F.lit(ALL_ARMS).alias(ARM), USER_ID, UPLIFT_CONVERSION, UPLIFT_VALUE,
                       UPLIFT_VALUE_LONG, COST, profit.alias("_profit")))
    points = both.groupBy(SCENARIO, ARM).agg(
        F.count(F.lit(1)).alias("users_targeted"), exact_sum(UPLIFT_CONVERSION).alias("expected_conversions"),
        exact_sum(UPLIFT_VALUE).alias("expected_revenue"), exact_sum(UPLIFT_VALUE_LONG).alias("_long"),
        exact_sum(COST).alias(COST), exact_sum("_profit").alias("expected_profit"))
    reps = spark.range(int(replicates)).select(F.col("id").cast("int").alias("_replicate"))
    weighted = both.crossJoin(F.broadcast(reps)).select(
        SCENARIO, ARM, "_replicate", poisson_weight(seed, F.col("_replicate")).alias("_w"), UPLIFT_CONVERSION,
        UPLIFT_VALUE, "_profit")
    per_rep = weighted.groupBy(SCENARIO, ARM, "_replicate").agg(
        *[exact_sum(F.col("_w") * _exact(c)).alias(name) for name, c in _MEASURES.items()],
        exact_sum(F.col("_w") * _exact("_profit")).alias("profit"))
    tail = (1.0 - float(interval)) / 2.0
    bounds = per_rep.groupBy(SCENARIO, ARM).agg(*[
        F.percentile(F.col(name), F.array(F.lit(tail), F.lit(1.0 - tail))).alias(f"_{name}_bounds")
        for name in (*_MEASURES, "profit")])
    joined = points.join(bounds, on=[SCENARIO, ARM], how="left")
    totals = spark.createDataFrame([(s, ALL_ARMS) for s in (SCENARIO_PLAN, SCENARIO_SEND_ALL, SCENARIO_SEND_NONE)],
                                   f"{SCENARIO} string, {ARM} string")
    missing = totals.join(joined.select(SCENARIO, ARM), on=[SCENARIO, ARM], how="left_anti")
    full = joined.unionByName(missing, allowMissingColumns=True)
    return full.select(*_output_columns(margin, long_term))


def _zero(col: str) -> Column:
    return F.coalesce(F.col(col), F.lit(0.0))


def _bound(name: str, i: int) -> Column:
    return F.coalesce(F.element_at(F.col(f"_{name}_bounds"), i), F.lit(0.0))


def _output_columns(margin: float, long_term: bool) -> list[Column]:
    none = F.lit(None).cast("double")
    long = _zero("_long") if long_term else none
    cost = _zero(COST)
    long_profit = long * F.lit(float(margin)) - cost if long_term else none
    return [
        F.col(SCENARIO), F.col(ARM), F.coalesce(F.col("users_targeted"), F.lit(0)).cast("bigint").alias("users_targeted"),
        _zero("expected_conversions").alias("expected_conversions"),
        _bound("conversions", 1).alias("conversions_low"), _bound("conversions", 2).alias("conversions_high"),
        _zero("expected_revenue").alias("expected_revenue"),
        _bound("revenue", 1).alias("revenue_low"), _bound("revenue", 2).alias("revenue_high"),
        long.alias("expected_revenue_long"), cost.alias(COST),
        _zero("expected_profit").alias("expected_profit"),
        _bound("profit", 1).alias("profit_low"), _bound("profit", 2).alias("profit_high"),
        long_profit.alias("expected_profit_long"),
        F.when(cost > 0, _zero("expected_profit") / cost).alias("roi"),
    ]
