"""`ulv-spark ingest --as-of D`: load the configured sources into the bronze Delta tables.

For each configured source (orders required; events, campaign_exposures, user_attributes
optional): read it, check that every mapped column exists (before anything is computed or
written), validate every row, count the rejects per reason, and only when no table's reject
share passes ``ingest.max_reject_share`` MERGE the good rows into bronze and append the
rejects to ``<table>_rejects``.
"""
from __future__ import annotations

import dataclasses
import datetime as dt

from pyspark import StorageLevel

from ulv_spark import catalog, lake
from ulv_spark.config import ConfigError
from ulv_spark.context import JobContext, Summary
from ulv_spark.errors import JobFailed
from ulv_spark.ingest import presets
from ulv_spark.ingest.mapping import MappingError, map_columns, resolve_columns
from ulv_spark.ingest.validate import Outcome, prepare, reject_counts
from ulv_spark.runtime import get_logger, stage
from ulv_spark.schemas import Col, TableContract

# bronze table -> its contract: one source per bronze table (sources.<name> in conf)
CONTRACTS = {t.name: t.contract for t in catalog.tables(catalog.BRONZE)}


def read_source(spark, table: str, src):
    """(raw DataFrame, effective SourceConf) of one configured source; presets filled in."""
    if src.format == "preset":
        preset, src = presets.resolve(table, src)
        return preset.parse(spark.read.text(src.path)), src
    options = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in src.options.items()}
    if src.format == "table":
        return spark.table(src.path), src
    if src.format == "csv":
        return spark.read.options(**{"header": "true", **options}).csv(src.path), src
    # a Delta *source* path is user data outside the lakehouse, so it is read here, not via lake.py
    return spark.read.format(src.format).options(**options).load(src.path), src


def _map_sources(spark, cfg) -> dict:
    """table -> (mapped DataFrame, effective SourceConf); fails on the first source that cannot be mapped."""
    if cfg.sources.orders is None:
        raise ConfigError("sources.orders is required (the order log to ingest)")
    out = {}
    for table in CONTRACTS:
        src = getattr(cfg.sources, table)
        if src is None:
            continue
        try:
            raw, src = read_source(spark, table, src)
        except (ValueError, FileNotFoundError) as exc:  # unknown preset, lifetimes not installed
            raise ConfigError(str(exc)) from None
        except Exception as exc:  # Spark's AnalysisException: path not found, no such table, ...
            raise JobFailed(f"sources.{table}: cannot read {src.path}: {str(exc).splitlines()[0]}") from None
        try:
            columns, missing = resolve_columns(table, src.columns, raw.columns, derive_order_id=src.derive_order_id)
        except MappingError as exc:
            raise ConfigError(str(exc)) from None
        if missing:
            raise JobFailed(f"sources.{table}: mapped column(s) {', '.join(missing)} not found in {src.path} "
                            f"(its columns: {', '.join(raw.columns)})")
        out[table] = (map_columns(raw, table, columns), src)
    return out


def run_ingest(ctx: JobContext) -> Summary:
    """The `ingest` stage: validate every configured source and MERGE the good rows into bronze."""
    cfg, log = ctx.cfg, get_logger("ulv_spark.ingest")
    mapped = _map_sources(ctx.spark, cfg)
    prepared, outcomes = {}, {}
    try:
        rejected_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        for table, (frame, rules) in mapped.items():
            prepared[table], outcomes[table] = _validate(table, frame, rules, ctx, rejected_at, log)
        _check_reject_shares(outcomes, cfg.ingest.max_reject_share)
        written = {}
        for table, prep in prepared.items():
            with stage(f"write {table}", log) as info:
                written[table] = _write(ctx.spark, cfg.lakehouse, table, prep, outcomes[table])
                info.update(written[table])
    finally:
        for prep in prepared.values():
            prep.labelled.unpersist()
    # source_rows: what the nightly reject gate divides by; reject_share is over the rows due
    return {"tables": {t: {"rows_read": o.rows_read, "source_rows": o.rows_read, "rejected": o.rejected_total,
                           "reject_share": round(o.reject_share, 6), "reject_reasons": o.rejected,
                           "deferred": o.deferred, **written[t]} for t, o in outcomes.items()}}


def _validate(table: str, frame, rules, ctx, rejected_at: dt.datetime, log):
    """(Prepared with its labelled rows cached, Outcome) of one source; logs the counts per reason."""
    with stage(f"validate {table}", log) as info:
        prep = prepare(table, frame, rules=rules, as_of=ctx.as_of, run_id=ctx.run_id, rejected_at=rejected_at)
        # counted now, written later: cache so the source is read and checked once
        prep.labelled.persist(StorageLevel.MEMORY_AND_DISK)
        outcome = Outcome.from_counts([tuple(r) for r in reject_counts(prep.labelled).collect()])
        info.update(rows=outcome.rows_read, rejected=outcome.rejected_total, deferred=outcome.deferred)
    reasons = ", ".join(f"{k}={v}" for k, v in outcome.rejected.items()) or "none"
    log.info("%s: %d rows read, %d rejected (%s), %d deferred (dated after %s)", table, outcome.rows_read,
             outcome.rejected_total, reasons, outcome.deferred, ctx.as_of)
    return prep, outcome


def _check_reject_shares(outcomes: dict, limit: float) -> None:
    over = {t: o for t, o in outcomes.items() if o.reject_share > limit}
    if over:
        detail = "; ".join(f"{t}: {o.rejected_total} of {o.rows_read - o.deferred} rows ({o.reject_share:.1%}: "
                           + ", ".join(f"{k}={v}" for k, v in o.rejected.items()) + ")" for t, o in over.items())
        raise JobFailed(f"rejected share above ingest.max_reject_share = {limit:.1%}, nothing written: {detail}")


def with_attribute_columns(contract: TableContract, df) -> TableContract:
    """`contract` plus the columns of `df` it does not name (user_attributes), each documented."""
    if not contract.extra_columns:
        return contract
    extra = tuple(Col(f.name, f.dataType.simpleString().upper(), True, f"Attribute '{f.name}' from the source")
                  for f in df.schema.fields if f.name not in contract.column_names)
    return dataclasses.replace(contract, columns=contract.columns + extra)


def _write(spark, lake_cfg, table: str, prep, outcome: Outcome) -> dict:
    contract = CONTRACTS[table]
    ref = lake.table_ref(lake_cfg, table)
    if lake.is_delta(spark, ref):
        metrics = lake.merge(spark, prep.good, ref, contract)
    else:
        # first load: MERGE into a new table inserts every row, and a plain write does that in one pass
        lake.append(spark, prep.good, ref, with_attribute_columns(contract, prep.good))
        written = lake.last_operation_metrics(spark, ref)
        metrics = {"numTargetRowsInserted": written.get("numOutputRows", 0)}
    rejects = catalog.rejects_contract(contract)
    rejects_ref = lake.table_ref(lake_cfg, rejects.name)
    if outcome.rejected_total:
        lake.append(spark, prep.rejects, rejects_ref, rejects)
    else:
        lake.ensure_table(spark, rejects_ref, rejects)
    return {"table": ref.name, "inserted": int(metrics.get("numTargetRowsInserted", 0)),
            "updated": int(metrics.get("numTargetRowsUpdated", 0))}
