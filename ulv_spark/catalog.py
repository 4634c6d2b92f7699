"""The lakehouse's tables: every table contract registered once, by name and group.

Each ``register(group, contract)`` below is the one definition of a table: its columns,
types, nullability, comments, partitioning and key (see ``schemas.TableContract``), the group
it belongs to and whether a ``latest_<name>`` view goes with it. Every command takes its
table lists from here (``names(group)``, ``tables(group)``, ``latest_views()``): ingest its
bronze inputs, features and score their outputs, the nightly its summary, ``ulv-spark
tables``, the demo and the notebook what to attach. Adding a table is one registration.

A bronze table registers its quarantine table ``<name>_rejects`` (group ``rejects``) with it.
The feature tables' columns depend on the features conf and on the user attributes present,
so they register a ``build(features_cfg, attribute_columns)`` function beside the contract
for the default conf; their tabular columns are generated from the feature declarations
(``features.build.FEATURE_BLOCKS``, see ``features/declare.py``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional

from ulv_spark.config import FeaturesConf
from ulv_spark.features.build import feature_table_columns
from ulv_spark.plan.contracts import (ALL_ARMS, COST, LONG_TERM_MISSING, OBJECTIVE, PLAN, SCENARIO, SCENARIOS,
                                      SHORT_TERM_WEIGHT, UPLIFT_CONVERSION, UPLIFT_VALUE, UPLIFT_VALUE_LONG)
from ulv_spark.names import (ARM_CONVERSION, ARM_VALUE, ARM_VALUE_LONG, CHURN_PROBABILITY, EXPECTED_VALUE, P_PURCHASE, VALUE_P10,
                             VALUE_P90)
from ulv_spark.segments.contracts import (EMBEDDING as USER_EMBEDDING, FROM_SEGMENT, LEARNED_SEGMENT,
                                          LEARNED_SEGMENT_NAME, TO_SEGMENT, USERS)
from ulv_spark.schemas import (ARM, AS_OF_DATE, CAMPAIGN_ID, HORIZON_DAYS, IS_CONTROL, LABEL_CHURNED, LABEL_CONVERTED,
                               LABEL_PURCHASES, LABEL_RESPONSE_VALUE, LABEL_VALUE, MODEL_VERSION, ORIGIN_DATE,
                               REJECT_REASON, RISK_TIER, RUN_ID, SEQ_MASK, SEQ_TEXT, SEQ_TOKENS, USER_ID, VALUE_DECILE, Col,
                               TableContract)
from ulv_spark.text.contracts import (DIM, EMBEDDED_AT, EMBEDDING, HAS_TEXT, MODEL_ID, N_TOKENS, PRODUCT_ID,
                                      PRODUCT_KEYS, REVIEW_KEYS, REVIEW_TS, TEXT_HASH, TRUNCATED)

# Groups, in the order their tables are listed.
BRONZE = "bronze"            # ingest's MERGE targets, one per input source (sources.<name>)
REJECTS = "rejects"          # <bronze>_rejects: quarantined source rows with a reason
FEATURES = "features"        # gold features written by the features job
STAGING = "staging"          # intermediate results of a job (raw model outputs)
SCORES = "scores"            # what SQL consumers read, each with a latest_<name> view (written by score)
PLANS = "plans"              # promotion plans from the scores, with latest_<name> views (written by `ulv-spark plan`)
EVALUATION = "evaluation"    # backtest metrics
TRUTH = "truth"              # ground truth of generated data (written by `ulv-spark generate`)
DERIVED = "derived"          # bronze tables ingest derives from a source of another name (order_lines)
TEXT = "text"                # product / review embeddings (`ulv-spark embed`) and the text projection
SEGMENTS = "segments"        # user embeddings (written by score) and learned segments (`ulv-spark segment`)
GROUPS = (BRONZE, REJECTS, DERIVED, FEATURES, STAGING, SCORES, PLANS, EVALUATION, TRUTH, TEXT, SEGMENTS)


@dataclass(frozen=True)
class Table:
    """One registered table: its contract, group and what goes with it."""

    contract: TableContract
    group: str
    latest_view: bool = False      # a latest_<name> view over the newest as_of_date
    build: Optional[Callable[..., TableContract]] = None  # (features_cfg, attribute_columns) -> contract

    @property
    def name(self) -> str:
        return self.contract.name


_TABLES: dict[str, Table] = {}


def register(group: str, contract: TableContract, *, latest_view: bool = False,
             build: Optional[Callable[..., TableContract]] = None) -> TableContract:
    """Add `contract` to the catalog under `group` (a bronze table also adds its rejects); returns it."""
    if group not in GROUPS:
        raise ValueError(f"unknown table group {group!r}; groups: {', '.join(GROUPS)}")
    if contract.name in _TABLES:
        raise ValueError(f"table {contract.name!r} is registered twice")
    contract = with_hygiene(group, contract)
    _TABLES[contract.name] = Table(contract, group, latest_view, build)
    if group == BRONZE:
        register(REJECTS, rejects_contract(contract))
    return contract


# the job that writes each group's tables (table property ulv.producer)
PRODUCERS = {BRONZE: "ingest", REJECTS: "ingest", DERIVED: "ingest", FEATURES: "features", STAGING: "score",
             SCORES: "score", PLANS: "plan", EVALUATION: "evaluate", TRUTH: "generate", TEXT: "embed",
             SEGMENTS: "segment"}  # a contract's own ulv.producer property wins (user_embeddings: score)
APPEND_ONLY_GROUPS = (REJECTS, EVALUATION)  # rows are only ever added: Delta refuses updates and deletes


def with_hygiene(group: str, contract: TableContract) -> TableContract:
    """`contract` with the group's table properties: ``ulv.producer`` (the writing job) and, for
    rejects and metrics, ``delta.appendOnly``."""
    props = dict(contract.properties)
    props.setdefault("ulv.producer", PRODUCERS[group])
    if group in APPEND_ONLY_GROUPS:
        props.setdefault("delta.appendOnly", "true")
    return dataclasses.replace(contract, properties=tuple(sorted(props.items())))


def _between(column: str, low: int, high: int) -> tuple[str, str]:
    return (f"{column}_range", f"{column} >= {low} AND {column} <= {high}")


def _non_negative(column: str) -> tuple[str, str]:
    return (f"{column}_non_negative", f"{column} >= 0")


def table(name: str) -> Table:
    """The registered table `name` (KeyError naming the known tables otherwise)."""
    try:
        return _TABLES[name]
    except KeyError:
        raise KeyError(f"no table {name!r} in the catalog; known: {', '.join(_TABLES)}") from None


def contract(name: str, features_cfg: Optional[FeaturesConf] = None,
             attribute_columns: tuple[Col, ...] = ()) -> TableContract:
    """The contract of table `name`; for a feature table, the one for `features_cfg` and `attribute_columns`."""
    entry = table(name)
    if entry.build is not None and (features_cfg is not None or attribute_columns):
        return with_hygiene(entry.group, entry.build(features_cfg, attribute_columns))
    return entry.contract


def tables(*groups: str) -> tuple[Table, ...]:
    """The registered tables of `groups` (every table without), in registration order."""
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise ValueError(f"unknown table group(s) {unknown}; groups: {', '.join(GROUPS)}")
    return tuple(t for t in _TABLES.values() if not groups or t.group in groups)


def names(*groups: str) -> tuple[str, ...]:
    """Names of the registered tables of `groups` (every table without), in registration order."""
    return tuple(t.name for t in tables(*groups))


def latest_views() -> tuple[str, ...]:
    """Names of the tables that have a latest_<name> view."""
    return tuple(t.name for t in _TABLES.values() if t.latest_view)


def _c(name: str, type_: str, comment: str, nullable: bool = True) -> Col:
    return Col(name, type_, nullable, comment)


def _run_cols() -> tuple[Col, ...]:
    return (_c(MODEL_VERSION, "STRING", "Version of the model directory that produced the row", False),
            _c(RUN_ID, "STRING", "Id of the job run that wrote the row", False))


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


def pending_contract(table: TableContract) -> TableContract:
    """`<table>_pending`: source rows dated after their night's run date, kept by an incremental ingest.

    A file is read once by an incremental night, so a row it defers waits here and is read back
    on every later night until it is due (then it goes to bronze, or to the rejects).
    """
    return TableContract(
        name=f"{table.name}_pending",
        comment=(f"Rows of the {table.name} source dated after the run date of the incremental night that read "
                 f"them (sources.{table.name}.future_rows: defer). Grain: one row per deferred source row. "
                 f"Rewritten by jobs/ingest.py: each night loads the rows now due and keeps the rest."),
        columns=(
            _c("raw", "STRING", "The source row as JSON, with the source's own column names", False),
            _c(USER_ID, "STRING", "Mapped user id"),
            _c(RUN_ID, "STRING", "Id of the ingest run that deferred the row", False),
            _c("deferred_at", "TIMESTAMP", "When the row was deferred (UTC)", False),
            _c(AS_OF_DATE, "DATE", "Run date of the ingest run that deferred the row"),
        ),
    )


# --------------------------------------------------------------------------------------------
# Bronze: what ingest writes
# --------------------------------------------------------------------------------------------
ORDERS = register(BRONZE, TableContract(
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
))

EVENTS = register(BRONZE, TableContract(
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
))

CAMPAIGN_EXPOSURES = register(BRONZE, TableContract(
    name="campaign_exposures",
    comment=("Bronze campaign exposures. Grain: one row per (user_id, campaign_id). The arm named "
             "'control' (or flagged is_control) is the hold-out. Observed outcome columns, when "
             "present, win over outcomes derived from orders. Written by jobs/ingest.py with MERGE."),
    columns=(
        _c(USER_ID, "STRING", "Customer id", False),
        _c(CAMPAIGN_ID, "STRING", "Campaign id", False),
        _c(ARM, "STRING", "Arm the user was assigned to (one arm is the control)", False),
        _c(IS_CONTROL, "BOOLEAN", "True for the hold-out arm", False),
        _c("exposed_ts", "TIMESTAMP", "When the user was exposed / assigned (UTC)", False),
        _c("response_window_days", "INT", "Days after exposure in which a response counts"),
        _c("observed_converted", "BOOLEAN", "Observed conversion in the response window, if the source has it"),
        _c("observed_value", "DOUBLE", "Observed spend in the response window, if the source has it"),
        _c(RUN_ID, "STRING", "Id of the ingest run that last wrote the row", False),
    ),
    keys=("user_id", "campaign_id"),
))

USER_ATTRIBUTES = register(BRONZE, TableContract(
    name="user_attributes",
    comment=("Bronze user attributes (CRM segment, channel, region ...). Grain: one row per user_id. "
             "Columns beyond user_id come from the source. Written by jobs/ingest.py with MERGE."),
    columns=(
        _c(USER_ID, "STRING", "Customer id", False),
        _c(RUN_ID, "STRING", "Id of the ingest run that last wrote the row", False),
    ),
    keys=(USER_ID,),
    extra_columns=True,
))


PRODUCTS = register(BRONZE, TableContract(
    name="products",
    comment=("Bronze product catalog. Grain: one row per product_id. Title and description may each be "
             "missing (kept, never rejected); the embed job embeds title + '. ' + description (normalised). "
             "From sources.products, or, without one, derived from the order lines that carry product texts "
             "(the text of each product's latest line in the run). Key: product_id. Written by jobs/ingest.py "
             "with MERGE; read by jobs/embed.py."),
    columns=(
        _c(PRODUCT_ID, "STRING", "Product id (SKU) as given by the source; orders and events refer to it", False),
        _c("title", "STRING", "Product title / name as given by the source"),
        _c("description", "STRING", "Longer product description"),
        _c("category", "STRING", "Product category as given by the source"),
        _c("price", "DOUBLE", "List price in the source currency"),
        _c(RUN_ID, "STRING", "Id of the run that last wrote the row", False),
    ),
    keys=PRODUCT_KEYS,
))

REVIEWS = register(BRONZE, TableContract(
    name="reviews",
    comment=("Bronze product reviews. Grain: one row per (user_id, product_id, review_ts). Missing, empty or "
             "very long texts are kept (the embed job handles them). Key: (user_id, product_id, review_ts). "
             "Written by jobs/ingest.py with MERGE; read by jobs/embed.py and the text features."),
    columns=(
        _c(USER_ID, "STRING", "Customer id of the reviewer", False),
        _c(PRODUCT_ID, "STRING", "Product reviewed", False),
        _c(REVIEW_TS, "TIMESTAMP", "When the review was written (UTC)", False),
        _c("rating", "DOUBLE", "Star rating as given by the source (0 .. sources.reviews.max_rating); null when none"),
        _c("text", "STRING", "Review text; may be missing or empty"),
        _c(RUN_ID, "STRING", "Id of the run that last wrote the row", False),
    ),
    keys=REVIEW_KEYS,
))

ORDER_LINES = register(DERIVED, TableContract(
    name="order_lines",
    comment=("Bronze order lines with their products. Grain: one row per loaded line of an orders source that "
             "maps product_id (line-level logs: every line of every loaded order; order-level logs: one line per "
             "order). Key: (order_id, line_id). order_id is the id of the orders row the line was aggregated "
             "into (return lines of a mixed order: <order_id>-R). Written by jobs/ingest.py with MERGE; read by "
             "the text features (spend per product)."),
    columns=(
        _c("order_id", "STRING", "Id of the orders row this line belongs to", False),
        _c("line_id", "STRING", "Line id from the source when mapped, else the line's number within its order "
                                "(1, 2, ... ordered by a hash of the source row)", False),
        _c(USER_ID, "STRING", "Customer id", False),
        _c(PRODUCT_ID, "STRING", "Product of the line; null when the line names none"),
        _c("order_ts", "TIMESTAMP", "Order time (UTC)", False),
        _c("quantity", "DOUBLE", "Units on the line; negative for returns"),
        _c("amount", "DOUBLE", "Net line value in the source currency; negative for returns", False),
        _c(RUN_ID, "STRING", "Id of the ingest run that last wrote the row", False),
    ),
    keys=("order_id", "line_id"),
))


# --------------------------------------------------------------------------------------------
# Gold: features (written by jobs/features.py; read by train, score and evaluate)
# --------------------------------------------------------------------------------------------
_NULL_FEATURES = ("Feature columns are null only where a builder produced null for a user who has rows in the "
                  "feature's source (the nightly null-feature gate watches the share); users without such rows get "
                  "the declared default.")


def _sequence_cols(features_cfg: Optional[FeaturesConf] = None) -> tuple[Col, ...]:
    cols = (
        Col(SEQ_TOKENS, "ARRAY<INT>", False, "Token ids of the user's last L orders and events before the date, oldest "
            "first, right-padded with 0 (PAD) to exactly L = features.sequence_length; see token_vocabulary"),
        Col(SEQ_MASK, "ARRAY<INT>", False, "Attention mask for seq_tokens: 1 for an event, 0 for padding"),
    )
    if not (features_cfg or FeaturesConf()).text:
        return cols
    return cols + (Col(SEQ_TEXT, "ARRAY<FLOAT>", True, "Per-event product text of seq_tokens: per position, the "
                       "features.text_dims (k) text_projection components of the |amount|-weighted mean product "
                       "embedding of the event's order lines, flattened (L * k); zeros without; null when no event "
                       "has text"),)


def user_features_contract(features_cfg: Optional[FeaturesConf] = None,
                           attribute_columns: tuple[Col, ...] = ()) -> TableContract:
    """Contract of `user_features` for `features_cfg` plus joined `attribute_columns` (attr_*)."""
    return TableContract(
        name="user_features",
        comment=("Point-in-time user features. Grain: one row per (user_id, as_of_date) for every user with an "
                 "order or event (or a campaign exposure with an observed outcome) strictly before as_of_date; "
                 "only data strictly before as_of_date is used. RFM follows lifetimes (freq='D', observation end "
                 "as_of_date - 1 day). " + _NULL_FEATURES + " Written by jobs/features.py (replaceWhere per "
                 "as_of_date)."),
        columns=(
            _c(USER_ID, "STRING", "Customer id", False),
            _c(AS_OF_DATE, "DATE", "Run date D; features use data strictly before it", False),
        ) + feature_table_columns(features_cfg) + tuple(attribute_columns) + _sequence_cols(features_cfg) + (
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
                 "horizon_days). " + _NULL_FEATURES + " Written by jobs/features.py (replaceWhere per as_of_date)."),
        columns=(
            _c(USER_ID, "STRING", "Customer id", False),
            _c(AS_OF_DATE, "DATE", "Run date D of the features job that built the examples", False),
            _c(ORIGIN_DATE, "DATE", "Past as-of date D_k of the example: features before it, labels from it on", False),
            _c(HORIZON_DAYS, "INT", "Label window length H in days (run.horizon_days)", False),
        ) + feature_table_columns(features_cfg) + tuple(attribute_columns) + _sequence_cols(features_cfg) + (
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


USER_FEATURES = register(FEATURES, user_features_contract(), build=user_features_contract, latest_view=True)
TRAINING_EXAMPLES = register(FEATURES, training_examples_contract(), build=training_examples_contract)

TOKEN_VOCABULARY = register(FEATURES, TableContract(
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
))


# --------------------------------------------------------------------------------------------
# Staging: raw model outputs (written by jobs/score.py)
# --------------------------------------------------------------------------------------------
USER_DAY = register(STAGING, TableContract(
    name="user_day",
    comment=("Per-user daily order aggregates: the incremental features state. Grain: one row per (user_id, "
             "order_day) with an order (purchase or return) in bronze orders. Key: (user_id, order_day). "
             "Maintained by features.state.update_user_day from the users with new or changed orders (their "
             "days are recomputed from bronze, so late rows, returns and corrections land exactly); the RFM "
             "columns of user_features at any date follow from it (features.state.rfm_from_user_day)."),
    columns=(
        _c(USER_ID, "STRING", "Customer id", False),
        _c("order_day", "DATE", "Calendar day (UTC) of the orders", False),
        _c("purchase_amount", "DOUBLE", "Exact sum (DECIMAL, returned as DOUBLE) of the day's purchase amounts; "
                                        "null without purchases"),
        _c("purchase_orders", "BIGINT", "Purchase orders (is_return = false) on the day", False),
        _c("return_amount", "DOUBLE", "Exact sum of the day's return amounts (negative); null without returns"),
        _c("return_orders", "BIGINT", "Returns and cancellations on the day", False),
    ),
    keys=(USER_ID, "order_day"),
))

SCORE_PREDICTIONS = register(STAGING, TableContract(
    name="score_predictions",
    comment=("Staging: raw model outputs per user, computed once per run so the four score tables "
             "derive from the same rows. Grain: one row per (user_id, as_of_date). arm_* arrays follow "
             "the arms of model_version (control first). Written nightly by jobs/score.py."),
    columns=(
        _c(USER_ID, "STRING", "Customer id", False),
        _c(AS_OF_DATE, "DATE", "Run date; predictions use data strictly before it", False),
        _c(EXPECTED_VALUE, "DOUBLE", "Expected spend in the horizon", False),
        _c(P_PURCHASE, "DOUBLE", "Probability of at least one purchase in the horizon", False),
        _c(VALUE_P10, "DOUBLE", "10th percentile of spend in the horizon", False),
        _c(VALUE_P90, "DOUBLE", "90th percentile of spend in the horizon", False),
        _c(CHURN_PROBABILITY, "DOUBLE", "Probability of no purchase in the horizon", False),
        _c(ARM_CONVERSION, "ARRAY<DOUBLE>", "P(convert | arm) per model arm, control first", False),
        _c(ARM_VALUE, "ARRAY<DOUBLE>", "E[spend | arm] in the response window per model arm, control first", False),
        _c(ARM_VALUE_LONG, "ARRAY<DOUBLE>", "E[spend in the horizon | arm sent at as_of_date] per model arm, control "
           "first; empty for a model without the long-term head", True),
        _c(USER_EMBEDDING, "ARRAY<FLOAT>", "The encoder's pooled representation of the user (null when "
                                           "score.write_embeddings is false)"),
    ) + _run_cols(),
    partition_by=(AS_OF_DATE,),
    keys=(USER_ID, AS_OF_DATE),
))


# --------------------------------------------------------------------------------------------
# Gold: scores (what SQL consumers read)
# --------------------------------------------------------------------------------------------
USER_VALUE = register(SCORES, TableContract(
    name="user_value",
    comment=("Predicted customer value over the next horizon_days. Grain: one row per (user_id, "
             "as_of_date); every user with features for the date. as_of_date: only data strictly "
             "before it was used. Written nightly by jobs/score.py."),
    columns=(
        _c(USER_ID, "STRING", "Customer id", False),
        _c(AS_OF_DATE, "DATE", "Run date; predictions use data strictly before it", False),
        _c(HORIZON_DAYS, "INT", "Prediction horizon in days, starting at as_of_date", False),
        _c(EXPECTED_VALUE, "DOUBLE", "Expected spend in [as_of_date, as_of_date + horizon_days)", False),
        _c(P_PURCHASE, "DOUBLE", "Probability of at least one purchase in the horizon", False),
        _c(VALUE_P10, "DOUBLE", "10th percentile of spend in the horizon", False),
        _c(VALUE_P90, "DOUBLE", "90th percentile of spend in the horizon", False),
        _c(VALUE_DECILE, "INT", "Decile of expected_value among users of the date (1 = top)", False),
    ) + _run_cols(),
    partition_by=(AS_OF_DATE,),
    keys=(USER_ID, AS_OF_DATE),
    checks=(_between(P_PURCHASE, 0, 1), _between(VALUE_DECILE, 1, 10), _non_negative(EXPECTED_VALUE),
            _non_negative(VALUE_P10), _non_negative(VALUE_P90)),
), latest_view=True)

USER_CHURN = register(SCORES, TableContract(
    name="user_churn",
    comment=("Churn risk: probability of no purchase in the next horizon_days. Grain: one row per "
             "(user_id, as_of_date). Written nightly by jobs/score.py."),
    columns=(
        _c(USER_ID, "STRING", "Customer id", False),
        _c(AS_OF_DATE, "DATE", "Run date; predictions use data strictly before it", False),
        _c(HORIZON_DAYS, "INT", "Horizon in days, starting at as_of_date", False),
        _c(CHURN_PROBABILITY, "DOUBLE", "Probability of no purchase in the horizon", False),
        _c(RISK_TIER, "STRING", "low / medium / high, by the cut points in conf (score.risk_tiers)", False),
    ) + _run_cols(),
    partition_by=(AS_OF_DATE,),
    keys=(USER_ID, AS_OF_DATE),
    checks=(_between(CHURN_PROBABILITY, 0, 1),),
), latest_view=True)

PROMO_UPLIFT = register(SCORES, TableContract(
    name="promo_uplift",
    comment=("Incremental effect of sending each campaign arm vs the control. Grain: one row per "
             "(user_id, as_of_date, campaign_id, arm) for every non-control arm. Written nightly by "
             "jobs/score.py."),
    columns=(
        _c(USER_ID, "STRING", "Customer id", False),
        _c(AS_OF_DATE, "DATE", "Run date; predictions use data strictly before it", False),
        _c(CAMPAIGN_ID, "STRING", "Campaign the arm belongs to", False),
        _c(ARM, "STRING", "Treatment arm", False),
        _c("uplift_conversion", "DOUBLE", "P(convert | arm) - P(convert | control) in the response window", False),
        _c("uplift_value", "DOUBLE", "E[spend | arm] - E[spend | control] in the response window", False),
        _c("uplift_value_long", "DOUBLE", "E[spend | arm] - E[spend | control] over the whole horizon (long term: "
           "includes what the window's purchases do to later ones); null for a model without the long-term head",
           True),
        _c("expected_profit", "DOUBLE", "uplift_value * margin - cost of the arm (conf: score.margin, score.arm_costs)", False),
        _c("recommended", "BOOLEAN", "True when this arm has the highest positive expected_profit for the user", False),
    ) + _run_cols(),
    partition_by=(AS_OF_DATE,),
    keys=(USER_ID, AS_OF_DATE, "campaign_id", "arm"),
    checks=(_between("uplift_conversion", -1, 1),),
), latest_view=True)

USER_SEGMENTS = register(SCORES, TableContract(
    name="user_segments",
    comment=("Value x churn segment per user. Grain: one row per (user_id, as_of_date). Segments: "
             "champion, at_risk_high_value, promising, needs_attention, hibernating, lost. "
             "Written nightly by jobs/score.py; learned_segment / learned_segment_name are filled by "
             "`ulv-spark segment` (the nightly's segment stage), null until it ran for the date."),
    columns=(
        _c(USER_ID, "STRING", "Customer id", False),
        _c(AS_OF_DATE, "DATE", "Run date", False),
        _c("segment", "STRING", "Segment name from the value x churn grid", False),
        _c("value_band", "STRING", "high / mid / low expected value (deciles 1-2 / 3-6 / 7-10)", False),
        _c("churn_band", "STRING", "Churn risk tier (low / medium / high)", False),
        _c(LEARNED_SEGMENT, "INT", "Learned segment id (clusters of user_embeddings + predicted value, churn and "
                                   "best uplift); ids follow their centroids from night to night"),
        _c(LEARNED_SEGMENT_NAME, "STRING", "Rule-based name of the learned segment from its profile "
                                           "(segment_profiles.name)"),
    ) + _run_cols(),
    partition_by=(AS_OF_DATE,),
    keys=(USER_ID, AS_OF_DATE),
), latest_view=True)


# --------------------------------------------------------------------------------------------
# Plans: budgeted promotion plans from promo_uplift (written by jobs/plan.py)
# --------------------------------------------------------------------------------------------
_LONG = (f"uplift_value_long is promo_uplift's long-term (full horizon) uplift when the model has it; without it "
         f"the objective uses uplift_value for both terms and the column is null ({LONG_TERM_MISSING}).")

PROMO_PLAN = register(PLANS, TableContract(
    name="promo_plan",
    comment=("Budgeted promotion plan: whom to send which arm. Grain: one row per (user_id, as_of_date, plan) for "
             "every user the plan sends an arm (at most one arm per user; users not sent have no row). The arms "
             "maximise objective = (short_term_weight * uplift_value + (1 - short_term_weight) * uplift_value_long) "
             "* score.margin - cost under the plan's budget, per-arm capacities and min ROI (conf plan.*), by a "
             "Lagrangian price on the budget (see ulv_spark/plan/allocate.py). " + _LONG + " Written by "
             "jobs/plan.py (replaceWhere per as_of_date and plan)."),
    columns=(
        _c(USER_ID, "STRING", "Customer id", False),
        _c(AS_OF_DATE, "DATE", "Run date of the promo_uplift rows planned from", False),
        _c(PLAN, "STRING", "Plan name (conf plan.name); each (as_of_date, plan) is replaced as a whole", False),
        _c(CAMPAIGN_ID, "STRING", "Campaign the arm belongs to (as in promo_uplift)", False),
        _c(ARM, "STRING", "Arm to send", False),
        _c(OBJECTIVE, "DOUBLE", "(short_term_weight * uplift_value + (1 - short_term_weight) * long-term uplift) * "
                                "score.margin - cost; > 0 and >= plan.min_roi * cost", False),
        _c(COST, "DOUBLE", "Cost of sending the arm (score.arm_costs; 0 when not listed)", False),
        _c(UPLIFT_CONVERSION, "DOUBLE", "Expected incremental conversion probability in the response window", False),
        _c(UPLIFT_VALUE, "DOUBLE", "Expected incremental spend in the response window (short term)", False),
        _c(UPLIFT_VALUE_LONG, "DOUBLE", "Expected incremental spend over the full horizon (long term); null when "
                                        "promo_uplift has no long-term uplift"),
        _c(SHORT_TERM_WEIGHT, "DOUBLE", "lambda of the objective (plan.short_term_weight)", False),
    ) + _run_cols(),
    partition_by=(AS_OF_DATE,),
    keys=(USER_ID, AS_OF_DATE, PLAN),
), latest_view=True)

CAMPAIGN_FORECAST = register(PLANS, TableContract(
    name="campaign_forecast",
    comment=("What a plan is expected to bring, beside sending to everyone and to nobody. Grain: one row per "
             "(as_of_date, plan, scenario, arm): scenarios " + ", ".join(SCENARIOS) + f"; arm '{ALL_ARMS}' is the "
             "scenario's total. Expectations are sums of the model's per-user uplift; the _low/_high bounds are a "
             "Poisson bootstrap over users (plan.bootstrap_replicates, central plan.interval), computed with Spark "
             "aggregates. " + _LONG + " Written by jobs/plan.py (replaceWhere per as_of_date and plan)."),
    columns=(
        _c(AS_OF_DATE, "DATE", "Run date of the promo_uplift rows planned from", False),
        _c(PLAN, "STRING", "Plan name (conf plan.name)", False),
        _c(SCENARIO, "STRING", "plan: the budgeted plan; send_all_best_arm: every user gets the arm with the "
                               "highest objective (no budget, capacity or ROI floor); send_none: nobody is sent", False),
        _c(ARM, "STRING", f"Arm, or '{ALL_ARMS}' for the scenario's total", False),
        _c("users_targeted", "BIGINT", "Users sent the arm", False),
        _c("expected_conversions", "DOUBLE", "Expected incremental conversions (sum of uplift_conversion)", False),
        _c("conversions_low", "DOUBLE", "Lower bound of the bootstrap interval of expected_conversions", False),
        _c("conversions_high", "DOUBLE", "Upper bound of the bootstrap interval of expected_conversions", False),
        _c("expected_revenue", "DOUBLE", "Expected incremental spend in the response window (sum of uplift_value)",
           False),
        _c("revenue_low", "DOUBLE", "Lower bound of the bootstrap interval of expected_revenue", False),
        _c("revenue_high", "DOUBLE", "Upper bound of the bootstrap interval of expected_revenue", False),
        _c("expected_revenue_long", "DOUBLE", "Expected incremental spend over the full horizon (long-term value); "
                                              "null without long-term uplift"),
        _c(COST, "DOUBLE", "Total arm cost", False),
        _c("expected_profit", "DOUBLE", "expected_revenue * score.margin - cost", False),
        _c("profit_low", "DOUBLE", "Lower bound of the bootstrap interval of expected_profit", False),
        _c("profit_high", "DOUBLE", "Upper bound of the bootstrap interval of expected_profit", False),
        _c("expected_profit_long", "DOUBLE", "expected_revenue_long * score.margin - cost; null without "
                                             "long-term uplift"),
        _c("roi", "DOUBLE", "expected_profit / cost; null when cost is 0"),
        _c("budget", "DOUBLE", "The plan's budget (plan.budget); null when unlimited"),
        _c("interval", "DOUBLE", "Central coverage of the _low/_high bounds (plan.interval)", False),
        _c("bootstrap_replicates", "INT", "Bootstrap replicates behind the bounds", False),
    ) + _run_cols(),
    partition_by=(AS_OF_DATE,),
    keys=(AS_OF_DATE, PLAN, SCENARIO, ARM),
), latest_view=True)


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------
EVALUATION_METRICS = register(EVALUATION, TableContract(
    name="evaluation_metrics",
    comment=("Backtest metrics. Grain: one row per (run_id, dataset, split, method, metric); every "
             "method of a split is scored on the same test users. Written by jobs/evaluate.py and the "
             "reference benchmarks (append per run; a re-run adds rows under its own run_id)."),
    columns=(
        _c("dataset", "STRING", "Data set evaluated (e.g. cdnow, synthetic, lakehouse)", False),
        _c("split", "STRING", "Backtest split: evaluation origin, horizon and, when only a share of the users "
                              "is scored, that share, e.g. origin=1997-10-01/h=273/test=0.5", False),
        _c("method", "STRING", "model, bgnbd_gg, gbm, rfm_heuristic, two_model_gbm, x_learner, class_transformation, "
                               "oracle", False),
        _c("metric", "STRING", "Metric name: value_gini, value_decile_mape, churn_auc, qini_*, policy_* ...; with method "
                               "model also margin_vs_<O>:<m>, margin_lo_vs_ / margin_hi_vs_<O>:<m> (95 % paired "
                               "bootstrap) and p_not_better_vs_<O>:<m>, O the best other method (README: Evaluation)",
           False),
        _c("value", "DOUBLE", "Metric value"),
        _c(AS_OF_DATE, "DATE", "Run date of the evaluation", False),
        _c(RUN_ID, "STRING", "Id of the evaluation run", False),
    ),
))


# --------------------------------------------------------------------------------------------
# Truth: what the synthetic generator knows (written by jobs/generate.py, read by evaluate)
# --------------------------------------------------------------------------------------------
TRUTH_USERS = register(TRUTH, TableContract(
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
))

TRUTH_UPLIFT = register(TRUTH, TableContract(
    name="truth_uplift",
    comment=("True effect of sending each treatment arm at as_of_date vs the control arm, in the response "
             "window [D, D + response_window_days) with no other campaign active. Grain: one row per "
             "(user_id, as_of_date, campaign_id, arm) for every non-control arm and every user of "
             "truth_users. campaign_id names the hypothetical wave sent at D (promo_<yyyymmdd>); join on "
             "(user_id, as_of_date, arm). Written by jobs/generate.py (replaceWhere per as_of_date)."),
    columns=(
        _c(USER_ID, "STRING", "Customer id", False),
        _c(AS_OF_DATE, "DATE", "As-of date D: the campaign is sent at D, the truth uses history before D", False),
        _c(CAMPAIGN_ID, "STRING", "Hypothetical campaign wave sent at as_of_date (promo_<yyyymmdd>)", False),
        _c(ARM, "STRING", "Treatment arm", False),
        _c("true_uplift_conversion", "DOUBLE", "P(purchase in the window | arm) - P(purchase in the window | control)",
           False),
        _c("true_uplift_value", "DOUBLE", "E[net spend in the window | arm] - E[net spend in the window | control]",
           False),
        _c("true_uplift_value_long", "DOUBLE", "E[net spend in [D, D + horizon) | arm sent at D] - the same for the "
           "control: the long-term effect (later waves as assigned)", True),
        _c("response_window_days", "INT", "Length of the response window in days", False),
    ),
    partition_by=(AS_OF_DATE,),
    keys=(USER_ID, AS_OF_DATE, "campaign_id", "arm"),
))


# --------------------------------------------------------------------------------------------
# Text: sentence embeddings of the product and review texts (bronze products / reviews)
# --------------------------------------------------------------------------------------------
def _embedding_cols() -> tuple[Col, ...]:
    return (
        _c(TEXT_HASH, "STRING", "Hex SHA-256 of the normalised text's UTF-8 bytes (ulv_spark.text.normalise); "
                                "equal texts have equal hashes", False),
        _c(HAS_TEXT, "BOOLEAN", "False when the text is missing or empty after normalisation: then the "
                                "embedding is all zeros and should be left out of averages", False),
        _c(N_TOKENS, "INT", "Tokens embedded, special tokens included (at most the encoder's max_length); "
                            "0 without text", False),
        _c(TRUNCATED, "BOOLEAN", "True when the text had more tokens than max_length: only its start "
                                 "was embedded", False),
        _c(MODEL_ID, "STRING", "Encoder that produced the embedding: <name>@<16 hex of a SHA-256 over weights, "
                               "tokenizer, config and max_length>", False),
        _c(DIM, "INT", "Length of embedding (384 for all-MiniLM-L6-v2)", False),
        _c(EMBEDDING, "ARRAY<FLOAT>", "Sentence embedding: mean-pooled last hidden states, L2-normalised "
                                      "(norm 1; all zeros when has_text is false)", False),
        _c(EMBEDDED_AT, "TIMESTAMP", "When this row's embedding was computed (UTC)", False),
        _c(RUN_ID, "STRING", "Id of the embed run that wrote the row", False),
    )


PRODUCT_EMBEDDINGS = register(TEXT, TableContract(
    name="product_embeddings",
    comment=("Gold product text embeddings. Grain: one row per product_id of the products table, embedded "
             "by the current encoder (model_id). Text: title + '. ' + description, normalised. Written "
             "incrementally by jobs/embed.py (MERGE on product_id): only products whose text_hash or "
             "model_id differ from the stored row are embedded again."),
    columns=(
        _c(PRODUCT_ID, "STRING", "Product id (key; as in products, orders and events)", False),
        *_embedding_cols(),
    ),
    keys=PRODUCT_KEYS,
))

REVIEW_EMBEDDINGS = register(TEXT, TableContract(
    name="review_embeddings",
    comment=("Gold review text embeddings. Grain: one row per review (user_id, product_id, review_ts) of the "
             "reviews table, embedded by the current encoder (model_id). Written incrementally by "
             "jobs/embed.py (MERGE on the key): only reviews whose text_hash, rating or model_id differ "
             "from the stored row are written again."),
    columns=(
        _c(USER_ID, "STRING", "Customer id of the reviewer (key)", False),
        _c(PRODUCT_ID, "STRING", "Product reviewed (key)", False),
        _c(REVIEW_TS, "TIMESTAMP", "When the review was written, UTC (key); features use reviews strictly "
                                   "before their as_of_date", False),
        _c("rating", "DOUBLE", "Star rating copied from reviews; null when none"),
        *_embedding_cols(),
    ),
    keys=REVIEW_KEYS,
))

TEXT_PROJECTION = register(TEXT, TableContract(
    name="text_projection",
    comment=("The projection of product text embeddings onto the few dimensions of the users' product-text "
             "profile (features text_dim_*): the leading principal components of product_embeddings (products "
             "with text) of one encoder, then features.text_supervised directions fitted by ridge regression to "
             "what each product's buyers did next (bought again within the horizon, log spend then; purchases "
             "whose window closed before the fitting night). Grain: one row per (model_id, component). Fitted "
             "once per encoder and features.text_dims by jobs/features.py when no projection is stored (MERGE), "
             "then reused by every later features, training and scoring run, so a model always sees the "
             "projection it was trained with; delete the rows to refit. The backtest fits its own, not stored."),
    columns=(
        _c(MODEL_ID, "STRING", "Encoder (product_embeddings.model_id) whose embeddings were fitted", False),
        _c("component", "INT", "Component index i: the weights of feature text_dim_<i>", False),
        _c(DIM, "INT", "Embedding length (length of weights)", False),
        _c("weights", "ARRAY<DOUBLE>", "Unit-length direction in embedding space (principal or supervised)", False),
        _c("explained_variance", "DOUBLE", "Share of the embeddings' variance along this principal component; "
                                           "null for a supervised one"),
        _c("products", "INT", "Products with text the projection was fitted on", False),
        _c("fitted_at", "TIMESTAMP", "When the projection was fitted (UTC)", False),
        _c(RUN_ID, "STRING", "Id of the features run that fitted it", False),
    ),
    keys=(MODEL_ID, "component"),
))


# --------------------------------------------------------------------------------------------
# Segments: user embeddings (written by score) and learned segments (written by `ulv-spark segment`)
# --------------------------------------------------------------------------------------------
EMBEDDING_DIM_TAG = "dimension"  # the table comment carries "dimension <d>" of the model last written

USER_EMBEDDINGS = register(SEGMENTS, TableContract(
    name="user_embeddings",
    comment=("The trained encoder's pooled representation of each user (MultiTaskModel.encode: CLS state or "
             "masked mean, as the model's pooling), for look-alikes, segments and downstream models. Grain: one "
             "row per (user_id, as_of_date). The vectors of different model_version values live in different "
             "spaces: compare rows of one model_version only. Written nightly by jobs/score.py from the same "
             "scoring pass as user_value (score.write_embeddings); the comment ends with the dimension of "
             "the model last written."),
    properties=(("ulv.producer", "score"),),
    columns=(
        _c(USER_ID, "STRING", "Customer id", False),
        _c(AS_OF_DATE, "DATE", "Run date; the sequence uses events strictly before it", False),
        _c(USER_EMBEDDING, "ARRAY<FLOAT>", "Pooled encoder state (length = the model's encoder hidden size)", False),
    ) + _run_cols(),
    partition_by=(AS_OF_DATE,),
    keys=(USER_ID, AS_OF_DATE),
), latest_view=True)

SEGMENT_PROFILES = register(SEGMENTS, TableContract(
    name="segment_profiles",
    comment=("What each learned segment looks like on a night. Grain: one row per (as_of_date, "
             "learned_segment). Written nightly by `ulv-spark segment` (jobs/segment.py)."),
    columns=(
        _c(AS_OF_DATE, "DATE", "Run date", False),
        _c(LEARNED_SEGMENT, "INT", "Learned segment id (user_segments.learned_segment)", False),
        _c("name", "STRING", "Rule-based name: value level, churn level, trend and the best-responding arm", False),
        _c(USERS, "BIGINT", "Users in the segment", False),
        _c("share", "DOUBLE", "users / all users of the night", False),
        _c("mean_expected_value", "DOUBLE", "Mean predicted spend in the horizon", False),
        _c("total_expected_value", "DOUBLE", "Sum of predicted spend in the horizon", False),
        _c("mean_churn_probability", "DOUBLE", "Mean churn probability", False),
        _c("mean_uplift_value", "MAP<STRING,DOUBLE>", "Arm -> mean uplift_value (promo_uplift) over the segment; "
                                                     "empty without campaign arms", False),
        _c("mean_recency_days", "DOUBLE", "Mean days_since_last_order (user_features)"),
        _c("mean_frequency", "DOUBLE", "Mean orders_total (user_features)"),
        _c("mean_tenure_days", "DOUBLE", "Mean tenure_days (user_features)"),
        _c("mean_orders_trend", "DOUBLE", "Mean of the first orders_trend_* feature (> 1: buying more lately)"),
        _c("mean_distinct_categories", "DOUBLE", "Mean distinct_categories (null without product categories)"),
        _c("mean_top_category_share", "DOUBLE", "Mean top_category_share (null without product categories)"),
    ) + _run_cols(),
    partition_by=(AS_OF_DATE,),
    keys=(AS_OF_DATE, LEARNED_SEGMENT),
), latest_view=True)

SEGMENT_TRANSITIONS = register(SEGMENTS, TableContract(
    name="segment_transitions",
    comment=("Users moving between learned segments from the previous segmented night to this one. Grain: one "
             "row per (as_of_date, from_segment, to_segment); from_segment null = new user (not segmented the "
             "previous night), to_segment null = user gone. No rows on the first segmented night. Written "
             "nightly by `ulv-spark segment`."),
    columns=(
        _c(AS_OF_DATE, "DATE", "Run date (the night users moved into to_segment)", False),
        _c("previous_as_of_date", "DATE", "The previous segmented night compared with", False),
        _c(FROM_SEGMENT, "INT", "Segment the previous night (null: new user)"),
        _c(TO_SEGMENT, "INT", "Segment this night (null: user gone)"),
        _c(USERS, "BIGINT", "Users making this move", False),
    ) + _run_cols(),
    partition_by=(AS_OF_DATE,),
    keys=(AS_OF_DATE, FROM_SEGMENT, TO_SEGMENT),
), latest_view=True)
