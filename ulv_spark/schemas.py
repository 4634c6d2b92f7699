"""What a table contract is, and the column names shared across modules (no Spark, no torch).

`TableContract` (columns, types, nullability, comments, partitioning, key) is what
`lake.ensure_table` turns into a self-documenting Delta table and what `lake.write_*` check a
DataFrame against before writing, so schema drift fails loudly. The contracts themselves are
registered in `ulv_spark.catalog`; column names reused across modules live here as constants.
"""
from __future__ import annotations

from dataclasses import dataclass

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
SEQ_TEXT = "seq_text"                # ARRAY<FLOAT> L * k (features.text_dims): per-event product text; null: none
LABEL_VALUE = "label_value"          # spend in [origin_date, origin_date + H) (net of returns, >= 0)
LABEL_PURCHASES = "label_purchases"  # number of purchase orders in the window
LABEL_CHURNED = "label_churned"      # 1 when no purchase in the window, else 0
CAMPAIGN_ID = "campaign_id"          # campaign whose exposure fell in the window (null: none)
ARM = "arm"                          # arm the user received in that campaign (null: none)
IS_CONTROL = "is_control"            # true when `arm` is the campaign's control
LABEL_CONVERTED = "label_converted"  # 1/0 purchase in the campaign's response window (null: no exposure)
LABEL_RESPONSE_VALUE = "label_response_value"  # spend in the response window (null: no exposure)

# score table columns derived from the predictions (score/tables.py writes them)
VALUE_DECILE = "value_decile"        # user_value: 1 = top decile of expected_value
RISK_TIER = "risk_tier"              # user_churn: low / medium / high

# Columns of user_features / training_examples that are not tabular model inputs. Every other
# numeric column is a tabular feature (see feature_columns), so joined user attributes and new
# features reach the model without code changes; the model stores the list it was trained on.
NON_FEATURE_COLUMNS = frozenset({
    USER_ID, AS_OF_DATE, ORIGIN_DATE, HORIZON_DAYS, SEQ_TOKENS, SEQ_MASK, SEQ_TEXT, LABEL_VALUE,
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
    checks: tuple[tuple[str, str], ...] = ()      # Delta CHECK constraints: (name, SQL condition every row meets)
    properties: tuple[tuple[str, str], ...] = ()  # Delta table properties (ulv.producer, delta.appendOnly)

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
