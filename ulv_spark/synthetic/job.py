"""`ulv-spark generate`: write the synthetic raw inputs (Parquet) and the truth tables (Delta).

Raw files go to ``<generate.output_dir>/<orders|events|campaign_exposures|user_attributes>``
(plus ``products`` and ``reviews``, and a product per order, with ``generate.texts``; overwritten), in the shop's own column names, so ``ingest`` reads them through the mapping in
``sources:``. The truth tables ``truth_users`` and ``truth_uplift`` get one partition per truth
date: ``generate.truth_dates`` plus the run date and the run date minus the horizon when those
lie inside the simulated period.
"""
from __future__ import annotations

import datetime as dt

from pyspark import StorageLevel
from pyspark.sql import functions as F

from ulv_spark import catalog, lake
from ulv_spark.config import ConfigError
from ulv_spark.context import JobContext, Summary
from ulv_spark.runtime import get_logger, stage
from ulv_spark.schemas import AS_OF_DATE
from ulv_spark.synthetic import text
from ulv_spark.synthetic.generator import TABLES, GeneratorParams, generated_table

RAW_TABLES = tuple(name for name in catalog.names(catalog.BRONZE) if name in TABLES)  # the inputs it simulates


def params_for(cfg, as_of: dt.date) -> GeneratorParams:
    """Generator parameters from the conf; the run date and its evaluation origin add truth dates."""
    horizon = cfg.run.horizon_days
    try:
        return GeneratorParams.from_conf(cfg.generate, horizon,
                                         extra_truth_dates=(as_of, as_of - dt.timedelta(days=horizon)))
    except ValueError as exc:
        raise ConfigError(f"generate: {exc}") from None


def raw_path(output_dir: str, table: str) -> str:
    return output_dir.rstrip("/") + "/" + table


def run_generate(ctx: JobContext) -> Summary:
    """The `generate` command: raw Parquet inputs in the shop's column names + truth tables."""
    cfg, spark, log = ctx.cfg, ctx.spark, get_logger("ulv_spark.generate")
    params = params_for(cfg, ctx.as_of)
    summary = {"output_dir": cfg.generate.output_dir, "users": params.gen.users, "partitions": params.gen.partitions,
               "seed": params.gen.seed, "truth_dates": [d.isoformat() for d in params.truth_dates], "rows": {}}
    for table in RAW_TABLES:
        if table in text.TABLES and not cfg.generate.texts:
            continue
        path = raw_path(cfg.generate.output_dir, table)
        with stage(f"generate {table}", log) as info:
            raw = generated_table(spark, params, table)
            if table == "orders" and cfg.generate.texts:
                raw = text.with_order_products(spark, params, raw)
            raw.write.mode("overwrite").parquet(path)
            info["rows"] = summary["rows"][table] = spark.read.parquet(path).count()
    for contract in (t.contract for t in catalog.tables(catalog.TRUTH)):
        ref = lake.table_ref(cfg.lakehouse, contract.name)
        with stage(f"generate {contract.name}", log) as info:
            truth = generated_table(spark, params, contract.name).persist(StorageLevel.MEMORY_AND_DISK)
            try:
                for date in params.truth_dates:
                    lake.write_partition(spark, truth.filter(F.col(AS_OF_DATE) == F.lit(date)), ref, contract,
                                         as_of=date)
                info["rows"] = summary["rows"][contract.name] = truth.count()
            finally:
                truth.unpersist()
    return summary
