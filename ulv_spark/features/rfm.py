"""RFM with the exact definitions of `lifetimes.utils.summary_data_from_transaction_data(freq="D")`.

Only purchase orders (is_return = false) strictly before the as-of date D count; the
observation end is D - 1 day, the last day whose data is used. Per lifetimes, all orders of a
day form one purchase period whose value is the sum of their amounts, and:

* frequency = number of purchase days - 1 (repeat purchase periods);
* recency = last purchase day - first purchase day, in days;
* T = (D - 1 day) - first purchase day, in days;
* monetary_value = mean value of the repeat purchase days (the first day excluded), 0 when
  frequency = 0.
"""
from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from ulv_spark.features.inputs import before
from ulv_spark.schemas import USER_ID

RFM_COLUMNS = ("frequency", "recency", "T", "monetary_value")


def purchase_days(orders: DataFrame, *, as_of: dt.date) -> DataFrame:
    """Purchase periods of lifetimes (freq="D") before `as_of`.

    Grain: one row per (user_id, order_day) with at least one purchase order (returns
    excluded) strictly before `as_of`.

    Returns:
        user_id, order_day DATE, day_amount DOUBLE (sum of the day's purchase amounts),
        day_orders BIGINT.
    """
    history = orders.filter(before("order_ts", as_of) & ~F.col("is_return"))
    return (history
            .groupBy(USER_ID, F.to_date("order_ts").alias("order_day"))
            .agg(F.sum("amount").alias("day_amount"), F.count(F.lit(1)).alias("day_orders"))
            .select(USER_ID, "order_day", "day_amount", "day_orders"))


def purchase_periods(orders: DataFrame, *, as_of: dt.date) -> DataFrame:
    """lifetimes RFM at observation end `as_of` - 1 day, plus the gaps between purchase days.

    Grain: one row per user_id with a purchase order strictly before `as_of`.

    Args:
        orders: prepared orders (see features.inputs.prepare_orders).
        as_of: the run date D; only orders with order_ts < D are used.

    Returns:
        user_id, frequency, recency, T, monetary_value, gap_mean_days, gap_std_days
        (population), gap_last_days (DOUBLE; the gaps are null when frequency = 0).
    """
    observation_end = as_of - dt.timedelta(days=1)
    # lag() has its own fixed frame (the previous row); Spark rejects any other frame for it
    by_day = Window.partitionBy(USER_ID).orderBy("order_day")
    days = purchase_days(orders, as_of=as_of).select(
        USER_ID, "order_day", "day_amount",
        F.datediff("order_day", F.lag("order_day").over(by_day)).cast("double").alias("gap"))
    repeat = F.col("gap").isNotNull()
    per_user = (days.groupBy(USER_ID)
                .agg(F.min("order_day").alias("first_day"),
                     F.max("order_day").alias("last_day"),
                     F.count(F.lit(1)).alias("n_days"),
                     F.avg(F.when(repeat, F.col("day_amount"))).alias("repeat_mean"),
                     F.stddev_pop("gap").alias("gap_std_days"),
                     F.max_by("gap", "order_day").alias("gap_last_days")))
    frequency = (F.col("n_days") - 1).cast("double")
    recency = F.datediff("last_day", "first_day").cast("double")
    return per_user.select(
        USER_ID,
        frequency.alias("frequency"),
        recency.alias("recency"),
        F.datediff(F.lit(observation_end), "first_day").cast("double").alias("T"),
        # lifetimes fills 0 for customers without repeat purchases
        F.coalesce(F.col("repeat_mean"), F.lit(0.0)).alias("monetary_value"),
        F.when(frequency > 0, recency / frequency).alias("gap_mean_days"),
        F.when(frequency > 0, F.col("gap_std_days")).alias("gap_std_days"),
        F.when(frequency > 0, F.col("gap_last_days")).alias("gap_last_days"),
    )


def user_rfm(orders: DataFrame, *, as_of: dt.date) -> DataFrame:
    """lifetimes RFM (frequency, recency, T, monetary_value) at observation end `as_of` - 1 day.

    Grain: one row per user_id with a purchase order strictly before `as_of`.

    Returns:
        user_id, frequency, recency, T, monetary_value (DOUBLE; days, order currency).
    """
    return purchase_periods(orders, as_of=as_of).select(USER_ID, *RFM_COLUMNS)
