"""Map a source's own column names onto the input contracts, and parse its values.

A source is mapped with ``sources.<table>.columns`` (contract name -> source column). A
contract field left out of the mapping is taken from a source column of the same name when
there is one, so a source that already uses the contract's names needs no mapping. The
parsers turn whatever the source holds (text from CSV, typed Parquet/Delta columns) into the
contract's types without failing: an unparsable value becomes null plus a "bad" flag that the
validation turns into a reject reason.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

SOURCE_STRUCT = "_src"  # the untouched source row, kept for the rejects table
# Spark's column for the text of a row it could not parse (PERMISSIVE mode): a CSV line with
# more or fewer fields than the header, a JSON line that is not an object. Present only when
# the reader adds it (see ingest.job.read_source); never mapped or kept as an attribute.
MALFORMED_COLUMN = "_corrupt_record"


@dataclass(frozen=True)
class SourceSpec:
    """Which contract fields a source of `table` may map, and which it must."""

    table: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    keeps_other_columns: bool = False  # user_attributes: unmapped source columns are kept
    # optional fields that appear in the mapped frame only when the source has them (the
    # product columns of an order log: a log without them maps exactly as before)
    conditional: tuple[str, ...] = ()

    @property
    def fields(self) -> tuple[str, ...]:
        return self.required + self.optional + self.conditional


SPECS = {
    "orders": SourceSpec("orders", required=("user_id", "order_id", "order_ts", "amount"),
                         optional=("quantity", "unit_price", "category", "discount", "is_return", "line_id"),
                         conditional=("product_id", "product_title", "product_description")),
    "events": SourceSpec("events", required=("user_id", "event_ts", "event_type"),
                         optional=("event_id", "product_id", "category", "session_id")),
    "campaign_exposures": SourceSpec("campaign_exposures",
                                     required=("user_id", "campaign_id", "arm", "exposed_ts"),
                                     optional=("is_control", "response_window_days", "observed_converted",
                                               "observed_value")),
    "user_attributes": SourceSpec("user_attributes", required=("user_id",), optional=(),
                                  keeps_other_columns=True),
    "products": SourceSpec("products", required=("product_id",),
                           optional=("title", "description", "category", "price")),
    "reviews": SourceSpec("reviews", required=("user_id", "product_id", "review_ts"), optional=("rating", "text")),
}


class MappingError(ValueError):
    """The mapping itself is wrong (unknown contract field, field that cannot be mapped)."""


def resolve_columns(table: str, columns: dict[str, str], source_columns: Sequence[str], *,
                    derive_order_id: bool = False) -> tuple[dict[str, str], list[str]]:
    """The mapping to use and the mapped source columns that do not exist.

    Explicitly mapped fields must exist in the source. Unmapped fields are taken from a
    same-named source column when present; a required field that is neither mapped nor present
    is reported as missing under its contract name. For orders, ``amount`` may instead come
    from ``quantity * unit_price`` and ``order_id`` from ``derive_order_id``.

    Returns:
        (contract field -> source column, missing source column names in mapping order).

    Raises:
        MappingError: a mapped name is not a field of the contract (user_attributes excepted:
            there every extra key names an attribute to keep).
    """
    spec = SPECS[table]
    unknown = [k for k in columns if k not in spec.fields]
    if unknown and not spec.keeps_other_columns:
        raise MappingError(f"sources.{table}.columns: unknown contract field(s) {unknown} "
                           f"(known: {', '.join(spec.fields)})")
    present = set(source_columns)
    resolved: dict[str, str] = {}
    missing: list[str] = []
    for name, source in columns.items():
        if source in present:
            resolved[name] = source
        else:
            missing.append(source)
    for name in spec.fields:
        if name not in columns and name in present:
            resolved[name] = name
    optional_required = {"order_id"} if derive_order_id else set()
    if table == "orders" and "amount" not in resolved and {"unit_price", "quantity"} <= set(resolved):
        optional_required.add("amount")
    for name in spec.required:
        if name not in columns and name not in resolved and name not in optional_required:
            missing.append(name)
    if derive_order_id and "order_id" in columns:
        raise MappingError(f"sources.{table}: derive_order_id is set but columns maps order_id")
    return resolved, missing


def slug(name: str) -> str:
    """`name` as a plain lower-case column name (other characters become '_')."""
    return re.sub(r"[^0-9a-z]+", "_", str(name).strip().lower()).strip("_") or "x"


def _quoted(name: str) -> Column:
    return F.col("`" + name.replace("`", "``") + "`")


def map_columns(raw: DataFrame, table: str, columns: dict[str, str]) -> DataFrame:
    """The source with its columns renamed to the contract's fields; the source row kept in `_src`.

    Grain: unchanged (one row per source row). Columns: `_src` (struct of every source column),
    then every field of the table's spec (unmapped ones as null; a conditional one only when
    mapped), then for user_attributes the attribute columns (named by the mapping key, or the
    slug of the source name when the mapping names none besides user_id).
    """
    spec = SPECS[table]
    fields = [(_quoted(columns[f]) if f in columns else F.lit(None)).alias(f) for f in spec.fields
              if f in columns or f not in spec.conditional]
    named = {k: v for k, v in columns.items() if k not in spec.fields}
    kept = attribute_source_columns(table, columns, raw.columns)
    extras = [_quoted(src).alias(slug(name)) for name, src in named.items()] if named \
        else [_quoted(c).alias(slug(c)) for c in kept]
    source = F.struct(*[_quoted(c) for c in raw.columns]).alias(SOURCE_STRUCT)
    return raw.select(source, *fields, *extras)


def attribute_source_columns(table: str, columns: dict[str, str], source_columns: Sequence[str]) -> list[str]:
    """The source columns a user_attributes source keeps as attributes (none for other tables).

    The columns the mapping names besides user_id, or, when it names none, every source column
    it does not map (MALFORMED_COLUMN never).
    """
    spec = SPECS[table]
    if not spec.keeps_other_columns:
        return []
    named = [v for k, v in columns.items() if k not in spec.fields]
    if named:
        return named
    used = set(columns.values()) | {MALFORMED_COLUMN}
    return [c for c in source_columns if c not in used]


def attribute_columns(mapped: DataFrame, table: str) -> list[str]:
    """The kept attribute columns of a mapped user_attributes frame (empty for other tables)."""
    spec = SPECS[table]
    if not spec.keeps_other_columns:
        return []
    return [c for c in mapped.columns if c != SOURCE_STRUCT and c not in spec.fields]


# -------------------------------------------------------------------- value parsers
def _dtype(df: DataFrame, name: str) -> T.DataType:
    return df.schema[name].dataType


def _text(df: DataFrame, name: str) -> Column:
    """Trimmed text of a column; blank becomes null."""
    text = F.trim(F.col(name).cast("string"))
    return F.when(text != "", text)


def malformed(mapped: DataFrame) -> Column:
    """True where the reader could not parse the source row (see MALFORMED_COLUMN)."""
    fields = mapped.schema[SOURCE_STRUCT].dataType.fieldNames()
    if MALFORMED_COLUMN not in fields:
        return F.lit(False)
    return F.col(f"{SOURCE_STRUCT}.`{MALFORMED_COLUMN}`").isNotNull()


# Largest whole number a FLOAT / DOUBLE holds exactly: an id beyond it was rounded on the way.
_EXACT_INTEGER = {T.FloatType: 2.0 ** 24, T.DoubleType: 2.0 ** 53}


def _whole_id(df: DataFrame, name: str) -> Column:
    """For a FLOAT / DOUBLE / DECIMAL column: true where the value is a whole number held exactly."""
    dtype = _dtype(df, name)
    value = F.col(name)
    if isinstance(dtype, T.DecimalType):
        return value == F.floor(value)
    as_double = value.cast("double")
    bound = _EXACT_INTEGER[type(dtype)]
    finite = ~F.isnan(as_double) & (F.abs(as_double) <= F.lit(bound))
    return F.when(finite, as_double == F.floor(as_double)).otherwise(F.lit(False))


def parse_id(df: DataFrame, name: str) -> Column:
    """An id as text: trimmed, blank -> null; whole numbers lose their fraction.

    A FLOAT / DOUBLE / DECIMAL id that is a whole number becomes its digits (17850.0 ->
    '17850'), and so does text of digits followed by '.0' (how pandas writes an integer column
    with missing values). Other numbers keep their text; `bad_id` flags them.
    """
    dtype = _dtype(df, name)
    if isinstance(dtype, (T.FloatType, T.DoubleType, T.DecimalType)):
        value = F.col(name)
        digits = (value.cast("decimal(38,0)") if isinstance(dtype, T.DecimalType) else value.cast("long"))
        return F.when(_whole_id(df, name), digits.cast("string")).otherwise(value.cast("string"))
    return F.regexp_replace(_text(df, name), r"^([0-9]+)\.0+$", "$1")


def bad_id(df: DataFrame, name: str) -> Column:
    """True where a numeric id is present but not a whole number held exactly (17850.5, NaN, inf, 1e20)."""
    dtype = _dtype(df, name)
    if not isinstance(dtype, (T.FloatType, T.DoubleType, T.DecimalType)):
        return F.lit(False)
    return F.col(name).isNotNull() & ~_whole_id(df, name)


def is_blank(df: DataFrame, name: str) -> Column:
    """True where the source value is null or blank text."""
    if isinstance(_dtype(df, name), T.StringType):
        return _text(df, name).isNull()
    return F.col(name).isNull()


EPOCH_FORMATS = {"epoch_seconds": 1.0, "epoch_millis": 1000.0}


def parse_timestamp(df: DataFrame, name: str, fmt: Optional[str] = None, timezone: Optional[str] = None) -> Column:
    """A timestamp (UTC) from timestamp, date, epoch-number or text columns; unparsable -> null.

    Args:
        fmt: a Spark datetime pattern for text (e.g. "yyyyMMdd"), or "epoch_seconds" /
            "epoch_millis" for numbers; None lets Spark parse ISO-like text.
        timezone: zone of wall-clock values without an offset (None: UTC).
    """
    dtype = _dtype(df, name)
    col = F.col(name)
    if fmt in EPOCH_FORMATS:
        seconds = (col if isinstance(dtype, T.NumericType) else _text(df, name).try_cast("double")) / EPOCH_FORMATS[fmt]
        # |seconds| < 2.5e11 (about year 9900): microseconds then fit a LONG, so the cast cannot overflow
        finite = F.when(~F.isnan(seconds) & (F.abs(seconds) < 2.5e11), seconds)
        return F.timestamp_micros((finite * 1_000_000).cast("long"))
    if isinstance(dtype, (T.TimestampType, T.TimestampNTZType, T.DateType)):
        parsed = col.cast("timestamp")
    elif isinstance(dtype, T.NullType):
        return F.lit(None).cast("timestamp")
    else:
        text = _text(df, name)
        parsed = F.try_to_timestamp(text, F.lit(fmt)) if fmt else F.try_to_timestamp(text)
    if timezone and not isinstance(dtype, T.TimestampType):
        parsed = F.to_utc_timestamp(parsed, timezone)
    return parsed


def parse_number(df: DataFrame, name: str) -> tuple[Column, Column]:
    """(value as DOUBLE, bad) where bad = present but not a finite number (text, NaN, +-inf)."""
    dtype = _dtype(df, name)
    if isinstance(dtype, T.NullType):
        return F.lit(None).cast("double"), F.lit(False)
    raw = F.col(name).cast("double") if isinstance(dtype, (T.NumericType, T.BooleanType)) \
        else _text(df, name).try_cast("double")
    finite = raw.isNotNull() & ~F.isnan(raw) & (F.abs(raw) != float("inf"))
    bad = ~is_blank(df, name) & ~finite
    return F.when(finite, raw), bad


def parse_flag(df: DataFrame, name: str, true_values: Sequence[str],
               false_values: Sequence[str]) -> tuple[Column, Column]:
    """(value as BOOLEAN, bad). Null/blank -> false; text is matched case-insensitively."""
    dtype = _dtype(df, name)
    col = F.col(name)
    if isinstance(dtype, T.NullType):
        return F.lit(False), F.lit(False)
    if isinstance(dtype, T.BooleanType):
        return F.coalesce(col, F.lit(False)), F.lit(False)
    if isinstance(dtype, T.NumericType):
        return F.coalesce(col != 0, F.lit(False)), F.lit(False)
    text = F.lower(F.trim(col.cast("string")))
    trues = [v.strip().lower() for v in true_values]
    falses = [v.strip().lower() for v in false_values] + [""]
    value = F.when(text.isin(trues), True).otherwise(False)
    bad = text.isNotNull() & ~text.isin(trues) & ~text.isin(falses)
    return value, bad


def parse_int(df: DataFrame, name: str) -> tuple[Column, Column]:
    """(value as INT, bad) where bad = present but not a whole number."""
    value, bad = parse_number(df, name)
    whole = value.isNotNull() & (value == F.floor(value)) & (F.abs(value) < 2**31)
    return F.when(whole, value.cast("int")), bad | (value.isNotNull() & ~whole)
