"""What a table contract is, and the column names shared across modules (no Spark, no torch).

`TableContract` (columns, types, nullability, comments, partitioning, key) is what
`lake.ensure_table` turns into a self-documenting Delta table and what `lake.write_*` check a
DataFrame against before writing, so schema drift fails loudly. The contracts themselves are
registered in `ulv_spark.catalog`; column names reused across modules live here as constants.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

# Column names used across modules.
USER_ID = "user_id"
AS_OF_DATE = "as_of_date"
RUN_ID = "run_id"
MODEL_VERSION = "model_version"
REJECT_REASON = "reject_reason"

# user_features / training_examples columns shared by features, train, score and evaluate.
ORIGIN_DATE = "origin_date"          # training_examples: the past as-of date D_k of the example
HORIZON_DAYS = "horizon_days"
SEQ_TOKENS = "seq_tokens"            # ARRAY<INT>, fixed length L (features.sequence_length), PAD = 0
SEQ_MASK = "seq_mask"                # ARRAY<INT>, 1 where seq_tokens holds an event, else 0
LABEL_VALUE = "label_value"          # spend in [origin_date, origin_date + H) (net of returns, >= 0)
LABEL_PURCHASES = "label_purchases"  # number of purchase orders in the window
LABEL_CHURNED = "label_churned"      # 1 when no purchase in the window, else 0
CAMPAIGN_ID = "campaign_id"          # campaign whose exposure fell in the window (null: none)
ARM = "arm"                          # arm the user received in that campaign (null: none)
IS_CONTROL = "is_control"            # true when `arm` is the campaign's control
LABEL_CONVERTED = "label_converted"  # 1/0 purchase in the campaign's response window (null: no exposure)
LABEL_RESPONSE_VALUE = "label_response_value"  # spend in the response window (null: no exposure)

# Columns of user_features / training_examples that are not tabular model inputs. Every other
# numeric column is a tabular feature (see feature_columns), so joined user attributes and new
# features reach the model without code changes; the model stores the list it was trained on.
NON_FEATURE_COLUMNS = frozenset({
    USER_ID, AS_OF_DATE, ORIGIN_DATE, HORIZON_DAYS, SEQ_TOKENS, SEQ_MASK, LABEL_VALUE,
    LABEL_PURCHASES, LABEL_CHURNED, CAMPAIGN_ID, ARM, IS_CONTROL, LABEL_CONVERTED,
    LABEL_RESPONSE_VALUE, RUN_ID, MODEL_VERSION,
})
_NUMERIC_TYPES = ("tinyint", "smallint", "int", "bigint", "float", "double", "decimal", "boolean")


def feature_columns(schema) -> list[str]:
    """Tabular feature columns of a user_features / training_examples schema, in table order.

    Args:
        schema: a pyspark StructType, or a list of (name, simpleString type) pairs.
    """
    pairs = [(f.name, f.dataType.simpleString()) for f in schema.fields] if hasattr(schema, "fields") else list(schema)
    return [name for name, type_ in pairs
            if name not in NON_FEATURE_COLUMNS and type_.lower().startswith(_NUMERIC_TYPES)]


@dataclass(frozen=True)
class Col:
    name: str
    type: str  # Spark SQL type, e.g. "STRING", "DOUBLE", "ARRAY<INT>"
    nullable: bool = True
    comment: str = ""


@dataclass(frozen=True)
class TableContract:
    name: str                      # logical name; the metastore name is <catalog.>schema.name
    comment: str                   # grain, key, meaning of as_of_date, producing job
    columns: tuple[Col, ...]
    partition_by: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()     # unique key (MERGE key for bronze tables)
    extra_columns: bool = False    # True: columns beyond the contract are kept (user_attributes)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def ddl(self) -> str:
        """`name TYPE [NOT NULL], ...` for createDataFrame / from_json."""
        return ", ".join(f"{c.name} {c.type}{'' if c.nullable else ' NOT NULL'}" for c in self.columns)

    def col(self, name: str) -> Col:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.name} has no column {name!r}")


# --------------------------------------------------------------------------------------------
# Feature columns of user_features / training_examples
# --------------------------------------------------------------------------------------------
# The feature columns depend on FeaturesConf (windows, event types) and on the numeric user
# attributes present, so the contracts are built by functions; USER_FEATURES and
# TRAINING_EXAMPLES below are the contracts for the default FeaturesConf without attributes.
from ulv_spark.config import FeaturesConf  # noqa: E402  (config never imports schemas)

ATTRIBUTE_PREFIX = "attr_"           # joined user attributes: attr_<name> DOUBLE


def slug(name: str) -> str:
    """`name` as a lower-case column-name fragment: runs of other characters become '_'."""
    import re

    return re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_") or "x"


def event_count_column(event_type: str) -> str:
    """Column counting the events of `event_type` before as_of_date (e.g. events_view_total)."""
    return f"events_{slug(event_type)}_total"


def trend_pairs(windows_days) -> list[tuple[int, int]]:
    """Consecutive window pairs (short, long) that get a trend-ratio column."""
    windows = list(windows_days)
    return list(zip(windows, windows[1:]))


def _d(name: str, comment: str) -> Col:
    return Col(name, "DOUBLE", False, comment)


def feature_table_columns(features_cfg: Optional[FeaturesConf] = None) -> tuple[Col, ...]:
    """The tabular feature columns (all DOUBLE, never null, never NaN) for `features_cfg`, in order.

    Missing sources give 0 (with the has_* indicators saying so); user attributes come after
    these (see user_features_contract).
    """
    cfg = features_cfg or FeaturesConf()
    cols = [
        _d("frequency", "lifetimes frequency: distinct purchase days before as_of_date minus 1 (0 without purchases)"),
        _d("recency", "lifetimes recency: days from the first to the last purchase day (0 without purchases)"),
        _d("T", "lifetimes T: days from the first purchase day to as_of_date - 1 day (0 without purchases)"),
        _d("monetary_value", "lifetimes monetary_value: mean per-day purchase amount over the repeat purchase "
                             "days (first purchase day excluded); 0 when frequency = 0"),
        _d("has_purchase", "1 when the user has a purchase (non-return order) before as_of_date, else 0"),
        _d("orders_total", "Purchase orders (returns excluded) before as_of_date"),
        _d("spend_total", "Net spend before as_of_date: purchases minus returns"),
        _d("days_since_last_order", "as_of_date minus the last purchase day (0 without purchases)"),
        _d("tenure_days", "as_of_date minus the first day with any order or event"),
    ]
    for w in cfg.windows_days:
        cols.append(_d(f"orders_{w}d", f"Purchase orders in [as_of_date - {w} days, as_of_date)"))
        cols.append(_d(f"spend_{w}d", f"Net spend (purchases minus returns) in [as_of_date - {w} days, as_of_date)"))
    for a, b in trend_pairs(cfg.windows_days):
        cols.append(_d(f"orders_trend_{a}_{b}d", f"Daily purchase-order rate of the last {a} days over that of the "
                                                 f"last {b} days (1 = steady); 0 when orders_{b}d = 0"))
        cols.append(_d(f"spend_trend_{a}_{b}d", f"Daily net-spend rate of the last {a} days over that of the "
                                                f"last {b} days; 0 when spend_{b}d <= 0"))
    cols += [
        _d("gap_mean_days", "Mean days between consecutive purchase days (= recency / frequency; 0 when frequency = 0)"),
        _d("gap_std_days", "Population standard deviation of the days between purchase days (0 when frequency = 0)"),
        _d("gap_last_days", "Days between the last two purchase days (0 when frequency = 0)"),
        _d("avg_order_value", "Mean amount of the purchase orders (first included; 0 without purchases)"),
        _d("avg_basket_quantity", "Mean units per purchase order, over orders with a quantity (0 when none)"),
        _d("distinct_categories", "Distinct categories among the purchase orders"),
        _d("top_category_share", "Share of purchase orders (with a category) in the user's most frequent category; 0 when none"),
        _d("returns_total", "Return / cancellation orders before as_of_date"),
        _d("return_rate", "Returns over all orders (purchases + returns); 0 when none"),
        _d("return_value_share", "Returned value over purchased value; 0 when nothing was purchased"),
        _d("discount_share", "Discount granted over list value (amount + discount) of the purchases; 0 when none"),
        _d("discounted_order_share", "Share of purchase orders with a discount > 0"),
        _d("has_events", "1 when the user has a behaviour event before as_of_date, else 0"),
        _d("events_total", "Behaviour events before as_of_date"),
    ]
    for w in cfg.windows_days:
        cols.append(_d(f"events_{w}d", f"Behaviour events in [as_of_date - {w} days, as_of_date)"))
    for t in cfg.event_types:
        cols.append(_d(event_count_column(t), f"Events of type '{t.strip().lower()}' before as_of_date"))
    cols += [
        _d("days_since_last_event", "as_of_date minus the day of the last event (0 without events)"),
        _d("view_purchase_day_rate", f"Share of days with a '{cfg.view_event_type}' event that also have a "
                                     "purchase order (view -> purchase conversion); 0 without views"),
        _d("has_exposures", "1 when the user was exposed to a campaign before as_of_date, else 0"),
        _d("campaign_exposures_total", "Campaign exposures (any arm) before as_of_date"),
        _d("campaign_treated_total", "Campaign exposures to a non-control arm before as_of_date"),
        _d("days_since_last_exposure", "as_of_date minus the day of the last exposure (0 without exposures)"),
        _d("campaign_responses_total", "Exposures whose response window ended by as_of_date and that converted "
                                       "(observed_converted, else a purchase in the window)"),
        _d("campaign_response_rate", "campaign_responses_total over exposures whose response window ended by "
                                     "as_of_date; 0 when none"),
        _d("campaign_response_value", "Spend in the response windows that ended by as_of_date (observed_value, else "
                                      "net spend in the window floored at 0)"),
    ]
    return tuple(cols)
