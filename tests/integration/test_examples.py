"""Every conf in conf/examples/ ingests a small input in its own format and column names.

Each test writes a few rows the way that example's source would hold them (CSV with `;` and
local times, JSON with epoch seconds, typed Parquet, a Delta path, metastore tables, an
invoice-line CSV with cancellations, a campaign export), runs `ingest` with the example conf
(only paths, the lakehouse and, where a test rejects on purpose, the reject threshold
overridden) and checks the bronze rows and the rejects exactly. One Spark session for all.
"""
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pytest

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
