"""`ulv-spark plan --as-of D`: the budgeted promotion plan of D and its forecast, from promo_uplift of D.

Reads the night's promo_uplift, chooses at most one arm per user (plan/allocate.py: budget,
capacities and min ROI from `plan.*`, margin and arm costs from `score.*`), writes `promo_plan`
and `campaign_forecast` replacing only (as_of_date, plan.name), and their latest_* views. A
re-run of the same date and plan gives the same rows (only run_id differs).
"""
from __future__ import annotations

from pyspark.sql import functions as F

from ulv_spark import catalog, lake
from ulv_spark.context import JobContext, Summary
from ulv_spark.errors import JobFailed
from ulv_spark.plan.allocate import ELIGIBLE, allocate, best_arm_for_everyone, plan_candidates
from ulv_spark.plan.contracts import ALL_ARMS, LONG_TERM_MISSING, PLAN, SHORT_TERM_WEIGHT, UPLIFT_VALUE_LONG
from ulv_spark.plan.forecast import campaign_forecast, scenario_targets
from ulv_spark.runtime import get_logger, stage
from ulv_spark.schemas import ARM, AS_OF_DATE, MODEL_VERSION, RUN_ID

PLAN_TABLES = catalog.names(catalog.PLANS)
log = get_logger("ulv_spark.plan")


class NothingToPlan(JobFailed):
    """promo_uplift has no rows for the date (no score run yet, or a model without campaign arms)."""


def run_plan(ctx: JobContext) -> Summary:
    """Plan ctx.as_of with the conf's plan.*; returns the run summary."""
    cfg, spark, as_of, conf = ctx.cfg, ctx.spark, ctx.as_of, ctx.cfg.plan
    uplift, arms, model_version, long_term = _read_uplift(spark, cfg.lakehouse, as_of)
    unknown = sorted(set(conf.capacities) - set(arms))
    if unknown:
        log.warning("plan.capacities names arm(s) promo_uplift of %s does not have: %s", as_of, unknown)
    candidates = plan_candidates(uplift, margin=cfg.score.margin, arm_costs=cfg.score.arm_costs,
                                 short_term_weight=conf.short_term_weight, min_roi=conf.min_roi)
    with stage("plan.allocate", log) as info:
        allocation = allocate(candidates, arms=arms, budget=conf.budget, capacities=conf.capacities,
                              price_passes=conf.price_passes, prices_per_pass=conf.prices_per_pass,
                              costs=cfg.score.arm_costs)
        info.update(users=allocation.info["users"], cost=allocation.info["cost"])
    try:
        stamp = [F.lit(conf.name).alias(PLAN), F.lit(float(conf.short_term_weight)).alias(SHORT_TERM_WEIGHT),
                 F.lit(ctx.run_id).alias(RUN_ID)]
        plan_rows = allocation.plan.drop(ELIGIBLE).select("*", *stamp)
        with stage("plan.forecast", log):
            targets = scenario_targets(allocation.plan, best_arm_for_everyone(candidates))
            forecast = campaign_forecast(targets, margin=cfg.score.margin, replicates=conf.bootstrap_replicates,
                                         seed=conf.seed, interval=conf.interval, long_term=long_term).select(
                "*", F.lit(as_of).alias(AS_OF_DATE), F.lit(conf.name).alias(PLAN),
                F.lit(conf.budget).cast("double").alias("budget"), F.lit(float(conf.interval)).alias("interval"),
                F.lit(int(conf.bootstrap_replicates)).alias("bootstrap_replicates"),
                F.lit(model_version).alias(MODEL_VERSION), F.lit(ctx.run_id).alias(RUN_ID))
        written = _write(ctx, {catalog.PROMO_PLAN.name: plan_rows, catalog.CAMPAIGN_FORECAST.name: forecast})
    finally:
        allocation.release()
    views = [lake.create_latest_view(spark, lake.table_ref(cfg.lakehouse, name)) for name in PLAN_TABLES]
    found = allocation.info
    gap = None if found["upper_bound"] is None else max(0.0, found["upper_bound"] - found["objective"])
    return {"plan": conf.name, "model_version": model_version, "arms": arms, "short_term_weight": conf.short_term_weight,
            "long_term": "uplift_value_long from promo_uplift" if long_term else LONG_TERM_MISSING,
            "budget": conf.budget, "capacities": dict(conf.capacities), "min_roi": conf.min_roi,
            "users": found["users"], "users_by_arm": found["users_by_arm"], "cost": found["cost"],
            "objective": found["objective"], "budget_price": found["price"], "price_passes": found["price_passes"],
            "capacity_reached": found["capacity_reached"], "optimality_gap_bound": gap,
            "tables": written, "views": views}


def _read_uplift(spark, lake_cfg, as_of):
    """promo_uplift rows of `as_of`, their arms (sorted), model version and whether they carry a long-term uplift.

    NothingToPlan when there are none. Long term: the column exists (tables written before it
    lack it) and is filled (a model without the long-term head writes nulls).
    """
    ref = lake.table_ref(lake_cfg, catalog.PROMO_UPLIFT.name)
    if not lake.is_delta(spark, ref):
        raise NothingToPlan(f"table {ref.name} does not exist: run `ulv-spark score --as-of {as_of}` first")
    uplift = lake.read_table(spark, ref, as_of_date=as_of)
    has_column = UPLIFT_VALUE_LONG in uplift.columns
    filled = F.count(UPLIFT_VALUE_LONG) if has_column else F.lit(0)
    stats = uplift.agg(F.count(F.lit(1)).alias("rows"), F.sort_array(F.collect_set(ARM)).alias("arms"),
                       F.count_distinct(MODEL_VERSION).alias("models"), F.min(MODEL_VERSION).alias("model"),
                       filled.alias("long")).first()
    if stats["rows"] == 0:
        raise NothingToPlan(f"{ref.name} has no rows for {as_of}: score the date first (a model without "
                            f"campaign arms has nothing to plan)")
    if stats["models"] != 1:
        raise JobFailed(f"{ref.name} rows of {as_of} come from {stats['models']} model versions; re-score the date")
    arms = list(stats["arms"])  # one entry per arm: a handful of names
    if ALL_ARMS in arms:
        raise JobFailed(f"an arm is named {ALL_ARMS!r}, which campaign_forecast uses for a scenario's total")
    return uplift, arms, stats["model"], stats["long"] > 0


def _write(ctx, frames: dict) -> dict:
    """Replace (as_of_date, plan) of each plan table; JobFailed names the one that failed."""
    cfg, spark, as_of = ctx.cfg, ctx.spark, ctx.as_of
    written: dict = {}
    for name in PLAN_TABLES:
        ref = lake.table_ref(cfg.lakehouse, name)
        try:
            with stage(f"plan.write.{name}", log) as info:
                lake.write_partition(spark, frames[name], ref, catalog.contract(name), as_of=as_of,
                                     also={PLAN: cfg.plan.name})
                metrics = lake.last_operation_metrics(spark, ref)
                written[name] = {"table": ref.name, "version": lake.current_version(spark, ref),
                                 "rows": int(metrics.get("numOutputRows", 0))}
                info.update(rows=written[name]["rows"])
        except Exception as exc:
            raise JobFailed(f"writing {ref.name} for {as_of} (plan {cfg.plan.name}) failed "
                            f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); "
                            f"written by this run: {list(written) or 'none'}") from exc
    return written
