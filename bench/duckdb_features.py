"""The user_features behaviour / RFM / campaign columns in DuckDB SQL: the single-node speed reference (issue 16).

`duckdb_user_features` computes, from Parquet files of the bronze ``orders``, ``events`` and
``campaign_exposures`` tables, the same columns as `ulv_spark.features.build.build_user_features`
at an as-of date D, in one SQL statement (CTEs, no Python loop over users). The definitions are
those of `features.inputs`, `features.rfm`, `features.behaviour` and `features.labels.exposure_outcomes`
written once more in SQL, so that a cross-check against Spark (`compare`) tests both.

Grain: one row per user_id with an order or event strictly before D, or with a campaign exposure
before D whose outcome is observed (as build_user_features). Units: days (whole days between
UTC calendar dates), counts, and the order currency; every feature is DOUBLE.

Covered columns (`covered_columns`): every declared tabular feature of the orders, events and
campaign_exposures sources, for any windows_days / event_types / view_event_type /
default_response_window_days of the conf:

* RFM: frequency, recency, T, monetary_value; has_purchase; orders_total, spend_total,
  days_since_last_order; tenure_days; orders_<w>d, spend_<w>d; orders_trend_<a>_<b>d,
  spend_trend_<a>_<b>d; gap_mean_days, gap_std_days, gap_last_days; avg_order_value,
  avg_basket_quantity; distinct_categories, top_category_share; returns_total, return_rate,
  return_value_share, discount_share, discounted_order_share;
* events: has_events, events_total, events_<w>d, events_<type>_total, days_since_last_event,
  view_purchase_day_rate;
* campaigns: has_exposures, campaign_exposures_total, campaign_treated_total,
  days_since_last_exposure, campaign_responses_total, campaign_response_rate,
  campaign_response_value.

Not covered: the text features (text_dim_*, has_product_text, review_*), the token sequences
(seq_tokens, seq_mask, seq_text) and the user attributes (attr_*).

Money is summed as DECIMAL(28,6) (Spark's `inputs.exact_sum`), so both engines give the same
totals whatever the row order; the remaining differences are the last bits of the DECIMAL ->
DOUBLE conversion. Timestamps are read as UTC: the function sets the connection's TimeZone to
UTC (Spark's session time zone in this project).
"""
from __future__ import annotations

import datetime as dt
import math
from typing import Optional, Sequence

from ulv_spark.config import FeaturesConf
from ulv_spark.features import behaviour, rfm
from ulv_spark.features.build import PURCHASE_INDICATOR, TENURE, declared_features
from ulv_spark.features.declare import EVENTS, EXPOSURES, ORDERS, trend_pairs
from ulv_spark.schemas import AS_OF_DATE, USER_ID

COVERED_SOURCES = (ORDERS, EVENTS, EXPOSURES)
XSUM_TYPE = "DECIMAL(28,6)"  # inputs.EXACT_SUM_TYPE


def covered_columns(features_cfg: Optional[FeaturesConf] = None) -> tuple[str, ...]:
    """The user_features columns computed here for `features_cfg`, in table order."""
    return tuple(d.name for d in declared_features(features_cfg or FeaturesConf()) if d.source in COVERED_SOURCES)


def exact_columns(features_cfg: Optional[FeaturesConf] = None) -> tuple[str, ...]:
    """The covered columns whose values are whole numbers (counts, days, 0/1 flags): compared exactly."""
    cfg = features_cfg or FeaturesConf()
    names = [*rfm.RFM.names()[:3], *PURCHASE_INDICATOR.names(), "orders_total", "days_since_last_order",
             *TENURE.names(), "gap_last_days", "distinct_categories", "returns_total",
             *behaviour.EVENT_TOTALS.names(), "days_since_last_event",
             *[behaviour.ORDER_WINDOWS.names(w)[0] for w in cfg.windows_days],
             *[behaviour.EVENT_WINDOWS.names(w)[0] for w in cfg.windows_days],
             *[behaviour.event_count_column(t) for t in cfg.event_types],
             "has_exposures", "campaign_exposures_total", "campaign_treated_total", "days_since_last_exposure",
             "campaign_responses_total"]
    return tuple(c for c in covered_columns(cfg) if c in set(names))


def _date(day: dt.date) -> str:
    return f"DATE '{day.isoformat()}'"


def _parquet(path: str) -> str:
    return "read_parquet('" + str(path).replace("'", "''") + "')"


def _xsum(expr: str) -> str:
    """SUM of a DOUBLE expression as DECIMAL(28,6), returned as DOUBLE (inputs.exact_sum)."""
    return f"CAST(SUM(CAST({expr} AS {XSUM_TYPE})) AS DOUBLE)"


def _ratio(numerator: str, denominator: str) -> str:
    """numerator / denominator, 0.0 where the denominator is not > 0 (inputs.ratio)."""
    return f"CASE WHEN {denominator} > 0 THEN CAST({numerator} AS DOUBLE) / {denominator} ELSE 0.0 END"


def _since(as_of: dt.date, days: int) -> str:
    return _date(as_of - dt.timedelta(days=days))


def _order_ctes(orders: str, as_of: dt.date, windows: Sequence[int]) -> list[str]:
    """orders, order_hist, purchase_days, rfm_days, rfm_users, activity, categories (one row per user each)."""
    d_ts = f"CAST({_date(as_of)} AS TIMESTAMP)"
    window_aggs = []
    for w in windows:
        orders_w, spend_w = behaviour.ORDER_WINDOWS.names(w)
        recent = f"day >= {_since(as_of, w)}"
        window_aggs += [f"CAST(COUNT(*) FILTER (WHERE {recent} AND NOT is_return) AS DOUBLE) AS {orders_w}",
                        f"{_xsum(f'CASE WHEN {recent} THEN amount ELSE 0.0 END')} AS {spend_w}"]
    return [
        # inputs.prepare_orders: is_return defaults to amount < 0
        f"""orders AS (
  SELECT CAST(user_id AS VARCHAR) AS user_id, CAST(order_ts AS TIMESTAMP) AS order_ts,
         CAST(amount AS DOUBLE) AS amount, CAST(quantity AS DOUBLE) AS quantity,
         CAST(category AS VARCHAR) AS category, CAST(discount AS DOUBLE) AS discount,
         COALESCE(CAST(is_return AS BOOLEAN), CAST(amount AS DOUBLE) < 0) AS is_return
  FROM {orders})""",
        f"order_hist AS (SELECT *, CAST(order_ts AS DATE) AS day FROM orders WHERE order_ts < {d_ts})",
        # rfm.purchase_days: one lifetimes purchase period per (user, day)
        f"""purchase_days AS (
  SELECT user_id, day, {_xsum('amount')} AS day_amount FROM order_hist WHERE NOT is_return GROUP BY user_id, day)""",
        """rfm_days AS (
  SELECT user_id, day, day_amount, CAST(day - LAG(day) OVER (PARTITION BY user_id ORDER BY day) AS BIGINT) AS gap
  FROM purchase_days)""",
        # rfm.periods_from_days; the gap std from exact integer sums (inputs.exact_std_pop)
        f"""rfm_users AS (
  SELECT user_id, MIN(day) AS first_day, MAX(day) AS last_day, COUNT(*) AS n_days,
         CASE WHEN COUNT(gap) > 0
              THEN {_xsum('CASE WHEN gap IS NOT NULL THEN day_amount END')} / CAST(COUNT(gap) AS DOUBLE) END
           AS repeat_mean,
         CASE WHEN COUNT(gap) > 0
              THEN sqrt(greatest(CAST(COUNT(gap) * SUM(gap * gap) - SUM(gap) * SUM(gap) AS DOUBLE), 0.0)
                        / (CAST(COUNT(gap) AS DOUBLE) * CAST(COUNT(gap) AS DOUBLE))) END AS gap_std,
         CAST(arg_max(gap, day) AS DOUBLE) AS gap_last
  FROM rfm_days GROUP BY user_id)""",
        # behaviour.order_activity
        f"""activity AS (
  SELECT user_id, MIN(day) AS first_order_day, MAX(day) FILTER (WHERE NOT is_return) AS last_purchase_day,
         CAST(COUNT(*) FILTER (WHERE NOT is_return) AS DOUBLE) AS orders_total,
         CAST(COUNT(*) FILTER (WHERE is_return) AS DOUBLE) AS returns_total,
         {_xsum('amount')} AS spend_total,
         {_xsum('CASE WHEN NOT is_return THEN amount ELSE 0.0 END')} AS purchase_amount,
         {_xsum('CASE WHEN is_return THEN abs(amount) ELSE 0.0 END')} AS return_amount,
         {_xsum('CASE WHEN NOT is_return THEN quantity END')} AS quantity_sum,
         COUNT(CASE WHEN NOT is_return THEN quantity END) AS quantity_orders,
         {_xsum('CASE WHEN NOT is_return THEN COALESCE(discount, 0.0) ELSE 0.0 END')} AS discount_amount,
         CAST(COUNT(*) FILTER (WHERE NOT is_return AND discount > 0) AS DOUBLE) AS discounted_orders,
         {', '.join(window_aggs)}
  FROM order_hist GROUP BY user_id)""",
        # behaviour.category_stats
        """categories AS (
  SELECT user_id, CAST(COUNT(*) AS DOUBLE) AS distinct_categories,
         CAST(MAX(n) AS DOUBLE) / CAST(SUM(n) AS DOUBLE) AS top_category_share
  FROM (SELECT user_id, category, COUNT(*) AS n FROM order_hist
        WHERE NOT is_return AND category IS NOT NULL GROUP BY user_id, category)
  GROUP BY user_id)""",
    ]


def _event_ctes(events: str, as_of: dt.date, windows: Sequence[int], event_types: Sequence[str],
                view_type: str) -> list[str]:
    """event_hist, event_stats and views (behaviour.event_activity, behaviour.view_conversion)."""
    d_ts = f"CAST({_date(as_of)} AS TIMESTAMP)"
    per_window = [f"CAST(COUNT(*) FILTER (WHERE day >= {_since(as_of, w)}) AS DOUBLE) "
                  f"AS {behaviour.EVENT_WINDOWS.names(w)[0]}" for w in windows]
    per_type = [f"CAST(COUNT(*) FILTER (WHERE event_type = {_string(t.strip().lower())}) AS DOUBLE) "
                f"AS {behaviour.event_count_column(t)}" for t in event_types]
    return [
        f"""event_hist AS (
  SELECT CAST(user_id AS VARCHAR) AS user_id, CAST(CAST(event_ts AS TIMESTAMP) AS DATE) AS day,
         lower(trim(CAST(event_type AS VARCHAR))) AS event_type
  FROM {events} WHERE CAST(event_ts AS TIMESTAMP) < {d_ts})""",
        f"""event_stats AS (
  SELECT user_id, MIN(day) AS first_event_day, MAX(day) AS last_event_day, CAST(COUNT(*) AS DOUBLE) AS events_total,
         {', '.join(per_window + per_type)}
  FROM event_hist GROUP BY user_id)""",
        # share of the view days that also have a purchase day (purchase_days: one row per purchase day)
        f"""views AS (
  SELECT v.user_id, CAST(COUNT(*) AS DOUBLE) AS view_days, CAST(COUNT(p.day) AS DOUBLE) AS bought_days
  FROM (SELECT DISTINCT user_id, day FROM event_hist WHERE event_type = {_string(view_type.strip().lower())}) AS v
  LEFT JOIN purchase_days AS p ON p.user_id = v.user_id AND p.day = v.day
  GROUP BY v.user_id)""",
    ]


def _exposure_ctes(exposures: str, as_of: dt.date, default_window_days: int) -> list[str]:
    """outcomes and campaigns (labels.exposure_outcomes, behaviour.campaign_history) for exposures before D."""
    d_ts = f"CAST({_date(as_of)} AS TIMESTAMP)"
    window_days = f"COALESCE(CAST(response_window_days AS INTEGER), {int(default_window_days)})"
    complete = f"response_end_ts <= {d_ts}"
    return [
        f"""exposure_windows AS (
  SELECT CAST(user_id AS VARCHAR) AS user_id, CAST(campaign_id AS VARCHAR) AS campaign_id,
         COALESCE(CAST(is_control AS BOOLEAN), lower(CAST(arm AS VARCHAR)) = 'control') AS is_control,
         CAST(exposed_ts AS TIMESTAMP) AS exposed_ts,
         CAST(exposed_ts AS TIMESTAMP) + to_days({window_days}) AS response_end_ts,
         CAST(observed_converted AS BOOLEAN) AS observed_converted, CAST(observed_value AS DOUBLE) AS observed_value
  FROM {exposures} WHERE CAST(exposed_ts AS TIMESTAMP) < {d_ts})""",
        f"""outcomes AS (
  SELECT w.user_id, w.campaign_id, any_value(w.is_control) AS is_control, any_value(w.exposed_ts) AS exposed_ts,
         any_value(w.response_end_ts) AS response_end_ts,
         COALESCE(CAST(any_value(w.observed_converted) AS INTEGER),
                  CASE WHEN COUNT(*) FILTER (WHERE NOT o.is_return) > 0 THEN 1 ELSE 0 END) AS converted,
         COALESCE(any_value(w.observed_value), greatest(COALESCE({_xsum('o.amount')}, 0.0), 0.0)) AS response_value,
         any_value(w.observed_converted) IS NOT NULL OR any_value(w.observed_value) IS NOT NULL AS observed
  FROM exposure_windows AS w
  LEFT JOIN orders AS o ON o.user_id = w.user_id AND o.order_ts >= w.exposed_ts AND o.order_ts < w.response_end_ts
  GROUP BY w.user_id, w.campaign_id)""",
        f"""campaigns AS (
  SELECT user_id, MIN(CAST(exposed_ts AS DATE)) FILTER (WHERE observed) AS first_observed_exposure_day,
         CAST(COUNT(*) AS DOUBLE) AS campaign_exposures_total,
         CAST(COUNT(*) FILTER (WHERE NOT is_control) AS DOUBLE) AS campaign_treated_total,
         MAX(CAST(exposed_ts AS DATE)) AS last_exposure_day,
         CAST(COUNT(*) FILTER (WHERE {complete}) AS DOUBLE) AS completed,
         {_xsum(f'CASE WHEN {complete} THEN CAST(converted AS DOUBLE) ELSE 0.0 END')} AS campaign_responses_total,
         {_xsum(f'CASE WHEN {complete} THEN response_value ELSE 0.0 END')} AS campaign_response_value
  FROM outcomes GROUP BY user_id)""",
    ]


def _string(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _in(part: str, expr: str) -> str:
    """`expr`, or the declared default 0 where `part` has no row for the user (build._with_default)."""
    return f"CASE WHEN {part}.user_id IS NULL THEN 0.0 ELSE {expr} END"


def _order_features(as_of: dt.date, windows: Sequence[int]) -> dict[str, str]:
    """SQL per order-sourced feature over the parts rfm_users (r), activity (a), categories (c)."""
    d = _date(as_of)
    frequency, recency, t_age, monetary = rfm.RFM.names()
    freq, rec = "CAST(r.n_days - 1 AS DOUBLE)", "CAST(r.last_day - r.first_day AS DOUBLE)"
    cols = {
        frequency: _in("r", freq), recency: _in("r", rec),
        t_age: _in("r", f"CAST({_since(as_of, 1)} - r.first_day AS DOUBLE)"),
        monetary: _in("r", "COALESCE(r.repeat_mean, 0.0)"),
        "gap_mean_days": _in("r", f"CASE WHEN {freq} > 0 THEN {rec} / {freq} ELSE 0.0 END"),
        "gap_std_days": _in("r", f"CASE WHEN {freq} > 0 THEN r.gap_std ELSE 0.0 END"),
        "gap_last_days": _in("r", f"CASE WHEN {freq} > 0 THEN r.gap_last ELSE 0.0 END"),
        PURCHASE_INDICATOR.names()[0]: "CASE WHEN r.user_id IS NULL THEN 0.0 ELSE 1.0 END",
        "orders_total": _in("a", "a.orders_total"), "spend_total": _in("a", "a.spend_total"),
        "days_since_last_order": _in("a", f"COALESCE(CAST({d} - a.last_purchase_day AS DOUBLE), 0.0)"),
        "avg_order_value": _in("a", _ratio("a.purchase_amount", "a.orders_total")),
        "avg_basket_quantity": _in("a", _ratio("a.quantity_sum", "CAST(a.quantity_orders AS DOUBLE)")),
        "returns_total": _in("a", "a.returns_total"),
        "return_rate": _in("a", _ratio("a.returns_total", "(a.orders_total + a.returns_total)")),
        "return_value_share": _in("a", _ratio("a.return_amount", "a.purchase_amount")),
        "discount_share": _in("a", _ratio("a.discount_amount", "(a.purchase_amount + a.discount_amount)")),
        "discounted_order_share": _in("a", _ratio("a.discounted_orders", "a.orders_total")),
        "distinct_categories": _in("c", "c.distinct_categories"),
        "top_category_share": _in("c", "c.top_category_share"),
    }
    for w in windows:
        for name in behaviour.ORDER_WINDOWS.names(w):
            cols[name] = _in("a", f"a.{name}")
    for a, b in trend_pairs(windows):
        (orders_a, spend_a), (orders_b, spend_b) = behaviour.ORDER_WINDOWS.names(a), behaviour.ORDER_WINDOWS.names(b)
        scale = f"CAST('{float(b / a)!r}' AS DOUBLE)"  # the Python float of behaviour.trend_ratios
        orders_trend, spend_trend = behaviour.TRENDS.names((a, b))
        cols[orders_trend] = _ratio(f"{cols[orders_a]} * {scale}", f"({cols[orders_b]})")
        cols[spend_trend] = _ratio(f"{cols[spend_a]} * {scale}", f"({cols[spend_b]})")
    return cols


def _event_features(as_of: dt.date, windows: Sequence[int], event_types: Sequence[str]) -> dict[str, str]:
    """SQL per event-sourced feature over the parts event_stats (e) and views (v)."""
    has_events, events_total = behaviour.EVENT_TOTALS.names()
    days_since, view_rate = behaviour.EVENT_RECENCY.names()
    cols = {has_events: "CASE WHEN e.user_id IS NULL THEN 0.0 ELSE 1.0 END", events_total: _in("e", "e.events_total"),
            days_since: _in("e", f"CAST({_date(as_of)} - e.last_event_day AS DOUBLE)"),
            view_rate: _in("v", _ratio("v.bought_days", "v.view_days"))}
    for name in [behaviour.EVENT_WINDOWS.names(w)[0] for w in windows] + \
            [behaviour.event_count_column(t) for t in event_types]:
        cols[name] = _in("e", f"e.{name}")
    return cols


def _campaign_features(as_of: dt.date) -> dict[str, str]:
    """SQL per exposure-sourced feature over the part campaigns (x)."""
    return {"has_exposures": "CASE WHEN x.user_id IS NULL THEN 0.0 ELSE 1.0 END",
            "campaign_exposures_total": _in("x", "x.campaign_exposures_total"),
            "campaign_treated_total": _in("x", "x.campaign_treated_total"),
            "days_since_last_exposure": _in("x", f"CAST({_date(as_of)} - x.last_exposure_day AS DOUBLE)"),
            "campaign_responses_total": _in("x", "x.campaign_responses_total"),
            "campaign_response_rate": _in("x", _ratio("x.campaign_responses_total", "x.completed")),
            "campaign_response_value": _in("x", "x.campaign_response_value")}


def user_features_sql(orders: str, events: Optional[str] = None, exposures: Optional[str] = None, *,
                      as_of: dt.date, features_cfg: Optional[FeaturesConf] = None) -> str:
    """The SQL statement of `duckdb_user_features` (Parquet paths or globs; see there)."""
    cfg = features_cfg or FeaturesConf()
    windows = list(cfg.windows_days)
    ctes = _order_ctes(_parquet(orders), as_of, windows)
    cols = _order_features(as_of, windows)
    joins = ["LEFT JOIN rfm_users AS r USING (user_id)", "LEFT JOIN activity AS a USING (user_id)",
             "LEFT JOIN categories AS c USING (user_id)"]
    population = ["SELECT user_id FROM activity"]
    first_seen = "a.first_order_day"
    if events is not None:
        ctes += _event_ctes(_parquet(events), as_of, windows, cfg.event_types, cfg.view_event_type)
        cols.update(_event_features(as_of, windows, cfg.event_types))
        joins += ["LEFT JOIN event_stats AS e USING (user_id)", "LEFT JOIN views AS v USING (user_id)"]
        population.append("SELECT user_id FROM event_stats")
        first_seen = "least(a.first_order_day, e.first_event_day)"  # NULLs ignored, as Spark's least
    if exposures is not None:
        ctes += _exposure_ctes(_parquet(exposures), as_of, cfg.default_response_window_days)
        cols.update(_campaign_features(as_of))
        joins.append("LEFT JOIN campaigns AS x USING (user_id)")
        population.append("SELECT user_id FROM campaigns WHERE first_observed_exposure_day IS NOT NULL")
    cols[TENURE.names()[0]] = f"COALESCE(CAST({_date(as_of)} - {first_seen} AS DOUBLE), 0.0)"
    ctes.append("population AS (" + " UNION ".join(population) + ")")
    present = {ORDERS} | ({EVENTS} if events is not None else set()) | ({EXPOSURES} if exposures is not None else set())
    select = []
    for feature in declared_features(cfg):
        if feature.source not in COVERED_SOURCES:
            continue
        if feature.name in cols:
            select.append(f"CAST({cols[feature.name]} AS DOUBLE) AS {feature.name}")
        elif feature.source in present:
            raise ValueError(f"feature {feature.name!r} (source {feature.source}) has no DuckDB definition")
        else:  # source absent: the declared default, as build_user_features
            select.append(f"CAST({float(feature.default)!r} AS DOUBLE) AS {feature.name}")
    return ("WITH " + ",\n".join(ctes)
            + f"\nSELECT p.user_id AS {USER_ID}, {_date(as_of)} AS {AS_OF_DATE},\n  " + ",\n  ".join(select)
            + "\nFROM population AS p " + " ".join(joins))


def duckdb_user_features(con, orders: str, events: Optional[str] = None, exposures: Optional[str] = None, *,
                         as_of: dt.date, features_cfg: Optional[FeaturesConf] = None):
    """The covered user_features columns at `as_of`, by DuckDB over Parquet (a DuckDBPyRelation).

    Grain: one row per user as build_user_features (see the module doc). Columns: user_id,
    as_of_date DATE, then `covered_columns(features_cfg)` (DOUBLE; days, counts, order currency).

    Args:
        con: a DuckDB connection; its TimeZone is set to UTC (day boundaries as the Spark sessions').
        orders, events, exposures: Parquet paths or globs of the bronze orders / events /
            campaign_exposures (any columns beyond those of `features.inputs.*_COLUMNS` are
            ignored); events and exposures may be None (their features are then 0).
        as_of: the date D: only rows strictly before D are used.
        features_cfg: the features conf section (windows, event types, view type, default
            response window); default FeaturesConf().
    """
    con.execute("SET TimeZone = 'UTC'")
    return con.sql(user_features_sql(orders, events, exposures, as_of=as_of, features_cfg=features_cfg))


def compare(spark_rows, duck_rows, *, features_cfg: Optional[FeaturesConf] = None, rel_tol: float = 1e-9) -> dict:
    """Column-by-column check of two pandas frames of user features (Spark's and DuckDB's).

    Grain of the inputs: one row per user_id. The whole-number columns (`exact_columns`) must be
    equal; the others within `rel_tol` relative to the larger magnitude (zero only equals zero).

    Returns:
        {"users": n, "same_users": bool, "missing_in_duckdb": n, "extra_in_duckdb": n,
         "columns": {name: {"max_abs_diff", "max_rel_diff", "mismatches", "exact"}}, "ok": bool}.
    """
    import numpy as np

    cfg = features_cfg or FeaturesConf()
    exact = set(exact_columns(cfg))
    left = spark_rows.set_index(USER_ID).sort_index()
    right = duck_rows.set_index(USER_ID).sort_index()
    report = {"users": len(left), "missing_in_duckdb": int((~left.index.isin(right.index)).sum()),
              "extra_in_duckdb": int((~right.index.isin(left.index)).sum()), "columns": {}}
    report["same_users"] = report["missing_in_duckdb"] == 0 and report["extra_in_duckdb"] == 0
    common = left.index.intersection(right.index)
    for name in covered_columns(cfg):
        a = left.loc[common, name].to_numpy(dtype="float64")
        b = right.loc[common, name].to_numpy(dtype="float64")
        both_null = np.isnan(a) & np.isnan(b)
        diff = np.where(both_null, 0.0, np.abs(a - b))
        scale = np.maximum(np.abs(a), np.abs(b))
        rel = np.where(diff == 0, 0.0, diff / np.where(scale > 0, scale, 1.0))
        bad = (diff != 0) if name in exact else ~(rel <= rel_tol)
        bad = bad & ~both_null
        report["columns"][name] = {"max_abs_diff": _finite(diff.max(initial=0.0)),
                                   "max_rel_diff": _finite(rel.max(initial=0.0)),
                                   "mismatches": int(bad.sum()), "exact": name in exact}
    report["ok"] = report["same_users"] and all(c["mismatches"] == 0 for c in report["columns"].values())
    return report


def _finite(x) -> Optional[float]:
    """JSON-safe float (None for NaN)."""
    x = float(x)
    return None if math.isnan(x) else x
