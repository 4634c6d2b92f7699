"""`ulv-spark plan` end to end on a tiny promo_uplift: exact plan and forecast, re-runs, README's SQL."""
import contextlib
import datetime as dt
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from chispa import assert_approx_df_equality
from pyspark.sql import functions as F

from ulv_spark import catalog, cli, lake
from ulv_spark.config import load_config
from ulv_spark.plan.contracts import LONG_TERM_MISSING
from ulv_spark.plan.forecast import poisson_weight

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
D = dt.date(2025, 10, 1)
REPLICATES = 20
# (user, arm, uplift_value); conversion = value / 100; margin 0.5, coupon costs 2, ship 1, budget 4
ROWS = [("a", "coupon", 30.0), ("b", "coupon", 20.0), ("c", "coupon", 10.0), ("d", "coupon", 10.0),
        ("e", "coupon", 5.0), ("a", "ship", 25.0), ("b", "ship", 25.0), ("c", "ship", 3.0), ("d", "ship", 12.0),
        ("e", "ship", 1.0)]
FORECAST = ("scenario string, arm string, users_targeted bigint, expected_conversions double, expected_revenue double, "
            "cost double, expected_profit double, roi double")


@pytest.fixture(scope="module")
def planned(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("plan")
    conf = root / "conf.yaml"
    conf.write_text(f"""lakehouse: {{root: {root / 'lakehouse'}, schema: plan_t, shared_dir: {root / 'shared'}}}
score: {{margin: 0.5, arm_costs: {{coupon: 2.0, ship: 1.0}}}}
plan: {{budget: 4.0, bootstrap_replicates: {REPLICATES}, price_passes: 3, prices_per_pass: 8}}
""")
    cfg = load_config(conf)
    # a model without the long-term head: uplift_value_long is null
    uplift = spark.createDataFrame(
        [(u, D, "c1", a, v / 100.0, v, None, v * 0.5 - {"coupon": 2.0, "ship": 1.0}[a], False, "m1", "score-run")
         for u, a, v in ROWS],
        "user_id string, as_of_date date, campaign_id string, arm string, uplift_conversion double, "
        "uplift_value double, uplift_value_long double, expected_profit double, recommended boolean, "
        "model_version string, run_id string")
    lake.write_partition(spark, uplift, lake.table_ref(cfg.lakehouse, "promo_uplift"), catalog.PROMO_UPLIFT, as_of=D)
    first = _plan(conf)
    return conf, cfg, first


def _plan(conf, *args):
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = cli.main(["plan", "--conf", str(conf), "--as-of", D.isoformat(), *args])
    assert code == 0
    return json.loads(buffer.getvalue())


def _table(spark, cfg, name):
    return lake.read_table(spark, lake.table_ref(cfg.lakehouse, name))


def test_plan_writes_the_optimal_plan_and_says_long_term_uplift_is_missing(planned, spark):
    conf, cfg, summary = planned
    assert summary["plan"] == "default" and summary["users"] == 3 and summary["cost"] == 4.0
    assert summary["objective"] == 29.5 and summary["long_term"] == LONG_TERM_MISSING
    assert summary["tables"]["promo_plan"]["rows"] == 3
    expected = spark.createDataFrame([
        ("a", D, "default", "c1", "coupon", 13.0, 2.0, 0.30, 30.0, None, 0.5, "m1"),
        ("b", D, "default", "c1", "ship", 11.5, 1.0, 0.25, 25.0, None, 0.5, "m1"),
        ("d", D, "default", "c1", "ship", 5.0, 1.0, 0.12, 12.0, None, 0.5, "m1"),
    ], "user_id string, as_of_date date, plan string, campaign_id string, arm string, objective double, cost double, "
       "uplift_conversion double, uplift_value double, uplift_value_long double, short_term_weight double, "
       "model_version string")
    got = _table(spark, cfg, "promo_plan").drop("run_id")
    assert_approx_df_equality(got, spark.createDataFrame(expected.rdd, got.schema), 1e-12, ignore_row_order=True)


def test_a_long_term_uplift_moves_the_plan_as_the_short_term_weight_says(tmp_path, spark):
    # a lakehouse of its own: the module's plans and forecasts stay as the other tests expect them
    conf = tmp_path / "conf.yaml"
    conf.write_text(f"""lakehouse: {{root: {tmp_path / 'lakehouse'}, schema: plan_long_t, shared_dir: {tmp_path / 'shared'}}}
score: {{margin: 0.5, arm_costs: {{coupon: 2.0, ship: 1.0}}}}
plan: {{budget: 4.0, bootstrap_replicates: {REPLICATES}, price_passes: 3, prices_per_pass: 8}}
""")
    cfg = load_config(conf)
    # the coupon pays back later (long term = value - 25: a's coupon 5, b's -5 ...), shipping keeps its value
    long = {"coupon": -25.0, "ship": 0.0}
    uplift = spark.createDataFrame(
        [(u, D, "c1", a, v / 100.0, v, v + long[a], v * 0.5 - {"coupon": 2.0, "ship": 1.0}[a], False, "m1", "s")
         for u, a, v in ROWS],
        "user_id string, as_of_date date, campaign_id string, arm string, uplift_conversion double, "
        "uplift_value double, uplift_value_long double, expected_profit double, recommended boolean, "
        "model_version string, run_id string")
    lake.write_partition(spark, uplift, lake.table_ref(cfg.lakehouse, "promo_uplift"), catalog.PROMO_UPLIFT, as_of=D)
    short = _plan(conf, "--set", "plan.name=w1", "--set", "plan.short_term_weight=1.0")
    longer = _plan(conf, "--set", "plan.name=w0", "--set", "plan.short_term_weight=0.0")
    assert short["long_term"] == longer["long_term"] == "uplift_value_long from promo_uplift"
    # λ = 1: as without a long term (a coupon, b and d ship, objective 29.5); λ = 0: objective = long * 0.5 - cost,
    # budget 4: ship to a (11.5), b (11.5), d (5.0), c (0.5); no coupon pays off over the horizon any more
    assert short["objective"] == 29.5 and short["users_by_arm"] == {"coupon": 1, "ship": 2}
    assert longer["objective"] == 28.5 and longer["users_by_arm"] == {"ship": 4}
    forecast = _table(spark, cfg, "campaign_forecast").filter(F.col("plan") == "w0")
    row = forecast.filter((F.col("scenario") == "plan") & (F.col("arm") == "all")).first()
    assert row["expected_revenue_long"] == pytest.approx(25.0 + 25.0 + 12.0 + 3.0)


def test_forecast_sums_the_plan_send_all_and_send_none_with_bootstrap_bounds(planned, spark):
    conf, cfg, _ = planned
    forecast = _table(spark, cfg, "campaign_forecast")
    expected = spark.createDataFrame([
        ("plan", "coupon", 1, 0.30, 30.0, 2.0, 13.0, 6.5),
        ("plan", "ship", 2, 0.37, 37.0, 2.0, 16.5, 8.25),
        ("plan", "all", 3, 0.67, 67.0, 4.0, 29.5, 7.375),
        # send to everyone: a, c, e take the coupon, b and d ship (the best objective of each)
        ("send_all_best_arm", "coupon", 3, 0.45, 45.0, 6.0, 16.5, 2.75),
        ("send_all_best_arm", "ship", 2, 0.37, 37.0, 2.0, 16.5, 8.25),
        ("send_all_best_arm", "all", 5, 0.82, 82.0, 8.0, 33.0, 4.125),
        ("send_none", "all", 0, 0.0, 0.0, 0.0, 0.0, None),
    ], FORECAST)
    got = forecast.select(*expected.columns)
    assert_approx_df_equality(got, spark.createDataFrame(expected.rdd, got.schema), 1e-9, ignore_row_order=True)
    assert {r["expected_revenue_long"] for r in forecast.collect()} == {None}

    # the bounds, recomputed with numpy from the same per-user Poisson weights
    users = spark.createDataFrame([(u,) for u in "abcde"], "user_id string").crossJoin(
        spark.range(REPLICATES).select(F.col("id").cast("int").alias("r")))
    weights = {(row["user_id"], row["r"]): row["w"] for row in
               users.select("user_id", "r", poisson_weight(7, F.col("r")).alias("w")).collect()}
    value = {(u, a): v for u, a, v in ROWS}
    sent = {"plan": {"a": "coupon", "b": "ship", "d": "ship"},
            "send_all_best_arm": {"a": "coupon", "b": "ship", "c": "coupon", "d": "ship", "e": "coupon"}}
    cost = {"coupon": 2.0, "ship": 1.0}
    for row in forecast.filter(F.col("scenario") != "send_none").collect():
        members = {u: a for u, a in sent[row["scenario"]].items() if row["arm"] in ("all", a)}
        reps = np.array([[sum(weights[(u, r)] * value[(u, a)] for u, a in members.items()),
                          sum(weights[(u, r)] * (value[(u, a)] * 0.5 - cost[a]) for u, a in members.items())]
                         for r in range(REPLICATES)])
        low, high = np.percentile(reps, [5, 95], axis=0)
        assert (row["revenue_low"], row["revenue_high"]) == pytest.approx((low[0], high[0]))
        assert (row["profit_low"], row["profit_high"]) == pytest.approx((low[1], high[1]))
        assert row["interval"] == 0.9 and row["bootstrap_replicates"] == REPLICATES and row["budget"] == 4.0


def test_rerun_is_idempotent_and_another_plan_keeps_the_first(planned, spark):
    conf, cfg, _ = planned
    snapshot = {n: sorted(tuple(r) for r in _table(spark, cfg, n).drop("run_id").collect())
                for n in ("promo_plan", "campaign_forecast")}
    _plan(conf)
    again = {n: sorted(tuple(r) for r in _table(spark, cfg, n).drop("run_id").collect()) for n in snapshot}
    assert again == snapshot
    other = _plan(conf, "--set", "plan.name=ship_only", "--set", "plan.capacities={coupon: 0}")
    assert other["users_by_arm"] == {"ship": 4}  # a, b, c, d (e's ship loses money)
    plans = _table(spark, cfg, "promo_plan").groupBy("plan").count().collect()
    assert sorted(tuple(r) for r in plans) == [("default", 3), ("ship_only", 4)]


def test_readme_sql_examples_run_against_the_plan(planned, spark):
    conf, cfg, _ = planned
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- plan-sql:start -->")[1].split("<!-- plan-sql:end -->")[0]
    statements = [s.strip() for s in re.sub(r"--[^\n]*", "", block.split("```sql")[1].split("```")[0]).split(";")
                  if s.strip()]
    assert len(statements) == 3
    lake.attach(spark, cfg.lakehouse, catalog.names(catalog.PLANS, catalog.SCORES), views_for=catalog.latest_views())
    results = [spark.sql(s.replace("ulv.", f"{cfg.lakehouse.schema}.")).collect() for s in statements]
    # 1: the plan per arm; 2: plan vs send-all vs send-none; 3: whom to send what, best first
    assert [(r["arm"], r["users"], r["cost"]) for r in results[0]] == [("ship", 2, 2.0), ("coupon", 1, 2.0)]
    assert [(r["scenario"], r["expected_profit"]) for r in results[1]] == [
        ("plan", 29.5), ("send_all_best_arm", 33.0), ("send_none", 0.0)]
    assert [(r["user_id"], r["arm"]) for r in results[2]] == [("a", "coupon"), ("b", "ship"), ("d", "ship")]
