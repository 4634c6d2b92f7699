"""Normalise the bronze inputs of the feature builders and shared point-in-time expressions.

The builders accept the bronze tables as written by ingest, and also smaller frames that only
carry the required columns (e.g. CDNOW-style logs built by the evaluation team): optional
columns are added with their documented defaults here, so every feature function sees the
same columns. Day boundaries are those of the session time zone (UTC in every session built
by ``ulv_spark.spark.get_spark``).
"""
from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from ulv_spark.schemas import AS_OF_DATE, USER_ID

ORDER_COLUMNS = ("user_id", "order_id", "order_ts", "amount", "quantity", "category", "discount", "is_return")
EVENT_COLUMNS = ("user_id", "event_id", "event_ts", "event_type", "category")
EXPOSURE_COLUMNS = ("user_id", "campaign_id", "arm", "is_control", "exposed_ts", "response_window_days",
                    "observed_converted", "observed_value")


def _require(df: DataFrame, table: str, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{table}: missing required column(s) {missing}; got {df.columns}")


def _or_default(df: DataFrame, name: str, default: Column, type_: str) -> Column:
    value = F.col(name) if name in df.columns else default
    return value.cast(type_).alias(name)


def prepare_orders(orders: DataFrame) -> DataFrame:
    """Orders with exactly ORDER_COLUMNS; missing optional columns get their defaults.

    Grain: unchanged (one row per order). Required: user_id, order_ts, amount. Defaults:
    order_id = user_id|order_ts|amount, quantity/category/discount = null, is_return =
    amount < 0 (also where the column is null).
    """
    _require(orders, "orders", ("user_id", "order_ts", "amount"))
    derived_id = F.concat_ws("|", F.col(USER_ID).cast("string"), F.col("order_ts").cast("string"),
                             F.col("amount").cast("string"))
    is_return = F.coalesce(F.col("is_return"), F.col("amount") < 0) if "is_return" in orders.columns \
        else F.col("amount") < 0
    return orders.select(
        F.col(USER_ID).cast("string").alias(USER_ID),
        _or_default(orders, "order_id", derived_id, "string"),
        F.col("order_ts").cast("timestamp").alias("order_ts"),
        F.col("amount").cast("double").alias("amount"),
        _or_default(orders, "quantity", F.lit(None), "double"),
        _or_default(orders, "category", F.lit(None), "string"),
        _or_default(orders, "discount", F.lit(None), "double"),
        is_return.cast("boolean").alias("is_return"),
    )


def prepare_events(events: DataFrame) -> DataFrame:
    """Events with exactly EVENT_COLUMNS (event_type lower case); required: user_id, event_ts, event_type.

    Grain: unchanged (one row per event). Defaults: event_id = user_id|event_ts|event_type,
    category = null.
    """
    _require(events, "events", ("user_id", "event_ts", "event_type"))
    derived_id = F.concat_ws("|", F.col(USER_ID).cast("string"), F.col("event_ts").cast("string"),
                             F.col("event_type").cast("string"))
    return events.select(
        F.col(USER_ID).cast("string").alias(USER_ID),
        _or_default(events, "event_id", derived_id, "string"),
        F.col("event_ts").cast("timestamp").alias("event_ts"),
        F.lower(F.trim(F.col("event_type").cast("string"))).alias("event_type"),
        _or_default(events, "category", F.lit(None), "string"),
    )


def prepare_exposures(exposures: DataFrame) -> DataFrame:
    """Exposures with exactly EXPOSURE_COLUMNS; required: user_id, campaign_id, arm, exposed_ts.

    Grain: unchanged (one row per (user_id, campaign_id)). Defaults: is_control = (lower(arm) =
    'control'), response_window_days / observed_converted / observed_value = null (the
    builders then use features.default_response_window_days and outcomes from orders).
    """
    _require(exposures, "campaign_exposures", ("user_id", "campaign_id", "arm", "exposed_ts"))
    control = F.lower(F.col("arm").cast("string")) == F.lit("control")
    is_control = F.coalesce(F.col("is_control"), control) if "is_control" in exposures.columns else control
    return exposures.select(
        F.col(USER_ID).cast("string").alias(USER_ID),
        F.col("campaign_id").cast("string").alias("campaign_id"),
        F.col("arm").cast("string").alias("arm"),
        is_control.cast("boolean").alias("is_control"),
        F.col("exposed_ts").cast("timestamp").alias("exposed_ts"),
        _or_default(exposures, "response_window_days", F.lit(None), "int"),
        _or_default(exposures, "observed_converted", F.lit(None), "boolean"),
        _or_default(exposures, "observed_value", F.lit(None), "double"),
    )


def history(df: DataFrame, ts_col: str, dates) -> DataFrame:
    """`df` keyed by as-of date: one copy of each row per date in `dates` that it is strictly before.

    Grain: one row per (source row, as_of_date) with `ts_col` < as_of_date. Every feature
    function works on such keyed histories and groups by (user_id, as_of_date), so one Spark
    job builds the features at one date (user_features) or at many (training origins).
    """
    keyed = df.select("*", F.explode(F.array(*[F.lit(d) for d in dates])).alias(AS_OF_DATE))
    return keyed.filter(F.col(ts_col) < F.col(AS_OF_DATE).cast("timestamp"))


def with_dates(df: DataFrame, dates) -> DataFrame:
    """`df` repeated once per date in `dates`, with an as_of_date column (for undated inputs)."""
    return df.select("*", F.explode(F.array(*[F.lit(d) for d in dates])).alias(AS_OF_DATE))


def days_before_key(day: Column) -> Column:
    """Whole days from `day` to the row's as_of_date."""
    return F.datediff(F.col(AS_OF_DATE), day)


EXACT_SUM_TYPE = "decimal(28,6)"  # summed as DECIMAL(38,6): exact for any realistic order log


def exact_sum(value: Column) -> Column:
    """Sum of a DOUBLE column (money, units) that does not depend on the order of the rows.

    A floating-point sum changes in its last bits when Spark adds the same rows in another order
    (another task layout, a task re-run after a lost executor), and so would every feature and
    model input built on it. The values are summed as DECIMAL (rounded to 6 decimals, exact from
    there on) and the total returned as DOUBLE, so a re-run gives bit-identical features.
    """
    return F.sum(value.cast(EXACT_SUM_TYPE)).cast("double")


def exact_std_pop(value: Column) -> Column:
    """Population standard deviation of an integer-valued column, independent of row order.

    From exact integer sums: sqrt((n*sum(x^2) - sum(x)^2) / n^2). (Spark's stddev_pop updates a
    running mean in floating point, whose last bits depend on the order of the rows.)
    """
    x = value.cast("long")
    n = F.count(x)
    numerator = (n * F.sum(x * x) - F.sum(x) * F.sum(x)).cast("double")
    return F.when(n > 0, F.sqrt(F.greatest(numerator, F.lit(0.0)) / (n.cast("double") * n.cast("double"))))


def ratio(numerator: Column, denominator: Column) -> Column:
    """numerator / denominator, and 0.0 where the denominator is not > 0 (never null or NaN)."""
    return F.when(denominator > 0, numerator / denominator).otherwise(F.lit(0.0))


def days_between(later: Column, earlier: Column) -> Column:
    """Fractional days between two timestamps (microsecond precision)."""
    return (F.unix_micros(later) - F.unix_micros(earlier)) / F.lit(86_400_000_000.0)
