"""Training labels from the window [D_k, D_k + H) after each past origin D_k, and campaign outcomes.

* value: net spend (purchases minus returns) of orders with order_ts in [D_k, D_k + H),
  floored at 0; purchases: purchase orders in the window; churned: 1 when there is none.
* campaign: the user's first exposure (by exposed_ts, then campaign_id) with exposed_ts in
  [D_k, D_k + H) whose response window [exposed_ts, exposed_ts + response_window_days) also
  ends inside [D_k, D_k + H), so that no label reads data from after the window; its arm and
  outcome. observed_converted / observed_value win over the outcome derived from orders.
* examples from exposures: a user with such an exposure whose outcome is observed is a
  training example at D_k even when nothing of the user is seen before D_k (a campaign
  export: the experiment, not the order log, defines who is in it); see
  :func:`observed_exposure_examples`.
"""
from __future__ import annotations

from typing import Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from ulv_spark.features.inputs import exact_sum
from ulv_spark.schemas import (ARM, CAMPAIGN_ID, IS_CONTROL, LABEL_CHURNED, LABEL_CONVERTED, LABEL_PURCHASES,
                               LABEL_RESPONSE_VALUE, LABEL_VALUE, ORIGIN_DATE, USER_ID)

KEYS = (USER_ID, ORIGIN_DATE)


def _window_end(horizon_days: int) -> Column:
    return F.date_add(F.col(ORIGIN_DATE), horizon_days).cast("timestamp")


def in_label_window(df: DataFrame, ts_col: str, *, origins: Sequence, horizon_days: int) -> DataFrame:
    """`df` keyed by origin: one copy of each row per origin D_k with `ts_col` in [D_k, D_k + H).

    Grain: one row per (source row, origin_date) in that origin's label window.
    """
    keyed = df.select("*", F.explode(F.array(*[F.lit(d) for d in origins])).alias(ORIGIN_DATE))
    inside = (F.col(ts_col) >= F.col(ORIGIN_DATE).cast("timestamp")) & (F.col(ts_col) < _window_end(horizon_days))
    return keyed.filter(inside)


def window_labels(orders: DataFrame, *, origins: Sequence, horizon_days: int) -> DataFrame:
    """Spend, purchases and churn of each user in [D_k, D_k + horizon_days) for each origin D_k.

    Grain: one row per (user_id, origin_date) with an order in the window (users without one
    get value 0, purchases 0, churned 1 from the caller).

    Returns:
        user_id, origin_date, label_value DOUBLE, label_purchases INT, label_churned INT.
    """
    window = (in_label_window(orders, "order_ts", origins=origins, horizon_days=horizon_days)
              .groupBy(*KEYS)
              .agg(exact_sum(F.col("amount")).alias("net"),
                   F.sum(F.when(~F.col("is_return"), F.lit(1)).otherwise(F.lit(0))).alias("purchases")))
    return window.select(
        *KEYS,
        F.greatest(F.col("net"), F.lit(0.0)).alias(LABEL_VALUE),
        F.col("purchases").cast("int").alias(LABEL_PURCHASES),
        F.when(F.col("purchases") > 0, F.lit(0)).otherwise(F.lit(1)).alias(LABEL_CHURNED),
    )


def exposure_outcomes(exposures: DataFrame, orders: DataFrame, *, default_response_window_days: int) -> DataFrame:
    """The outcome of each exposure in its response window [exposed_ts, response_end_ts).

    Grain: one row per exposure (user_id, campaign_id). converted / response_value are the
    observed_* columns where given, else derived from the orders: converted = a purchase
    order in the window, response_value = net spend in the window floored at 0. An outcome
    reads orders up to response_end_ts only, so consumers stay point in time by using the
    exposures whose response_end_ts is at or before their cut.

    Returns:
        user_id, campaign_id, arm, is_control, exposed_ts, response_end_ts TIMESTAMP,
        converted INT, response_value DOUBLE, observed_outcome BOOLEAN (observed_converted or
        observed_value given).
    """
    days = F.coalesce(F.col("response_window_days"), F.lit(default_response_window_days))
    windows = exposures.select(
        USER_ID, "campaign_id", "arm", "is_control", "exposed_ts", "observed_converted", "observed_value",
        F.timestamp_add("DAY", days, F.col("exposed_ts")).alias("response_end_ts"))
    order_rows = orders.select(F.col(USER_ID).alias("o_user"), "order_ts", "amount", "is_return")
    in_response = ((F.col("o_user") == F.col(USER_ID)) & (F.col("order_ts") >= F.col("exposed_ts"))
                   & (F.col("order_ts") < F.col("response_end_ts")))
    exposure_cols = ("arm", "is_control", "exposed_ts", "response_end_ts", "observed_converted", "observed_value")
    derived = (windows.join(order_rows, on=in_response, how="left")
               .groupBy(USER_ID, "campaign_id")
               # one exposure per (user_id, campaign_id) (the bronze key): first() just carries it
               .agg(*[F.first(c).alias(c) for c in exposure_cols],
                    F.coalesce(exact_sum(F.col("amount")), F.lit(0.0)).alias("net"),
                    F.count(F.when(~F.col("is_return"), F.lit(1))).alias("purchases")))
    derived_converted = F.when(F.col("purchases") > 0, F.lit(1)).otherwise(F.lit(0))
    return derived.select(
        USER_ID, "campaign_id", "arm", "is_control", "exposed_ts", "response_end_ts",
        F.coalesce(F.col("observed_converted").cast("int"), derived_converted).alias("converted"),
        F.coalesce(F.col("observed_value"), F.greatest(F.col("net"), F.lit(0.0))).alias("response_value"),
        (F.col("observed_converted").isNotNull() | F.col("observed_value").isNotNull()).alias("observed_outcome"),
    )


LABELLED_BY_EXPOSURE = "labelled_by_exposure"  # build_training_examples: keep the user at this origin


def _eligible_exposures(outcomes: DataFrame, *, origins: Sequence, horizon_days: int) -> DataFrame:
    """Exposures in [D_k, D_k + H) whose response window also ends by D_k + H, keyed by origin."""
    return (in_label_window(outcomes, "exposed_ts", origins=origins, horizon_days=horizon_days)
            .filter(F.col("response_end_ts") <= _window_end(horizon_days)))


def observed_exposure_examples(outcomes: DataFrame, *, origins: Sequence, horizon_days: int) -> DataFrame:
    """The (user, origin) pairs that are training examples because of an observed campaign outcome.

    Grain: one row per (user_id, origin_date) with an eligible exposure (as in
    :func:`campaign_labels`) whose outcome is observed (observed_converted / observed_value).
    The builder keeps these users at that origin even when they have no order or event before
    it: their features are what is known before the origin (attributes), their labels the
    campaign's outcome.

    Returns:
        user_id, origin_date, labelled_by_exposure DOUBLE (1.0).
    """
    observed = _eligible_exposures(outcomes, origins=origins, horizon_days=horizon_days) \
        .filter(F.col("observed_outcome"))
    return observed.groupBy(*KEYS).agg(F.max(F.lit(1.0)).alias(LABELLED_BY_EXPOSURE))


def campaign_labels(outcomes: DataFrame, *, origins: Sequence, horizon_days: int) -> DataFrame:
    """Arm and outcome of each user's first eligible exposure in each label window [D_k, D_k + H).

    Grain: one row per (user_id, origin_date) with an eligible exposure: exposed_ts in the
    window and the response window ending by D_k + H (a later end would need data from after
    the window).

    Args:
        outcomes: exposure_outcomes(...) rows.

    Returns:
        user_id, origin_date, campaign_id, arm, is_control, label_converted INT,
        label_response_value DOUBLE.
    """
    eligible = _eligible_exposures(outcomes, origins=origins, horizon_days=horizon_days)
    first = (eligible.groupBy(*KEYS)
             .agg(F.min_by(F.struct("campaign_id", "arm", "is_control", "converted", "response_value"),
                           F.struct("exposed_ts", "campaign_id")).alias("first")))
    return first.select(
        *KEYS,
        F.col("first.campaign_id").alias(CAMPAIGN_ID),
        F.col("first.arm").alias(ARM),
        F.col("first.is_control").alias(IS_CONTROL),
        F.col("first.converted").cast("int").alias(LABEL_CONVERTED),
        F.col("first.response_value").cast("double").alias(LABEL_RESPONSE_VALUE),
    )
