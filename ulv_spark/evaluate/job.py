"""`ulv-spark evaluate`: backtest the model against the baselines; metrics table + HTML report."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from ulv_spark import catalog
from ulv_spark.context import JobContext, Summary
from ulv_spark.runtime import get_logger

# EvaluationInputs field -> table: the bronze inputs and the truth tables; only orders is required
_FIELD_NAMES = {catalog.CAMPAIGN_EXPOSURES.name: "exposures", catalog.USER_ATTRIBUTES.name: "attributes"}
INPUT_TABLES = {_FIELD_NAMES.get(name, name): name for name in catalog.names(catalog.BRONZE, catalog.TRUTH)
                if _FIELD_NAMES.get(name, name) in ("orders", "events", "exposures", "attributes", "truth_users",
                                                    "truth_uplift")}  # text tables: via read_text_inputs


def read_inputs(spark, lake_cfg):
    """The pipeline inputs from the lakehouse: every table of INPUT_TABLES that exists."""
    from ulv_spark import lake
    from ulv_spark.evaluate.pipeline import EvaluationInputs

    frames = {}
    for key, table in INPUT_TABLES.items():
        ref = lake.table_ref(lake_cfg, table)
        frames[key] = lake.read_table(spark, ref) if lake.is_delta(spark, ref) else None
    return EvaluationInputs(**frames)


def run_evaluate(ctx: JobContext, *, dataset: Optional[str] = None, report: Optional[str] = None) -> Summary:
    """The `evaluate` stage: backtest at ctx.as_of; metrics rows + an HTML report.

    Args:
        dataset: name recorded with the metrics (default: evaluate.dataset).
        report: HTML report path (default: under evaluate.report_dir).
    """
    from ulv_spark import lake
    from ulv_spark.errors import JobFailed
    from ulv_spark.evaluate import pipeline
    from ulv_spark.evaluate.policy_backtest import policy_headline
    from ulv_spark.evaluate.report import write_report

    cfg, spark = ctx.cfg, ctx.spark
    dataset = dataset or cfg.evaluate.dataset
    inputs = read_inputs(spark, cfg.lakehouse)
    if inputs.orders is None:
        raise JobFailed(f"{lake.table_ref(cfg.lakehouse, catalog.ORDERS.name).name} does not exist: "
                        "run `ulv-spark ingest` first")
    from ulv_spark.features.job import read_inputs as read_feature_inputs, read_text_inputs
    splits = pipeline.splits_from_conf(ctx.as_of, horizon_days=cfg.run.horizon_days, evaluate_cfg=cfg.evaluate)
    # the backtest fits its own text projection on history before its first test origin (nothing stored)
    inputs.text, _ = read_text_inputs(spark, cfg, read_feature_inputs(spark, cfg), run_id=ctx.run_id,
                                      history_before=min(s.origin for s in splits), store=False,
                                      log=get_logger("ulv_spark.evaluate"))
    try:
        result, facts = pipeline.run_evaluation(spark, inputs, splits=splits, cfg=cfg, dataset=dataset)
    except ValueError as exc:  # its first non-blank line (lifetimes' messages start with a newline)
        from ulv_spark.evaluate.backtest import skip_reason

        raise JobFailed(skip_reason(exc)) from None
    ref = lake.table_ref(cfg.lakehouse, catalog.EVALUATION_METRICS.name)
    lake.append(spark, pipeline.metrics_frame(spark, result.metrics, as_of=ctx.as_of, run_id=ctx.run_id), ref,
                catalog.EVALUATION_METRICS)
    path = report or str(Path(cfg.evaluate.report_dir) / f"evaluation_{dataset}_{ctx.as_of}_{ctx.run_id}.html")
    write_report(result, path, title=f"ulv_spark backtest: {dataset}",
                 facts={**facts, "as_of": ctx.as_of, "run_id": ctx.run_id})
    return {"dataset": dataset, "report": path, "metrics_table": ref.name, "metrics_rows": len(result.metrics),
            "skipped": {s.split.name: s.skipped for s in result.splits if s.skipped},
            "notes": {s.split.name: s.notes for s in result.splits if s.notes},
            "headline": pipeline.headline(result.metrics), "margins": pipeline.margins_headline(result),
            "policy_dr_gain": policy_headline(result.metrics)}
