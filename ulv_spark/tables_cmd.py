"""`ulv-spark tables`: what is in the lakehouse (name, location, version, rows)."""
from __future__ import annotations

from ulv_spark import lake
from ulv_spark.context import JobContext, Summary

KNOWN_TABLES = (
    "orders", "orders_rejects", "events", "events_rejects", "campaign_exposures",
    "campaign_exposures_rejects", "user_attributes", "user_attributes_rejects",
    "user_features", "training_examples", "token_vocabulary",
    "score_predictions", "user_value", "user_churn", "promo_uplift", "user_segments", "evaluation_metrics",
    "truth_users", "truth_uplift",
)
SCORE_TABLES = ("user_value", "user_churn", "promo_uplift", "user_segments")


def run_tables(ctx: JobContext) -> Summary:
    """The `tables` command: every known lakehouse table with location, Delta version and rows."""
    spark = ctx.spark
    lake.attach(spark, ctx.cfg.lakehouse, KNOWN_TABLES, views_for=SCORE_TABLES)
    tables = []
    for name in KNOWN_TABLES:
        ref = lake.table_ref(ctx.cfg.lakehouse, name)
        if lake.is_delta(spark, ref):
            tables.append({"table": ref.name, "location": ref.path, "version": lake.current_version(spark, ref),
                           "rows": spark.table(ref.name).count()})
    return {"lakehouse": ctx.cfg.lakehouse.root, "tables": tables}
