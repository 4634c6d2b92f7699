"""`ulv-spark features --as-of D`: write user_features, training_examples and token_vocabulary for D.

Reads the bronze tables (orders required; events, campaign_exposures and user_attributes when
they exist), builds the frames with the pure builders and replaces the as_of_date = D
partition of each output table, so re-running a date replaces that date only.
"""
from __future__ import annotations

import datetime as dt
from typing import Optional

from ulv_spark import catalog, lake
from ulv_spark.config import Config
from ulv_spark.context import JobContext, Summary
from ulv_spark.features.build import attribute_feature_columns, build_training_examples, build_user_features, origins
from ulv_spark.features.sequences import build_token_vocabulary, vocab_size, vocabulary_fingerprint
from ulv_spark.runtime import get_logger, stage
from ulv_spark.schemas import RUN_ID, TableContract

OUTPUT_TABLES = catalog.names(catalog.FEATURES)


def read_inputs(spark, cfg: Config) -> dict:
    """The bronze inputs as DataFrames: orders (must exist) and the optional ones (None when absent)."""
    from ulv_spark.errors import JobFailed

    orders_ref = lake.table_ref(cfg.lakehouse, catalog.ORDERS.name)
    if not lake.is_delta(spark, orders_ref):
        raise JobFailed(f"table {orders_ref.name} does not exist (at {orders_ref.path}); run `ulv-spark ingest` first")
    inputs = {}
    for name in catalog.names(catalog.BRONZE):
        ref = lake.table_ref(cfg.lakehouse, name)
        inputs[name] = lake.read_table(spark, ref) if lake.is_delta(spark, ref) else None
    return inputs


def _check_columns(spark, ref: lake.TableRef, contract: TableContract) -> None:
    """Fail before writing when the existing table's columns differ from this run's contract."""
    from ulv_spark.errors import JobFailed

    if not lake.is_delta(spark, ref):
        return
    existing = lake.read_table(spark, ref).columns
    if existing != contract.column_names:
        added = [c for c in contract.column_names if c not in existing]
        dropped = [c for c in existing if c not in contract.column_names]
        raise JobFailed(f"{ref.name}: this run's columns differ from the table's (new: {added}, missing: {dropped}); "
                        "features conf or user_attributes columns changed - write to a new lakehouse schema or "
                        "drop the table to rebuild it")


def write_feature_tables(spark, cfg: Config, *, as_of: dt.date, run_id: str, inputs: Optional[dict] = None) -> dict:
    """Build and write the three feature tables for `as_of`; returns the run's summary facts."""
    from pyspark.sql import functions as F

    log = get_logger("ulv_spark.features")
    inputs = inputs if inputs is not None else read_inputs(spark, cfg)
    feats = cfg.features
    frames = (inputs["orders"], inputs["events"], inputs["campaign_exposures"], inputs["user_attributes"])
    attr_cols = attribute_feature_columns(inputs["user_attributes"], feats)
    contracts = {name: catalog.contract(name, feats, attr_cols) for name in OUTPUT_TABLES}
    refs = {name: lake.table_ref(cfg.lakehouse, name) for name in OUTPUT_TABLES}
    for name in OUTPUT_TABLES:
        _check_columns(spark, refs[name], contracts[name])

    summary = {"inputs": {name: df is not None for name, df in inputs.items()},
               "origins": [d.isoformat() for d in origins(as_of, horizon_days=cfg.run.horizon_days,
                                                          features_cfg=feats)],
               "vocab_size": vocab_size(feats), "vocabulary_fingerprint": vocabulary_fingerprint(feats),
               "rows": {}, "seconds": {}}
    builds = {
        catalog.USER_FEATURES.name: lambda: build_user_features(*frames, as_of=as_of, features_cfg=feats),
        catalog.TRAINING_EXAMPLES.name: lambda: build_training_examples(
            *frames, as_of=as_of, horizon_days=cfg.run.horizon_days, features_cfg=feats),
        catalog.TOKEN_VOCABULARY.name: lambda: build_token_vocabulary(spark, feats, as_of=as_of),
    }
    for name in OUTPUT_TABLES:
        with stage(f"features: write {name} for {as_of}", log) as info:
            df = builds[name]().withColumn(RUN_ID, F.lit(run_id))
            lake.write_partition(spark, df, refs[name], contracts[name], as_of=as_of)
            info["rows"] = lake.read_table(spark, refs[name], as_of_date=as_of).count()
        summary["rows"][name] = info["rows"]
        summary["seconds"][name] = info["seconds"]
    for name in OUTPUT_TABLES:
        if catalog.table(name).latest_view:
            lake.create_latest_view(spark, refs[name])
    summary["tables"] = {name: refs[name].name for name in OUTPUT_TABLES}
    return summary


def run_features(ctx: JobContext) -> Summary:
    """The `features` stage: write the feature tables for ctx.as_of and report row counts."""
    summary = write_feature_tables(ctx.spark, ctx.cfg, as_of=ctx.as_of, run_id=ctx.run_id)
    if summary["rows"]["user_features"] == 0:
        get_logger("ulv_spark.features").warning("no user has an order or event before %s", ctx.as_of)
    return summary
