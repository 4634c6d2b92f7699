"""Behaviour features before the as-of date D: windows, trends, baskets, categories, events, campaigns.

Every function takes histories keyed by as_of_date (inputs.history: only rows strictly
before the date) and returns one row per (user_id, as_of_date) that has the relevant rows;
`build.build_user_features` merges them onto the user population and fills the documented
defaults (0, with has_* indicators). Each block of columns is declared (declare.py) next to the
function that computes it; the inter-purchase gaps live in rfm.purchase_periods.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ulv_spark.features.declare import (ATTRIBUTE_PREFIX, EVENTS, EXPOSURES, Feature, block, slug,
                                        trend_pairs)
from ulv_spark.features.inputs import days_before_key, exact_sum, ratio
from ulv_spark.schemas import AS_OF_DATE, USER_ID, Col

ATTR_MISSING = f"{ATTRIBUTE_PREFIX}missing"  # the attribute features' own indicator (default 1: no row)
_NUMERIC_ATTRIBUTE_TYPES = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType,
                            T.DecimalType, T.BooleanType)
_ATTRIBUTE_SKIP = {"user_id", "run_id"}
KEYS = (USER_ID, AS_OF_DATE)


def _since(days: int) -> Column:
    return F.date_sub(F.col(AS_OF_DATE), days)


def _count_if(condition: Column) -> Column:
    return F.sum(F.when(condition, F.lit(1.0)).otherwise(F.lit(0.0)))


def _sum_if(condition: Column, value: Column) -> Column:
    return exact_sum(F.when(condition, value).otherwise(F.lit(0.0)))


# Columns of user_features computed by order_activity (see declare.py), in table order.
ORDER_TOTALS = block(
    Feature("orders_total", "Purchase orders (returns excluded) before as_of_date"),
    Feature("spend_total", "Net spend before as_of_date: purchases minus returns"),
    Feature("days_since_last_order", "as_of_date minus the last purchase day (0 without purchases)"),
)
ORDER_WINDOWS = block(
    Feature("orders_{w}d", "Purchase orders in [as_of_date - {w} days, as_of_date)"),
    Feature("spend_{w}d", "Net spend (purchases minus returns) in [as_of_date - {w} days, as_of_date)"),
    per="window",
)
BASKET = block(
    Feature("avg_order_value", "Mean amount of the purchase orders (first included; 0 without purchases)"),
    Feature("avg_basket_quantity", "Mean units per purchase order, over orders with a quantity (0 when none)"),
)
RETURNS_AND_DISCOUNTS = block(
    Feature("returns_total", "Return / cancellation orders before as_of_date"),
    Feature("return_rate", "Returns over all orders (purchases + returns); 0 when none"),
    Feature("return_value_share", "Returned value over purchased value; 0 when nothing was purchased"),
    Feature("discount_share", "Discount granted over list value (amount + discount) of the purchases; 0 when none"),
    Feature("discounted_order_share", "Share of purchase orders with a discount > 0"),
)


def order_activity(order_history: DataFrame, *, windows_days: Sequence[int]) -> DataFrame:
    """Order counts, spend, windows, basket, return and discount features.

    Grain: one row per (user_id, as_of_date) with any order (purchase or return) in the
    keyed history (inputs.history: rows strictly before as_of_date).

    Returns:
        user_id, as_of_date, first_order_day DATE, orders_total, spend_total,
        days_since_last_order, orders_<w>d and spend_<w>d per window, avg_order_value,
        avg_basket_quantity, returns_total, return_rate, return_value_share,
        discount_share, discounted_order_share (DOUBLE).
    """
    day = F.to_date("order_ts")
    purchase = ~F.col("is_return")
    windows = []
    for w in windows_days:
        recent = day >= _since(w)
        orders_w, spend_w = ORDER_WINDOWS.names(w)
        windows += [_count_if(recent & purchase).alias(orders_w), _sum_if(recent, F.col("amount")).alias(spend_w)]
    stats = (order_history.groupBy(*KEYS)
             .agg(F.min(day).alias("first_order_day"),
                  F.max(F.when(purchase, day)).alias("last_purchase_day"),
                  _count_if(purchase).alias("orders_total"),
                  _count_if(~purchase).alias("returns_total"),
                  exact_sum(F.col("amount")).alias("spend_total"),
                  _sum_if(purchase, F.col("amount")).alias("purchase_amount"),
                  _sum_if(~purchase, F.abs("amount")).alias("return_amount"),
                  exact_sum(F.when(purchase, F.col("quantity"))).alias("quantity_sum"),
                  F.count(F.when(purchase, F.col("quantity"))).alias("quantity_orders"),
                  _sum_if(purchase, F.coalesce(F.col("discount"), F.lit(0.0))).alias("discount_amount"),
                  _count_if(purchase & (F.col("discount") > 0)).alias("discounted_orders"),
                  *windows))
    window_cols = [c for w in windows_days for c in ORDER_WINDOWS.names(w)]
    list_value = F.col("purchase_amount") + F.col("discount_amount")
    return stats.select(
        *KEYS, "first_order_day", "orders_total", "spend_total",
        F.coalesce(days_before_key(F.col("last_purchase_day")).cast("double"), F.lit(0.0))
        .alias("days_since_last_order"),
        *window_cols,
        ratio(F.col("purchase_amount"), F.col("orders_total")).alias("avg_order_value"),
        ratio(F.col("quantity_sum"), F.col("quantity_orders").cast("double")).alias("avg_basket_quantity"),
        "returns_total",
        ratio(F.col("returns_total"), F.col("orders_total") + F.col("returns_total")).alias("return_rate"),
        ratio(F.col("return_amount"), F.col("purchase_amount")).alias("return_value_share"),
        ratio(F.col("discount_amount"), list_value).alias("discount_share"),
        ratio(F.col("discounted_orders"), F.col("orders_total")).alias("discounted_order_share"),
    )


TRENDS = block(
    Feature("orders_trend_{a}_{b}d", "Daily purchase-order rate of the last {a} days over that of the last {b} days "
                                     "(1 = steady); 0 when orders_{b}d = 0"),
    Feature("spend_trend_{a}_{b}d", "Daily net-spend rate of the last {a} days over that of the last {b} days; 0 "
                                    "when spend_{b}d <= 0"),
    per="trend_pair",
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
        (orders_a, spend_a), (orders_b, spend_b) = ORDER_WINDOWS.names(a), ORDER_WINDOWS.names(b)
        orders_trend, spend_trend = TRENDS.names((a, b))
        trends += [ratio(F.col(orders_a) * scale, F.col(orders_b)).alias(orders_trend),
                   ratio(F.col(spend_a) * scale, F.col(spend_b)).alias(spend_trend)]
    return df.select("*", *trends)


CATEGORIES = block(
    Feature("distinct_categories", "Distinct categories among the purchase orders"),
    Feature("top_category_share", "Share of purchase orders (with a category) in the user's most frequent category; "
                                  "0 when none"),
)


def category_stats(order_history: DataFrame) -> DataFrame:
    """Category diversity of the purchase orders.

    Grain: one row per (user_id, as_of_date) with a purchase order with a category in the
    keyed history.

    Returns:
        user_id, as_of_date, distinct_categories, top_category_share (share of the purchase
        orders with a category that are in the user's most frequent one) (DOUBLE).
    """
    # one shuffle by (user_id, as_of_date) serves both aggregations
    per_category = (order_history.filter(~F.col("is_return") & F.col("category").isNotNull())
                    .repartition(*KEYS)
                    .groupBy(*KEYS, "category")
                    .agg(F.count(F.lit(1)).alias("n")))
    return (per_category.groupBy(*KEYS)
            .agg(F.count(F.lit(1)).cast("double").alias("distinct_categories"),
                 (F.max("n") / F.sum("n")).alias("top_category_share"))
            .select(*KEYS, "distinct_categories", "top_category_share"))


# Columns computed by event_activity and view_conversion, in table order.
EVENT_TOTALS = block(
    Feature("has_events", "1 when the user has a behaviour event before as_of_date, else 0"),
    Feature("events_total", "Behaviour events before as_of_date"),
    source=EVENTS,
)
EVENT_WINDOWS = block(Feature("events_{w}d", "Behaviour events in [as_of_date - {w} days, as_of_date)"),
                      source=EVENTS, per="window")
EVENT_TYPES = block(Feature("events_{type_slug}_total", "Events of type '{type}' before as_of_date"),
                    source=EVENTS, per="event_type")
EVENT_RECENCY = block(
    Feature("days_since_last_event", "as_of_date minus the day of the last event (0 without events)"),
    Feature("view_purchase_day_rate", "Share of days with a '{cfg.view_event_type}' event that also have a purchase "
                                      "order (view -> purchase conversion); 0 without views"),
    source=EVENTS,
)


def event_count_column(event_type: str) -> str:
    """Column counting the events of `event_type` before as_of_date (e.g. events_view_total)."""
    return EVENT_TYPES.names(event_type)[0]


def event_activity(event_history: DataFrame, *, windows_days: Sequence[int], event_types: Iterable[str]) -> DataFrame:
    """Behaviour-event counts and recency.

    Grain: one row per (user_id, as_of_date) with an event in the keyed event history.

    Returns:
        user_id, as_of_date, first_event_day DATE, has_events, events_total, events_<w>d per
        window, events_<type>_total per configured type, days_since_last_event (DOUBLE).
    """
    day = F.to_date("event_ts")
    per_type = [_count_if(F.col("event_type") == F.lit(t.strip().lower())).alias(event_count_column(t))
                for t in event_types]
    per_window = [_count_if(day >= _since(w)).alias(EVENT_WINDOWS.names(w)[0]) for w in windows_days]
    counts = (event_history.groupBy(*KEYS)
              .agg(F.min(day).alias("first_event_day"), F.max(day).alias("last_event_day"),
                   F.count(F.lit(1)).cast("double").alias("events_total"), *per_window, *per_type))
    return counts.select(
        *KEYS, "first_event_day", F.lit(1.0).alias("has_events"), "events_total",
        *[EVENT_WINDOWS.names(w)[0] for w in windows_days], *[event_count_column(t) for t in event_types],
        days_before_key(F.col("last_event_day")).cast("double").alias("days_since_last_event"))


def view_conversion(event_history: DataFrame, order_history: DataFrame, *, view_event_type: str) -> DataFrame:
    """View -> purchase conversion: share of the days with a view that also have a purchase order.

    Grain: one row per (user_id, as_of_date) with a view event in the keyed event history.

    Returns:
        user_id, as_of_date, view_purchase_day_rate DOUBLE in [0, 1].
    """
    view_days = (event_history.filter(F.col("event_type") == F.lit(view_event_type.strip().lower()))
                 .select(*KEYS, F.to_date("event_ts").alias("day"), F.lit(True).alias("viewed"),
                         F.lit(False).alias("purchased")))
    buy_days = (order_history.filter(~F.col("is_return"))
                .select(*KEYS, F.to_date("order_ts").alias("day"), F.lit(False).alias("viewed"),
                        F.lit(True).alias("purchased")))
    # a union + aggregations instead of a join: view days and purchase days meet per (user, day)
    activity_days = (view_days.unionByName(buy_days)
                     .repartition(*KEYS)  # one shuffle serves both aggregations
                     .groupBy(*KEYS, "day")
                     .agg(F.max("viewed").alias("viewed"), F.max("purchased").alias("purchased")))
    return (activity_days.groupBy(*KEYS)
            .agg(_count_if(F.col("viewed") & F.col("purchased")).alias("both"), _count_if(F.col("viewed")).alias("views"))
            .filter(F.col("views") > 0)
            .select(*KEYS, ratio(F.col("both"), F.col("views")).alias("view_purchase_day_rate")))


CAMPAIGNS = block(
    Feature("has_exposures", "1 when the user was exposed to a campaign before as_of_date, else 0"),
    Feature("campaign_exposures_total", "Campaign exposures (any arm) before as_of_date"),
    Feature("campaign_treated_total", "Campaign exposures to a non-control arm before as_of_date"),
    Feature("days_since_last_exposure", "as_of_date minus the day of the last exposure (0 without exposures)"),
    Feature("campaign_responses_total", "Exposures whose response window ended by as_of_date and that converted "
                                        "(observed_converted, else a purchase in the window)"),
    Feature("campaign_response_rate", "campaign_responses_total over exposures whose response window ended by "
                                      "as_of_date; 0 when none"),
    Feature("campaign_response_value", "Spend in the response windows that ended by as_of_date (observed_value, "
                                       "else net spend in the window floored at 0)"),
    source=EXPOSURES,
)


def campaign_history(outcome_history: DataFrame) -> DataFrame:
    """Campaign exposure and response history.

    Grain: one row per (user_id, as_of_date) with an exposure before as_of_date. Input: the
    rows of labels.exposure_outcomes keyed by as_of_date (inputs.history on exposed_ts).
    Responses count only exposures whose response window ended by as_of_date, so no outcome
    after the cut is used.

    Returns:
        user_id, as_of_date, first_observed_exposure_day DATE (first exposure with an observed
        outcome: it puts a user of a campaign export into the population), has_exposures,
        campaign_exposures_total, campaign_treated_total, days_since_last_exposure,
        campaign_responses_total, campaign_response_rate, campaign_response_value (DOUBLE).
    """
    complete = F.col("response_end_ts") <= F.col(AS_OF_DATE).cast("timestamp")
    observed = F.col("observed_outcome") if "observed_outcome" in outcome_history.columns else F.lit(False)
    stats = (outcome_history.groupBy(*KEYS)
             .agg(F.min(F.when(observed, F.to_date("exposed_ts"))).alias("first_observed_exposure_day"),
                  F.count(F.lit(1)).cast("double").alias("campaign_exposures_total"),
                  _count_if(~F.col("is_control")).alias("campaign_treated_total"),
                  F.max(F.to_date("exposed_ts")).alias("last_exposure_day"),
                  _count_if(complete).alias("completed"),
                  _sum_if(complete, F.col("converted").cast("double")).alias("campaign_responses_total"),
                  _sum_if(complete, F.col("response_value")).alias("campaign_response_value")))
    return stats.select(
        *KEYS, "first_observed_exposure_day", F.lit(1.0).alias("has_exposures"), "campaign_exposures_total",
        "campaign_treated_total",
        days_before_key(F.col("last_exposure_day")).cast("double").alias("days_since_last_exposure"),
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
            cols.append(Col(f"{ATTRIBUTE_PREFIX}{slug(f.name)}", "DOUBLE", True,
                            f"User attribute {f.name} ({f.dataType.simpleString()}; null -> 0)"))
    for name, values in onehot.items():
        if name not in by_name:
            raise ValueError(f"features.attribute_onehot: user_attributes has no column {name!r}; "
                             f"got {sorted(by_name)}")
        for value in values:
            cols.append(Col(f"{ATTRIBUTE_PREFIX}{slug(name)}_{slug(value)}", "DOUBLE", True,
                            f"1 when user attribute {name} = '{value}', else 0"))
    cols.append(Col(ATTR_MISSING, "DOUBLE", True, "1 when the user has no user_attributes row"))
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
