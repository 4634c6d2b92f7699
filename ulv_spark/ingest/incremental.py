"""Incremental ingest: each night reads only the source files (or Delta versions) not read before.

A file source (csv, parquet, json) or a Delta path source is read with Spark Structured
Streaming and ``trigger(availableNow=True)``: the engine records in a checkpoint per source
(``<lakehouse.shared_dir>/ingest_checkpoints/<table>``) which files / table versions it has
processed, and hands each night exactly the new ones, once. Every micro-batch goes through the
same validation and MERGE as a full load (``process`` below), so a row is loaded the same way
whichever path read it, and a batch that fails is not committed: the next run reads the same
files again and the MERGE leaves rows already written unchanged.

What the full path does that this one cannot: duplicate keys are detected within a night's new
rows only (a row of a later file whose key is already in bronze updates it through the MERGE,
where a full reload keeps the first by time). A file is not read again, so the rows a night
defers (``future_rows: defer``: dated after the run date) wait in ``<table>_pending`` (the source
row as JSON); every later night reads them back first, loads those now due and keeps the rest.
"""
from __future__ import annotations

import os
from typing import Callable


# formats read as a stream; metastore tables and presets take the full path
INCREMENTAL_FORMATS = ("csv", "parquet", "json", "delta")
# Spark's file source ignores files whose modification time is more than maxFileAge (default 7
# days) older than the newest file it has seen: a late file copied with its old mtime would be
# skipped without a word, so unless the source says otherwise every file counts.
DEFAULT_MAX_FILE_AGE = "36500d"
CHECKPOINTS = "ingest_checkpoints"


def is_incremental(src) -> bool:
    """True when the source's format is read as a stream by an incremental night."""
    return src.format in INCREMENTAL_FORMATS


def checkpoint_dir(shared_dir: str, table: str) -> str:
    """The streaming checkpoint of one source (which files / versions it has read)."""
    return os.path.join(shared_dir, CHECKPOINTS, table)


def stream_source(spark, src, schema):
    """A streaming DataFrame over the source, with the batch reader's `schema` (file sources need one)."""
    options = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in src.options.items()}
    if src.format == "delta":
        return spark.readStream.format("delta").options(**options).load(src.path)
    options = {"maxFileAge": DEFAULT_MAX_FILE_AGE, **options}
    reader = spark.readStream.schema(schema)
    if src.format == "csv":
        from ulv_spark.ingest.mapping import MALFORMED_COLUMN

        options = {"header": "true", **options}
        if str(options.get("mode", "PERMISSIVE")).upper() == "PERMISSIVE":
            # as ingest.job.read_csv: a row with too many / too few fields keeps its text in MALFORMED_COLUMN
            spark.conf.set("spark.sql.csv.parser.columnPruning.enabled", "false")
            options = {**options, "mode": "PERMISSIVE", "columnNameOfCorruptRecord": MALFORMED_COLUMN}
        return reader.options(**options).csv(src.path)
    return reader.format(src.format).options(**options).load(src.path)


def run_available(stream, checkpoint: str, process: Callable, *, name: str) -> int:
    """Run `process(batch_df, batch_id)` on every batch of new input, then stop; the number of batches.

    An exception raised by `process` fails the query (the batch stays uncommitted, so the
    next run retries it) and is raised here as it was, not wrapped in Spark's traceback.
    """
    failures: list[BaseException] = []
    batches: list[int] = []

    def each(batch, batch_id):
        try:
            process(batch, batch_id)
            batches.append(batch_id)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, outside Spark's wrapper
            failures.append(exc)
            raise

    query = (stream.writeStream.queryName(f"ingest_{name}").foreachBatch(each)
             .option("checkpointLocation", checkpoint).trigger(availableNow=True).start())
    try:
        query.awaitTermination()
    except Exception as exc:
        if failures:
            raise failures[0] from None
        from ulv_spark.errors import JobFailed

        # the engine's own failure (a Delta source that updated or deleted rows, a vanished file): its first line
        text = str(getattr(exc, "desc", None) or exc)
        first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
        raise JobFailed(f"sources.{name}: the incremental read failed: {first[:400]} (a Delta source that "
                        "rewrites rows needs option skipChangeCommits: true, or --full-reload)") from None
    if failures:
        raise failures[0]
    return len(batches)
