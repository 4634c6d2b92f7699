"""Every Delta read and write: create-from-contract, replace one partition, MERGE, time travel.

Tables are addressed by :class:`TableRef`: a metastore name (``<catalog.>schema.table``) and,
for the embedded lakehouse, a storage path. Locally the Spark catalog lives in memory, so
:func:`attach` re-registers the existing Delta directories (and the ``latest_*`` views) in
every new session; on Databricks the metastore keeps them and paths are usually None
(managed tables).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from ulv_spark.config import LakehouseConf
from ulv_spark.schemas import AS_OF_DATE, RUN_ID, TableContract


class SchemaMismatchError(ValueError):
    """A DataFrame does not match the contract of the table it is written to."""


@dataclass(frozen=True)
class TableRef:
    name: str                   # fully-qualified metastore name, e.g. "ulv.user_value"
    path: Optional[str] = None  # storage location; None = managed table

    @property
    def schema_name(self) -> str:
        return self.name.rsplit(".", 1)[0]


def _quote(name: str) -> str:
    return ".".join(f"`{part}`" for part in name.split("."))


def table_ref(lake: LakehouseConf, table: str) -> TableRef:
    """The reference of logical table ``table`` (e.g. "orders") in the configured lakehouse."""
    prefix = f"{lake.catalog}.{lake.schema}" if lake.catalog else lake.schema
    path = str(Path(lake.root) / table) if lake.root else None
    if lake.root and "://" in lake.root:
        path = lake.root.rstrip("/") + "/" + table
    return TableRef(f"{prefix}.{table}", path)


def is_delta(spark, ref: TableRef) -> bool:
    """True when the table exists (registered, or a Delta directory at its path)."""
    from delta.tables import DeltaTable

    if ref.path is not None:
        return DeltaTable.isDeltaTable(spark, ref.path)
    return spark.catalog.tableExists(ref.name)


def _register(spark, ref: TableRef) -> None:
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {_quote(ref.schema_name)}")
    if ref.path is not None and not spark.catalog.tableExists(ref.name):
        spark.sql(f"CREATE TABLE IF NOT EXISTS {_quote(ref.name)} USING DELTA LOCATION '{ref.path}'")


def ensure_table(spark, ref: TableRef, contract: TableContract):
    """Create the table from its contract if it does not exist; return its DeltaTable.

    The contract supplies the table comment, every column's type, nullability and comment, and
    the partition columns, so the table documents itself in ``DESCRIBE TABLE EXTENDED``.
    An existing table written by an older version gains the contract's new nullable columns
    (:func:`add_new_columns`) and its current column comments (:func:`refresh_comments`), so an
    upgrade needs no manual migration.
    """
    from delta.tables import DeltaTable

    if is_delta(spark, ref):
        _register(spark, ref)
        add_new_columns(spark, ref, contract)
        _apply_hygiene(spark, ref, contract)
        return DeltaTable.forName(spark, ref.name)
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {_quote(ref.schema_name)}")
    builder = DeltaTable.createIfNotExists(spark).tableName(ref.name).comment(contract.comment)
    for col in contract.columns:
        builder = builder.addColumn(col.name, col.type, nullable=col.nullable, comment=col.comment)
    if contract.partition_by:
        builder = builder.partitionedBy(*contract.partition_by)
    if ref.path is not None:
        builder = builder.location(ref.path)
    for key, value in contract.properties:
        builder = builder.property(key, value)
    table = builder.execute()
    _apply_hygiene(spark, ref, contract, fresh=True)
    return table


# (table name, location) whose properties and constraints this process has checked
_HYGIENE_CHECKED: set = set()


def _apply_hygiene(spark, ref: TableRef, contract: TableContract, fresh: bool = False) -> None:
    """Add the contract's missing table properties and CHECK constraints, refresh changed column
    comments (once per table and process).

    A new table gets its properties in the CREATE commit and one commit per constraint; a table
    made before the contract had them gets them the first time a job touches it. A constraint
    that existing rows break makes Delta refuse to add it: that error names the constraint.
    """
    key = (ref.name, ref.path)
    if key in _HYGIENE_CHECKED and not fresh:
        return
    if not fresh:
        refresh_comments(spark, ref, contract)
    if not (contract.checks or contract.properties):
        _HYGIENE_CHECKED.add(key)
        return
    current = {r[0]: r[1] for r in spark.sql(f"SHOW TBLPROPERTIES {_quote(ref.name)}").collect()}
    missing = {k: v for k, v in contract.properties if current.get(k) != v}
    if missing:
        pairs = ", ".join(f"'{k}' = '{v}'" for k, v in missing.items())
        spark.sql(f"ALTER TABLE {_quote(ref.name)} SET TBLPROPERTIES ({pairs})")
    for name, condition in contract.checks:
        if f"delta.constraints.{name.lower()}" not in current:
            spark.sql(f"ALTER TABLE {_quote(ref.name)} ADD CONSTRAINT `{name}` CHECK ({condition})")
    _HYGIENE_CHECKED.add(key)


def add_new_columns(spark, ref: TableRef, contract: TableContract) -> list[str]:
    """``ALTER TABLE ADD COLUMNS`` for the contract's nullable columns the existing table lacks.

    Returns the added names (older rows read null there). A missing NOT NULL column cannot be
    added to existing rows: SchemaMismatchError naming it (nothing is changed).
    """
    existing = {f.name for f in spark.table(ref.name).schema.fields}
    missing = [c for c in contract.columns if c.name not in existing]
    required = [c.name for c in missing if not c.nullable]
    if required:
        raise SchemaMismatchError(f"{contract.name}: the existing table lacks NOT NULL column(s) {required}; "
                                  f"rebuild it (older rows have no value for them)")
    if missing:
        spec = ", ".join(f"`{c.name}` {c.type} COMMENT {_sql_string(c.comment)}" for c in missing)
        spark.sql(f"ALTER TABLE {_quote(ref.name)} ADD COLUMNS ({spec})")
    return [c.name for c in missing]


def _sql_string(text: str) -> str:
    """``text`` as a Spark SQL string literal (backslashes and quotes escaped)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def refresh_comments(spark, ref: TableRef, contract: TableContract) -> list[str]:
    """``ALTER COLUMN .. COMMENT`` where the table's column comment differs from the contract's.

    Returns the columns changed. Tables written by an older version keep documenting themselves
    with the current text, and lose comments longer than the Hive metastore's 256 characters (a
    permanent view over such a column retries for 20 s in the metastore on every CREATE).
    """
    fields = {f.name: f for f in spark.table(ref.name).schema.fields}
    changed = [c for c in contract.columns
               if c.name in fields and c.comment and fields[c.name].metadata.get("comment") != c.comment]
    for c in changed:
        spark.sql(f"ALTER TABLE {_quote(ref.name)} ALTER COLUMN `{c.name}` COMMENT {_sql_string(c.comment)}")
    return [c.name for c in changed]


def set_table_comment(spark, ref: TableRef, comment: str) -> None:
    """Replace the table comment (e.g. user_embeddings' dimension of the model last written)."""
    text = comment.replace("'", "")
    spark.sql(f"ALTER TABLE {_quote(ref.name)} SET TBLPROPERTIES ('comment' = '{text}')")


def conform(df, contract: TableContract):
    """Select the contract's columns in order, cast to their types; fail on missing/extra ones."""
    from pyspark.sql import functions as F

    missing = [c for c in contract.column_names if c not in df.columns]
    if missing:
        raise SchemaMismatchError(f"{contract.name}: missing column(s) {missing}; got {df.columns}")
    extra = [c for c in df.columns if c not in contract.column_names]
    if extra and not contract.extra_columns:
        raise SchemaMismatchError(f"{contract.name}: column(s) not in the contract {extra}")
    cols = [F.col(c.name).cast(c.type).alias(c.name) for c in contract.columns]
    return df.select(*cols, *[F.col(c) for c in extra])


def _writer(df, ref: TableRef):
    return df.write.format("delta")



def _save(writer, ref: TableRef) -> None:
    if ref.path is not None:
        writer.save(ref.path)
    else:
        writer.saveAsTable(ref.name)


def write_partition(spark, df, ref: TableRef, contract: TableContract, *, as_of: dt.date,
                    partition_col: str = AS_OF_DATE, also: Optional[dict[str, str]] = None,
                    commit_metadata: Optional[dict] = None) -> None:
    """Replace exactly the ``partition_col = as_of`` partition with ``df`` (one transaction).

    Re-running a date replaces that partition only; readers see the old version until commit.
    Rows of ``df`` outside the partition make Delta fail the write (nothing is replaced).
    ``also`` narrows what is replaced to rows whose string columns equal these values too
    (e.g. ``{"plan": "default"}``: one plan of the date; the other plans stay).
    ``commit_metadata`` goes into the commit's ``userMetadata`` as sorted JSON (``DESCRIBE
    HISTORY`` shows it: e.g. the producing job and model version of each night's write).
    """
    ensure_table(spark, ref, contract)
    data = conform(df, contract)
    predicate = f"{partition_col} = DATE'{as_of.isoformat()}'"
    for column, value in (also or {}).items():
        if "'" in value or "\\" in value:
            raise ValueError(f"{contract.name}: cannot replace where {column} = {value!r} (quote in the value)")
        predicate += f" AND `{column}` = '{value}'"
    writer = _writer(data, ref).mode("overwrite").option("replaceWhere", predicate)
    if commit_metadata:
        import json

        writer = writer.option("userMetadata", json.dumps(commit_metadata, sort_keys=True, default=str))
    _save(writer, ref)


def overwrite(spark, df, ref: TableRef, contract: TableContract) -> None:
    """Replace every row of the table with ``df`` (one transaction; readers see old or new)."""
    ensure_table(spark, ref, contract)
    _save(_writer(conform(df, contract), ref).mode("overwrite"), ref)


def append(spark, df, ref: TableRef, contract: TableContract) -> None:
    """Append ``df`` (e.g. reject rows, evaluation metrics)."""
    ensure_table(spark, ref, contract)
    _save(_writer(conform(df, contract), ref).mode("append"), ref)


def merge(spark, df, ref: TableRef, contract: TableContract, keys: Optional[Iterable[str]] = None, *,
          delete_flag: Optional[str] = None) -> dict:
    """MERGE ``df`` into the table on ``keys`` (default: the contract's keys).

    New keys are inserted; existing keys are updated only when a column other than run_id
    changed, so merging the same input twice leaves identical contents. With ``delete_flag``
    (a boolean column of ``df``, not written), a row whose flag is true deletes the matching
    table row and is never inserted. Returns Delta's operation metrics
    (numTargetRowsInserted, numTargetRowsUpdated, numTargetRowsDeleted, ...).
    """
    from delta.tables import DeltaTable

    keys = list(keys or contract.keys)
    if not keys:
        raise ValueError(f"{contract.name}: MERGE needs key columns")
    ensure_table(spark, ref, contract)
    target = DeltaTable.forName(spark, ref.name)
    on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
    if delete_flag is not None:
        return _merge_with_deletes(spark, df, ref, contract, target, keys, on, delete_flag)
    data = conform(df, contract)
    value_cols = [c for c in data.columns if c not in keys and c != RUN_ID]
    changed = " OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in value_cols) or "false"
    builder = target.alias("t").merge(data.alias("s"), on)
    if contract.extra_columns and hasattr(builder, "withSchemaEvolution"):
        builder = builder.withSchemaEvolution()
        existing = set(spark.table(ref.name).columns)
        changed = " OR ".join(
            f"NOT (t.`{c}` <=> s.`{c}`)" if c in existing else "true" for c in value_cols) or "false"
    before = current_version(spark, ref)
    builder.whenMatchedUpdateAll(condition=changed).whenNotMatchedInsertAll().execute()
    return _merge_metrics(spark, ref, before)


def _merge_with_deletes(spark, df, ref: TableRef, contract: TableContract, target, keys: list, on: str,
                        flag: str) -> dict:
    """lake.merge with a delete flag: flagged rows delete their match; the others upsert as usual."""
    import dataclasses

    from pyspark.sql import functions as F

    if flag not in df.columns:
        raise SchemaMismatchError(f"{contract.name}: delete flag column {flag!r} not in the rows to merge")
    conform(df.drop(flag), contract)  # the same column checks as a plain MERGE
    data = conform(df, dataclasses.replace(contract, extra_columns=True)).withColumn(flag, F.col(flag).cast("boolean"))
    value_cols = [c for c in contract.column_names if c not in keys and c != RUN_ID]
    changed = " OR ".join(f"NOT (t.`{c}` <=> s.`{c}`)" for c in value_cols) or "false"
    before = current_version(spark, ref)
    (target.alias("t").merge(data.alias("s"), on)
     .whenMatchedDelete(condition=f"s.`{flag}`")
     .whenMatchedUpdate(condition=changed, set={c: f"s.`{c}`" for c in contract.column_names if c not in keys})
     .whenNotMatchedInsert(condition=f"NOT s.`{flag}`", values={c: f"s.`{c}`" for c in contract.column_names})
     .execute())
    return _merge_metrics(spark, ref, before)


def _merge_metrics(spark, ref: TableRef, before: Optional[int]) -> dict:
    """The MERGE's operation metrics; none when it committed nothing (Delta skips the commit of a
    MERGE with no rows to write, and the newest commit is then an older operation's)."""
    from delta.tables import DeltaTable

    row = DeltaTable.forName(spark, ref.name).history(1).select("version", "operationMetrics").first()
    if row is None or int(row["version"]) == before:
        return {}
    return dict(row["operationMetrics"] or {})


def last_operation_metrics(spark, ref: TableRef) -> dict:
    from delta.tables import DeltaTable

    row = DeltaTable.forName(spark, ref.name).history(1).select("operationMetrics").first()
    return dict(row["operationMetrics"] or {}) if row else {}


def read_table(spark, ref: TableRef, *, version: Optional[int] = None, as_of_date: Optional[dt.date] = None):
    """Read the table, optionally as of a Delta ``version`` and/or one ``as_of_date`` partition."""
    from pyspark.sql import functions as F

    _register(spark, ref)
    if version is not None:
        reader = spark.read.format("delta").option("versionAsOf", version)
        df = reader.load(ref.path) if ref.path is not None else reader.table(ref.name)
    else:
        df = spark.table(ref.name)
    if as_of_date is not None:
        df = df.filter(F.col(AS_OF_DATE) == F.lit(as_of_date))
    return df


def current_version(spark, ref: TableRef) -> Optional[int]:
    """The newest Delta version of the table, or None when it does not exist."""
    from delta.tables import DeltaTable

    if not is_delta(spark, ref):
        return None
    _register(spark, ref)
    return int(DeltaTable.forName(spark, ref.name).history(1).select("version").first()[0])


def content_fingerprint(df, exclude: tuple[str, ...] = ("run_id",)) -> str:
    """``<rows>-<sum of row hashes>``: equal for equal rows in any order, whichever version wrote them.

    One distributed aggregate (xxhash64 per row, summed as a decimal so it cannot overflow);
    ``exclude`` drops bookkeeping columns (the writing run's id) that a re-run changes.
    """
    from pyspark.sql import functions as F

    cols = [F.col(c) for c in df.columns if c not in exclude]
    row = df.agg(F.count(F.lit(1)).alias("n"),
                 F.sum(F.xxhash64(*cols).cast("decimal(38,0)")).alias("h")).first()
    return f"{row['n']}-{row['h'] or 0}"


def create_latest_view(spark, ref: TableRef, view_name: Optional[str] = None) -> str:
    """``latest_<table>``: the rows of the newest as_of_date. Returns the view's name."""
    table = ref.name.rsplit(".", 1)[1]
    view = view_name or f"{ref.schema_name}.latest_{table}"
    spark.sql(
        f"CREATE OR REPLACE VIEW {_quote(view)} AS SELECT * FROM {_quote(ref.name)} "
        f"WHERE {AS_OF_DATE} = (SELECT max({AS_OF_DATE}) FROM {_quote(ref.name)})")
    return view


def attach(spark, lake: LakehouseConf, tables: Iterable[str], views_for: Iterable[str] = ()) -> list[str]:
    """Register the existing Delta tables ``tables`` (logical names) and their latest_* views.

    Needed once per session where the catalog lives in memory (local Spark); harmless on a
    persistent metastore. Returns the names registered.
    """
    names = []
    with_views = set(views_for)
    for table in tables:
        ref = table_ref(lake, table)
        if is_delta(spark, ref):
            _register(spark, ref)
            names.append(ref.name)
            if table in with_views:
                names.append(create_latest_view(spark, ref))
    return names


def read_without_spark(lake: LakehouseConf, table: str, *, as_of_date: Optional[dt.date] = None,
                       version: Optional[int] = None):
    """A table of the embedded lakehouse as a pandas DataFrame without a JVM: delta-rs reads the log.

    For analysts and BI tools on a machine that sees the lakehouse files. delta-rs (the
    ``deltalake`` package) resolves the snapshot (``version`` time-travels like Spark's
    ``versionAsOf``) and prunes to the ``as_of_date`` partition; pyarrow reads the snapshot's
    Parquet files (delta-rs' own scan hands pyarrow 14 types it cannot import). Managed tables
    (no ``lakehouse.root``) have no path to read: use Databricks SQL there.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    ref = table_ref(lake, table)
    if ref.path is None:
        raise ValueError(f"{ref.name} is a managed table (lakehouse.root is not set): no files to read without Spark")
    delta = DeltaTable(ref.path, version=version)
    fields = delta.schema().fields
    partitions = delta.metadata().partition_columns
    filters = [(AS_OF_DATE, "=", as_of_date.isoformat())] if as_of_date is not None else None
    files = [f[len("file://"):] if f.startswith("file://") else f for f in delta.file_uris(partition_filters=filters)]
    names = [f.name for f in fields]
    if not files:
        return pd.DataFrame(columns=names)
    types = {"date": pa.date32(), "string": pa.string(), "integer": pa.int32(), "long": pa.int64()}
    part_schema = pa.schema([(f.name, types[str(f.type.type)]) for f in fields if f.name in partitions])
    data = ds.dataset(files, format="parquet", partition_base_dir=ref.path.rstrip("/"),
                      partitioning=ds.partitioning(part_schema, flavor="hive") if partitions else None)
    return data.to_table(columns=names).to_pandas()
