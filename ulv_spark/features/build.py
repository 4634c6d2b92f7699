"""Compose the feature functions into the user_features and training_examples frames.

`build_user_features` is the single definition of the features at an as-of date: the
features job calls it with the run date, `build_training_examples` with the past origins
(all origins in one Spark job: the histories are keyed by date), and the evaluation team
with any backtest origin. Both are pure: DataFrames in, DataFrame out; no reads, writes,
collects or Python UDFs.
"""
from __future__ import annotations

import datetime as dt
from functools import reduce
from typing import Optional, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from ulv_spark.config import FeaturesConf
from ulv_spark.features import behaviour, labels, rfm, sequences
from ulv_spark.features import text as text_features
from ulv_spark.features.behaviour import ATTR_MISSING
from ulv_spark.features.declare import (ATTRIBUTES, EVENTS, EXPOSURES, ORDERS, PRODUCT_TEXT, REVIEW_TEXT, Declared,
                                        Feature, block, expand)
from ulv_spark.features.text import TextInputs
from ulv_spark.features.inputs import history, prepare_events, prepare_exposures, prepare_orders, with_dates
from ulv_spark.names import FREQUENCY, HAS_PURCHASE
from ulv_spark.schemas import (ARM, AS_OF_DATE, CAMPAIGN_ID, HORIZON_DAYS, IS_CONTROL, LABEL_CHURNED,
                               LABEL_CONVERTED, LABEL_PURCHASES, LABEL_RESPONSE_VALUE, LABEL_VALUE, ORIGIN_DATE,
                               SEQ_MASK, SEQ_TEXT, SEQ_TOKENS, USER_ID, Col)

# Columns derived here from the merged parts (see _finish).
PURCHASE_INDICATOR = block(
    Feature(HAS_PURCHASE, "1 when the user has a purchase (non-return order) before as_of_date, else 0"))
TENURE = block(Feature("tenure_days", "as_of_date minus the first day with any order or event"))

# Every tabular feature block in table order: the user_features / training_examples columns
# between the keys and the attr_* columns (catalog.user_features_contract).
FEATURE_BLOCKS = (
    rfm.RFM, PURCHASE_INDICATOR, behaviour.ORDER_TOTALS, TENURE, behaviour.ORDER_WINDOWS, behaviour.TRENDS,
    rfm.GAPS, behaviour.BASKET, behaviour.CATEGORIES, behaviour.RETURNS_AND_DISCOUNTS, behaviour.EVENT_TOTALS,
    behaviour.EVENT_WINDOWS, behaviour.EVENT_TYPES, behaviour.EVENT_RECENCY, behaviour.CAMPAIGNS,
    text_features.PRODUCT_PROFILE, text_features.PRODUCT_DIMS, text_features.REVIEWS,
)


def declared_features(features_cfg: Optional[FeaturesConf] = None) -> tuple[Declared, ...]:
    """Every declared tabular feature for `features_cfg` (default conf without), in table order."""
    return expand(FEATURE_BLOCKS, features_cfg or FeaturesConf())


def feature_table_columns(features_cfg: Optional[FeaturesConf] = None) -> tuple[Col, ...]:
    """The tabular feature columns (DOUBLE) for `features_cfg`, in table order.

    Users without rows in a feature's source get its declared default (0, with the has_*
    indicators saying so); user attributes come after these (catalog.user_features_contract).
    """
    return tuple(d.column() for d in declared_features(features_cfg))


def attribute_feature_columns(attributes: Optional[DataFrame], features_cfg: FeaturesConf) -> tuple[Col, ...]:
    """The attr_* columns (contract entries) the builders add for `attributes` (none without it)."""
    if attributes is None:
        return ()
    return behaviour.attribute_columns(attributes.schema, onehot=features_cfg.attribute_onehot)


def _stack(parts: list[DataFrame], keys: Sequence[str]) -> tuple[DataFrame, dict[str, str]]:
    """Merge per-key parts (disjoint columns, at most one row per key each) into one row per key.

    A union plus one aggregation instead of a chain of joins: one shuffle, no sort per join,
    and the same plan whatever the sizes (no broadcast decisions). Each part adds a marker
    column (true where the part has a row for the key), so a null can be told apart from a
    missing row. Returns the merged frame and, per value column, its part's marker column.
    """
    marked, producer = [], {}
    for i, part in enumerate(parts):
        marker = f"_part_{i}"
        producer.update({c: marker for c in part.columns if c not in keys})
        marked.append(part.select("*", F.lit(True).alias(marker)))
    stacked = reduce(lambda left, right: left.unionByName(right, allowMissingColumns=True), marked)
    values = [c for c in stacked.columns if c not in keys]
    return stacked.groupBy(*keys).agg(*[F.max(c).alias(c) for c in values]), producer


def _text_parts(text: Optional[TextInputs], raw_events: Optional[DataFrame], *, dates: Sequence[dt.date],
                features_cfg: FeaturesConf) -> dict[str, DataFrame]:
    """The text feature parts by source (product_text, review_text) that the inputs allow."""
    if text is None or not features_cfg.text:
        return {}
    parts = {}
    views = None
    if raw_events is not None and "product_id" in raw_events.columns:
        view_type = features_cfg.view_event_type.strip().lower()
        views = history(raw_events.filter(F.lower(F.trim(F.col("event_type"))) == F.lit(view_type))
                        .select(USER_ID, "event_ts", "product_id"), "event_ts", dates)
    lines = history(text.order_lines.select(USER_ID, "product_id", "order_ts", "amount"), "order_ts", dates) \
        if text.order_lines is not None else None
    if text.product_vectors is not None and (lines is not None or views is not None):
        parts[PRODUCT_TEXT] = text_features.product_profile(lines, views, text.product_vectors,
                                                            dims=features_cfg.text_dims)
    if text.reviews is not None:
        parts[REVIEW_TEXT] = text_features.review_activity(history(text.reviews, "review_ts", dates))
    return parts


def _order_vectors(text: Optional[TextInputs], features_cfg: FeaturesConf) -> Optional[DataFrame]:
    """The text vector per order (features.text.order_text_vectors) when the text inputs allow it, else None."""
    if text is None or not features_cfg.text or text.order_lines is None or text.product_vectors is None \
            or "order_id" not in text.order_lines.columns:
        return None
    return text_features.order_text_vectors(text.order_lines, text.product_vectors, dims=features_cfg.text_dims)


def _feature_parts(orders: DataFrame, events: Optional[DataFrame], outcomes: Optional[DataFrame],
                   attributes: Optional[DataFrame], *, dates: Sequence[dt.date],
                   features_cfg: FeaturesConf, text_parts: Sequence[DataFrame] = (),
                   order_vectors: Optional[DataFrame] = None) -> list[DataFrame]:
    """The feature parts keyed by (user_id, as_of_date) for every date in `dates` (prepared inputs)."""
    windows = features_cfg.windows_days
    order_history = history(orders, "order_ts", dates)
    event_history = history(events, "event_ts", dates) if events is not None else None
    parts = [
        rfm.purchase_periods(order_history),
        behaviour.order_activity(order_history, windows_days=windows),
        behaviour.category_stats(order_history),
        sequences.user_sequences(order_history, event_history, features_cfg=features_cfg,
                                 order_vectors=order_vectors),
    ]
    if event_history is not None:
        parts += [behaviour.event_activity(event_history, windows_days=windows, event_types=features_cfg.event_types),
                  behaviour.view_conversion(event_history, order_history,
                                            view_event_type=features_cfg.view_event_type)]
    if outcomes is not None:
        parts.append(behaviour.campaign_history(history(outcomes, "exposed_ts", dates)))
    if attributes is not None:
        attrs = behaviour.attribute_features(attributes, onehot=features_cfg.attribute_onehot)
        parts.append(with_dates(attrs.withColumn(ATTR_MISSING, F.lit(0.0)), dates))
    return parts + list(text_parts)


def _sources(events, outcomes, attributes, text_parts: Optional[dict] = None) -> set[str]:
    """The feature sources present (orders always; a text source when its part is built)."""
    present = {ORDERS: True, EVENTS: events is not None, EXPOSURES: outcomes is not None,
               ATTRIBUTES: attributes is not None}
    return {source for source, there in present.items() if there} | set(text_parts or ())


def _with_default(name: str, default: float, producer: dict[str, str]) -> Column:
    """Column `name`, or `default` where the part producing it has no row for the user (its nulls stay)."""
    marker = producer.get(name)
    value = F.col(name)
    return value if marker is None else F.when(F.col(marker).isNull(), F.lit(default)).otherwise(value)


def _finish(merged: DataFrame, producer: dict[str, str], *, features_cfg: FeaturesConf, attr_cols: tuple[Col, ...],
            sources: set[str]) -> tuple[DataFrame, list]:
    """Keep the users seen before their date, derive the last features, apply the declared defaults.

    A default fills only users without rows in the feature's part (or all users when its source
    is absent); a null a part produced stays null, for the null-feature gate to see.

    A user is seen through an order or an event before the date. A campaign export (exposures
    with observed outcomes) also names its users: one exposed with an observed outcome before
    the date is kept, and at a training origin one with an observed outcome in the label window
    (labels.observed_exposure_examples). Tenure counts from the first order or event (0 without
    one), and a user without orders or events gets an all-padding sequence.

    Raises:
        ValueError: a declared feature whose source is present is produced by no builder.

    Returns the frame and the feature + sequence columns (as Column expressions, in order).
    """
    windows = features_cfg.windows_days
    seen_days = [F.col(c) for c in ("first_order_day", "first_event_day") if c in merged.columns]
    first_seen = F.least(*seen_days) if len(seen_days) > 1 else seen_days[0]
    (has_purchase,), (tenure,) = PURCHASE_INDICATOR.names(), TENURE.names()
    window_cols = [c for w in windows for c in behaviour.ORDER_WINDOWS.names(w)]
    keep = first_seen.isNotNull()
    for named in ("first_observed_exposure_day", labels.LABELLED_BY_EXPOSURE):
        if named in merged.columns:
            keep = keep | F.col(named).isNotNull()
    derived = merged.filter(keep).select(
        *[c for c in merged.columns if c not in window_cols],
        *[_with_default(c, 0.0, producer).alias(c) for c in window_cols if c in merged.columns],
        F.when(F.col(FREQUENCY).isNotNull(), F.lit(1.0)).otherwise(F.lit(0.0)).alias(has_purchase),
        F.coalesce(F.datediff(F.col(AS_OF_DATE), first_seen).cast("double"), F.lit(0.0)).alias(tenure))
    derived = behaviour.trend_ratios(derived, windows_days=windows)
    attributes = tuple(Declared(c.name, c.comment, 1.0 if c.name == ATTR_MISSING else 0.0, ATTRIBUTES)
                       for c in attr_cols)
    features: list[Column] = []
    for feature in declared_features(features_cfg) + attributes:
        if feature.name in derived.columns:
            value = _with_default(feature.name, feature.default, producer)
        elif feature.source not in sources:
            value = F.lit(feature.default)
        else:
            raise ValueError(f"feature {feature.name!r} is declared (source {feature.source}) but no builder "
                             f"produces it")
        features.append(value.cast("double").alias(feature.name))
    length = features_cfg.sequence_length
    padding = F.array_repeat(F.lit(sequences.PAD_ID), length).cast("array<int>")
    no_events = F.array_repeat(F.lit(0), length).cast("array<int>")
    sequence = [F.coalesce(F.col(SEQ_TOKENS), padding).alias(SEQ_TOKENS),
                F.coalesce(F.col(SEQ_MASK), no_events).alias(SEQ_MASK)]
    if features_cfg.text:  # per-event product text (null without: no text inputs, or no event with text)
        text = F.col(SEQ_TEXT) if SEQ_TEXT in derived.columns else F.lit(None)
        sequence.append(text.cast("array<float>").alias(SEQ_TEXT))
    return derived, features + sequence


def _prepare(orders, events, exposures, features_cfg: FeaturesConf):
    orders = prepare_orders(orders)
    events = prepare_events(events) if events is not None else None
    outcomes = None
    if exposures is not None:
        outcomes = labels.exposure_outcomes(prepare_exposures(exposures), orders,
                                            default_response_window_days=features_cfg.default_response_window_days)
    return orders, events, outcomes


def build_user_features(orders: DataFrame, events: Optional[DataFrame] = None, exposures: Optional[DataFrame] = None,
                        attributes: Optional[DataFrame] = None, *, as_of: dt.date,
                        features_cfg: FeaturesConf, text: Optional[TextInputs] = None) -> DataFrame:
    """Point-in-time features of every user seen before `as_of` (the user_features rows, less run_id).

    Grain: one row per user_id with an order or event (or a campaign exposure with an observed
    outcome) strictly before `as_of`. Only rows strictly before `as_of` of orders, events and
    exposures are used (campaign responses only
    from response windows that ended by `as_of`; user attributes are a snapshot and joined as
    they are). Missing optional inputs give the declared defaults (0), so the schema only
    depends on `features_cfg` and the attribute columns.

    Args:
        orders: bronze orders (or any frame with user_id, order_ts, amount; see inputs.prepare_orders).
        events: bronze events, or None.
        exposures: bronze campaign_exposures, or None.
        attributes: bronze user_attributes (unique user_id), or None.
        as_of: the date D.
        features_cfg: the features conf section.
        text: the text inputs (order lines, projected product vectors, scored reviews; see
            features.text), or None: then the text features are their defaults (0).

    Returns:
        user_id, as_of_date, the feature columns of feature_table_columns(features_cfg) (DOUBLE;
        null only where a builder produced null for a user with rows in its source), attr_*
        columns when `attributes` is given, seq_tokens, seq_mask, and with features_cfg.text
        seq_text (per-event product text, null without; see features.sequences).
    """
    text_parts = _text_parts(text, events, dates=[as_of], features_cfg=features_cfg)
    orders, events, outcomes = _prepare(orders, events, exposures, features_cfg)
    parts = _feature_parts(orders, events, outcomes, attributes, dates=[as_of], features_cfg=features_cfg,
                           text_parts=list(text_parts.values()), order_vectors=_order_vectors(text, features_cfg))
    merged, producer = _stack(parts, [USER_ID, AS_OF_DATE])
    derived, features = _finish(merged, producer, features_cfg=features_cfg,
                                attr_cols=attribute_feature_columns(attributes, features_cfg),
                                sources=_sources(events, outcomes, attributes, text_parts))
    return derived.select(USER_ID, AS_OF_DATE, *features)


def origins(as_of: dt.date, *, horizon_days: int, features_cfg: FeaturesConf) -> list[dt.date]:
    """Rolling origins D_k = as_of - H - k * step for k = 0..training_origins - 1 (newest first)."""
    return [as_of - dt.timedelta(days=horizon_days + k * features_cfg.origin_step_days)
            for k in range(features_cfg.training_origins)]


def build_training_examples(orders: DataFrame, events: Optional[DataFrame] = None,
                            exposures: Optional[DataFrame] = None, attributes: Optional[DataFrame] = None, *,
                            as_of: dt.date, horizon_days: int, features_cfg: FeaturesConf,
                            text: Optional[TextInputs] = None) -> DataFrame:
    """Features at each rolling origin D_k joined with labels from [D_k, D_k + horizon_days).

    Grain: one row per (user_id, origin_date) for every user with an order or event (or an
    exposure with an observed outcome) strictly before origin_date, or with an observed campaign
    outcome in the label window (a campaign export; see labels.observed_exposure_examples).
    Features equal build_user_features(..., as_of=D_k); labels use only orders and exposures in
    [D_k, D_k + H) (see labels.py), so with D_0 = as_of - H nothing on or after `as_of` is read.

    Returns:
        user_id, as_of_date (= as_of), origin_date, horizon_days, the features, attr_*,
        seq_tokens, seq_mask, seq_text (features_cfg.text), label_value, label_purchases, label_churned, campaign_id, arm,
        is_control, label_converted, label_response_value.
    """
    dates = origins(as_of, horizon_days=horizon_days, features_cfg=features_cfg)
    text_parts = _text_parts(text, events, dates=dates, features_cfg=features_cfg)
    orders, events, outcomes = _prepare(orders, events, exposures, features_cfg)
    parts = [part.withColumnRenamed(AS_OF_DATE, ORIGIN_DATE)
             for part in _feature_parts(orders, events, outcomes, attributes, dates=dates,
                                        features_cfg=features_cfg, text_parts=list(text_parts.values()),
                                        order_vectors=_order_vectors(text, features_cfg))]
    parts.append(labels.window_labels(orders, origins=dates, horizon_days=horizon_days))
    if outcomes is not None:
        parts.append(labels.campaign_labels(outcomes, origins=dates, horizon_days=horizon_days))
        parts.append(labels.observed_exposure_examples(outcomes, origins=dates, horizon_days=horizon_days))
    # _finish computes relative to the as_of_date column: here that is the origin
    merged, producer = _stack(parts, [USER_ID, ORIGIN_DATE])
    derived, features = _finish(merged.withColumnRenamed(ORIGIN_DATE, AS_OF_DATE), producer,
                                features_cfg=features_cfg,
                                attr_cols=attribute_feature_columns(attributes, features_cfg),
                                sources=_sources(events, outcomes, attributes, text_parts))

    def label(name: str, type_: str, default=None) -> Column:
        value = (F.col(name) if name in derived.columns else F.lit(None)).cast(type_)
        return (F.coalesce(value, F.lit(default)) if default is not None else value).alias(name)

    return derived.select(  # F.col(AS_OF_DATE) below still reads the input column, the origin
        USER_ID, F.lit(as_of).alias(AS_OF_DATE), F.col(AS_OF_DATE).alias(ORIGIN_DATE),
        F.lit(horizon_days).cast("int").alias(HORIZON_DAYS), *features,
        label(LABEL_VALUE, "double", 0.0), label(LABEL_PURCHASES, "int", 0), label(LABEL_CHURNED, "int", 1),
        label(CAMPAIGN_ID, "string"), label(ARM, "string"), label(IS_CONTROL, "boolean"),
        label(LABEL_CONVERTED, "int"), label(LABEL_RESPONSE_VALUE, "double"))
