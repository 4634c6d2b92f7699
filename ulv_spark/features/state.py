"""Incremental features state: per-user daily aggregates (`user_day`) kept in Delta.

A night does not re-aggregate the whole order log: the users with new or changed orders are
found from the night's rows, their days are recomputed from bronze orders (so a late row, a
return or a corrected order lands exactly, and a day that lost its last order is removed), and
the result is MERGEd into `user_day`. The RFM and gap columns of user_features at any as-of date
then come from `user_day` alone (`rfm_from_user_day`), through the same per-user aggregation
as the full recompute (rfm.periods_from_days), so the two are equal to the bit.

State still missing (issue 16): the lifetime aggregates and the last-L events, and the other
feature blocks computed from state; the features job does not read `user_day` yet.
"""
from __future__ import annotations

from typing import Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ulv_spark.features.inputs import exact_sum
from ulv_spark.features.rfm import GAPS, RFM, periods_from_days
from ulv_spark.schemas import AS_OF_DATE, USER_ID

DAY_KEYS = (USER_ID, "order_day")
DAY_COLUMNS = (USER_ID, "order_day", "purchase_amount", "purchase_orders", "return_amount", "return_orders")
_DELETE = "_delete"


def user_day_rows(orders: DataFrame) -> DataFrame:
    """Daily per-user aggregates of prepared orders (inputs.prepare_orders).

    Grain: one row per (user_id, order_day) with an order. Columns: DAY_COLUMNS. The purchase
    amount is summed exactly as rfm.purchase_days sums it, so the RFM from it is identical.
    """
    purchase, is_return = ~F.col("is_return"), F.col("is_return")
    return (orders.groupBy(USER_ID, F.to_date("order_ts").alias("order_day"))
            .agg(exact_sum(F.when(purchase, F.col("amount"))).alias("purchase_amount"),
                 F.count(F.when(purchase, F.lit(1))).alias("purchase_orders"),
                 exact_sum(F.when(is_return, F.col("amount"))).alias("return_amount"),
                 F.count(F.when(is_return, F.lit(1))).alias("return_orders"))
            .select(*DAY_COLUMNS))


def touched_users(new_orders: DataFrame) -> DataFrame:
    """The users whose state must be recomputed: every user with a new or changed order. Grain: user_id."""
    return new_orders.select(USER_ID).distinct()


def user_day_changes(orders: DataFrame, state: DataFrame, users: DataFrame) -> DataFrame:
    """The rows to MERGE into `user_day` for `users`: their recomputed days, and deletions.

    Grain: one row per (user_id, order_day) of the touched users, in the new state or the old.
    Columns: DAY_COLUMNS + `_delete` (true for an old day that no longer has an order: an order
    moved to another day, or removed). Only the touched users' orders are aggregated.
    """
    fresh = user_day_rows(orders.join(users, on=USER_ID, how="left_semi"))
    old_keys = state.join(users, on=USER_ID, how="left_semi").select(*DAY_KEYS)
    gone = old_keys.join(fresh.select(*DAY_KEYS), on=list(DAY_KEYS), how="left_anti")
    gone_rows = gone.select(USER_ID, "order_day", F.lit(None).cast("double").alias("purchase_amount"),
                            F.lit(0).cast("bigint").alias("purchase_orders"),
                            F.lit(None).cast("double").alias("return_amount"),
                            F.lit(0).cast("bigint").alias("return_orders"), F.lit(True).alias(_DELETE))
    return fresh.select(*DAY_COLUMNS, F.lit(False).alias(_DELETE)).unionByName(gone_rows)


def rfm_from_user_day(user_day: DataFrame, dates: Sequence) -> DataFrame:
    """lifetimes RFM and the purchase-day gaps at each date in `dates`, from `user_day` alone.

    Grain: one row per (user_id, as_of_date) with a purchase day strictly before as_of_date.
    Columns: user_id, as_of_date, the RFM and GAPS columns (as rfm.purchase_periods).
    """
    keyed = user_day.filter(F.col("purchase_orders") > 0).select(
        USER_ID, "order_day", F.col("purchase_amount").alias("day_amount"),
        F.explode(F.array(*[F.lit(d) for d in dates])).alias(AS_OF_DATE))
    days = keyed.filter(F.col("order_day") < F.col(AS_OF_DATE)).select(USER_ID, AS_OF_DATE, "order_day", "day_amount")
    return periods_from_days(days).select(USER_ID, AS_OF_DATE, *RFM.names(), *GAPS.names())


def update_user_day(spark, ref, contract, orders: DataFrame, new_orders: DataFrame) -> dict:
    """MERGE the touched users' recomputed days into the `user_day` Delta table at `ref`; Delta's counts.

    Args:
        orders: every prepared bronze order (read only for the touched users).
        new_orders: the night's new or changed orders (e.g. the bronze rows this ingest wrote).

    Days that no longer have an order are deleted (lake.merge's delete flag).
    """
    from ulv_spark import lake

    lake.ensure_table(spark, ref, contract)
    state = lake.read_table(spark, ref)
    changes = user_day_changes(orders, state, touched_users(new_orders))
    return lake.merge(spark, changes, ref, contract, keys=DAY_KEYS, delete_flag=_DELETE)
