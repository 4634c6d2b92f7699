"""Incremental ingest on real Spark Structured Streaming + Delta: new files only, exactly once."""
import datetime as dt
from pathlib import Path

import pytest

from ulv_spark import lake
from ulv_spark.config import LakehouseConf, load_config
from ulv_spark.context import JobContext
from ulv_spark.errors import JobFailed
from ulv_spark.ingest import job

pytestmark = pytest.mark.slow

HEADER = "u,o,t,a,r\n"
NIGHT_1 = HEADER + "u1,o1,2024-01-02 10:00:00,10.5,\nu1,o2,2024-01-05 11:00:00,20,\nu2,o3,2024-01-06 09:00:00,7,\n"
# the second night's file: a late row for a day before the first night, a return, a reject
NIGHT_2 = HEADER + "u3,o4,2023-12-20 08:00:00,4,\nu2,o5,2024-01-09 12:00:00,7,x\n,o6,2024-01-09 12:00:00,1,\n"


def _conf(write_conf, lh: LakehouseConf, data: Path, name: str, incremental: bool = True) -> Path:
    return write_conf(
        f"lakehouse:\n  root: {lh.root}\n  schema: {lh.schema}\n  shared_dir: {lh.shared_dir}\n"
        f"spark:\n  shuffle_partitions: 2\ningest:\n  max_reject_share: 0.5\n  incremental: {str(incremental).lower()}\n"
        f"sources:\n  orders:\n    format: csv\n    path: {data}\n"
        "    columns: {user_id: u, order_id: o, order_ts: t, amount: a, is_return: r}\n    true_values: [x]\n",
        name=name)


def _run(conf: Path, as_of: dt.date, run_id: str, **kwargs) -> dict:
    ctx = JobContext(cfg=load_config(conf), as_of=as_of, run_id=run_id, command="ingest")
    return job.run_ingest(ctx, **kwargs)["tables"]


def _orders(spark, lh):
    return sorted(tuple(r) for r in lake.read_table(spark, lake.table_ref(lh, "orders")).drop("run_id").collect())


def _other_lakehouse(tmp_path) -> LakehouseConf:
    root = tmp_path / "full"
    return LakehouseConf(root=str(root), schema="t_full_" + tmp_path.name.replace("-", "_").lower()[:30],
                         shared_dir=str(root / "_shared"))


def test_incremental_night_reads_only_the_new_file_and_equals_a_full_reload(spark, lakehouse, write_conf, tmp_path):
    data = tmp_path / "orders"
    data.mkdir()
    (data / "night1.csv").write_text(NIGHT_1, encoding="utf-8")
    conf = _conf(write_conf, lakehouse, data, "incremental.yaml")

    first = _run(conf, dt.date(2024, 1, 8), "n1")["orders"]
    assert {k: first[k] for k in ("mode", "rows_read", "inserted", "updated", "rejected", "table_rows", "batches")} \
        == {"mode": "incremental", "rows_read": 3, "inserted": 3, "updated": 0, "rejected": 0, "table_rows": 3,
            "batches": 1}

    (data / "night2.csv").write_text(NIGHT_2, encoding="utf-8")
    second = _run(conf, dt.date(2024, 1, 10), "n2")["orders"]
    assert {k: second[k] for k in ("rows_read", "inserted", "updated", "reject_reasons", "table_rows")} == {
        "rows_read": 3, "inserted": 2, "updated": 0, "reject_reasons": {"null_user_id": 1}, "table_rows": 5}
    after = _orders(spark, lakehouse)
    assert [(r[0], r[1], r[4], r[9]) for r in after] == [
        ("u1", "o1", 10.5, False), ("u1", "o2", 20.0, False), ("u2", "o3", 7.0, False), ("u2", "o5", -7.0, True),
        ("u3", "o4", 4.0, False)]

    again = _run(conf, dt.date(2024, 1, 10), "n2-again")["orders"]
    assert {k: again[k] for k in ("rows_read", "inserted", "updated", "rejected", "table_rows", "batches")} == {
        "rows_read": 0, "inserted": 0, "updated": 0, "rejected": 0, "table_rows": 5, "batches": 0}
    assert _orders(spark, lakehouse) == after
    rejects = lake.read_table(spark, lake.table_ref(lakehouse, "orders_rejects"))
    assert sorted((r["run_id"], r["reject_reason"]) for r in rejects.collect()) == [("n2", "null_user_id")]

    full_lh = _other_lakehouse(tmp_path)
    full = _run(_conf(write_conf, full_lh, data, "full.yaml"), dt.date(2024, 1, 10), "full", full_reload=True)
    assert (full["orders"]["mode"], full["orders"]["rows_read"]) == ("full", 6)
    assert _orders(spark, full_lh) == after


def test_deferred_rows_wait_in_pending_and_load_the_night_they_are_due(spark, lakehouse, write_conf, tmp_path):
    data = tmp_path / "orders"
    data.mkdir()
    (data / "a.csv").write_text(NIGHT_1, encoding="utf-8")  # orders of Jan 2, 5 and 6
    conf = _conf(write_conf, lakehouse, data, "defer.yaml")
    conf.write_text(conf.read_text().replace("true_values: [x]", "true_values: [x]\n    future_rows: defer"))
    keys = ("rows_read", "inserted", "deferred", "table_rows", "pending_read", "pending_rows")

    def night(day, run_id):
        facts = _run(conf, dt.date(2024, 1, day), run_id)["orders"]
        return {k: facts[k] for k in keys}, sorted(r["order_id"] for r in lake.read_table(
            spark, lake.table_ref(lakehouse, "orders")).collect())

    # Jan 4: the file is read once; the two later orders wait in orders_pending
    assert night(4, "d4") == ({"rows_read": 3, "inserted": 1, "deferred": 2, "table_rows": 1, "pending_read": 0,
                               "pending_rows": 2}, ["o1"])
    pending = lake.read_table(spark, lake.table_ref(lakehouse, "orders_pending"))
    assert sorted(r["user_id"] for r in pending.collect()) == ["u1", "u2"]
    # Jan 5: no new file; the pending rows are read back, o2 is due now, o3 still waits
    assert night(5, "d5") == ({"rows_read": 2, "inserted": 1, "deferred": 1, "table_rows": 2, "pending_read": 2,
                               "pending_rows": 1}, ["o1", "o2"])
    assert night(5, "d5-again") == ({"rows_read": 1, "inserted": 0, "deferred": 1, "table_rows": 2,
                                     "pending_read": 1, "pending_rows": 1}, ["o1", "o2"])
    assert night(8, "d8") == ({"rows_read": 1, "inserted": 1, "deferred": 0, "table_rows": 3, "pending_read": 1,
                               "pending_rows": 0}, ["o1", "o2", "o3"])
    # the same rows as a full reload of the file on Jan 8
    full_lh = _other_lakehouse(tmp_path)
    full_conf = _conf(write_conf, full_lh, data, "full.yaml")
    full_conf.write_text(full_conf.read_text().replace("true_values: [x]", "true_values: [x]\n    future_rows: defer"))
    _run(full_conf, dt.date(2024, 1, 8), "full", full_reload=True)
    assert _orders(spark, full_lh) == _orders(spark, lakehouse)


def test_a_batch_over_the_reject_limit_fails_and_is_read_again_next_run(spark, lakehouse, write_conf, tmp_path):
    data = tmp_path / "orders"
    data.mkdir()
    (data / "bad.csv").write_text(HEADER + "u1,o1,2024-01-02 10:00:00,1,\n,o2,2024-01-02 10:00:00,1,\n"
                                  ",o3,2024-01-02 10:00:00,1,\n", encoding="utf-8")
    conf = _conf(write_conf, lakehouse, data, "gate.yaml")
    with pytest.raises(JobFailed, match=r"rejected share above ingest\.max_reject_share = 50\.0%, nothing written: "
                                        r"orders: 2 of 3 rows"):
        _run(conf, dt.date(2024, 1, 8), "g1")
    assert not lake.is_delta(spark, lake.table_ref(lakehouse, "orders"))
    conf.write_text(conf.read_text().replace("max_reject_share: 0.5", "max_reject_share: 0.7"))
    retried = _run(conf, dt.date(2024, 1, 8), "g2")["orders"]
    assert (retried["rows_read"], retried["inserted"], retried["rejected"]) == (3, 1, 2)


def test_delta_source_reads_new_versions_only_and_a_rewrite_fails_clearly(spark, lakehouse, write_conf, tmp_path):
    source = str(tmp_path / "source_delta")
    schema = "u string, o string, t timestamp, a double"
    spark.createDataFrame([("u1", "o1", dt.datetime(2024, 1, 2), 1.0), ("u2", "o2", dt.datetime(2024, 1, 3), 2.0)],
                          schema).write.format("delta").save(source)
    lh = lakehouse
    conf = write_conf(
        f"lakehouse:\n  root: {lh.root}\n  schema: {lh.schema}\n  shared_dir: {lh.shared_dir}\n"
        "spark:\n  shuffle_partitions: 2\ningest:\n  incremental: true\n"
        f"sources:\n  orders:\n    format: delta\n    path: {source}\n"
        "    columns: {user_id: u, order_id: o, order_ts: t, amount: a}\n", name="delta.yaml")
    first = _run(conf, dt.date(2024, 1, 8), "d1")["orders"]
    assert (first["mode"], first["rows_read"], first["inserted"]) == ("incremental", 2, 2)
    spark.createDataFrame([("u3", "o3", dt.datetime(2024, 1, 4), 3.0)], schema).write.format("delta") \
        .mode("append").save(source)
    second = _run(conf, dt.date(2024, 1, 8), "d2")["orders"]
    assert (second["rows_read"], second["inserted"], second["table_rows"]) == (1, 1, 3)
    spark.sql(f"UPDATE delta.`{source}` SET a = 9.0 WHERE o = 'o1'")
    with pytest.raises(JobFailed, match=r"^sources\.orders: the incremental read failed: .*skipChangeCommits"):
        _run(conf, dt.date(2024, 1, 8), "d3")
