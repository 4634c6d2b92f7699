"""Column mapping and value parsing on tiny hand-written frames (exact values)."""
import datetime as dt
import json

from pathlib import Path

import pytest
from pyspark.sql import functions as F

from ulv_spark.config import load_config

from ulv_spark.ingest.mapping import (MappingError, map_columns, parse_flag, parse_id, parse_int, parse_number,
                                      parse_timestamp, resolve_columns, slug)

REPO = Path(__file__).resolve().parents[2]


def test_resolve_columns_maps_explicitly_and_by_same_name():
    resolved, missing = resolve_columns(
        "orders", {"user_id": "Customer", "order_ts": "When"},
        ["Customer", "When", "order_id", "amount", "category", "noise"])
    assert resolved == {"user_id": "Customer", "order_ts": "When", "order_id": "order_id", "amount": "amount",
                        "category": "category"}
    assert missing == []


def test_resolve_columns_names_every_missing_source_column():
    _, missing = resolve_columns("orders", {"user_id": "cust", "order_id": "inv", "amount": "total"},
                                 ["cust", "order_ts"])
    # explicitly mapped columns are reported by their source names
    assert missing == ["inv", "total"]
    _, missing = resolve_columns("events", {}, ["user_id", "event_ts"])
    assert missing == ["event_type"]


def test_resolve_columns_amount_from_unit_price_and_derived_order_id():
    resolved, missing = resolve_columns("orders", {"unit_price": "UnitPrice", "quantity": "Quantity"},
                                        ["user_id", "order_id", "order_ts", "UnitPrice", "Quantity"])
    assert missing == [] and "amount" not in resolved
    _, missing = resolve_columns("orders", {}, ["user_id", "order_ts", "amount"], derive_order_id=True)
    assert missing == []


def test_resolve_columns_rejects_unknown_fields_except_for_attributes():
    with pytest.raises(MappingError, match=r"unknown contract field\(s\) \['amont'\]"):
        resolve_columns("orders", {"amont": "x"}, ["x"])
    resolved, missing = resolve_columns("user_attributes", {"user_id": "id", "tier": "Tier"}, ["id", "Tier"])
    assert resolved == {"user_id": "id", "tier": "Tier"} and missing == []


def test_map_columns_renames_keeps_source_row_and_fills_unmapped(spark):
    raw = spark.createDataFrame([("7", "A-1", "2024-01-02", "3.5", "x")],
                                "`cust id` string, inv string, ts string, total string, junk string")
    mapped = map_columns(raw, "orders", {"user_id": "cust id", "order_id": "inv", "order_ts": "ts", "amount": "total"})
    assert mapped.columns == ["_src", "user_id", "order_id", "order_ts", "amount", "quantity", "unit_price",
                              "category", "discount", "is_return", "line_id"]
    row = mapped.first()
    assert (row["user_id"], row["order_id"], row["order_ts"], row["amount"], row["quantity"]) == \
        ("7", "A-1", "2024-01-02", "3.5", None)
    assert json.loads(mapped.select(F.to_json("_src")).first()[0]) == {
        "cust id": "7", "inv": "A-1", "ts": "2024-01-02", "total": "3.5", "junk": "x"}


def test_map_columns_keeps_attribute_columns_under_slugged_names(spark):
    raw = spark.createDataFrame([("u1", "Gold", 3)], "id string, `CRM Tier` string, visits int")
    mapped = map_columns(raw, "user_attributes", {"user_id": "id"})
    assert mapped.columns == ["_src", "user_id", "crm_tier", "visits"]
    only = map_columns(raw, "user_attributes", {"user_id": "id", "tier": "CRM Tier"})
    assert only.columns == ["_src", "user_id", "tier"]
    assert slug(" Lifetime Value (EUR) ") == "lifetime_value_eur"


def test_parse_id_trims_blanks_and_integral_floats(spark):
    df = spark.createDataFrame([(" a1 ", 12346.0), ("  ", 1.5), (None, None)], "s string, d double")
    got = df.select(parse_id(df, "s").alias("s"), parse_id(df, "d").alias("d")).collect()
    assert [tuple(r) for r in got] == [("a1", "12346"), (None, "1.5"), (None, None)]


def test_parse_timestamp_formats_epochs_and_zones(spark):
    df = spark.createDataFrame(
        [("19970101", "2024-03-01 12:00:00", "1700000000", "2024-07-01 12:00:00"),
         ("1997-01-01", "garbage", "x", None)],
        "d string, iso string, epoch string, local string")
    got = df.select(parse_timestamp(df, "d", "yyyyMMdd").alias("d"), parse_timestamp(df, "iso").alias("iso"),
                    parse_timestamp(df, "epoch", "epoch_seconds").alias("epoch"),
                    parse_timestamp(df, "local", None, "Europe/Berlin").alias("local")).collect()
    assert tuple(got[0]) == (dt.datetime(1997, 1, 1), dt.datetime(2024, 3, 1, 12), dt.datetime(2023, 11, 14, 22, 13, 20),
                             dt.datetime(2024, 7, 1, 10))  # CEST is UTC+2
    assert tuple(got[1]) == (None, None, None, None)


def test_parse_timestamp_keeps_typed_columns(spark):
    df = spark.createDataFrame([(dt.datetime(2024, 1, 2, 3, 4, 5), dt.date(2024, 1, 2))], "ts timestamp, d date")
    got = df.select(parse_timestamp(df, "ts", None, "Europe/Berlin").alias("ts"), parse_timestamp(df, "d")).first()
    assert tuple(got) == (dt.datetime(2024, 1, 2, 3, 4, 5), dt.datetime(2024, 1, 2))


def test_parse_number_flags_text_nan_and_infinity(spark):
    df = spark.createDataFrame([(" 12.5 ",), ("NaN",), ("Infinity",), ("1,5",), ("",), (None,), ("-3",)], "s string")
    value, bad = parse_number(df, "s")
    got = [tuple(r) for r in df.select(value, bad).collect()]
    assert got == [(12.5, False), (None, True), (None, True), (None, True), (None, False), (None, False),
                   (-3.0, False)]


def test_parse_flag_and_int(spark):
    df = spark.createDataFrame([("Yes", "30"), ("n", "2.5"), ("maybe", "x"), (None, None), ("", "-1")],
                               "f string, w string")
    flag, bad_flag = parse_flag(df, "f", ["true", "yes"], ["false", "n"])
    window, bad_window = parse_int(df, "w")
    got = [tuple(r) for r in df.select(flag, bad_flag, window, bad_window).collect()]
    assert got == [(True, False, 30, False), (False, False, None, True), (False, True, None, True),
                   (False, False, None, False), (False, False, -1, False)]


@pytest.mark.parametrize("name", ["orders_csv", "orders_parquet", "orders_json", "orders_delta", "orders_table",
                                  "invoice_lines"])
def test_example_confs_load_and_map_completely(name):
    """Every example conf loads and its mappings name every required field."""
    cfg = load_config(REPO / "conf" / "examples" / f"{name}.yaml")
    for table in ("orders", "events", "campaign_exposures", "user_attributes"):
        src = getattr(cfg.sources, table)
        if src is None:
            continue
        # a source holding exactly the mapped columns maps with nothing missing
        _, missing = resolve_columns(table, src.columns, list(src.columns.values()), derive_order_id=src.derive_order_id)
        assert missing == [], (name, table)


def test_cdnow_conf_uses_the_preset():
    cfg = load_config(REPO / "conf" / "cdnow.yaml")
    assert (cfg.sources.orders.format, cfg.sources.orders.preset, cfg.run.as_of) == ("preset", "cdnow", dt.date(1998, 7, 1))
    assert cfg.sources.events is None and cfg.lakehouse.root.endswith("lakehouse/cdnow")
