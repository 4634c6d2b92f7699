"""`ulv-spark tables`: what is in the lakehouse (name, location, version, rows)."""
from __future__ import annotations

from ulv_spark import catalog, lake
from ulv_spark.context import JobContext, Summary


def run_tables(ctx: JobContext) -> Summary:
    """The `tables` command: every catalog table that exists, with location, Delta version and rows."""
    spark = ctx.spark
    lake.attach(spark, ctx.cfg.lakehouse, catalog.names(), views_for=catalog.latest_views())
    tables = []
    for name in catalog.names():
        ref = lake.table_ref(ctx.cfg.lakehouse, name)
        if lake.is_delta(spark, ref):
            tables.append({"table": ref.name, "location": ref.path, "version": lake.current_version(spark, ref),
                           "rows": spark.table(ref.name).count()})
    return {"lakehouse": ctx.cfg.lakehouse.root, "tables": tables}
