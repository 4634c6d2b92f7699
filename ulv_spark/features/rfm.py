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

from ulv_spark.features.declare import Feature, block
from ulv_spark.features.inputs import exact_std_pop, exact_sum, history
from ulv_spark.names import FREQUENCY, MONETARY, RECENCY, T_AGE
from ulv_spark.schemas import AS_OF_DATE, USER_ID

KEYS = (USER_ID, AS_OF_DATE)

# Columns of user_features (see declare.py); computed by purchase_periods.
RFM = block(
    Feature(FREQUENCY, "lifetimes frequency: distinct purchase days before as_of_date minus 1 (0 without purchases)"),
    Feature(RECENCY, "lifetimes recency: days from the first to the last purchase day (0 without purchases)"),
    Feature(T_AGE, "lifetimes T: days from the first purchase day to as_of_date - 1 day (0 without purchases)"),
    Feature(MONETARY, "lifetimes monetary_value: mean per-day purchase amount over the repeat purchase "
                      "days (first purchase day excluded); 0 when frequency = 0"),
)
GAPS = block(
    Feature("gap_mean_days", "Mean days between consecutive purchase days (= recency / frequency; 0 when frequency "
                             "= 0)"),
    Feature("gap_std_days", "Population standard deviation of the days between purchase days (0 when frequency = 0)"),
    Feature("gap_last_days", "Days between the last two purchase days (0 when frequency = 0)"),
)


def purchase_days(order_history: DataFrame) -> DataFrame:
    """Purchase periods of lifetimes (freq="D").

    Grain: one row per (user_id, as_of_date, order_day) with a purchase order (returns
    excluded) in the keyed history (see inputs.history: rows strictly before as_of_date).

    Returns:
        user_id, as_of_date, order_day DATE, day_amount DOUBLE (sum of the day's purchase amounts).
    """
    # shuffle by (user_id, as_of_date) only: the day aggregation, the window and the per-user
    # aggregation of purchase_periods then all run on this one partitioning
    return (order_history.filter(~F.col("is_return"))
            .repartition(*KEYS)
            .groupBy(*KEYS, F.to_date("order_ts").alias("order_day"))
            .agg(exact_sum(F.col("amount")).alias("day_amount"))
            .select(*KEYS, "order_day", "day_amount"))


def purchase_periods(order_history: DataFrame) -> DataFrame:
    """lifetimes RFM at observation end as_of_date - 1 day, plus the gaps between purchase days.

    Grain: one row per (user_id, as_of_date) with a purchase order before as_of_date.

    Args:
        order_history: prepared orders keyed by as_of_date (inputs.history).

    Returns:
        user_id, as_of_date, frequency, recency, T, monetary_value, gap_mean_days,
        gap_std_days (population), gap_last_days (DOUBLE; the gaps are 0 when frequency = 0).
    """
    return periods_from_days(purchase_days(order_history))


def periods_from_days(purchase_days_: DataFrame) -> DataFrame:
    """purchase_periods from the purchase days (the output of purchase_days, or of features.state).

    Grain: one row per (user_id, as_of_date) with a purchase day. Columns: as purchase_periods.
    """
    # lag() has its own fixed frame (the previous row); Spark rejects any other frame for it
    by_day = Window.partitionBy(*KEYS).orderBy("order_day")
    days = purchase_days_.select(
        *KEYS, "order_day", "day_amount",
        F.datediff("order_day", F.lag("order_day").over(by_day)).cast("double").alias("gap"))
    repeat = F.col("gap").isNotNull()
    per_user = (days.groupBy(*KEYS)
                .agg(F.min("order_day").alias("first_day"),
                     F.max("order_day").alias("last_day"),
                     F.count(F.lit(1)).alias("n_days"),
                     F.when(F.count(F.when(repeat, F.lit(1))) > 0,
                            exact_sum(F.when(repeat, F.col("day_amount"))) / F.count(F.when(repeat, F.lit(1))))
                     .alias("repeat_mean"),
                     exact_std_pop(F.col("gap")).alias("gap_std_days"),
                     F.max_by("gap", "order_day").alias("gap_last_days")))
    frequency = (F.col("n_days") - 1).cast("double")
    recency = F.datediff("last_day", "first_day").cast("double")
    return per_user.select(
        *KEYS,
        frequency.alias(FREQUENCY),
        recency.alias(RECENCY),
        F.datediff(F.date_sub(F.col(AS_OF_DATE), 1), "first_day").cast("double").alias(T_AGE),
        # lifetimes fills 0 for customers without repeat purchases
        F.coalesce(F.col("repeat_mean"), F.lit(0.0)).alias(MONETARY),
        F.when(frequency > 0, recency / frequency).otherwise(F.lit(0.0)).alias("gap_mean_days"),
        F.when(frequency > 0, F.col("gap_std_days")).otherwise(F.lit(0.0)).alias("gap_std_days"),
        F.when(frequency > 0, F.col("gap_last_days")).otherwise(F.lit(0.0)).alias("gap_last_days"),
    )


def user_rfm(orders: DataFrame, *, as_of: dt.date) -> DataFrame:
    """lifetimes RFM (frequency, recency, T, monetary_value) at observation end `as_of` - 1 day.

    Grain: one row per user_id with a purchase order strictly before `as_of`.

    Args:
        orders: prepared orders (see inputs.prepare_orders), any dates: later ones are ignored.
        as_of: the date D; only orders with order_ts < D are used.

    Returns:
        user_id, frequency, recency, T, monetary_value (DOUBLE; days, order currency).
    """
    return purchase_periods(history(orders, "order_ts", [as_of])).select(USER_ID, *RFM.names())
