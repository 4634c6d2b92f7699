"""Behaviour features before the as-of date D: windows, trends, gaps, baskets, events, campaigns.

Every function is point in time (only rows strictly before D) and returns one row per user
that has the relevant source rows; `build.build_user_features` left-joins them onto the user
population and fills the documented defaults (0, with has_* indicators). Column meanings are
the comments of `schemas.feature_table_columns`.
"""
from __future__ import annotations

import datetime as dt
from typing import Iterable, Mapping, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ulv_spark.features.inputs import before, ratio
from ulv_spark.features.labels import exposure_outcomes
from ulv_spark.schemas import ATTRIBUTE_PREFIX, USER_ID, Col, event_count_column, slug, trend_pairs

_NUMERIC_ATTRIBUTE_TYPES = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType,
                            T.DecimalType, T.BooleanType)
_ATTRIBUTE_SKIP = {"user_id", "run_id"}


def _since(as_of: dt.date, days: int) -> Column:
    return F.date_sub(F.lit(as_of), days)


def _count_if(condition: Column) -> Column:
    return F.sum(F.when(condition, F.lit(1.0)).otherwise(F.lit(0.0)))


def _sum_if(condition: Column, value: Column) -> Column:
    return F.sum(F.when(condition, value).otherwise(F.lit(0.0)))


def order_activity(orders: DataFrame, *, as_of: dt.date, windows_days: Sequence[int]) -> DataFrame:
    """Order counts, spend, windows, basket, category, return and discount features.

    Grain: one row per user_id with any order (purchase or return) strictly before `as_of`.

    Returns:
        user_id, first_order_day DATE, orders_total, spend_total, days_since_last_order,
        orders_<w>d, spend_<w>d per window, avg_order_value, avg_basket_quantity,
        distinct_categories, returns_total, return_rate, return_value_share, discount_share,
        discounted_order_share (DOUBLE).
    """
    day = F.to_date("order_ts")
    purchase = ~F.col("is_return")
    windows = []
    for w in windows_days:
        recent = day >= _since(as_of, w)
        windows += [_count_if(recent & purchase).alias(f"orders_{w}d"),
                    _sum_if(recent, F.col("amount")).alias(f"spend_{w}d")]
    stats = (orders.filter(before("order_ts", as_of))
             .groupBy(USER_ID)
             .agg(F.min(day).alias("first_order_day"),
                  F.max(F.when(purchase, day)).alias("last_purchase_day"),
                  _count_if(purchase).alias("orders_total"),
                  _count_if(~purchase).alias("returns_total"),
                  F.sum("amount").alias("spend_total"),
                  _sum_if(purchase, F.col("amount")).alias("purchase_amount"),
                  _sum_if(~purchase, F.abs("amount")).alias("return_amount"),
                  F.sum(F.when(purchase, F.col("quantity"))).alias("quantity_sum"),
                  F.count(F.when(purchase, F.col("quantity"))).alias("quantity_orders"),
                  F.count_distinct(F.when(purchase, F.col("category"))).alias("distinct_categories"),
                  _sum_if(purchase, F.coalesce(F.col("discount"), F.lit(0.0))).alias("discount_amount"),
                  _count_if(purchase & (F.col("discount") > 0)).alias("discounted_orders"),
                  *windows))
    window_cols = [c for w in windows_days for c in (f"orders_{w}d", f"spend_{w}d")]
    list_value = F.col("purchase_amount") + F.col("discount_amount")
    return stats.select(
        USER_ID, "first_order_day", "orders_total", "spend_total",
        F.coalesce(F.datediff(F.lit(as_of), "last_purchase_day").cast("double"), F.lit(0.0))
        .alias("days_since_last_order"),
        *window_cols,
        ratio(F.col("purchase_amount"), F.col("orders_total")).alias("avg_order_value"),
        ratio(F.col("quantity_sum"), F.col("quantity_orders").cast("double")).alias("avg_basket_quantity"),
        F.col("distinct_categories").cast("double").alias("distinct_categories"),
        "returns_total",
        ratio(F.col("returns_total"), F.col("orders_total") + F.col("returns_total")).alias("return_rate"),
        ratio(F.col("return_amount"), F.col("purchase_amount")).alias("return_value_share"),
        ratio(F.col("discount_amount"), list_value).alias("discount_share"),
        ratio(F.col("discounted_orders"), F.col("orders_total")).alias("discounted_order_share"),
    )


def trend_ratios(df: DataFrame, *, windows_days: Sequence[int]) -> DataFrame:
    """Add orders_trend_<a>_<b>d and spend_trend_<a>_<b>d for consecutive windows a < b.

    Grain: unchanged. Each ratio is the daily rate in the last a days over the daily rate in
    the last b days (1 = steady, > 1 = accelerating), 0 when the longer window is empty.
    Needs the orders_<w>d and spend_<w>d columns.
    """
    trends = []
    for a, b in trend_pairs(windows_days):
        scale = F.lit(b / a)
        trends += [ratio(F.col(f"orders_{a}d") * scale, F.col(f"orders_{b}d")).alias(f"orders_trend_{a}_{b}d"),
                   ratio(F.col(f"spend_{a}d") * scale, F.col(f"spend_{b}d")).alias(f"spend_trend_{a}_{b}d")]
    return df.select("*", *trends)


def category_concentration(orders: DataFrame, *, as_of: dt.date) -> DataFrame:
    """Share of a user's purchase orders that fall in their most frequent category.

    Grain: one row per user_id with a purchase order with a category before `as_of`.

    Returns:
        user_id, top_category_share DOUBLE in (0, 1].
    """
    per_category = (orders.filter(before("order_ts", as_of) & ~F.col("is_return") & F.col("category").isNotNull())
                    .groupBy(USER_ID, "category")
                    .agg(F.count(F.lit(1)).alias("n")))
    return (per_category.groupBy(USER_ID)
            .agg((F.max("n") / F.sum("n")).alias("top_category_share"))
            .select(USER_ID, "top_category_share"))


def event_activity(events: DataFrame, orders: DataFrame, *, as_of: dt.date, windows_days: Sequence[int],
                   event_types: Iterable[str], view_event_type: str) -> DataFrame:
    """Behaviour-event counts, recency and view -> purchase day conversion before `as_of`.

    Grain: one row per user_id with a behaviour event strictly before `as_of`.

    Returns:
        user_id, first_event_day DATE, has_events, events_total, events_<w>d per window,
        events_<type>_total per configured type, days_since_last_event,
        view_purchase_day_rate (DOUBLE).
    """
    day = F.to_date("event_ts")
    per_type = [_count_if(F.col("event_type") == F.lit(t.strip().lower())).alias(event_count_column(t))
                for t in event_types]
    per_window = [_count_if(day >= _since(as_of, w)).alias(f"events_{w}d") for w in windows_days]
    history = events.filter(before("event_ts", as_of))
    counts = (history.groupBy(USER_ID)
              .agg(F.min(day).alias("first_event_day"), F.max(day).alias("last_event_day"),
                   F.count(F.lit(1)).cast("double").alias("events_total"), *per_window, *per_type))

    view_days = (history.filter(F.col("event_type") == F.lit(view_event_type.strip().lower()))
                 .select(USER_ID, day.alias("day"), F.lit(True).alias("viewed"), F.lit(False).alias("purchased")))
    buy_days = (orders.filter(before("order_ts", as_of) & ~F.col("is_return"))
                .select(USER_ID, F.to_date("order_ts").alias("day"), F.lit(False).alias("viewed"),
                        F.lit(True).alias("purchased")))
    # a union + two aggregations instead of a join: view days and purchase days meet per (user, day)
    activity_days = (view_days.unionByName(buy_days)
                     .groupBy(USER_ID, "day")
                     .agg(F.max("viewed").alias("viewed"), F.max("purchased").alias("purchased")))
    conversion = (activity_days.groupBy(USER_ID)
                  .agg(ratio(_count_if(F.col("viewed") & F.col("purchased")), _count_if(F.col("viewed")))
                       .alias("view_purchase_day_rate")))
    type_cols = [event_count_column(t) for t in event_types]
    return (counts.join(conversion, on=USER_ID, how="left")
            .select(USER_ID, "first_event_day", F.lit(1.0).alias("has_events"), "events_total",
                    *[f"events_{w}d" for w in windows_days], *type_cols,
                    F.datediff(F.lit(as_of), "last_event_day").cast("double").alias("days_since_last_event"),
                    F.coalesce("view_purchase_day_rate", F.lit(0.0)).alias("view_purchase_day_rate")))


def campaign_history(exposures: DataFrame, orders: DataFrame, *, as_of: dt.date,
                     default_response_window_days: int) -> DataFrame:
    """Campaign exposure and response history before `as_of`.

    Grain: one row per user_id with a campaign exposure strictly before `as_of`. Responses
    count only exposures whose response window ended by `as_of`, so no outcome after the
    cut is used (observed_* columns of such exposures describe the past too).

    Returns:
        user_id, has_exposures, campaign_exposures_total, campaign_treated_total,
        days_since_last_exposure, campaign_responses_total, campaign_response_rate,
        campaign_response_value (DOUBLE).
    """
    past = exposures.filter(before("exposed_ts", as_of))
    outcomes = exposure_outcomes(past, orders.filter(before("order_ts", as_of)),
                                 default_response_window_days=default_response_window_days)
    complete = F.col("response_end_ts") <= F.lit(as_of).cast("timestamp")
    stats = (outcomes.groupBy(USER_ID)
             .agg(F.count(F.lit(1)).cast("double").alias("campaign_exposures_total"),
                  _count_if(~F.col("is_control")).alias("campaign_treated_total"),
                  F.max(F.to_date("exposed_ts")).alias("last_exposure_day"),
                  _count_if(complete).alias("completed"),
                  _sum_if(complete, F.col("converted").cast("double")).alias("campaign_responses_total"),
                  _sum_if(complete, F.col("response_value")).alias("campaign_response_value")))
    return stats.select(
        USER_ID, F.lit(1.0).alias("has_exposures"), "campaign_exposures_total", "campaign_treated_total",
        F.datediff(F.lit(as_of), "last_exposure_day").cast("double").alias("days_since_last_exposure"),
        "campaign_responses_total",
        ratio(F.col("campaign_responses_total"), F.col("completed")).alias("campaign_response_rate"),
        "campaign_response_value",
    )


def attribute_columns(attributes_schema: T.StructType, *, onehot: Mapping[str, Sequence[str]]) -> tuple[Col, ...]:
    """The attr_* feature columns that `attribute_features` derives from a user_attributes schema.

    Numeric and boolean attributes become attr_<name> (null -> 0); the string attributes named
    in `onehot` become attr_<name>_<value> indicators; other columns are left out. A final
    attr_missing is 1 for users without a user_attributes row.
    """
    cols = []
    by_name = {f.name: f for f in attributes_schema.fields}
    for f in attributes_schema.fields:
        if f.name.lower() in _ATTRIBUTE_SKIP:
            continue
        if isinstance(f.dataType, _NUMERIC_ATTRIBUTE_TYPES):
            cols.append(Col(f"{ATTRIBUTE_PREFIX}{slug(f.name)}", "DOUBLE", False,
                            f"User attribute {f.name} ({f.dataType.simpleString()}; null -> 0)"))
    for name, values in onehot.items():
        if name not in by_name:
            raise ValueError(f"features.attribute_onehot: user_attributes has no column {name!r}; "
                             f"got {sorted(by_name)}")
        for value in values:
            cols.append(Col(f"{ATTRIBUTE_PREFIX}{slug(name)}_{slug(value)}", "DOUBLE", False,
                            f"1 when user attribute {name} = '{value}', else 0"))
    cols.append(Col(f"{ATTRIBUTE_PREFIX}missing", "DOUBLE", False, "1 when the user has no user_attributes row"))
    names = [c.name for c in cols]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"user_attributes: columns {duplicated} collide after lower-casing; rename them")
    return tuple(cols)


def attribute_features(attributes: DataFrame, *, onehot: Mapping[str, Sequence[str]]) -> DataFrame:
    """User attributes as DOUBLE feature columns (see `attribute_columns`), without attr_missing.

    Grain: one row per user_id of user_attributes (a snapshot: attributes carry no time, so
    they are joined as they are at run time). Rows must be unique per user_id.

    Returns:
        user_id, attr_* (DOUBLE, except attr_missing which the builder adds after its join).
    """
    cols = []
    for f in attributes.schema.fields:
        if f.name.lower() in _ATTRIBUTE_SKIP or not isinstance(f.dataType, _NUMERIC_ATTRIBUTE_TYPES):
            continue
        cols.append(F.coalesce(F.col(f.name).cast("double"), F.lit(0.0)).alias(f"{ATTRIBUTE_PREFIX}{slug(f.name)}"))
    for name, values in onehot.items():
        for value in values:
            hit = F.col(name).cast("string") == F.lit(value)
            cols.append(F.when(hit, F.lit(1.0)).otherwise(F.lit(0.0)).alias(f"{ATTRIBUTE_PREFIX}{slug(name)}_{slug(value)}"))
    return attributes.select(F.col(USER_ID).cast("string").alias(USER_ID), *cols)
