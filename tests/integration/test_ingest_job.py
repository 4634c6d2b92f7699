"""`ingest` on real Delta tables: CDNOW preset, idempotency, late rows, thresholds, missing columns, formats."""
import datetime as dt
import json
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from ulv_spark import lake
from ulv_spark.context import JobContext
from ulv_spark.errors import JobFailed
from ulv_spark.config import ConfigError, SourceConf, load_config
from ulv_spark.ingest import job
from ulv_spark.ingest.job import read_source

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _conf(write_conf, lakehouse, body: str, extra: str = "") -> Path:
    return write_conf(f"lakehouse:\n  root: {lakehouse.root}\n  schema: {lakehouse.schema}\n"
                      f"  shared_dir: {lakehouse.shared_dir}\nspark:\n  shuffle_partitions: 2\n"
                      f"sources:\n{body}{extra}")


def _run(path: Path, as_of: dt.date, run_id: str, overrides=None) -> dict:
    cfg = load_config(path, overrides)
    return job.run_ingest(JobContext(cfg=cfg, as_of=as_of, run_id=run_id, command="ingest"))


def _table(spark, lakehouse, name):
    return lake.read_table(spark, lake.table_ref(lakehouse, name))


def _rows(df):
    return sorted(tuple(r) for r in df.collect())


def test_cdnow_preset_ingests_every_row(spark, lakehouse, write_conf):
    conf = _conf(write_conf, lakehouse, "  orders: {format: preset, preset: cdnow}\n")
    summary = _run(conf, dt.date(1998, 7, 1), "ingest-cdnow")
    assert summary["tables"]["orders"]["rows_read"] == 69_659
    assert summary["tables"]["orders"]["rejected"] == 0 and summary["tables"]["orders"]["inserted"] == 69_659
    stats = _table(spark, lakehouse, "orders").agg(
        F.count(F.lit(1)), F.count_distinct("order_id"), F.count_distinct("user_id"), F.sum("amount"),
        F.min("order_date"), F.max("order_date"), F.sum(F.col("is_return").cast("int"))).first()
    assert tuple(stats)[:3] == (69_659, 69_659, 23_570)
    assert round(stats[3], 2) == 2_500_315.63
    assert (stats[4], stats[5], stats[6]) == (dt.date(1997, 1, 1), dt.date(1998, 6, 30), 0)
    assert _table(spark, lakehouse, "orders_rejects").count() == 0


CSV_HEADER = "Kunde;Bestellung;Datum;Betrag;Storno\n"


def test_ingest_is_idempotent_and_accepts_late_rows(spark, lakehouse, write_conf, tmp_path):
    data = tmp_path / "orders"
    data.mkdir()
    (data / "a.csv").write_text(CSV_HEADER + "k1;B1;02.01.2024 10:00;10,5;\nk1;B2;03.01.2024 11:30;20;\n"
                                "k2;B3;04.01.2024 09:15;7;x\n;B4;04.01.2024 09:15;3;\n", encoding="utf-8")
    body = (f"  orders:\n    format: csv\n    path: {data}\n    options: {{sep: ';'}}\n"
            "    columns: {user_id: Kunde, order_id: Bestellung, order_ts: Datum, amount: Betrag, is_return: Storno}\n"
            "    timestamp_format: 'dd.MM.yyyy HH:mm'\n    true_values: [x]\n")
    conf = _conf(write_conf, lakehouse, body, "ingest:\n  max_reject_share: 0.5\n")
    first = _run(conf, dt.date(2024, 2, 1), "run-1")
    assert first["tables"]["orders"]["reject_reasons"] == {"null_user_id": 1, "bad_amount": 1}
    orders = _table(spark, lakehouse, "orders")
    after_first = _rows(orders)
    assert [r[:2] + r[4:5] + r[9:] for r in after_first] == [
        ("k1", "B2", 20.0, False, "run-1"), ("k2", "B3", -7.0, True, "run-1")]

    second = _run(conf, dt.date(2024, 2, 1), "run-2")
    assert (second["tables"]["orders"]["inserted"], second["tables"]["orders"]["updated"]) == (0, 0)
    assert _rows(_table(spark, lakehouse, "orders")) == after_first  # identical, run_id included
    rejects = _table(spark, lakehouse, "orders_rejects")
    assert _rows(rejects.groupBy("run_id", "reject_reason").count()) == [
        ("run-1", "bad_amount", 1), ("run-1", "null_user_id", 1), ("run-2", "bad_amount", 1),
        ("run-2", "null_user_id", 1)]
    raw = json.loads(rejects.filter(F.col("reject_reason") == "bad_amount").first()["raw"])
    assert raw == {"Kunde": "k1", "Bestellung": "B1", "Datum": "02.01.2024 10:00", "Betrag": "10,5"}

    # a later night: a late row for a past date, a corrected order, and a row after the run date
    (data / "b.csv").write_text(CSV_HEADER + "k3;B5;15.12.2023 08:00;4;\nk9;B6;20.02.2024 08:00;1;\n", encoding="utf-8")
    (data / "a.csv").write_text(CSV_HEADER + "k1;B2;03.01.2024 11:30;25;\nk2;B3;04.01.2024 09:15;7;x\n",
                                encoding="utf-8")
    third = _run(conf, dt.date(2024, 2, 2), "run-3")
    assert third["tables"]["orders"]["reject_reasons"] == {"after_run_date": 1}
    assert (third["tables"]["orders"]["inserted"], third["tables"]["orders"]["updated"]) == (1, 1)
    assert [r[:2] + r[4:5] + r[10:] for r in _rows(_table(spark, lakehouse, "orders"))] == [
        ("k1", "B2", 25.0, "run-3"), ("k2", "B3", -7.0, "run-1"), ("k3", "B5", 4.0, "run-3")]


def test_reject_share_above_threshold_fails_and_writes_nothing(spark, lakehouse, write_conf, tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text("u,o,t,a\nu1,o1,2024-01-01,1\nu2,o2,not a date,1\nu3,o3,2024-01-01,NaN\n", encoding="utf-8")
    body = f"  orders:\n    path: {path}\n    columns: {{user_id: u, order_id: o, order_ts: t, amount: a}}\n"
    conf = _conf(write_conf, lakehouse, body)
    with pytest.raises(JobFailed, match=r"rejected share above ingest\.max_reject_share = 5\.0%, nothing written: "
                                        r"orders: 2 of 3 rows \(66\.7%: bad_timestamp=1, bad_amount=1\)"):
        _run(conf, dt.date(2024, 2, 1), "run-x")
    for name in ("orders", "orders_rejects"):
        assert not lake.is_delta(spark, lake.table_ref(lakehouse, name))
    # the same input passes with a looser threshold
    assert _run(conf, dt.date(2024, 2, 1), "run-y", ["ingest.max_reject_share=0.7"])["tables"]["orders"]["rejected"] == 2


def test_missing_mapped_column_fails_before_writing(spark, lakehouse, write_conf, tmp_path):
    orders = tmp_path / "orders.csv"
    orders.write_text("u,o,t,a\nu1,o1,2024-01-01,1\n", encoding="utf-8")
    events = tmp_path / "events.csv"
    events.write_text("u,t,kind\nu1,2024-01-01,view\n", encoding="utf-8")
    body = (f"  orders:\n    path: {orders}\n    columns: {{user_id: u, order_id: o, order_ts: t, amount: a}}\n"
            f"  events:\n    path: {events}\n    columns: {{user_id: u, event_ts: t, event_type: type}}\n")
    with pytest.raises(JobFailed, match=r"sources\.events: mapped column\(s\) type not found in .*events\.csv "
                                        r"\(its columns: u, t, kind\)"):
        _run(_conf(write_conf, lakehouse, body), dt.date(2024, 2, 1), "run-m")
    assert not lake.is_delta(spark, lake.table_ref(lakehouse, "orders"))


def test_every_source_format_reads_and_maps(spark, lakehouse, tmp_path):
    """CSV, Parquet, JSON, a Delta path and a metastore table through read_source + the example mappings."""
    rows = [("c1", "o1", "2024-01-01 10:00:00", 5.0)]
    frame = spark.createDataFrame(rows, "cust string, oid string, ts string, amt double")
    frame.write.parquet(str(tmp_path / "p"))
    frame.write.json(str(tmp_path / "j"))
    frame.write.option("header", True).csv(str(tmp_path / "c"))
    frame.write.format("delta").save(str(tmp_path / "d"))
    frame.createOrReplaceTempView("raw_orders_example")
    mapping = {"user_id": "cust", "order_id": "oid", "order_ts": "ts", "amount": "amt"}
    for fmt, path in (("csv", tmp_path / "c"), ("parquet", tmp_path / "p"), ("json", tmp_path / "j"),
                      ("delta", tmp_path / "d"), ("table", "raw_orders_example")):
        src = SourceConf(format=fmt, path=str(path), columns=mapping)
        raw, _ = read_source(spark, "orders", src)
        got = raw.select("cust", "oid", "ts", F.col("amt").cast("double")).collect()
        assert [tuple(r) for r in got] == rows, fmt


def test_csv_rows_with_extra_or_missing_fields_are_rejected_as_malformed(spark, lakehouse, write_conf, tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text('u,o,t,a\nu1,o1,2024-01-01,1\nu2,o2,2024-01-01,2,surplus\nu3,o3,2024-01-01\n'
                    'u4,"o4,quoted",2024-01-01,4\n', encoding="utf-8")
    body = f"  orders:\n    path: {path}\n    columns: {{user_id: u, order_id: o, order_ts: t, amount: a}}\n"
    summary = _run(_conf(write_conf, lakehouse, body, "ingest:\n  max_reject_share: 0.6\n"), dt.date(2024, 2, 1), "run-mal")
    assert summary["tables"]["orders"]["reject_reasons"] == {"malformed_row": 2}
    assert _rows(_table(spark, lakehouse, "orders").select("user_id", "order_id", "amount")) == [
        ("u1", "o1", 1.0), ("u4", "o4,quoted", 4.0)]
    raws = sorted(json.loads(r["raw"])["_corrupt_record"] for r in _table(spark, lakehouse, "orders_rejects").collect())
    assert raws == ["u2,o2,2024-01-01,2,surplus", "u3,o3,2024-01-01"]


def test_an_amount_of_1e308_is_rejected_and_the_features_job_runs(spark, lakehouse, write_conf, tmp_path):
    from ulv_spark.features.job import run_features

    path = tmp_path / "orders.csv"
    path.write_text("u,o,t,a,q\nu1,o1,2024-01-01,1e308,1\nu1,o2,2024-01-02,5,1e300\nu1,o3,2024-01-03,5,1\n"
                    "u2,o4,2024-01-04,7,1\n", encoding="utf-8")
    body = f"  orders:\n    path: {path}\n    columns: {{user_id: u, order_id: o, order_ts: t, amount: a, quantity: q}}\n"
    conf = _conf(write_conf, lakehouse, body, "ingest:\n  max_reject_share: 0.6\n")
    summary = _run(conf, dt.date(2024, 2, 1), "run-big")
    assert summary["tables"]["orders"]["reject_reasons"] == {"quantity_out_of_range": 1, "amount_out_of_range": 1}
    ctx = JobContext(cfg=load_config(conf), as_of=dt.date(2024, 2, 1), run_id="features-big", command="features")
    assert run_features(ctx)["rows"]["user_features"] == 2
    spend = {r["user_id"]: r["spend_total"] for r in _table(spark, lakehouse, "user_features").collect()}
    assert spend == {"u1": 5.0, "u2": 7.0}


def test_dry_run_reports_mapping_types_rows_and_rejects_and_writes_nothing(spark, lakehouse, write_conf, tmp_path,
                                                                           capsys):
    path = tmp_path / "orders.csv"
    path.write_text("Kunde;Beleg;Datum;Betrag\n17850.0;B1;02.01.2024 10:00;10,5\n17850.0;B2;03.01.2024 11:30;20\n"
                    ";B3;04.01.2024 09:15;7\nk4;B4;05.01.2024 09:15;1;x\nk5;B5;06.01.2024 09:15;3\n", encoding="utf-8")
    body = (f"  orders:\n    path: {path}\n    options: {{sep: ';'}}\n"
            "    columns: {user_id: Kunde, order_id: Beleg, order_ts: Datum, amount: Betrag}\n"
            "    timestamp_format: 'dd.MM.yyyy HH:mm'\n")
    cfg = load_config(_conf(write_conf, lakehouse, body))
    summary = job.run_ingest(JobContext(cfg=cfg, as_of=dt.date(2024, 2, 1), run_id="dry", command="ingest"),
                             dry_run=True, sample_rows=4)
    orders = summary["tables"]["orders"]
    assert summary["dry_run"] is True and summary["sample_rows"] == 4
    assert orders["mapping"] == {"user_id": "Kunde", "order_id": "Beleg", "order_ts": "Datum", "amount": "Betrag"}
    assert orders["source_types"] == {"Kunde": "string", "Beleg": "string", "Datum": "string", "Betrag": "string"}
    assert orders["parsed_types"]["order_ts"] == "timestamp" and orders["parsed_types"]["amount"] == "double"
    assert (orders["rows_read"], orders["rejected"], orders["deferred"]) == (4, 3, 0)
    assert orders["reject_reasons"] == {"malformed_row": 1, "null_user_id": 1, "bad_amount": 1}
    assert orders["over_max_reject_share"] is True
    assert [(r["user_id"], r["order_id"], r["amount"]) for r in orders["rows"]] == [("17850", "B2", 20.0)]
    err = capsys.readouterr().err
    assert "sources.orders" in err and "user_id" in err and "<- Kunde" in err and "malformed_row=1" in err
    assert not Path(lakehouse.root).exists()
    assert not spark.catalog.databaseExists(lakehouse.schema)


def test_orders_may_be_left_out_when_the_exposures_carry_their_outcomes(spark, lakehouse, write_conf, tmp_path):
    path = tmp_path / "campaign.csv"
    path.write_text("cust,cmp,grp,sent,conv,rev,age\nc1,spring,control,2025-03-03,0,0,31\n"
                    "c2,spring,coupon,2025-03-03,1,25.5,47\n", encoding="utf-8")
    exposures = (f"  campaign_exposures:\n    path: {path}\n    columns: {{user_id: cust, campaign_id: cmp, arm: grp, "
                 "exposed_ts: sent, observed_converted: conv, observed_value: rev}\n")
    summary = _run(_conf(write_conf, lakehouse, "  orders: null\n" + exposures), dt.date(2025, 6, 1), "run-camp")
    assert summary["tables"]["campaign_exposures"]["inserted"] == 2
    assert summary["tables"]["orders"]["source"] is None and "no orders source" in summary["tables"]["orders"]["note"]
    orders = _table(spark, lakehouse, "orders")
    assert orders.count() == 0 and orders.columns == job.CONTRACTS["orders"].column_names
    # without observed outcomes there is nothing to learn from: a clear message
    no_outcomes = exposures.replace(", observed_converted: conv, observed_value: rev", "")
    with pytest.raises(ConfigError, match=r"sources\.orders is required unless sources\.campaign_exposures maps "
                                          r"observed_converted or observed_value"):
        _run(_conf(write_conf, lakehouse, "  orders: null\n" + no_outcomes, ""), dt.date(2025, 6, 1), "run-x")
    # attributes read from the same file must not keep the outcome columns (they would leak into the features)
    leaky = exposures + f"  user_attributes:\n    path: {path}\n    columns: {{user_id: cust}}\n"
    with pytest.raises(ConfigError, match=r"sources\.user_attributes keeps column\(s\) cmp, grp, sent, conv, rev of "
                                          r"the campaign_exposures file"):
        _run(_conf(write_conf, lakehouse, "  orders: null\n" + leaky), dt.date(2025, 6, 1), "run-leak")
