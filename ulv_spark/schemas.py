"""Table contracts: one per Delta table, with columns, types, nullability and comments.

`lake.ensure_table` turns a contract into a self-documenting Delta table and
`lake.write_*` check a DataFrame against it before writing, so schema drift fails loudly.
Column names reused across modules live here as constants.
"""
from __future__ import annotations

from dataclasses import dataclass, field
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


def _c(name: str, type_: str, comment: str, nullable: bool = True) -> Col:
    return Col(name, type_, nullable, comment)


def _run_cols() -> tuple[Col, ...]:
    return (_c(MODEL_VERSION, "STRING", "Version of the model directory that produced the row", False),
            _c(RUN_ID, "STRING", "Id of the job run that wrote the row", False))


# --------------------------------------------------------------------------------------------
# Bronze: what ingest writes
# --------------------------------------------------------------------------------------------
ORDERS = TableContract(
    name="orders",
    comment=("Bronze order log. Grain: one row per order (order lines aggregated); returns and "
             "cancellations are their own rows with is_return = true and negative amount. "
             "Key: order_id. Written by jobs/ingest.py with MERGE on order_id."),
    columns=(
        _c(USER_ID, "STRING", "Customer id as given by the source", False),
        _c("order_id", "STRING", "Order id (unique); for line-level sources the invoice id", False),
        _c("order_ts", "TIMESTAMP", "Order time (UTC)", False),
        _c("order_date", "DATE", "Calendar date of order_ts (UTC)", False),
        _c("amount", "DOUBLE", "Net order value in the source currency; negative for returns", False),
        _c("quantity", "DOUBLE", "Total units in the order; negative for returns"),
        _c("n_lines", "INT", "Number of source lines aggregated into this order", False),
        _c("category", "STRING", "Main category of the order (category of the largest line)"),
        _c("discount", "DOUBLE", "Discount granted on the order, same currency as amount"),
        _c("is_return", "BOOLEAN", "True for returns and cancellations", False),
        _c(RUN_ID, "STRING", "Id of the ingest run that last wrote the row", False),
    ),
    keys=("order_id",),
)

EVENTS = TableContract(
    name="events",
    comment=("Bronze behaviour events (views, carts, searches...). Grain: one row per event. "
             "Key: event_id (source id, or hash of user, time, type, product, session). Written by jobs/ingest.py "
             "with MERGE."),
    columns=(
        _c("event_id", "STRING", "The source's event id when mapped, else a deterministic hash of user_id, "
                                 "event_ts, event_type, product_id, session_id", False),
        _c(USER_ID, "STRING", "Customer id", False),
        _c("event_ts", "TIMESTAMP", "Event time (UTC)", False),
        _c("event_date", "DATE", "Calendar date of event_ts (UTC)", False),
        _c("event_type", "STRING", "Event type, lower case (view, add_to_cart, search, ...)", False),
        _c("product_id", "STRING", "Product involved, if any"),
        _c("category", "STRING", "Category of the product, if known"),
        _c("session_id", "STRING", "Session id, if known"),
        _c(RUN_ID, "STRING", "Id of the ingest run that last wrote the row", False),
    ),
    keys=("event_id",),
)

CAMPAIGN_EXPOSURES = TableContract(
    name="campaign_exposures",
    comment=("Bronze campaign exposures. Grain: one row per (user_id, campaign_id). The arm named "
             "'control' (or flagged is_control) is the hold-out. Observed outcome columns, when "
             "present, win over outcomes derived from orders. Written by jobs/ingest.py with MERGE."),
    columns=(
        _c(USER_ID, "STRING", "Customer id", False),
        _c("campaign_id", "STRING", "Campaign id", False),
        _c("arm", "STRING", "Arm the user was assigned to (one arm is the control)", False),
        _c("is_control", "BOOLEAN", "True for the hold-out arm", False),
        _c("exposed_ts", "TIMESTAMP", "When the user was exposed / assigned (UTC)", False),
        _c("response_window_days", "INT", "Days after exposure in which a response counts"),
        _c("observed_converted", "BOOLEAN", "Observed conversion in the response window, if the source has it"),
        _c("observed_value", "DOUBLE", "Observed spend in the response window, if the source has it"),
        _c(RUN_ID, "STRING", "Id of the ingest run that last wrote the row", False),
    ),
    keys=("user_id", "campaign_id"),
)

USER_ATTRIBUTES = TableContract(
    name="user_attributes",
    comment=("Bronze user attributes (CRM segment, channel, region ...). Grain: one row per user_id. "
             "Columns beyond user_id come from the source. Written by jobs/ingest.py with MERGE."),
    columns=(
        _c(USER_ID, "STRING", "Customer id", False),
        _c(RUN_ID, "STRING", "Id of the ingest run that last wrote the row", False),
    ),
    keys=(USER_ID,),
    extra_columns=True,
)


# --------------------------------------------------------------------------------------------
# Truth: what the synthetic generator knows (written by jobs/generate.py, read by evaluate)
# --------------------------------------------------------------------------------------------
TRUTH_USERS = TableContract(
    name="truth_users",
    comment=("Ground truth of the synthetic data. Grain: one row per (user_id, as_of_date) for every user "
             "whose first purchase is before as_of_date. Expectations are conditional on the user's true "
             "latent parameters (purchase rate, dropout probability, spend scale) and on all activity "
             "(orders and browsing) strictly before as_of_date, not on the hidden alive state; future "
             "campaign waves in the horizon are averaged over their random arm assignment. Written by "
             "jobs/generate.py (replaceWhere per as_of_date)."),
    columns=(
        _c(USER_ID, "STRING", "Customer id", False),
        _c(AS_OF_DATE, "DATE", "As-of date D: the truth uses the simulated history strictly before it", False),
        _c(HORIZON_DAYS, "INT", "Horizon H in days (run.horizon_days), starting at as_of_date", False),
        _c("p_alive", "DOUBLE", "True probability that the user is still active at as_of_date", False),
        _c("expected_purchases", "DOUBLE", "True expected number of purchase orders placed in [D, D + H) "
                                           "(later-cancelled ones included)", False),
        _c("expected_spend", "DOUBLE", "True expected net spend (after discounts and cancellations) of the "
                                       "orders placed in [D, D + H)", False),
        _c("is_alive", "BOOLEAN", "The hidden simulated state: still active at as_of_date", False),
    ),
    partition_by=(AS_OF_DATE,),
    keys=(USER_ID, AS_OF_DATE),
)

TRUTH_UPLIFT = TableContract(
    name="truth_uplift",
    comment=("True effect of sending each treatment arm at as_of_date vs the control arm, in the response "
             "window [D, D + response_window_days) with no other campaign active. Grain: one row per "
             "(user_id, as_of_date, campaign_id, arm) for every non-control arm and every user of "
             "truth_users. campaign_id names the hypothetical wave sent at D (promo_<yyyymmdd>); join on "
             "(user_id, as_of_date, arm). Written by jobs/generate.py (replaceWhere per as_of_date)."),
    columns=(
        _c(USER_ID, "STRING", "Customer id", False),
        _c(AS_OF_DATE, "DATE", "As-of date D: the campaign is sent at D, the truth uses history before D", False),
        _c("campaign_id", "STRING", "Hypothetical campaign wave sent at as_of_date (promo_<yyyymmdd>)", False),
        _c("arm", "STRING", "Treatment arm", False),
        _c("true_uplift_conversion", "DOUBLE", "P(purchase in the window | arm) - P(purchase in the window | control)",
           False),
        _c("true_uplift_value", "DOUBLE", "E[net spend in the window | arm] - E[net spend in the window | control]",
           False),
        _c("response_window_days", "INT", "Length of the response window in days", False),
    ),
    partition_by=(AS_OF_DATE,),
    keys=(USER_ID, AS_OF_DATE, "campaign_id", "arm"),
)


def rejects_contract(table: TableContract) -> TableContract:
    """Quarantine table `<table>_rejects`: the offending row as text plus why and when."""
    return TableContract(
        name=f"{table.name}_rejects",
        comment=(f"Rows of the {table.name} source that broke its contract. Grain: one row per "
                 f"rejected source row and run. Written by jobs/ingest.py (append)."),
        columns=(
            _c("raw", "STRING", "The source row as JSON, with the source's own column names", False),
            _c(USER_ID, "STRING", "Mapped user id as text (may be null: that can be the reason)"),
            _c(REJECT_REASON, "STRING", "Why the row was rejected (e.g. null_user_id, bad_timestamp)", False),
            _c(RUN_ID, "STRING", "Id of the ingest run", False),
            _c("rejected_at", "TIMESTAMP", "When the row was rejected (UTC)", False),
            _c(AS_OF_DATE, "DATE", "Run date of the ingest run"),
        ),
    )


# --------------------------------------------------------------------------------------------
# Gold: features (written by jobs/features.py; read by train, score and evaluate)
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


def _sequence_cols() -> tuple[Col, ...]:
    return (
        Col(SEQ_TOKENS, "ARRAY<INT>", False, "Token ids of the user's last L orders and events before the date, oldest "
            "first, right-padded with 0 (PAD) to exactly L = features.sequence_length; see token_vocabulary"),
        Col(SEQ_MASK, "ARRAY<INT>", False, "Attention mask for seq_tokens: 1 for an event, 0 for padding"),
    )


def user_features_contract(features_cfg: Optional[FeaturesConf] = None,
                           attribute_columns: tuple[Col, ...] = ()) -> TableContract:
    """Contract of `user_features` for `features_cfg` plus joined `attribute_columns` (attr_*)."""
    return TableContract(
        name="user_features",
        comment=("Point-in-time user features. Grain: one row per (user_id, as_of_date) for every user with an "
                 "order or event (or a campaign exposure with an observed outcome) strictly before as_of_date; "
                 "only data strictly before as_of_date is used. RFM follows lifetimes (freq='D', observation end "
                 "as_of_date - 1 day). Written by jobs/features.py (replaceWhere per as_of_date)."),
        columns=(
            _c(USER_ID, "STRING", "Customer id", False),
            _c(AS_OF_DATE, "DATE", "Run date D; features use data strictly before it", False),
        ) + feature_table_columns(features_cfg) + tuple(attribute_columns) + _sequence_cols() + (
            _c(RUN_ID, "STRING", "Id of the features run that wrote the row", False),
        ),
        partition_by=(AS_OF_DATE,),
        keys=(USER_ID, AS_OF_DATE),
    )


def training_examples_contract(features_cfg: Optional[FeaturesConf] = None,
                               attribute_columns: tuple[Col, ...] = ()) -> TableContract:
    """Contract of `training_examples` for `features_cfg` plus joined `attribute_columns` (attr_*)."""
    return TableContract(
        name="training_examples",
        comment=("Training examples at rolling past origins origin_date = as_of_date - H - k * step. Grain: one row "
                 "per (user_id, as_of_date, origin_date) for every user with an order or event (or a campaign exposure "
                 "with an observed outcome) before origin_date, or with an observed campaign outcome in the label "
                 "window; features use data strictly before origin_date, labels only [origin_date, origin_date + "
                 "horizon_days). Written by jobs/features.py (replaceWhere per as_of_date)."),
        columns=(
            _c(USER_ID, "STRING", "Customer id", False),
            _c(AS_OF_DATE, "DATE", "Run date D of the features job that built the examples", False),
            _c(ORIGIN_DATE, "DATE", "Past as-of date D_k of the example: features before it, labels from it on", False),
            _c(HORIZON_DAYS, "INT", "Label window length H in days (run.horizon_days)", False),
        ) + feature_table_columns(features_cfg) + tuple(attribute_columns) + _sequence_cols() + (
            _c(LABEL_VALUE, "DOUBLE", "Net spend in [origin_date, origin_date + horizon_days), floored at 0", False),
            _c(LABEL_PURCHASES, "INT", "Purchase orders in [origin_date, origin_date + horizon_days)", False),
            _c(LABEL_CHURNED, "INT", "1 when no purchase order in [origin_date, origin_date + horizon_days), else 0", False),
            _c(CAMPAIGN_ID, "STRING", "First campaign exposure in the label window whose response window ends inside "
                                      "it (null: none)"),
            _c(ARM, "STRING", "Arm of that exposure (null: none)"),
            _c(IS_CONTROL, "BOOLEAN", "True when arm is the campaign's control (null: no exposure)"),
            _c(LABEL_CONVERTED, "INT", "1/0: observed_converted, else a purchase in [exposed_ts, exposed_ts + "
                                       "response_window_days) (null: no exposure)"),
            _c(LABEL_RESPONSE_VALUE, "DOUBLE", "observed_value, else net spend in the response window floored at 0 "
                                               "(null: no exposure)"),
            _c(RUN_ID, "STRING", "Id of the features run that wrote the row", False),
        ),
        partition_by=(AS_OF_DATE,),
        keys=(USER_ID, AS_OF_DATE, ORIGIN_DATE),
    )


USER_FEATURES = user_features_contract()
TRAINING_EXAMPLES = training_examples_contract()

TOKEN_VOCABULARY = TableContract(
    name="token_vocabulary",
    comment=("Event-token vocabulary of the sequences in user_features / training_examples. Grain: one row per "
             "(as_of_date, token_id), ids 0..vocab_size-1; 0-3 are PAD, MASK, CLS, UNK. Deterministic from the "
             "features conf (fingerprint). Written by jobs/features.py (replaceWhere per as_of_date)."),
    columns=(
        _c(AS_OF_DATE, "DATE", "Run date of the features job that wrote the vocabulary", False),
        _c("token_id", "INT", "Token id as stored in seq_tokens", False),
        _c("event_type", "STRING", "purchase, return, a behaviour event type, or [PAD]/[MASK]/[CLS]/[UNK]", False),
        _c("amount_bucket", "INT", "0 = no amount (behaviour event); i >= 1: |amount| reaches exactly i - 1 of the "
                                   "cut points features.amount_buckets (null for reserved tokens)"),
        _c("gap_bucket", "INT", "0 = first event of the user; i >= 1: days since the previous event reach exactly "
                                "i - 1 of the cut points features.gap_buckets_days (null for reserved tokens)"),
        _c("category_slot", "INT", "0 = no category, else 1 + pmod(xxhash64(category), features.max_categories) "
                                   "(null for reserved tokens)"),
        _c("fingerprint", "STRING", "Hash of the vocabulary definition (sequences.vocabulary_fingerprint)", False),
        _c(RUN_ID, "STRING", "Id of the features run that wrote the row", False),
    ),
    partition_by=(AS_OF_DATE,),
    keys=(AS_OF_DATE, "token_id"),
)


# --------------------------------------------------------------------------------------------
# Gold: scores (what SQL consumers read)
# --------------------------------------------------------------------------------------------
USER_VALUE = TableContract(
    name="user_value",
    comment=("Predicted customer value over the next horizon_days. Grain: one row per (user_id, "
             "as_of_date); every user with features for the date. as_of_date: only data strictly "
             "before it was used. Written nightly by jobs/score.py."),
    columns=(
        _c(USER_ID, "STRING", "Customer id", False),
        _c(AS_OF_DATE, "DATE", "Run date; predictions use data strictly before it", False),
        _c("horizon_days", "INT", "Prediction horizon in days, starting at as_of_date", False),
        _c("expected_value", "DOUBLE", "Expected spend in [as_of_date, as_of_date + horizon_days)", False),
        _c("p_purchase", "DOUBLE", "Probability of at least one purchase in the horizon", False),
        _c("value_p10", "DOUBLE", "10th percentile of spend in the horizon", False),
        _c("value_p90", "DOUBLE", "90th percentile of spend in the horizon", False),
        _c("value_decile", "INT", "Decile of expected_value among users of the date (1 = top)", False),
    ) + _run_cols(),
    partition_by=(AS_OF_DATE,),
    keys=(USER_ID, AS_OF_DATE),
)

USER_CHURN = TableContract(
    name="user_churn",
    comment=("Churn risk: probability of no purchase in the next horizon_days. Grain: one row per "
             "(user_id, as_of_date). Written nightly by jobs/score.py."),
    columns=(
        _c(USER_ID, "STRING", "Customer id", False),
        _c(AS_OF_DATE, "DATE", "Run date; predictions use data strictly before it", False),
        _c("horizon_days", "INT", "Horizon in days, starting at as_of_date", False),
        _c("churn_probability", "DOUBLE", "Probability of no purchase in the horizon", False),
        _c("risk_tier", "STRING", "low / medium / high, by the cut points in conf (score.risk_tiers)", False),
    ) + _run_cols(),
    partition_by=(AS_OF_DATE,),
    keys=(USER_ID, AS_OF_DATE),
)

PROMO_UPLIFT = TableContract(
    name="promo_uplift",
    comment=("Incremental effect of sending each campaign arm vs the control. Grain: one row per "
             "(user_id, as_of_date, campaign_id, arm) for every non-control arm. Written nightly by "
             "jobs/score.py."),
    columns=(
        _c(USER_ID, "STRING", "Customer id", False),
        _c(AS_OF_DATE, "DATE", "Run date; predictions use data strictly before it", False),
        _c("campaign_id", "STRING", "Campaign the arm belongs to", False),
        _c("arm", "STRING", "Treatment arm", False),
        _c("uplift_conversion", "DOUBLE", "P(convert | arm) - P(convert | control) in the response window", False),
        _c("uplift_value", "DOUBLE", "E[spend | arm] - E[spend | control] in the response window", False),
        _c("expected_profit", "DOUBLE", "uplift_value * margin - cost of the arm (conf: score.margin, score.arm_costs)", False),
        _c("recommended", "BOOLEAN", "True when this arm has the highest positive expected_profit for the user", False),
    ) + _run_cols(),
    partition_by=(AS_OF_DATE,),
    keys=(USER_ID, AS_OF_DATE, "campaign_id", "arm"),
)

USER_SEGMENTS = TableContract(
    name="user_segments",
    comment=("Value x churn segment per user. Grain: one row per (user_id, as_of_date). Segments: "
             "champion, at_risk_high_value, promising, needs_attention, hibernating, lost. "
             "Written nightly by jobs/score.py."),
    columns=(
        _c(USER_ID, "STRING", "Customer id", False),
        _c(AS_OF_DATE, "DATE", "Run date", False),
        _c("segment", "STRING", "Segment name from the value x churn grid", False),
        _c("value_band", "STRING", "high / mid / low expected value (deciles 1-2 / 3-6 / 7-10)", False),
        _c("churn_band", "STRING", "Churn risk tier (low / medium / high)", False),
    ) + _run_cols(),
    partition_by=(AS_OF_DATE,),
    keys=(USER_ID, AS_OF_DATE),
)

SCORE_PREDICTIONS = TableContract(
    name="score_predictions",
    comment=("Staging: raw model outputs per user, computed once per run so the four score tables "
             "derive from the same rows. Grain: one row per (user_id, as_of_date). arm_* arrays follow "
             "the arms of model_version (control first). Written nightly by jobs/score.py."),
    columns=(
        _c(USER_ID, "STRING", "Customer id", False),
        _c(AS_OF_DATE, "DATE", "Run date; predictions use data strictly before it", False),
        _c("expected_value", "DOUBLE", "Expected spend in the horizon", False),
        _c("p_purchase", "DOUBLE", "Probability of at least one purchase in the horizon", False),
        _c("value_p10", "DOUBLE", "10th percentile of spend in the horizon", False),
        _c("value_p90", "DOUBLE", "90th percentile of spend in the horizon", False),
        _c("churn_probability", "DOUBLE", "Probability of no purchase in the horizon", False),
        _c("arm_conversion", "ARRAY<DOUBLE>", "P(convert | arm) per model arm, control first", False),
        _c("arm_value", "ARRAY<DOUBLE>", "E[spend | arm] in the response window per model arm, control first", False),
    ) + _run_cols(),
    partition_by=(AS_OF_DATE,),
    keys=(USER_ID, AS_OF_DATE),
)

EVALUATION_METRICS = TableContract(
    name="evaluation_metrics",
    comment=("Backtest metrics. Grain: one row per (run_id, dataset, split, method, metric); every "
             "method of a split is scored on the same test users. Written by jobs/evaluate.py and the "
             "reference benchmarks (append per run; a re-run adds rows under its own run_id)."),
    columns=(
        _c("dataset", "STRING", "Data set evaluated (e.g. cdnow, synthetic, lakehouse)", False),
        _c("split", "STRING", "Backtest split: evaluation origin, horizon and, when only a share of the users "
                              "is scored, that share, e.g. origin=1997-10-01/h=273/test=0.5", False),
        _c("method", "STRING", "model, bgnbd_gg, gbm, rfm_heuristic, two_model_gbm, oracle", False),
        _c("metric", "STRING", "Metric name: value_gini, value_decile_mape, value_spearman, value_total_ratio, "
                               "churn_auc, churn_pr_auc, churn_ece, qini_<conversion|value>[<arm>] (without [arm]: "
                               "mean over arms), auuc_*, uplift_at_k_*, *_truth_pearson / *_truth_spearman "
                               "(synthetic: vs the true values), <metric>_share_of_oracle", False),
        _c("value", "DOUBLE", "Metric value"),
        _c(AS_OF_DATE, "DATE", "Run date of the evaluation", False),
        _c(RUN_ID, "STRING", "Id of the evaluation run", False),
    ),
)

OUTPUT_CONTRACTS = (USER_VALUE, USER_CHURN, PROMO_UPLIFT, USER_SEGMENTS)


def find_contract(name: str) -> Optional[TableContract]:
    """The contract with logical name `name`, among those defined in this module."""
    for value in globals().values():
        if isinstance(value, TableContract) and value.name == name:
            return value
    return None
