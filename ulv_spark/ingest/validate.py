"""Validate mapped source rows, split them into bronze rows and rejects, aggregate order lines.

Every ``label_*`` function returns the mapped rows with parsed contract columns plus
``_reason`` (the first broken rule, null for a good row) and ``_deferred`` (dated after the run
date with ``future_rows: defer``: neither loaded nor rejected, a later night loads it). The
``prepare_*`` functions add the bronze rows and the reject rows on top. All of it is Spark
DataFrame code: no Python UDFs, nothing collected.

Reject reasons, checked in this order (the first that applies is recorded):

======================  ======================================================================
malformed_row           the reader could not parse the row: a CSV line with more or fewer fields
                        than the header, a JSON line that is not an object (Spark's
                        `_corrupt_record`, kept in the rejects' raw column)
null_user_id            user id null or blank
null_order_id           order id null or blank (orders without derive_order_id)
null_event_id           mapped event id null or blank (events)
null_campaign_id        campaign id null or blank (campaign_exposures)
null_arm                arm null or blank (campaign_exposures)
null_event_type         event type null or blank (events)
null_product_id         product id null or blank (products, reviews)
bad_id                  an id column (user, order, line, event, product, session, campaign) holds a
                        number that is not a whole number held exactly: 17850.5, NaN, inf, 1e20
                        (17850.0 is fine and becomes '17850')
null_timestamp          timestamp null or blank
bad_timestamp           timestamp present but unparsable
ts_out_of_range         timestamp on a day before the source's min_date or after its max_date
                        (checked before the run date, so such a row is never deferred)
bad_quantity            quantity present but not a finite number
quantity_out_of_range   abs(quantity) above the source's max_abs_quantity
bad_amount              amount / unit_price present but not a finite number (text, NaN, inf)
null_amount             amount null or blank (or quantity * unit_price with either missing)
amount_out_of_range     abs(amount) (for order lines: quantity * unit_price), abs(discount) or
                        abs(observed_value) above the source's max_abs_amount
bad_discount            discount present but not a finite number
bad_flag                a flag (is_return, is_control, observed_converted) not in the true/false values
bad_response_window     response_window_days present but not a whole number in [0, 3660]
bad_observed_value      observed_value present but not a finite number
bad_price               price present but not a finite number >= 0 (products)
bad_rating              rating present but not a finite number in [0, max_rating] (reviews)
after_run_date          timestamp on a day after the run date (with future_rows: reject)
duplicate_key           another valid row has the same key (the first by time, then by a hash of
                        the whole source row, is kept)
conflicting_user_id     lines of one order carry different user ids (line-level orders)
rejected_sibling_line   another line of the same order was rejected (line-level orders: an
                        order is loaded whole or not at all)
======================  ======================================================================

Texts (product titles and descriptions, order-line product texts, review texts) are never a
reason: missing, empty, non-UTF-8 (already replaced by U+FFFD when the reader decoded it) or very
long texts are loaded as they are, and the embed job normalises and truncates them.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import NamedTuple, Optional, Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from ulv_spark.config import SourceConf
from ulv_spark.ingest.mapping import (SOURCE_STRUCT, attribute_columns, bad_id, is_blank, malformed, parse_flag,
                                      parse_id, parse_int, parse_number, parse_timestamp)
from ulv_spark.schemas import AS_OF_DATE, REJECT_REASON, RUN_ID, USER_ID

REASON = "_reason"
DEFERRED = "_deferred"

MALFORMED_ROW = "malformed_row"
NULL_USER_ID = "null_user_id"
NULL_ORDER_ID = "null_order_id"
NULL_EVENT_ID = "null_event_id"
NULL_CAMPAIGN_ID = "null_campaign_id"
NULL_ARM = "null_arm"
NULL_EVENT_TYPE = "null_event_type"
NULL_PRODUCT_ID = "null_product_id"
BAD_ID = "bad_id"
NULL_TIMESTAMP = "null_timestamp"
BAD_TIMESTAMP = "bad_timestamp"
TS_OUT_OF_RANGE = "ts_out_of_range"
BAD_QUANTITY = "bad_quantity"
QUANTITY_OUT_OF_RANGE = "quantity_out_of_range"
NULL_AMOUNT = "null_amount"
BAD_AMOUNT = "bad_amount"
AMOUNT_OUT_OF_RANGE = "amount_out_of_range"
BAD_DISCOUNT = "bad_discount"
BAD_FLAG = "bad_flag"
BAD_RESPONSE_WINDOW = "bad_response_window"
BAD_OBSERVED_VALUE = "bad_observed_value"
BAD_PRICE = "bad_price"
BAD_RATING = "bad_rating"
AFTER_RUN_DATE = "after_run_date"
DUPLICATE_KEY = "duplicate_key"
CONFLICTING_USER_ID = "conflicting_user_id"
REJECTED_SIBLING_LINE = "rejected_sibling_line"

REASONS = (MALFORMED_ROW, NULL_USER_ID, NULL_ORDER_ID, NULL_EVENT_ID, NULL_CAMPAIGN_ID, NULL_ARM, NULL_EVENT_TYPE,
           NULL_PRODUCT_ID, BAD_ID, NULL_TIMESTAMP, BAD_TIMESTAMP, TS_OUT_OF_RANGE, BAD_QUANTITY,
           QUANTITY_OUT_OF_RANGE, BAD_AMOUNT, NULL_AMOUNT, AMOUNT_OUT_OF_RANGE, BAD_DISCOUNT, BAD_FLAG,
           BAD_RESPONSE_WINDOW, BAD_OBSERVED_VALUE, BAD_PRICE, BAD_RATING, AFTER_RUN_DATE, DUPLICATE_KEY,
           CONFLICTING_USER_ID, REJECTED_SIBLING_LINE)

MAX_RESPONSE_WINDOW_DAYS = 3660  # ten years: a longer window is a typo, and would overflow timestamp arithmetic

RETURN_SUFFIX = "-R"  # order id of the return lines of a line-level order that also has purchase lines


def _ts_out_of_range(ts: str, rules: SourceConf) -> Column:
    """True where the timestamp column `ts` is on a day outside [rules.min_date, rules.max_date]."""
    day = F.to_date(F.col(ts))
    return day.isNotNull() & ((day < F.lit(rules.min_date)) | (day > F.lit(rules.max_date)))


def _over(value: str, limit: float) -> Column:
    """True where abs(value) of the numeric column `value` exceeds `limit`."""
    return F.coalesce(F.abs(F.col(value)) > F.lit(limit), F.lit(False))


def _bad_ids(mapped: DataFrame, names: Sequence[str]) -> Column:
    """True where any of the id columns `names` holds a broken number (see mapping.bad_id)."""
    out = F.lit(False)
    for name in names:
        out = out | bad_id(mapped, name)
    return out


class Prepared(NamedTuple):
    """One source, validated: labelled rows without the source row, bronze rows, reject rows.

    `labelled` is what the job caches and counts; `good` is derived from it, so writing the
    bronze rows reuses the cache. `rejects` carry the source row and are recomputed from the
    source when there are any (rarely), which keeps the cached rows narrow.
    """

    labelled: DataFrame
    good: DataFrame
    rejects: DataFrame
    deferred: Optional[DataFrame] = None  # pending_rows: the deferred rows with their source row


def _first_reason(checks: Sequence[tuple[Column, str]]) -> Column:
    """The reason of the first check that is true, else null."""
    out = F.lit(None).cast("string")
    for condition, reason in reversed(checks):
        out = F.when(condition, F.lit(reason)).otherwise(out)
    return out


def _after_run_date(ts: str, as_of: dt.date) -> Column:
    return F.to_date(F.col(ts)) > F.lit(as_of)


def _with_dates(df: DataFrame, ts: str, as_of: dt.date, future_rows: str,
                checks: list[tuple[Column, str]]) -> DataFrame:
    """Add _reason from `checks` (+ after_run_date) and _deferred."""
    late = F.col(ts).isNotNull() & _after_run_date(ts, as_of)
    if future_rows == "reject":
        reason = _first_reason(checks + [(late, AFTER_RUN_DATE)])
        return df.withColumn(REASON, reason).withColumn(DEFERRED, F.lit(False))
    reason = _first_reason(checks)
    return df.withColumn(REASON, reason).withColumn(DEFERRED, reason.isNull() & late)


def _row_hash(df: DataFrame) -> Column:
    """A deterministic hash of the whole source row (tie-breaker between duplicates)."""
    has_map = any(isinstance(f.dataType, T.MapType) for f in df.schema[SOURCE_STRUCT].dataType.fields)
    return F.xxhash64(F.to_json(SOURCE_STRUCT) if has_map else F.col(SOURCE_STRUCT))


def flag_duplicates(df: DataFrame, keys: Sequence[str], order_by: Sequence[str], *,
                    eligible: Optional[Column] = None) -> DataFrame:
    """Mark all but one valid row per key as duplicate_key.

    Grain: unchanged. Among rows with no reason and not deferred (and `eligible`, when given),
    the first by `order_by`, then by a hash of the source row, is kept, so the choice does not
    depend on file order.
    """
    candidate = F.col(REASON).isNull() & ~F.col(DEFERRED)
    if eligible is not None:
        candidate = candidate & eligible
    window = (Window.partitionBy(*keys)
              .orderBy(candidate.desc(), *[F.col(c).asc_nulls_last() for c in order_by], _row_hash(df))
              .rowsBetween(Window.unboundedPreceding, Window.currentRow))
    duplicate = candidate & (F.row_number().over(window) > 1)
    return df.withColumn(REASON, F.when(duplicate, F.lit(DUPLICATE_KEY)).otherwise(F.col(REASON)))


# -------------------------------------------------------------------- orders
def label_orders(mapped: DataFrame, *, as_of: dt.date, rules: SourceConf) -> DataFrame:
    """Parse and check mapped order rows (one per order, or per line when rules.line_level).

    Grain: one row per source row. Columns: _src, user_id, order_id, order_ts, amount,
    quantity, category, discount, is_return, line_id, _reason, _deferred. Returns (negative
    quantity or amount, the is_return flag, or an order id starting with return_id_prefix) get
    is_return = true and a negative amount, quantity and discount. For line-level sources,
    amount is quantity * unit_price when only unit_price is mapped.
    """
    qty, bad_qty = parse_number(mapped, "quantity")
    price_mapped = not isinstance(mapped.schema["unit_price"].dataType, T.NullType)
    amount_mapped = not isinstance(mapped.schema["amount"].dataType, T.NullType)
    if amount_mapped or not price_mapped:
        amount, bad_amount = parse_number(mapped, "amount")
        null_amount = is_blank(mapped, "amount")
    else:
        price, bad_amount = parse_number(mapped, "unit_price")
        amount = qty * price
        null_amount = is_blank(mapped, "unit_price") | is_blank(mapped, "quantity")
    discount, bad_discount = parse_number(mapped, "discount")
    flag, bad_flag = parse_flag(mapped, "is_return", rules.true_values, rules.false_values)
    order_id = parse_id(mapped, "order_id")
    products = _product_line_columns(mapped)
    parsed = mapped.select(
        SOURCE_STRUCT,
        parse_id(mapped, "user_id").alias(USER_ID),
        order_id.alias("order_id"),
        parse_timestamp(mapped, "order_ts", rules.timestamp_format, rules.timezone).alias("order_ts"),
        is_blank(mapped, "order_ts").alias("_ts_blank"),
        amount.alias("amount"), null_amount.alias("_null_amount"), bad_amount.alias("_bad_amount"),
        qty.alias("quantity"), bad_qty.alias("_bad_qty"),
        parse_id(mapped, "category").alias("category"),
        discount.alias("discount"), bad_discount.alias("_bad_discount"),
        flag.alias("_flag"), bad_flag.alias("_bad_flag"),
        parse_id(mapped, "line_id").alias("line_id"),
        *products.values(),
        malformed(mapped).alias("_malformed"),
        _bad_ids(mapped, ("user_id", "order_id", "line_id") + (("product_id",) if products else ())).alias("_bad_id"),
    )
    checks = [(F.col("_malformed"), MALFORMED_ROW), (F.col(USER_ID).isNull(), NULL_USER_ID)]
    if not rules.derive_order_id:
        checks.append((F.col("order_id").isNull(), NULL_ORDER_ID))
    checks += [
        (F.col("_bad_id"), BAD_ID),
        (F.col("_ts_blank"), NULL_TIMESTAMP),
        (F.col("order_ts").isNull(), BAD_TIMESTAMP),
        (_ts_out_of_range("order_ts", rules), TS_OUT_OF_RANGE),
        (F.col("_bad_qty"), BAD_QUANTITY),
        (_over("quantity", rules.max_abs_quantity), QUANTITY_OUT_OF_RANGE),
        (F.col("_bad_amount"), BAD_AMOUNT),
        (F.col("_null_amount"), NULL_AMOUNT),
        (F.col("amount").isNull(), BAD_AMOUNT),
        (_over("amount", rules.max_abs_amount), AMOUNT_OUT_OF_RANGE),
        (F.col("_bad_discount"), BAD_DISCOUNT),
        (_over("discount", rules.max_abs_amount), AMOUNT_OUT_OF_RANGE),
        (F.col("_bad_flag"), BAD_FLAG),
    ]
    labelled = _with_dates(parsed, "order_ts", as_of, rules.future_rows, checks)
    prefix = rules.return_id_prefix
    by_prefix = F.col("order_id").startswith(prefix) if prefix else F.lit(False)
    is_return = (F.col("_flag") | by_prefix | (F.coalesce(F.col("quantity"), F.lit(0.0)) < 0)
                 | (F.coalesce(F.col("amount"), F.lit(0.0)) < 0))
    labelled = labelled.withColumn("is_return", is_return)
    negative = {c: F.when(F.col("is_return"), -F.abs(F.col(c))).otherwise(F.col(c)) for c in ("amount", "quantity",
                                                                                               "discount")}
    labelled = labelled.withColumns(negative)
    if rules.derive_order_id:  # unique by construction: no duplicate check needed
        labelled = _derive_order_ids(labelled)
    elif rules.line_level:
        line_id_mapped = not isinstance(mapped.schema["line_id"].dataType, T.NullType)
        labelled = _check_order_lines(labelled, line_id_mapped=line_id_mapped)
    else:
        labelled = flag_duplicates(labelled, ["order_id"], ["order_ts"])
    return labelled.select(SOURCE_STRUCT, USER_ID, "order_id", "order_ts", "amount", "quantity", "category",
                           "discount", "is_return", "line_id", *products, REASON, DEFERRED)


LINE_HASH = "_line_hash"  # a hash of the source line: numbers the lines of an order, picks a product's text
PRODUCT_TEXT_FIELDS = ("product_title", "product_description")


def _product_line_columns(mapped: DataFrame) -> dict[str, Column]:
    """The product columns an order log maps (product_id, its texts) plus the line hash; {} without product_id.

    Texts are kept as the source has them (no trimming, nothing rejected): the embed job
    normalises them.
    """
    if "product_id" not in mapped.columns:
        return {}
    out = {"product_id": parse_id(mapped, "product_id").alias("product_id")}
    for name in PRODUCT_TEXT_FIELDS:
        if name in mapped.columns:
            out[name] = F.col(name).cast("string").alias(name)
    out[LINE_HASH] = _row_hash(mapped).alias(LINE_HASH)
    return out


def _good(labelled: DataFrame) -> DataFrame:
    return labelled.filter(F.col(REASON).isNull() & ~F.col(DEFERRED))


def order_lines_bronze(labelled: DataFrame, *, run_id: str) -> DataFrame:
    """Bronze `order_lines` rows: the good lines of an orders source that maps product_id.

    Grain: one row per loaded source line. Columns: the ORDER_LINES contract. order_id is the
    id of the orders row the line went into (return lines of a mixed order: <order_id>-R, as in
    aggregate_lines); line_id is the source's, else the line's number within that order by its
    source-row hash (so it does not depend on file order).
    """
    good = _good(labelled)
    per_order = Window.partitionBy("order_id").rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    mixed = F.max(F.col("is_return").cast("int")).over(per_order) > F.min(F.col("is_return").cast("int")).over(
        per_order)
    order_id = F.when(mixed & F.col("is_return"), F.concat(F.col("order_id"), F.lit(RETURN_SUFFIX))) \
        .otherwise(F.col("order_id"))
    lines = good.withColumn("order_id", order_id)
    numbered = Window.partitionBy("order_id").orderBy(LINE_HASH).rowsBetween(Window.unboundedPreceding,
                                                                             Window.currentRow)
    line_id = F.coalesce(F.col("line_id"), F.row_number().over(numbered).cast("string"))
    return lines.select("order_id", line_id.alias("line_id"), USER_ID, "product_id", "order_ts", "quantity",
                        "amount", F.lit(run_id).alias(RUN_ID))


def products_from_lines(labelled: DataFrame, *, run_id: str) -> DataFrame:
    """Bronze `products` rows derived from order lines that carry product texts (no products source).

    Grain: one row per product_id of the good lines. Title, description and category are those
    of the product's latest line (by order_ts, ties by the source-row hash), kept even when
    missing or empty; price is that line's |amount| / |quantity| (null without a quantity).
    Columns: the PRODUCTS contract.
    """
    good = _good(labelled).filter(F.col("product_id").isNotNull())
    latest = Window.partitionBy("product_id").orderBy(F.col("order_ts").desc(), LINE_HASH).rowsBetween(
        Window.unboundedPreceding, Window.currentRow)
    first = good.withColumn("_n", F.row_number().over(latest)).filter(F.col("_n") == 1)
    text = {name: (F.col(f"product_{name}") if f"product_{name}" in labelled.columns else F.lit(None).cast("string"))
            for name in ("title", "description")}
    quantity = F.abs(F.col("quantity"))
    price = F.when(quantity > 0, F.abs(F.col("amount")) / quantity)
    return first.select("product_id", text["title"].alias("title"), text["description"].alias("description"),
                        "category", price.alias("price"), F.lit(run_id).alias(RUN_ID))


def derived_rows(table: str, labelled: DataFrame, *, run_id: str, products_source: bool) -> dict[str, DataFrame]:
    """Bronze tables derived from the labelled rows of source `table`: name -> rows.

    An orders source that maps product_id gives `order_lines`; when it also maps a product text
    and there is no products source (`products_source` false), it gives the `products` catalog.
    """
    if table != "orders" or "product_id" not in labelled.columns:
        return {}
    out = {"order_lines": order_lines_bronze(labelled, run_id=run_id)}
    if not products_source and set(PRODUCT_TEXT_FIELDS) & set(labelled.columns):
        out["products"] = products_from_lines(labelled, run_id=run_id)
    return out


def _derive_order_ids(df: DataFrame) -> DataFrame:
    """order_id = <user>-<yyyyMMddHHmmss>-<n>, n numbering the user's rows at that time.

    Rows are numbered by (amount, quantity, source-row hash), so the ids depend only on the
    content of the source, not on file order. Only rows whose user and time parsed get an id.
    """
    keyed = F.col(USER_ID).isNotNull() & F.col("order_ts").isNotNull()
    window = (Window.partitionBy(USER_ID, "order_ts")
              .orderBy("amount", "quantity", _row_hash(df))
              .rowsBetween(Window.unboundedPreceding, Window.currentRow))
    number = F.row_number().over(window)
    order_id = F.concat_ws("-", F.col(USER_ID), F.date_format("order_ts", "yyyyMMddHHmmss"), number.cast("string"))
    return df.withColumn("order_id", F.when(keyed, order_id))


def _check_order_lines(lines: DataFrame, *, line_id_mapped: bool) -> DataFrame:
    """Line-level checks: duplicate line ids, one user per order, all-or-nothing orders.

    Rows without an order id were rejected already and are left as they are.
    """
    if line_id_mapped:
        lines = flag_duplicates(lines, ["order_id", "line_id"], ["order_ts"], eligible=F.col("line_id").isNotNull())
    order = Window.partitionBy("order_id").rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    has_order = F.col("order_id").isNotNull()
    users_differ = F.min(USER_ID).over(order) != F.max(USER_ID).over(order)
    sibling_rejected = F.max(F.col(REASON).isNotNull().cast("int")).over(order) == 1
    sibling_deferred = F.max(F.col(DEFERRED).cast("int")).over(order) == 1
    own = F.col(REASON)
    reason = (F.when(own.isNotNull() | ~has_order, own)
              .when(users_differ, F.lit(CONFLICTING_USER_ID))
              .when(sibling_rejected, F.lit(REJECTED_SIBLING_LINE)))
    deferred = reason.isNull() & (F.col(DEFERRED) | (has_order & sibling_deferred))
    return lines.withColumns({REASON: reason, DEFERRED: deferred})


def aggregate_lines(lines: DataFrame) -> DataFrame:
    """Good order lines -> orders.

    Grain: one row per (order_id, is_return): the return lines of an order that also has
    purchase lines become their own order `<order_id>-R`. Columns: user_id, order_id,
    order_ts (first line), amount, quantity, discount (sums), n_lines, category (of the line
    with the largest |amount|, ties by category name), is_return.
    """
    ranked = F.when(F.col("category").isNotNull(), F.struct(F.abs(F.col("amount")), F.col("category")))
    orders = lines.groupBy("order_id", "is_return").agg(
        F.min(USER_ID).alias(USER_ID),
        F.min("order_ts").alias("order_ts"),
        F.sum("amount").alias("amount"),
        F.sum("quantity").alias("quantity"),
        F.sum("discount").alias("discount"),
        F.count(F.lit(1)).cast("int").alias("n_lines"),
        F.max_by("category", ranked).alias("category"),
    )
    per_order = Window.partitionBy("order_id").rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    mixed = F.count(F.lit(1)).over(per_order) > 1
    order_id = F.when(mixed & F.col("is_return"), F.concat(F.col("order_id"), F.lit(RETURN_SUFFIX))) \
        .otherwise(F.col("order_id"))
    return orders.select(USER_ID, order_id.alias("order_id"), "order_ts", "amount", "quantity", "n_lines",
                         "category", "discount", "is_return")


def orders_bronze(labelled: DataFrame, *, line_level: bool, run_id: str) -> DataFrame:
    """Bronze `orders` rows from labelled rows: the good ones, aggregated when line-level.

    Grain: one row per order (see aggregate_lines). Columns: the ORDERS contract.
    """
    good = labelled.filter(F.col(REASON).isNull() & ~F.col(DEFERRED))
    if line_level:
        orders = aggregate_lines(good)
    else:
        orders = good.withColumn("n_lines", F.lit(1))
    return orders.select(USER_ID, "order_id", "order_ts", F.to_date("order_ts").alias("order_date"), "amount",
                         "quantity", "n_lines", "category", "discount", "is_return", F.lit(run_id).alias(RUN_ID))


# -------------------------------------------------------------------- events
def label_events(mapped: DataFrame, *, as_of: dt.date, rules: SourceConf) -> DataFrame:
    """Parse and check mapped events; duplicates of event_id are rejected.

    Grain: one row per source row. Columns: _src, event_id (the source's, or a hash of user,
    time, type, product and session), user_id, event_ts, event_type (lower case), product_id,
    category, session_id, _reason, _deferred.
    """
    id_mapped = not isinstance(mapped.schema["event_id"].dataType, T.NullType)
    parsed = mapped.select(
        SOURCE_STRUCT,
        parse_id(mapped, "event_id").alias("_source_event_id"),
        parse_id(mapped, USER_ID).alias(USER_ID),
        parse_timestamp(mapped, "event_ts", rules.timestamp_format, rules.timezone).alias("event_ts"),
        is_blank(mapped, "event_ts").alias("_ts_blank"),
        F.lower(parse_id(mapped, "event_type")).alias("event_type"),
        parse_id(mapped, "product_id").alias("product_id"),
        parse_id(mapped, "category").alias("category"),
        parse_id(mapped, "session_id").alias("session_id"),
        malformed(mapped).alias("_malformed"),
        _bad_ids(mapped, ("event_id", "user_id", "product_id", "session_id")).alias("_bad_id"),
    )
    hashed = F.substring(F.sha2(F.concat_ws("\u0001", *[F.coalesce(F.col(c).cast("string"), F.lit("")) for c in (
        USER_ID, "event_ts", "event_type", "product_id", "session_id")]), 256), 1, 32)
    parsed = parsed.withColumn("event_id", F.col("_source_event_id") if id_mapped else hashed)
    checks = [(F.col("_malformed"), MALFORMED_ROW), (F.col(USER_ID).isNull(), NULL_USER_ID)]
    if id_mapped:
        checks.append((F.col("event_id").isNull(), NULL_EVENT_ID))
    checks += [(F.col("event_type").isNull(), NULL_EVENT_TYPE),
               (F.col("_bad_id"), BAD_ID),
               (F.col("_ts_blank"), NULL_TIMESTAMP),
               (F.col("event_ts").isNull(), BAD_TIMESTAMP),
               (_ts_out_of_range("event_ts", rules), TS_OUT_OF_RANGE)]
    labelled = flag_duplicates(_with_dates(parsed, "event_ts", as_of, rules.future_rows, checks),
                               ["event_id"], ["event_ts"])
    return labelled.select(SOURCE_STRUCT, "event_id", USER_ID, "event_ts", "event_type", "product_id", "category",
                           "session_id", REASON, DEFERRED)


def events_bronze(labelled: DataFrame, *, run_id: str) -> DataFrame:
    """Bronze `events` rows. Grain: one row per event. Columns: the EVENTS contract."""
    good = labelled.filter(F.col(REASON).isNull() & ~F.col(DEFERRED))
    return good.select("event_id", USER_ID, "event_ts", F.to_date("event_ts").alias("event_date"), "event_type",
                       "product_id", "category", "session_id", F.lit(run_id).alias(RUN_ID))


# -------------------------------------------------------------------- campaign exposures
def label_exposures(mapped: DataFrame, *, as_of: dt.date, rules: SourceConf) -> DataFrame:
    """Parse and check mapped campaign exposures; duplicates of (user_id, campaign_id) are rejected.

    Grain: one row per source row. Columns: _src, user_id, campaign_id, arm, is_control (the
    is_control flag when mapped, else arm = rules.control_arm, case-insensitive), exposed_ts,
    response_window_days, observed_converted, observed_value, _reason, _deferred.
    """
    flag_mapped = not isinstance(mapped.schema["is_control"].dataType, T.NullType)
    control, bad_control = parse_flag(mapped, "is_control", rules.true_values, rules.false_values)
    converted, bad_converted = parse_flag(mapped, "observed_converted", rules.true_values, rules.false_values)
    value, bad_value = parse_number(mapped, "observed_value")
    window, bad_window = parse_int(mapped, "response_window_days")
    arm = parse_id(mapped, "arm")
    parsed = mapped.select(
        SOURCE_STRUCT,
        parse_id(mapped, USER_ID).alias(USER_ID),
        parse_id(mapped, "campaign_id").alias("campaign_id"),
        arm.alias("arm"),
        (control if flag_mapped else F.coalesce(F.lower(arm) == rules.control_arm.lower(), F.lit(False)))
        .alias("is_control"),
        parse_timestamp(mapped, "exposed_ts", rules.timestamp_format, rules.timezone).alias("exposed_ts"),
        is_blank(mapped, "exposed_ts").alias("_ts_blank"),
        window.alias("response_window_days"),
        F.when(~is_blank(mapped, "observed_converted"), converted).alias("observed_converted"),
        value.alias("observed_value"),
        (bad_control | bad_converted).alias("_bad_flag"), bad_window.alias("_bad_window"),
        bad_value.alias("_bad_value"),
        malformed(mapped).alias("_malformed"),
        _bad_ids(mapped, (USER_ID, "campaign_id")).alias("_bad_id"),
    )
    window_days = F.col("response_window_days")
    checks = [(F.col("_malformed"), MALFORMED_ROW),
              (F.col(USER_ID).isNull(), NULL_USER_ID),
              (F.col("campaign_id").isNull(), NULL_CAMPAIGN_ID),
              (F.col("arm").isNull(), NULL_ARM),
              (F.col("_bad_id"), BAD_ID),
              (F.col("_ts_blank"), NULL_TIMESTAMP),
              (F.col("exposed_ts").isNull(), BAD_TIMESTAMP),
              (_ts_out_of_range("exposed_ts", rules), TS_OUT_OF_RANGE),
              (F.col("_bad_flag"), BAD_FLAG),
              (F.col("_bad_window") | (window_days < 0) | (window_days > MAX_RESPONSE_WINDOW_DAYS),
               BAD_RESPONSE_WINDOW),
              (F.col("_bad_value"), BAD_OBSERVED_VALUE),
              (_over("observed_value", rules.max_abs_amount), AMOUNT_OUT_OF_RANGE)]
    labelled = flag_duplicates(_with_dates(parsed, "exposed_ts", as_of, rules.future_rows, checks),
                               [USER_ID, "campaign_id"], ["exposed_ts"])
    return labelled.select(SOURCE_STRUCT, USER_ID, "campaign_id", "arm", "is_control", "exposed_ts",
                           "response_window_days", "observed_converted", "observed_value", REASON, DEFERRED)


def exposures_bronze(labelled: DataFrame, *, run_id: str) -> DataFrame:
    """Bronze `campaign_exposures` rows. Grain: one row per (user_id, campaign_id)."""
    good = labelled.filter(F.col(REASON).isNull() & ~F.col(DEFERRED))
    return good.select(USER_ID, "campaign_id", "arm", "is_control", "exposed_ts", "response_window_days",
                       "observed_converted", "observed_value", F.lit(run_id).alias(RUN_ID))


# -------------------------------------------------------------------- user attributes
def label_user_attributes(mapped: DataFrame, *, as_of: dt.date, rules: SourceConf) -> DataFrame:
    """Check mapped user attributes; duplicates of user_id are rejected.

    Grain: one row per source row. Columns: _src, user_id, the attribute columns, _reason,
    _deferred (always false: attributes carry no time).
    """
    extras = attribute_columns(mapped, "user_attributes")
    parsed = mapped.select(SOURCE_STRUCT, parse_id(mapped, USER_ID).alias(USER_ID), *extras,
                           malformed(mapped).alias("_malformed"), bad_id(mapped, USER_ID).alias("_bad_id"))
    checks = [(F.col("_malformed"), MALFORMED_ROW), (F.col(USER_ID).isNull(), NULL_USER_ID),
              (F.col("_bad_id"), BAD_ID)]
    labelled = parsed.withColumns({REASON: _first_reason(checks), DEFERRED: F.lit(False)})
    labelled = flag_duplicates(labelled, [USER_ID], [])
    return labelled.select(SOURCE_STRUCT, USER_ID, *extras, REASON, DEFERRED)


def user_attributes_bronze(labelled: DataFrame, *, run_id: str) -> DataFrame:
    """Bronze `user_attributes` rows. Grain: one row per user_id; columns user_id, run_id, attributes."""
    extras = [c for c in labelled.columns if c not in (SOURCE_STRUCT, USER_ID, REASON, DEFERRED)]
    good = labelled.filter(F.col(REASON).isNull() & ~F.col(DEFERRED))
    return good.select(USER_ID, F.lit(run_id).alias(RUN_ID), *extras)


# -------------------------------------------------------------------- products and reviews
def _text_col(mapped: DataFrame, name: str) -> Column:
    """A text column as the source has it (not trimmed; null stays null): texts are never a reject reason."""
    return F.col(name).cast("string")


def label_products(mapped: DataFrame, *, as_of: dt.date, rules: SourceConf) -> DataFrame:
    """Parse and check a mapped product catalog; duplicates of product_id are rejected.

    Grain: one row per source row. Columns: _src, user_id (always null: rejects have the
    column), product_id, title, description, category, price, _reason, _deferred (always false:
    a catalog row carries no time). Missing, empty or very long texts are kept.
    """
    price, bad_price = parse_number(mapped, "price")
    parsed = mapped.select(
        SOURCE_STRUCT, F.lit(None).cast("string").alias(USER_ID),
        parse_id(mapped, "product_id").alias("product_id"),
        _text_col(mapped, "title").alias("title"), _text_col(mapped, "description").alias("description"),
        parse_id(mapped, "category").alias("category"),
        price.alias("price"), (bad_price | (F.coalesce(price, F.lit(0.0)) < 0)).alias("_bad_price"),
        malformed(mapped).alias("_malformed"), bad_id(mapped, "product_id").alias("_bad_id"))
    checks = [(F.col("_malformed"), MALFORMED_ROW), (F.col("product_id").isNull(), NULL_PRODUCT_ID),
              (F.col("_bad_id"), BAD_ID), (F.col("_bad_price"), BAD_PRICE)]
    labelled = parsed.withColumns({REASON: _first_reason(checks), DEFERRED: F.lit(False)})
    labelled = flag_duplicates(labelled, ["product_id"], [])
    return labelled.select(SOURCE_STRUCT, USER_ID, "product_id", "title", "description", "category", "price",
                           REASON, DEFERRED)


def products_bronze(labelled: DataFrame, *, run_id: str) -> DataFrame:
    """Bronze `products` rows. Grain: one row per product_id. Columns: the PRODUCTS contract."""
    return _good(labelled).select("product_id", "title", "description", "category", "price",
                                  F.lit(run_id).alias(RUN_ID))


def label_reviews(mapped: DataFrame, *, as_of: dt.date, rules: SourceConf) -> DataFrame:
    """Parse and check mapped reviews; duplicates of (user_id, product_id, review_ts) are rejected.

    Grain: one row per source row. Columns: _src, user_id, product_id, review_ts, rating, text,
    _reason, _deferred. A rating must be a finite number in [0, rules.max_rating] when present;
    the text is kept whatever it is (missing, empty, very long).
    """
    rating, bad_rating = parse_number(mapped, "rating")
    out_of_range = (rating < F.lit(0.0)) | (rating > F.lit(float(rules.max_rating)))
    parsed = mapped.select(
        SOURCE_STRUCT,
        parse_id(mapped, USER_ID).alias(USER_ID),
        parse_id(mapped, "product_id").alias("product_id"),
        parse_timestamp(mapped, "review_ts", rules.timestamp_format, rules.timezone).alias("review_ts"),
        is_blank(mapped, "review_ts").alias("_ts_blank"),
        rating.alias("rating"), (bad_rating | F.coalesce(out_of_range, F.lit(False))).alias("_bad_rating"),
        _text_col(mapped, "text").alias("text"),
        malformed(mapped).alias("_malformed"),
        _bad_ids(mapped, (USER_ID, "product_id")).alias("_bad_id"))
    checks = [(F.col("_malformed"), MALFORMED_ROW),
              (F.col(USER_ID).isNull(), NULL_USER_ID),
              (F.col("product_id").isNull(), NULL_PRODUCT_ID),
              (F.col("_bad_id"), BAD_ID),
              (F.col("_ts_blank"), NULL_TIMESTAMP),
              (F.col("review_ts").isNull(), BAD_TIMESTAMP),
              (_ts_out_of_range("review_ts", rules), TS_OUT_OF_RANGE),
              (F.col("_bad_rating"), BAD_RATING)]
    labelled = flag_duplicates(_with_dates(parsed, "review_ts", as_of, rules.future_rows, checks),
                               [USER_ID, "product_id", "review_ts"], [])
    return labelled.select(SOURCE_STRUCT, USER_ID, "product_id", "review_ts", "rating", "text", REASON, DEFERRED)


def reviews_bronze(labelled: DataFrame, *, run_id: str) -> DataFrame:
    """Bronze `reviews` rows. Grain: one row per review. Columns: the REVIEWS contract."""
    return _good(labelled).select(USER_ID, "product_id", "review_ts", "rating", "text", F.lit(run_id).alias(RUN_ID))


# -------------------------------------------------------------------- rejects and entry points
def reject_rows(labelled: DataFrame, *, run_id: str, as_of: dt.date, rejected_at: dt.datetime) -> DataFrame:
    """Rows of the `<table>_rejects` contract for the rejected rows of `labelled`.

    Grain: one row per rejected source row. Columns: raw (source row as JSON, source names),
    user_id (parsed, may be null), reject_reason, run_id, rejected_at, as_of_date.
    """
    return labelled.filter(F.col(REASON).isNotNull()).select(
        F.to_json(SOURCE_STRUCT).alias("raw"), F.col(USER_ID), F.col(REASON).alias(REJECT_REASON),
        F.lit(run_id).alias(RUN_ID), F.lit(rejected_at).cast("timestamp").alias("rejected_at"),
        F.lit(as_of).alias(AS_OF_DATE))


def pending_rows(labelled: DataFrame, *, run_id: str, as_of: dt.date, deferred_at: dt.datetime) -> DataFrame:
    """Rows of the `<table>_pending` contract for the deferred rows of `labelled` (with SOURCE_STRUCT).

    Grain: one row per deferred source row. Columns: raw (source row as JSON, source names),
    user_id (parsed), run_id, deferred_at, as_of_date. An incremental ingest reads them back
    (source_from_pending) on every later night until they are due.
    """
    return labelled.filter(F.col(REASON).isNull() & F.col(DEFERRED)).select(
        F.to_json(SOURCE_STRUCT).alias("raw"), F.col(USER_ID), F.lit(run_id).alias(RUN_ID),
        F.lit(deferred_at).cast("timestamp").alias("deferred_at"), F.lit(as_of).alias(AS_OF_DATE))


def source_from_pending(pending: DataFrame, schema: T.StructType) -> DataFrame:
    """The source rows of `<table>_pending` rows, as the source reader gave them (`schema`).

    Exact duplicates (the same source row deferred twice, by a micro-batch that ran again after
    a failure) are read once.
    """
    parsed = pending.select("raw").dropDuplicates(["raw"]).select(F.from_json("raw", schema).alias("_row"))
    return parsed.select(*[F.col("_row").getField(f.name).alias(f.name) for f in schema.fields])


LABELLERS = {"orders": label_orders, "events": label_events, "campaign_exposures": label_exposures,
             "user_attributes": label_user_attributes, "products": label_products, "reviews": label_reviews}


def prepare(table: str, mapped: DataFrame, *, rules: SourceConf, as_of: dt.date, run_id: str,
            rejected_at: dt.datetime) -> Prepared:
    """Validate the mapped rows of source `table`: labelled rows, bronze rows and reject rows."""
    with_source = LABELLERS[table](mapped, as_of=as_of, rules=rules)
    labelled = with_source.drop(SOURCE_STRUCT)
    if table == "orders":
        good = orders_bronze(labelled, line_level=rules.line_level, run_id=run_id)
    elif table == "events":
        good = events_bronze(labelled, run_id=run_id)
    elif table == "campaign_exposures":
        good = exposures_bronze(labelled, run_id=run_id)
    elif table == "products":
        good = products_bronze(labelled, run_id=run_id)
    elif table == "reviews":
        good = reviews_bronze(labelled, run_id=run_id)
    else:
        good = user_attributes_bronze(labelled, run_id=run_id)
    rejects = reject_rows(with_source, run_id=run_id, as_of=as_of, rejected_at=rejected_at)
    deferred = pending_rows(with_source, run_id=run_id, as_of=as_of, deferred_at=rejected_at)
    return Prepared(labelled, good, rejects, deferred)


def reject_counts(labelled: DataFrame) -> DataFrame:
    """Counts per outcome. Grain: one row per (_reason, _deferred); columns _reason, _deferred, rows."""
    return labelled.groupBy(REASON, DEFERRED).agg(F.count(F.lit(1)).alias("rows"))


@dataclass(frozen=True)
class Outcome:
    """Row counts of one validated source."""

    rows_read: int
    deferred: int
    rejected: dict[str, int] = field(default_factory=dict)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def reject_share(self) -> float:
        """Rejected rows over the rows that were due (read minus deferred)."""
        due = self.rows_read - self.deferred
        return self.rejected_total / due if due else 0.0

    @classmethod
    def from_counts(cls, rows: Sequence[tuple[Optional[str], bool, int]]) -> "Outcome":
        rejected: dict[str, int] = {}
        deferred = total = 0
        for reason, is_deferred, n in rows:
            total += n
            if reason is not None:
                rejected[reason] = rejected.get(reason, 0) + n
            elif is_deferred:
                deferred += n
        order = {r: i for i, r in enumerate(REASONS)}
        return cls(total, deferred, dict(sorted(rejected.items(), key=lambda kv: order.get(kv[0], 99))))

    @classmethod
    def merged(cls, outcomes: Sequence["Outcome"]) -> "Outcome":
        """The counts of several batches of one source added up (no batch: all zero)."""
        rows = [(reason, False, n) for o in outcomes for reason, n in o.rejected.items()]
        rows += [(None, True, o.deferred) for o in outcomes]
        rows += [(None, False, o.rows_read - o.deferred - o.rejected_total) for o in outcomes]
        return cls.from_counts(rows)
