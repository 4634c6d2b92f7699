"""Every conf in conf/examples/ ingests a small input in its own format and column names.

Each test writes a few rows the way that example's source would hold them (CSV with `;` and
local times, JSON with epoch seconds, typed Parquet, a Delta path, metastore tables, an
invoice-line CSV with cancellations, a campaign export), runs `ingest` with the example conf
(only paths, the lakehouse and, where a test rejects on purpose, the reject threshold
overridden) and checks the bronze rows and the rejects exactly. The single-campaign scenario
generates its own input and runs generate -> ingest -> features -> evaluate at 600 users. One
Spark session for all.
"""
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F

from ulv_spark import lake
from ulv_spark.config import load_config
from ulv_spark.context import JobContext
from ulv_spark.ingest import job

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "conf" / "examples"
TS = dt.datetime
ORDER_COLUMNS = ("user_id", "order_id", "order_ts", "amount", "quantity", "n_lines", "category", "discount",
                 "is_return")


def test_every_example_conf_has_a_test_here():
    tested = {name[len("test_"):].replace("_", "") for name in globals() if name.startswith("test_")}
    assert {p.stem.replace("_", "") for p in EXAMPLES.glob("*.yaml")} <= tested


def _ingest(example: str, lakehouse, as_of: dt.date, overrides: list[str]) -> dict:
    cfg = load_config(EXAMPLES / example, [f"lakehouse.root={lakehouse.root}", f"lakehouse.schema={lakehouse.schema}",
                                           f"lakehouse.shared_dir={lakehouse.shared_dir}",
                                           "spark.shuffle_partitions=2", *overrides])
    return job.run_ingest(JobContext(cfg=cfg, as_of=as_of, run_id=f"ingest-{Path(example).stem}", command="ingest"))


def _rows(spark, lakehouse, table: str, columns=ORDER_COLUMNS) -> list[tuple]:
    df = lake.read_table(spark, lake.table_ref(lakehouse, table))
    return sorted((tuple(r) for r in df.select(*columns).collect()), key=repr)


def _rejects(spark, lakehouse, table: str, key: str) -> list[tuple]:
    df = lake.read_table(spark, lake.table_ref(lakehouse, f"{table}_rejects"))
    return sorted(((json.loads(r["raw"]).get(key), r["reject_reason"]) for r in df.collect()), key=repr)


def test_orders_csv(spark, lakehouse, tmp_path):
    data = tmp_path / "shop"
    data.mkdir()
    (data / "2024.csv").write_text(
        "CustomerNo;OrderNo;OrderDate;NetTotal;Items;MainCategory;Discount;Cancelled\n"
        "K1;A1;02.01.2024 10:00;19.90;2;shoes;0;\n"
        "K1;A2;03.07.2024 12:00;5.00;1;bags;;x\n"            # cancelled (true_values: x), summer time
        ";A3;04.01.2024 09:15;7;1;shoes;0;\n"                 # null_user_id
        "K2;A4;04.01.2024 09:15;7;1;shoes;0;;extra\n"         # one field too many: malformed_row
        "K3;A5;05.01.2024 09:15;12;1;;1.5;no\n", encoding="utf-8")
    summary = _ingest("orders_csv.yaml", lakehouse, dt.date(2024, 8, 1),
                      [f"sources.orders.path={data}/*.csv", "ingest.max_reject_share=0.5"])
    assert summary["tables"]["orders"]["reject_reasons"] == {"malformed_row": 1, "null_user_id": 1}
    assert _rows(spark, lakehouse, "orders") == [  # Europe/Berlin local times, stored in UTC
        ("K1", "A1", TS(2024, 1, 2, 9), 19.9, 2.0, 1, "shoes", 0.0, False),
        ("K1", "A2", TS(2024, 7, 3, 10), -5.0, -1.0, 1, "bags", None, True),
        ("K3", "A5", TS(2024, 1, 5, 8, 15), 12.0, 1.0, 1, None, 1.5, False)]
    assert _rejects(spark, lakehouse, "orders", "OrderNo") == [("A3", "null_user_id"), ("A4", "malformed_row")]


def test_orders_json(spark, lakehouse, tmp_path):
    def lines(path: Path, *rows) -> str:
        path.mkdir(parents=True)
        (path / "part-0.json").write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n",
                                          encoding="utf-8")
        return str(path)

    t0 = 1704103200  # 2024-01-01 10:00:00 UTC
    orders = lines(tmp_path / "orders", {"customerId": "c1", "id": 1001, "createdAt": t0, "total": 12.5, "refunded": False},
                   {"customerId": "c2", "id": 1002, "createdAt": t0 + 86400, "total": 8, "refunded": True},
                   '{"customerId": "c3", "id": 1003,')  # a truncated line: malformed_row
    campaigns = lines(tmp_path / "campaigns",
                      {"customerId": "c1", "campaign": "spring", "group": "holdout", "sentAt": t0, "converted": False,
                       "revenue": 0.0},
                      {"customerId": "c2", "campaign": "spring", "group": "treat", "sentAt": t0, "converted": True,
                       "revenue": 20.5})
    customers = lines(tmp_path / "customers", {"customerId": "c1", "tier": "gold", "visits": 3},
                      {"customerId": "c2", "tier": "silver", "visits": 1})
    summary = _ingest("orders_json.yaml", lakehouse, dt.date(2024, 2, 1), [
        f"sources.orders.path={orders}", f"sources.campaign_exposures.path={campaigns}",
        f"sources.user_attributes.path={customers}", "ingest.max_reject_share=0.5"])
    assert {t: s["rejected"] for t, s in summary["tables"].items()} == {
        "orders": 1, "campaign_exposures": 0, "user_attributes": 0}
    assert _rows(spark, lakehouse, "orders") == [
        ("c1", "1001", TS(2024, 1, 1, 10), 12.5, None, 1, None, None, False),
        ("c2", "1002", TS(2024, 1, 2, 10), -8.0, None, 1, None, None, True)]
    assert _rejects(spark, lakehouse, "orders", "_corrupt_record") == [
        ('{"customerId": "c3", "id": 1003,', "malformed_row")]
    assert _rows(spark, lakehouse, "campaign_exposures", (
        "user_id", "campaign_id", "arm", "is_control", "exposed_ts", "response_window_days", "observed_converted",
        "observed_value")) == [("c1", "spring", "holdout", True, TS(2024, 1, 1, 10), None, False, 0.0),
                               ("c2", "spring", "treat", False, TS(2024, 1, 1, 10), None, True, 20.5)]
    attributes = lake.read_table(spark, lake.table_ref(lakehouse, "user_attributes"))
    assert attributes.columns == ["user_id", "run_id", "tier", "visits"]
    assert _rows(spark, lakehouse, "user_attributes", ("user_id", "tier", "visits")) == [
        ("c1", "gold", 3), ("c2", "silver", 1)]


def test_orders_parquet(spark, lakehouse, tmp_path):
    orders = spark.createDataFrame([
        (17850.0, "536365", TS(2024, 1, 5, 10), 19.9, 2, "home", 0.0),   # a pandas float id: user "17850"
        (17850.0, "536366", TS(2024, 1, 6, 11), 5.0, 1, "toys", None),
        (None, "536367", TS(2024, 1, 6, 12), 3.0, 1, None, None),        # null_user_id
        (17850.5, "536368", TS(2024, 1, 6, 13), 3.0, 1, None, None),     # bad_id
    ], "customer_id double, order_id string, created_at timestamp, total_amount double, item_count int, "
       "top_category string, discount_amount double")
    orders.write.parquet(str(tmp_path / "orders"))
    clicks = spark.createDataFrame([(17850.0, TS(2024, 1, 5, 9, 55), "View", "p1", "s1"),
                                    (17850.0, TS(2024, 1, 5, 9, 58), "add_to_cart", "p1", "s1")],
                                   "customer_id double, ts timestamp, action string, sku string, session string")
    clicks.write.parquet(str(tmp_path / "clickstream"))
    summary = _ingest("orders_parquet.yaml", lakehouse, dt.date(2024, 2, 1), [
        f"sources.orders.path={tmp_path / 'orders'}", f"sources.events.path={tmp_path / 'clickstream'}",
        "ingest.max_reject_share=0.6"])
    assert summary["tables"]["orders"]["reject_reasons"] == {"null_user_id": 1, "bad_id": 1}
    assert summary["tables"]["events"]["rejected"] == 0
    assert _rows(spark, lakehouse, "orders") == [
        ("17850", "536365", TS(2024, 1, 5, 10), 19.9, 2.0, 1, "home", 0.0, False),
        ("17850", "536366", TS(2024, 1, 6, 11), 5.0, 1.0, 1, "toys", None, False)]
    assert _rejects(spark, lakehouse, "orders", "order_id") == [("536367", "null_user_id"), ("536368", "bad_id")]
    assert _rows(spark, lakehouse, "events", ("user_id", "event_ts", "event_type", "product_id", "session_id")) == [
        ("17850", TS(2024, 1, 5, 9, 55), "view", "p1", "s1"), ("17850", TS(2024, 1, 5, 9, 58), "add_to_cart", "p1", "s1")]


def test_orders_delta(spark, lakehouse, tmp_path):
    path = str(tmp_path / "delta_orders")
    spark.createDataFrame([("k1", 1, TS(2024, 1, 3, 8), Decimal("10.50"), "garden"),
                           ("k2", 2, TS(2024, 1, 4, 9), Decimal("-3.00"), None)],   # negative: a return
                          "customer_key string, order_key bigint, order_timestamp timestamp, revenue decimal(10,2), "
                          "category_name string").write.format("delta").save(path)
    summary = _ingest("orders_delta.yaml", lakehouse, dt.date(2024, 2, 1), [f"sources.orders.path={path}"])
    assert (summary["tables"]["orders"]["rows_read"], summary["tables"]["orders"]["rejected"]) == (2, 0)
    assert _rows(spark, lakehouse, "orders") == [
        ("k1", "1", TS(2024, 1, 3, 8), 10.5, None, 1, "garden", None, False),
        ("k2", "2", TS(2024, 1, 4, 9), -3.0, None, 1, None, None, True)]


def test_orders_table(spark, lakehouse, tmp_path):
    tables = {"raw.sales_orders": (spark.createDataFrame(
        [("u1", "o1", TS(2024, 1, 3, 8), 9.99), ("u1", "o1", TS(2024, 1, 3, 9), 9.99),   # second: duplicate_key
         ("u2", "o2", TS(2024, 1, 5, 8), 20.0)],
        "customer_id string, order_id string, order_ts timestamp, amount_eur double")),
        "crm.customers": spark.createDataFrame([("u1", "vip", "north", "a@example.com"),
                                                ("u2", "new", "south", "b@example.com")],
                                               "customer_id string, crm_segment string, sales_region string, "
                                               "email string")}
    try:
        for name, frame in tables.items():
            database, table = name.split(".")
            frame.write.format("delta").save(str(tmp_path / table))
            spark.sql(f"CREATE DATABASE IF NOT EXISTS {database} LOCATION '{tmp_path / database}'")
            spark.sql(f"CREATE TABLE {name} USING DELTA LOCATION '{tmp_path / table}'")
        summary = _ingest("orders_table.yaml", lakehouse, dt.date(2024, 2, 1), ["ingest.max_reject_share=0.5"])
    finally:
        for name in tables:
            spark.sql(f"DROP TABLE IF EXISTS {name}")
            spark.sql(f"DROP DATABASE IF EXISTS {name.split('.')[0]}")
    assert summary["tables"]["orders"]["reject_reasons"] == {"duplicate_key": 1}
    assert _rows(spark, lakehouse, "orders") == [
        ("u1", "o1", TS(2024, 1, 3, 8), 9.99, None, 1, None, None, False),
        ("u2", "o2", TS(2024, 1, 5, 8), 20.0, None, 1, None, None, False)]
    attributes = lake.read_table(spark, lake.table_ref(lakehouse, "user_attributes"))
    assert attributes.columns == ["user_id", "run_id", "segment", "region"]  # the email is not kept
    assert _rows(spark, lakehouse, "user_attributes", ("user_id", "segment", "region")) == [
        ("u1", "vip", "north"), ("u2", "new", "south")]


def test_invoice_lines(spark, lakehouse, tmp_path):
    data = tmp_path / "online_retail"
    data.mkdir()
    (data / "2010-12.csv").write_text(
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
        "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,12/1/2010 8:26,2.55,17850.0,United Kingdom\n"
        "536365,71053,WHITE METAL LANTERN,6,12/1/2010 8:26,3.39,17850.0,United Kingdom\n"
        '536366,22633,"HAND WARMER, UNION JACK",6,12/1/2010 8:28,1.85,17850,United Kingdom\n'
        "C536379,D,Discount,-1,12/1/2010 9:41,27.50,14527,United Kingdom\n"      # a cancellation invoice
        "536380,22961,JAM MAKING SET PRINTED,24,12/1/2010 9:45,1.45,,United Kingdom\n"   # no CustomerID
        "536381,22139,RETROSPOT TEA SET,3,12/1/2010 9:50,4.25,15311.0,United Kingdom\n"
        "536381,22139,RETROSPOT TEA SET,-1,12/1/2010 9:50,4.25,15311.0,United Kingdom\n",  # a returned line
        encoding="utf-8")
    summary = _ingest("invoice_lines.yaml", lakehouse, dt.date(2011, 1, 1), [f"sources.orders.path={data}/*.csv"])
    assert (summary["tables"]["orders"]["rows_read"], summary["tables"]["orders"]["reject_reasons"]) == (
        7, {"null_user_id": 1})
    got = [r[:3] + (round(r[3], 2),) + r[4:] for r in _rows(spark, lakehouse, "orders")]
    assert got == [  # one order per invoice; 17850.0 and 17850 are one customer; London time = UTC in winter
        ("14527", "C536379", TS(2010, 12, 1, 9, 41), -27.5, -1.0, 1, "D", None, True),
        ("15311", "536381", TS(2010, 12, 1, 9, 50), 12.75, 3.0, 1, "22139", None, False),
        ("15311", "536381-R", TS(2010, 12, 1, 9, 50), -4.25, -1.0, 1, "22139", None, True),
        ("17850", "536365", TS(2010, 12, 1, 8, 26), 35.64, 12.0, 2, "71053", None, False),
        ("17850", "536366", TS(2010, 12, 1, 8, 28), 11.1, 6.0, 1, "22633", None, False)]
    assert _rejects(spark, lakehouse, "orders", "InvoiceNo") == [("536380", "null_user_id")]


CAMPAIGN_CSV = ("customer_id,campaign,test_group,exposure_date,converted,revenue,age,tenure_months,region\n"
                "1001,spring,holdout,2025-03-03,0,0,34,12,north\n"
                "1002,spring,coupon_10,2025-03-03,1,42.5,51,40,south\n"
                "1003,spring,coupon_10,2025-03-03,0,0,27,3,east\n"
                "1004,spring,,2025-03-03,1,10,45,20,west\n"          # no arm: rejected as an exposure only
                "1005,spring,holdout,2025-03-03,yes,8,38,7,north\n")


def test_campaign_test(spark, lakehouse, tmp_path):
    path = tmp_path / "spring_test.csv"
    path.write_text(CAMPAIGN_CSV, encoding="utf-8")
    summary = _ingest("campaign_test.yaml", lakehouse, dt.date(2025, 4, 2), [
        f"sources.campaign_exposures.path={path}", f"sources.user_attributes.path={path}",
        "ingest.max_reject_share=0.25"])
    assert {t: (s.get("rows_read"), s.get("rejected")) for t, s in summary["tables"].items()} == {
        "campaign_exposures": (5, 1), "user_attributes": (5, 0), "orders": (None, None)}
    assert _rows(spark, lakehouse, "campaign_exposures", (
        "user_id", "campaign_id", "arm", "is_control", "exposed_ts", "observed_converted", "observed_value")) == [
        ("1001", "spring", "holdout", True, TS(2025, 3, 3), False, 0.0),
        ("1002", "spring", "coupon_10", False, TS(2025, 3, 3), True, 42.5),
        ("1003", "spring", "coupon_10", False, TS(2025, 3, 3), False, 0.0),
        ("1005", "spring", "holdout", True, TS(2025, 3, 3), True, 8.0)]
    assert _rejects(spark, lakehouse, "campaign_exposures", "customer_id") == [("1004", "null_arm")]
    attributes = lake.read_table(spark, lake.table_ref(lakehouse, "user_attributes"))
    assert attributes.columns == ["user_id", "run_id", "age", "tenure_months", "region"]
    assert dict(attributes.dtypes)["age"] == "int"  # inferSchema: numbers stay numbers (features)
    assert _rows(spark, lakehouse, "user_attributes", ("user_id", "age", "tenure_months", "region")) == [
        ("1001", 34, 12, "north"), ("1002", 51, 40, "south"), ("1003", 27, 3, "east"), ("1004", 45, 20, "west"),
        ("1005", 38, 7, "north")]
    assert lake.read_table(spark, lake.table_ref(lakehouse, "orders")).count() == 0


# ------------------------------------------------------------------ the single-campaign scenario
SINGLE_CAMPAIGN_RUN_DATE = dt.date(2025, 10, 1)
CAMPAIGN_DAY = dt.date(2025, 7, 3)            # the one wave (08:00 UTC) = the evaluation origin E
SINGLE_CAMPAIGN_SPLIT = "origin=2025-07-03/h=90/test=0.5"
TREATMENTS = ("coupon_10", "free_shipping")


@pytest.fixture(scope="module")
def single_campaign(spark, tmp_path_factory):
    """conf/examples/single_campaign.yaml at 600 users: the four stage summaries.

    Overridden for CI time only: the size, the lakehouse, one features training origin, the
    backtest's supervised baselines learning from the other half of the users at E alone (no
    earlier origins), fewer GBM rounds and no backtest model (its training is tested elsewhere).
    """
    from ulv_spark.evaluate.job import run_evaluate
    from ulv_spark.features.job import run_features
    from ulv_spark.synthetic.job import run_generate

    root = tmp_path_factory.mktemp("single_campaign")
    cfg = load_config(EXAMPLES / "single_campaign.yaml", [
        f"lakehouse.root={root / 'lakehouse'}", "lakehouse.schema=t_single_campaign",
        f"lakehouse.shared_dir={root / 'lakehouse' / '_shared'}", "spark.shuffle_partitions=2",
        "generate.users=600", "generate.partitions=2", "features.training_origins=1", "evaluate.train_origins=0",
        "evaluate.model=none", "evaluate.gbm_max_iter=30", "evaluate.gbm_threads=1"])
    summaries = {}
    for name, run in (("generate", run_generate), ("ingest", job.run_ingest), ("features", run_features),
                      ("evaluate", run_evaluate)):
        ctx = JobContext(cfg=cfg, as_of=SINGLE_CAMPAIGN_RUN_DATE, run_id=f"single-{name}", command=name)
        summaries[name] = run(ctx)
    return cfg, summaries


def test_single_campaign_generates_one_wave_with_the_outcomes_its_orders_show(spark, single_campaign):
    """One campaign on 2025-07-03 08:00 UTC for every customer acquired by then, uniform arms, and
    converted / spend equal to what the generated order log holds in each 14-day window
    (recomputed here from the raw files with Spark SQL); truth_uplift at the campaign day."""
    cfg, summaries = single_campaign
    assert summaries["generate"]["truth_dates"] == ["2025-07-03", "2025-10-01"]
    raw = Path(cfg.generate.output_dir)
    exposures = spark.read.parquet(str(raw / "campaign_exposures"))
    assert exposures.columns == ["customer_id", "campaign", "variant", "sent_at", "window_days", "converted", "spend"]
    assert [tuple(r) for r in exposures.select("campaign", "sent_at", "window_days").distinct().collect()] == [
        ("promo_20250703", TS(2025, 7, 3, 8), 14)]
    exposures.createOrReplaceTempView("single_exposures")
    spark.read.parquet(str(raw / "orders")).createOrReplaceTempView("single_orders")
    # everyone whose first order came before the send got it, once; nobody else
    first = {r[0]: r[1] for r in spark.sql(
        "SELECT customer_id, min(to_timestamp(ordered_at)) FROM single_orders GROUP BY customer_id").collect()}
    exposed = [r[0] for r in exposures.select("customer_id").collect()]
    assert len(exposed) == len(set(exposed)) > 300
    assert sorted(exposed) == sorted(u for u, t in first.items() if t < TS(2025, 7, 3, 8))
    # arms ~uniform: each within 4 binomial standard errors of a third
    arms = {r[0]: r[1] for r in exposures.groupBy("variant").count().collect()}
    n = len(exposed)
    assert set(arms) == {"control", *TREATMENTS}
    assert all(abs(c - n / 3) <= 4 * np.sqrt(n * 2 / 9) for c in arms.values()), arms
    # the observed outcome of each exposure is what its orders in [sent_at, sent_at + 14 days) say
    recomputed = spark.sql("""
        SELECT e.customer_id,
               coalesce(max(NOT o.is_cancellation), false) AS converted,
               greatest(round(coalesce(sum(o.order_total), 0.0), 2), 0.0) AS spend
        FROM single_exposures e
        LEFT JOIN (SELECT customer_id, to_timestamp(ordered_at) AS ts, order_total, is_cancellation
                   FROM single_orders) o
          ON o.customer_id = e.customer_id AND o.ts >= e.sent_at
         AND o.ts < e.sent_at + make_interval(0, 0, 0, e.window_days)
        GROUP BY e.customer_id""")
    want = {r[0]: (r[1], r[2]) for r in recomputed.collect()}
    have = {r[0]: (r[1], r[2]) for r in exposures.select("customer_id", "converted", "spend").collect()}
    assert have == want
    by_arm = {r[0]: (r[1], r[2]) for r in exposures.groupBy("variant").agg(
        F.sum(F.col("converted").cast("int")), F.count(F.when(~F.col("converted"), 1))).collect()}
    assert all(yes > 0 and no > 0 for yes, no in by_arm.values()), by_arm   # outcomes vary in every arm
    # truth_uplift at the campaign day: that wave's id, every treatment, every user acquired before the day
    truth = lake.read_table(spark, lake.table_ref(cfg.lakehouse, "truth_uplift")).filter(
        F.col("as_of_date") == F.lit(CAMPAIGN_DAY))
    waves = truth.select("campaign_id", "arm", "response_window_days").distinct().collect()
    assert sorted(tuple(r) for r in waves) == [("promo_20250703", arm, 14) for arm in TREATMENTS]
    acquired = sorted(u for u, t in first.items() if t < TS(2025, 7, 3))
    for arm in TREATMENTS:
        assert sorted(r[0] for r in truth.filter(F.col("arm") == arm).select("user_id").collect()) == acquired


def test_single_campaign(spark, single_campaign):
    """generate -> ingest -> features -> evaluate on the example: the observed outcomes load as they
    are (and equal what the features would derive from the orders), the campaign is in the
    training examples at E with every arm, and the backtest at E reports uplift for every arm."""
    from ulv_spark.features.labels import exposure_outcomes

    cfg, summaries = single_campaign
    ingest = summaries["ingest"]["tables"]
    assert all(t["rejected"] == 0 for t in ingest.values() if "derived_from" not in t), ingest
    exposures = lake.read_table(spark, lake.table_ref(cfg.lakehouse, "campaign_exposures"))
    assert ingest["campaign_exposures"]["inserted"] == exposures.count() == summaries["generate"]["rows"][
        "campaign_exposures"]
    assert exposures.filter(F.col("observed_converted").isNull() | F.col("observed_value").isNull()).count() == 0
    orders = lake.read_table(spark, lake.table_ref(cfg.lakehouse, "orders"))
    derived = exposure_outcomes(exposures.withColumn("observed_converted", F.lit(None).cast("boolean"))
                                .withColumn("observed_value", F.lit(None).cast("double")), orders,
                                default_response_window_days=30)
    observed = exposures.select("user_id", F.col("observed_converted").cast("int").alias("converted"),
                                F.col("observed_value").alias("response_value"))
    assert sorted(tuple(r) for r in derived.select("user_id", "converted", "response_value").collect()) == sorted(
        tuple(r) for r in observed.collect())
    # the training examples at the campaign day carry the campaign, every arm, with its outcomes
    examples = lake.read_table(spark, lake.table_ref(cfg.lakehouse, "training_examples"))
    arms = {r[0]: r[1] for r in examples.filter(F.col("origin_date") == F.lit(CAMPAIGN_DAY))
            .filter(F.col("campaign_id") == "promo_20250703").groupBy("arm").count().collect()}
    assert set(arms) == {"control", *TREATMENTS}
    # the backtest splits at the campaign day, half of the users scored, uplift metrics for every arm
    evaluated = summaries["evaluate"]
    assert set(evaluated["headline"]) == {SINGLE_CAMPAIGN_SPLIT}
    assert {"two_model_gbm", "oracle"} <= set(evaluated["headline"][SINGLE_CAMPAIGN_SPLIT])
    metrics = spark.table(evaluated["metrics_table"]).toPandas()
    assert set(metrics["split"]) == {SINGLE_CAMPAIGN_SPLIT} and set(metrics["dataset"]) == {"single_campaign"}
    wide = metrics.pivot_table(index="metric", columns="method", values="value")
    for method in ("two_model_gbm", "oracle"):
        for arm in TREATMENTS:
            for metric in ("qini_conversion", "qini_value", "auuc_conversion", "uplift_at_k_conversion"):
                assert np.isfinite(wide.loc[f"{metric}[{arm}]", method]), (method, metric, arm)
        assert np.isfinite(wide.loc["qini_conversion", method]), method
    for arm in TREATMENTS:  # the oracle is the truth itself; two-model GBM is measured against it
        assert wide.loc[f"uplift_conversion_truth_pearson[{arm}]", "oracle"] == pytest.approx(1.0)
        assert np.isfinite(wide.loc[f"uplift_conversion_truth_pearson[{arm}]", "two_model_gbm"])
    report = Path(evaluated["report"]).read_text(encoding="utf-8")
    for arm in TREATMENTS:
        assert f'data-plot="qini_conversion_{arm}"' in report and f'data-plot="qini_value_{arm}"' in report
