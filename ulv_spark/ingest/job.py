"""`ulv-spark ingest --as-of D`: load the configured sources into the bronze Delta tables.

For each configured source (orders required; events, campaign_exposures, user_attributes,
products and reviews optional): read it, check that every mapped column exists (before anything is computed or
written), validate every row, count the rejects per reason, and only when no table's reject
share passes ``ingest.max_reject_share`` MERGE the good rows into bronze and append the
rejects to ``<table>_rejects``. An orders source that maps ``product_id`` also gives
``order_lines`` (the loaded lines with their products), and, when it maps a product text and no
products source is configured, the ``products`` catalog (each product's latest line text).

Orders may be left out (``sources.orders: null``) when the campaign exposures carry their own
observed outcomes (a campaign export): the orders table is then created empty, so every later
stage finds it. ``--dry-run`` reads a sample of each source and reports the mapping, the parsed
types, a few parsed rows and the reject counts, writing nothing.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import sys

from pyspark import StorageLevel

from ulv_spark import catalog, lake
from ulv_spark.config import ConfigError
from ulv_spark.context import JobContext, Summary
from ulv_spark.errors import JobFailed
from ulv_spark.ingest import incremental, presets
from ulv_spark.ingest.mapping import (MALFORMED_COLUMN, MappingError, attribute_source_columns, map_columns,
                                      resolve_columns)
from ulv_spark.ingest.validate import Outcome, derived_rows, prepare, reject_counts, source_from_pending
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
        return read_csv(spark, src.path, {"header": "true", **options}), src
    # a Delta *source* path is user data outside the lakehouse, so it is read here, not via lake.py
    return spark.read.format(src.format).options(**options).load(src.path), src


def read_csv(spark, path: str, options: dict):
    """A CSV source with the header's columns plus MALFORMED_COLUMN for rows Spark cannot parse.

    Spark's CSV reader silently drops the extra fields of a long row and pads a short one with
    nulls; read with an explicit schema (the header's names and types) in PERMISSIVE mode, such
    a row keeps its text in MALFORMED_COLUMN instead and ingest rejects it (malformed_row). CSV
    column pruning is turned off for the session, because a reader that parses only the mapped
    columns cannot tell a row's field count. A `mode` option of the source's own wins.
    """
    from pyspark.sql import types as T

    reader = spark.read.options(**options)
    if str(options.get("mode", "PERMISSIVE")).upper() != "PERMISSIVE":
        return reader.csv(path)
    header = reader.csv(path).schema
    spark.conf.set("spark.sql.csv.parser.columnPruning.enabled", "false")
    schema = T.StructType(list(header.fields) + [T.StructField(MALFORMED_COLUMN, T.StringType())])
    return (reader.schema(schema).option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", MALFORMED_COLUMN).csv(path))


def _source_columns(raw) -> list[str]:
    return [c for c in raw.columns if c != MALFORMED_COLUMN]


OUTCOME_FIELDS = ("observed_converted", "observed_value")


@dataclasses.dataclass(frozen=True)
class MappedSource:
    table: str
    src: object          # the effective SourceConf (presets filled in)
    raw: object          # the source as read
    columns: dict        # contract field -> source column
    mapped: object       # map_columns(raw, ...)


def _map_sources(spark, cfg, *, sample_rows: int | None = None) -> dict:
    """table -> MappedSource; fails on the first source that cannot be mapped.

    With `sample_rows`, each source is cut to its first rows (the dry run).
    """
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
            first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
            raise JobFailed(f"sources.{table}: cannot read {src.path}: {first}") from None
        try:
            columns, missing = resolve_columns(table, src.columns, _source_columns(raw),
                                               derive_order_id=src.derive_order_id)
        except MappingError as exc:
            raise ConfigError(str(exc)) from None
        if missing:
            raise JobFailed(f"sources.{table}: mapped column(s) {', '.join(missing)} not found in {src.path} "
                            f"(its columns: {', '.join(_source_columns(raw))})")
        if sample_rows is not None:
            raw = raw.limit(sample_rows)
        out[table] = MappedSource(table, src, raw, columns, map_columns(raw, table, columns))
    _check_sources(out)
    return out


def _check_sources(sources: dict) -> None:
    """Cross-source checks: orders or observed outcomes, and no outcome leaking into the attributes."""
    exposures = sources.get("campaign_exposures")
    if "orders" not in sources and not (exposures and set(OUTCOME_FIELDS) & set(exposures.columns)):
        raise ConfigError("sources.orders is required unless sources.campaign_exposures maps observed_converted "
                          "or observed_value (a campaign export that carries its own outcomes)")
    attributes = sources.get("user_attributes")
    if exposures and attributes and (attributes.src.path, attributes.src.format) == (exposures.src.path,
                                                                                  exposures.src.format):
        kept = attribute_source_columns("user_attributes", attributes.columns, _source_columns(attributes.raw))
        used = {c for name, c in exposures.columns.items() if name != "user_id"}
        shared = [c for c in kept if c in used]
        if shared:
            raise ConfigError(f"sources.user_attributes keeps column(s) {', '.join(shared)} of the campaign_exposures "
                              "file: as attributes the arm and outcomes would leak into the features; name the "
                              "attribute columns in sources.user_attributes.columns")


def run_ingest(ctx: JobContext, *, dry_run: bool = False, sample_rows: int = 1000,
               full_reload: bool = False) -> Summary:
    """The `ingest` stage: validate every configured source and MERGE the good rows into bronze.

    With ``ingest.incremental`` (and not `full_reload`), file and Delta-path sources are read as a
    stream that hands over only what earlier nights did not read (see ingest.incremental); the
    others, and every source with `full_reload`, are read whole. Each table's summary says which
    (`mode`), the rows read this night (`rows_read`) and the rows of the bronze table after it
    (`table_rows`).

    Args:
        dry_run: read the first `sample_rows` rows of each source, validate them and report the
            mapping, parsed types, a few parsed rows and the reject counts (also on stderr);
            write nothing.
        sample_rows: rows per source read by the dry run.
        full_reload: read every source whole even when ``ingest.incremental`` is on (the
            streaming checkpoints are left as they are).
    """
    if dry_run:
        return dry_run_ingest(ctx, sample_rows=sample_rows)
    cfg, log = ctx.cfg, get_logger("ulv_spark.ingest")
    sources = _map_sources(ctx.spark, cfg)
    streamed = {t: m for t, m in sources.items()
                if cfg.ingest.incremental and not full_reload and incremental.is_incremental(m.src)}
    mapped = {t: (m.mapped, m.src) for t, m in sources.items() if t not in streamed}
    products_source = "products" in sources
    rejected_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    tables = _ingest_whole(ctx, mapped, rejected_at, log, products_source=products_source)
    for table, m in streamed.items():
        tables.update(_ingest_new(ctx, m, rejected_at, log, products_source=products_source))
    for table, info in tables.items():
        if table in sources:
            info["mode"] = "incremental" if table in streamed else "full"
            info["table_rows"] = _table_rows(ctx.spark, cfg.lakehouse, table)
    if "orders" not in sources:
        tables["orders"] = _empty_orders(ctx.spark, cfg.lakehouse, log)
    return {"tables": tables}


def _table_rows(spark, lake_cfg, table: str) -> int:
    """Rows of the bronze table (Delta answers a plain count from its file statistics)."""
    ref = lake.table_ref(lake_cfg, table)
    return int(lake.read_table(spark, ref).count()) if lake.is_delta(spark, ref) else 0


def _ingest_whole(ctx: JobContext, mapped: dict, rejected_at, log, *, products_source: bool) -> dict:
    """Validate every source of `mapped` (table -> (frame, rules)), check the reject shares, then write.

    Nothing is written when any table's reject share is above the limit. Returns the per-table
    summary (derived tables included).
    """
    prepared, outcomes = {}, {}
    try:
        for table, (frame, rules) in mapped.items():
            prepared[table], outcomes[table] = _validate(table, frame, rules, ctx, rejected_at, log)
        _check_reject_shares(outcomes, ctx.cfg.ingest.max_reject_share)
        written, derived = {}, {}
        for table, prep in prepared.items():
            written[table], more = _write_all(ctx, table, prep, outcomes[table], log, products_source=products_source)
            derived.update(more)
    finally:
        for prep in prepared.values():
            prep.labelled.unpersist()
    tables = {t: {**_counts(o), **written[t]} for t, o in outcomes.items()}
    tables.update(derived)
    return tables


def _counts(o: Outcome) -> dict:
    # source_rows: what the nightly reject gate divides by; reject_share is over the rows due
    return {"rows_read": o.rows_read, "source_rows": o.rows_read, "rejected": o.rejected_total,
            "reject_share": round(o.reject_share, 6), "reject_reasons": o.rejected, "deferred": o.deferred}


def _write_all(ctx: JobContext, table: str, prep, outcome: Outcome, log, *, products_source: bool):
    """Write one validated source (bronze MERGE, rejects) and its derived tables: (facts, {derived: facts})."""
    lake_cfg, derived = ctx.cfg.lakehouse, {}
    with stage(f"write {table}", log) as info:
        written = _write(ctx.spark, lake_cfg, table, prep, outcome)
        info.update(written)
    for name, rows in derived_rows(table, prep.labelled, run_id=ctx.run_id, products_source=products_source).items():
        with stage(f"write {name} (from {table})", log) as info:
            derived[name] = {"derived_from": table, **_write_derived(ctx.spark, lake_cfg, name, rows)}
            info.update(derived[name])
    return written, derived


def _ingest_new(ctx: JobContext, source: MappedSource, rejected_at, log, *, products_source: bool) -> dict:
    """Read only the new input of one source as a stream; each micro-batch is validated, gated and MERGEd.

    The reject gate applies per batch of this source: a batch above the limit writes nothing
    and fails the run, and stays unread for the next run.
    """
    table, spark = source.table, ctx.spark
    totals: dict = {"outcomes": [], "written": [], "derived": {}}
    defer = source.src.future_rows == "defer"
    pending_ref = lake.table_ref(ctx.cfg.lakehouse, f"{table}_pending")
    pending = catalog.pending_contract(CONTRACTS[table])

    def process(batch, batch_id, *, replace_pending: bool = False):
        frame = map_columns(batch, table, source.columns)
        prep, outcome = _validate(table, frame, source.src, ctx, rejected_at, log)
        try:
            _check_reject_shares({table: outcome}, ctx.cfg.ingest.max_reject_share)
            written, derived = _write_all(ctx, table, prep, outcome, log, products_source=products_source)
            # a file is read once: what it defers waits in <table>_pending for a later night
            if replace_pending:
                lake.overwrite(spark, prep.deferred, pending_ref, pending)
            elif outcome.deferred:
                lake.append(spark, prep.deferred, pending_ref, pending)
        finally:
            prep.labelled.unpersist()
        totals["outcomes"].append(outcome)
        totals["written"].append(written)
        for name, facts in derived.items():
            _add_facts(totals["derived"], name, facts)

    pending_read = 0
    if defer and lake.is_delta(spark, pending_ref):
        # the rows earlier nights deferred, read first: those now due load, the rest stay pending
        stored = lake.read_table(spark, pending_ref, version=lake.current_version(spark, pending_ref))
        pending_read = stored.count()
        if pending_read:
            with stage(f"read pending {table}", log) as info:
                process(source_from_pending(stored, source.raw.schema), "pending", replace_pending=True)
                info.update(rows=pending_read)
    checkpoint = incremental.checkpoint_dir(ctx.cfg.lakehouse.shared_dir, table)
    stream = incremental.stream_source(spark, source.src, source.raw.schema)
    with stage(f"read new {table}", log) as info:
        batches = incremental.run_available(stream, checkpoint, process, name=table)
        info.update(batches=batches)
    outcome = Outcome.merged(totals["outcomes"])
    written = {"table": lake.table_ref(ctx.cfg.lakehouse, table).name, "inserted": 0, "updated": 0}
    for facts in totals["written"]:
        _add_facts({table: written}, table, facts)
    if not totals["written"]:
        _ensure_bronze(spark, ctx.cfg.lakehouse, table)
    log.info("%s: %d rows in %d new batch(es) since the last night and %d pending (checkpoint %s)", table,
             outcome.rows_read - pending_read, batches, pending_read, checkpoint)
    facts = {**_counts(outcome), **written, "batches": batches}
    if defer:
        still = lake.read_table(spark, pending_ref).count() if lake.is_delta(spark, pending_ref) else 0
        facts.update(pending_read=pending_read, pending_rows=still)
    return {table: facts, **totals["derived"]}


def _add_facts(into: dict, name: str, facts: dict) -> None:
    """Sum the inserted / updated counts of `facts` into `into[name]` (first facts kept as they are)."""
    if name not in into:
        into[name] = dict(facts)
        return
    for key in ("inserted", "updated"):
        into[name][key] = into[name].get(key, 0) + facts.get(key, 0)


def _ensure_bronze(spark, lake_cfg, table: str) -> None:
    """A night with nothing new still leaves the bronze table and its rejects table in place."""
    contract = CONTRACTS[table]
    if not contract.extra_columns:
        lake.ensure_table(spark, lake.table_ref(lake_cfg, table), contract)
    rejects = catalog.rejects_contract(contract)
    lake.ensure_table(spark, lake.table_ref(lake_cfg, rejects.name), rejects)


def _empty_orders(spark, lake_cfg, log) -> dict:
    """Without an orders source (a campaign export): make sure the orders table exists, empty if new."""
    ref = lake.table_ref(lake_cfg, "orders")
    lake.ensure_table(spark, ref, catalog.ORDERS)
    note = ("no orders source: the campaign exposures carry their outcomes; value and churn have no labels "
            "without orders")
    log.info("orders: %s (table %s)", note, ref.name)
    return {"table": ref.name, "source": None, "note": note}


# -------------------------------------------------------------------- dry run
SHOWN_ROWS = 5  # parsed rows per source printed by the dry run


def dry_run_ingest(ctx: JobContext, *, sample_rows: int = 1000) -> Summary:
    """Read the first `sample_rows` rows of every source, validate them, report; write nothing.

    Per source: the resolved mapping (contract field <- source column), the source and parsed
    (bronze) column types, the first SHOWN_ROWS bronze rows and the reject counts by reason of
    the sample. The report goes to stderr; the same facts are the returned summary.
    """
    if sample_rows < 1:
        raise ConfigError(f"--sample-rows must be >= 1, got {sample_rows}")
    cfg = ctx.cfg
    rejected_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    tables = {}
    for table, source in _map_sources(ctx.spark, cfg, sample_rows=sample_rows).items():
        prep = prepare(table, source.mapped, rules=source.src, as_of=ctx.as_of, run_id=ctx.run_id,
                       rejected_at=rejected_at)
        outcome = Outcome.from_counts([tuple(r) for r in reject_counts(prep.labelled).collect()])
        shown = [r.asDict() for r in prep.good.drop("run_id").limit(SHOWN_ROWS).collect()]  # a few sample rows
        raw_types = {f.name: f.dataType.simpleString() for f in source.raw.schema.fields}
        tables[table] = {
            "format": source.src.format, "path": source.src.path, "mapping": dict(source.columns),
            "source_types": {c: raw_types[c] for c in dict.fromkeys(source.columns.values())},
            "parsed_types": {f.name: f.dataType.simpleString() for f in prep.good.schema.fields if f.name != "run_id"},
            "rows_read": outcome.rows_read, "rejected": outcome.rejected_total, "reject_reasons": outcome.rejected,
            "deferred": outcome.deferred, "reject_share": round(outcome.reject_share, 6),
            "over_max_reject_share": outcome.reject_share > cfg.ingest.max_reject_share, "rows": shown}
        print(format_dry_run(table, tables[table], sample_rows=sample_rows, as_of=ctx.as_of,
                             max_share=cfg.ingest.max_reject_share), file=sys.stderr)
    if "orders" not in tables:
        tables["orders"] = {"source": None, "note": "no orders source: the orders table would be created empty"}
    return {"dry_run": True, "sample_rows": sample_rows, "tables": tables}


def _cell(value) -> str:
    if isinstance(value, dt.datetime):
        text = value.isoformat(sep=" ")
    elif isinstance(value, float):
        text = f"{value:.10g}"  # 6 * 1.85 shows as 11.1, not 11.100000000000001
        text = text + ".0" if text.lstrip("-").isdigit() else text
    else:
        text = str(value)
    return text if len(text) <= 24 else text[:21] + "..."


def format_dry_run(table: str, facts: dict, *, sample_rows: int, as_of: dt.date, max_share: float) -> str:
    """The dry-run report of one source as text (what `ingest --dry-run` prints on stderr)."""
    lines = [f"sources.{table}: {facts['format']} {facts['path']} (first {sample_rows} rows, run date {as_of})",
             "  mapping (contract field <- source column: source type):"]
    width = max((len(k) for k in facts["mapping"]), default=0)
    for field, column in facts["mapping"].items():
        lines.append(f"    {field:<{width}} <- {column}: {facts['source_types'][column]}")
    lines.append("  parsed columns: " + ", ".join(f"{k} {v}" for k, v in facts["parsed_types"].items()))
    reasons = ", ".join(f"{k}={v}" for k, v in facts["reject_reasons"].items()) or "none"
    verdict = " - above ingest.max_reject_share, a real run would stop" if facts["over_max_reject_share"] else ""
    lines.append(f"  rows read {facts['rows_read']}, rejected {facts['rejected']} ({reasons}), deferred "
                 f"{facts['deferred']}; reject share {facts['reject_share']:.1%} (limit {max_share:.1%}){verdict}")
    if facts["rows"]:
        columns = list(facts["rows"][0])
        cells = [[_cell(r[c]) for c in columns] for r in facts["rows"]]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
        lines.append(f"  first {len(cells)} parsed rows:")
        lines.append("    " + "  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
        lines += ["    " + "  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    else:
        lines.append("  no row of the sample parsed")
    return "\n".join(lines)


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


def _merge_or_create(spark, ref, contract: TableContract, rows) -> dict:
    """MERGE `rows` into the table (a first load is a plain append); Delta's insert / update counts."""
    if lake.is_delta(spark, ref):
        metrics = lake.merge(spark, rows, ref, contract)
    else:
        # first load: MERGE into a new table inserts every row, and a plain write does that in one pass
        lake.append(spark, rows, ref, with_attribute_columns(contract, rows))
        written = lake.last_operation_metrics(spark, ref)
        metrics = {"numTargetRowsInserted": written.get("numOutputRows", 0)}
    return {"table": ref.name, "inserted": int(metrics.get("numTargetRowsInserted", 0)),
            "updated": int(metrics.get("numTargetRowsUpdated", 0))}


def _write_derived(spark, lake_cfg, name: str, rows) -> dict:
    """MERGE the rows of a derived bronze table (order_lines, products from lines); no rejects of its own."""
    return _merge_or_create(spark, lake.table_ref(lake_cfg, name), catalog.contract(name), rows)


def _write(spark, lake_cfg, table: str, prep, outcome: Outcome) -> dict:
    contract = CONTRACTS[table]
    facts = _merge_or_create(spark, lake.table_ref(lake_cfg, table), contract, prep.good)
    rejects = catalog.rejects_contract(contract)
    rejects_ref = lake.table_ref(lake_cfg, rejects.name)
    if outcome.rejected_total:
        lake.append(spark, prep.rejects, rejects_ref, rejects)
    else:
        lake.ensure_table(spark, rejects_ref, rejects)
    return facts
