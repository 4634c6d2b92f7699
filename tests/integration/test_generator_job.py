"""`generate` on Spark (mapInPandas per partition) and `ingest` of its output with the demo mapping."""
import datetime as dt
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F

from ulv_spark import lake
from ulv_spark.context import JobContext
from ulv_spark.config import load_config
from ulv_spark.ingest import job
from ulv_spark.synthetic import job as generate_job
from ulv_spark.synthetic.generator import (CATEGORY_NAMES, Simulation, raw_orders, truth_uplift_frame,
                                           truth_users_frame, user_id)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
D = dt.date(2025, 10, 1)


def test_generate_writes_raw_files_and_truth_that_ingest_loads(spark, lakehouse, write_conf, tmp_path):
    raw = tmp_path / "raw"
    sources = "".join(f"  {t}: {{path: {raw / t}}}\n" for t in ("orders", "events", "campaign_exposures",
                                                                 "user_attributes", "products", "reviews"))
    conf = write_conf(
        f"extends: {REPO / 'conf' / 'local.yaml'}\n"
        f"lakehouse: {{root: {lakehouse.root}, schema: {lakehouse.schema}, shared_dir: {lakehouse.shared_dir}}}\n"
        "spark: {shuffle_partitions: 2}\n"
        f"generate: {{users: 400, partitions: 2, seed: 3, output_dir: {raw}}}\n"
        f"sources:\n{sources}")
    cfg = load_config(conf)
    summary = generate_job.run_generate(JobContext(cfg=cfg, as_of=D, run_id="gen-1", command="generate"))
    params = generate_job.params_for(cfg, D)
    assert summary["truth_dates"] == ["2025-07-03", "2025-10-01"]
    sims = [Simulation(params, j) for j in range(2)]

    # the Spark output is the numpy simulation of each partition, formatted
    orders = spark.read.parquet(str(raw / "orders"))
    expected = []
    for sim in sims:
        frame = raw_orders(sim)
        for r in frame.itertuples():
            number = f"{user_id(r.user)}-{r.seq:04d}"
            expected.append((user_id(r.user), ("C" if r.is_cancellation else "") + number,
                             r.ordered_at.strftime("%Y-%m-%dT%H:%M:%S"), r.order_total, r.items,
                             CATEGORY_NAMES[r.category], r.discount_total, r.is_cancellation))
    got = [tuple(r) for r in orders.drop("product_sku").collect()]
    assert sorted(got) == sorted(expected)
    # generate.texts (the demo conf): every order names a product of its own category, from the catalogue
    skus = {r[0] for r in spark.read.parquet(str(raw / "products")).select("sku").collect()}
    assert len(skus) == 8 * 500 and orders.filter(~F.col("product_sku").startswith(F.col("main_category"))).count() == 0
    assert {r[0] for r in orders.select("product_sku").distinct().collect()} <= skus
    assert summary["rows"]["orders"] == len(expected)

    truth = lake.read_table(spark, lake.table_ref(cfg.lakehouse, "truth_users"))
    want = {(user_id(r.user), r.as_of_date): r.expected_spend for sim in sims for r in truth_users_frame(sim).itertuples()}
    have = {(r["user_id"], r["as_of_date"]): r["expected_spend"] for r in truth.collect()}
    assert have.keys() == want.keys() and np.allclose([have[k] for k in want], list(want.values()))
    uplift = lake.read_table(spark, lake.table_ref(cfg.lakehouse, "truth_uplift"))
    assert uplift.count() == sum(len(truth_uplift_frame(sim)) for sim in sims)
    assert sorted(r[0] for r in uplift.select("arm").distinct().collect()) == ["coupon_10", "free_shipping"]

    # the demo mapping loads every generated row that is due, rejecting nothing
    result = job.run_ingest(JobContext(cfg=cfg, as_of=D, run_id="ing-1", command="ingest"))["tables"]
    assert all(t["rejected"] == 0 for t in result.values() if "derived_from" not in t), result
    assert {t for t, v in result.items() if "derived_from" in v} == {"order_lines"}  # products come from their source
    due = sum(1 for e in expected if e[2][:10] <= D.isoformat())
    assert result["orders"]["inserted"] == due == len(expected) - result["orders"]["deferred"]
    bronze = lake.read_table(spark, lake.table_ref(cfg.lakehouse, "orders"))
    stats = bronze.agg(F.max("order_date"), F.sum(F.col("is_return").cast("int")), F.min("amount")).first()
    due_rows = [e for e in expected if e[2][:10] <= D.isoformat()]
    assert stats[0] == max(dt.date.fromisoformat(e[2][:10]) for e in due_rows) <= D
    assert stats[1] == sum(1 for e in due_rows if e[7]) > 0    # cancellations are kept as their own rows
    assert stats[2] == pytest.approx(min(e[3] for e in due_rows)) and stats[2] < 0
    events = lake.read_table(spark, lake.table_ref(cfg.lakehouse, "events"))
    assert sorted(r[0] for r in events.select("event_type").distinct().collect()) == ["add_to_cart", "search", "view"]
    exposures = lake.read_table(spark, lake.table_ref(cfg.lakehouse, "campaign_exposures"))
    assert exposures.filter("is_control").select("arm").distinct().collect()[0][0] == "control"
    # without generate.observed_outcomes the exposure file has no outcome columns (the demo's file)
    assert spark.read.parquet(str(raw / "campaign_exposures")).columns == [
        "customer_id", "campaign", "variant", "sent_at", "window_days"]
    assert exposures.filter(F.col("observed_converted").isNotNull() | F.col("observed_value").isNotNull()).count() == 0
    attributes = lake.read_table(spark, lake.table_ref(cfg.lakehouse, "user_attributes"))
    assert attributes.columns == ["user_id", "run_id", "price_sensitivity", "channel", "region", "loyalty_member"]
    assert attributes.count() == 400

    # a second night with the same files changes nothing (MERGE; attributes with schema evolution)
    again_cfg = load_config(conf, {"sources.events": None, "sources.campaign_exposures": None})
    again = job.run_ingest(JobContext(cfg=again_cfg, as_of=D, run_id="ing-2", command="ingest"))["tables"]
    assert {t: (v["inserted"], v["updated"]) for t, v in again.items()} == {
        "orders": (0, 0), "order_lines": (0, 0), "user_attributes": (0, 0), "products": (0, 0), "reviews": (0, 0)}
    assert result["order_lines"]["inserted"] == due and result["products"]["inserted"] == len(skus)
    assert result["reviews"]["inserted"] > 0
    assert sorted(tuple(r) for r in attributes.collect()) == sorted(
        tuple(r) for r in lake.read_table(spark, lake.table_ref(cfg.lakehouse, "user_attributes")).collect())

