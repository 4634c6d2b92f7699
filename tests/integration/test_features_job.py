"""`ulv-spark features` end to end on Delta: optional inputs, idempotent partitions, contracts."""
import datetime as dt
import json

import pytest
from pyspark.sql import functions as F

from ulv_spark import cli, lake
from ulv_spark.config import load_config
from ulv_spark.features import vocab_size, vocabulary_fingerprint
from ulv_spark.catalog import EVENTS, ORDERS, USER_ATTRIBUTES, training_examples_contract, user_features_contract

pytestmark = pytest.mark.slow

D = dt.date(2024, 3, 1)
OLD = dt.date(2024, 2, 1)
CONF = """
lakehouse:
  root: {root}
  schema: {schema}
run:
  horizon_days: 10
features:
  sequence_length: 8
  training_origins: 2
  origin_step_days: 5
"""


def _run(capsys, conf, as_of=D):
    code = cli.main(["features", "--conf", str(conf), "--as-of", as_of.isoformat()])
    out, err = capsys.readouterr()
    return code, (json.loads(out) if code == 0 else None), err


def _bronze_orders(spark):
    rows = [("u1", "a", "2024-02-01 10:00:00", 10.0), ("u1", "b", "2024-02-16 10:00:00", 20.0),
            ("u1", "c", "2024-02-25 10:00:00", 30.0), ("u2", "d", "2024-02-18 10:00:00", 40.0),
            ("u3", "e", "2024-03-01 00:00:00", 50.0)]
    df = spark.createDataFrame(rows, "user_id string, order_id string, order_ts string, amount double")
    return df.select("user_id", "order_id", F.to_timestamp("order_ts").alias("order_ts"),
                     F.to_date(F.to_timestamp("order_ts")).alias("order_date"), "amount",
                     F.lit(1.0).alias("quantity"), F.lit(1).alias("n_lines"), F.lit("books").alias("category"),
                     F.lit(None).cast("double").alias("discount"), F.lit(False).alias("is_return"),
                     F.lit("ingest-1").alias("run_id"))


def _bronze_events(spark):
    df = spark.createDataFrame([("x1", "u4", "2024-02-20 08:00:00", "view"), ("x2", "u1", "2024-02-26 08:00:00", "view")],
                               "event_id string, user_id string, event_ts string, event_type string")
    return df.select("event_id", "user_id", F.to_timestamp("event_ts").alias("event_ts"),
                     F.to_date(F.to_timestamp("event_ts")).alias("event_date"), "event_type",
                     F.lit(None).cast("string").alias("product_id"), F.lit(None).cast("string").alias("category"),
                     F.lit(None).cast("string").alias("session_id"), F.lit("ingest-2").alias("run_id"))


def _table_rows(spark, lakehouse, name, as_of):
    return lake.read_table(spark, lake.table_ref(lakehouse, name), as_of_date=as_of)


def test_features_job_writes_replaces_one_partition_and_fails_loudly(spark, lakehouse, write_conf, capsys):
    conf = write_conf(CONF.format(root=lakehouse.root, schema=lakehouse.schema))
    cfg = load_config(conf)

    code, _, err = _run(capsys, conf)
    assert code == 1 and "orders" in err and "does not exist" in err

    lake.append(spark, _bronze_orders(spark), lake.table_ref(lakehouse, "orders"), ORDERS)
    code, summary, _ = _run(capsys, conf)
    assert code == 0
    assert summary["inputs"] == {"orders": True, "events": False, "campaign_exposures": False,
                                 "user_attributes": False}
    assert summary["rows"] == {"user_features": 2, "training_examples": 3, "token_vocabulary": vocab_size(cfg.features)}
    assert summary["origins"] == ["2024-02-20", "2024-02-15"]
    first_run = summary["run_id"]

    uf_ref = lake.table_ref(lakehouse, "user_features")
    contract = user_features_contract(cfg.features)
    assert lake.read_table(spark, uf_ref).columns == contract.column_names
    comments = {r["col_name"]: r["comment"] for r in spark.sql(f"DESCRIBE TABLE {uf_ref.name}").collect()}
    assert comments["frequency"] == contract.col("frequency").comment
    te_cols = lake.read_table(spark, lake.table_ref(lakehouse, "training_examples")).columns
    assert te_cols == training_examples_contract(cfg.features).column_names
    vocab = _table_rows(spark, lakehouse, "token_vocabulary", D)
    assert {r["fingerprint"] for r in vocab.select("fingerprint").distinct().collect()} == \
        {vocabulary_fingerprint(cfg.features)}

    # another date's partition, to be left alone by the re-run below
    old = _table_rows(spark, lakehouse, "user_features", D).withColumn("as_of_date", F.lit(OLD))
    lake.write_partition(spark, old, uf_ref, contract, as_of=OLD)

    # the optional tables appear: same schema (no attributes), new values; D is replaced, OLD kept
    lake.append(spark, _bronze_events(spark), lake.table_ref(lakehouse, "events"), EVENTS)
    code, summary, _ = _run(capsys, conf)
    assert code == 0 and summary["inputs"]["events"] is True
    assert summary["rows"]["user_features"] == 3
    rows = {r["user_id"]: r for r in _table_rows(spark, lakehouse, "user_features", D).collect()}
    assert sorted(rows) == ["u1", "u2", "u4"]
    assert {r["run_id"] for r in rows.values()} == {summary["run_id"]} != {first_run}
    assert (rows["u4"]["has_events"], rows["u4"]["has_purchase"], rows["u1"]["events_view_total"]) == (1.0, 0.0, 1.0)
    assert (rows["u1"]["frequency"], rows["u1"]["T"]) == (2.0, 28.0)
    old_rows = _table_rows(spark, lakehouse, "user_features", OLD).collect()
    assert sorted(r["user_id"] for r in old_rows) == ["u1", "u2"] and {r["run_id"] for r in old_rows} == {first_run}
    # replaced, not appended (u4's only event falls after both origins)
    assert lake.read_table(spark, lake.table_ref(lakehouse, "training_examples")).count() == 3
    assert spark.sql(f"SELECT count(*) FROM {lakehouse.schema}.latest_user_features").first()[0] == 3

    # new attribute columns would change the table's schema: the run fails before writing anything
    attrs = spark.createDataFrame([("u1", 3.5, "r")], "user_id string, score double, run_id string")
    lake.merge(spark, attrs, lake.table_ref(lakehouse, "user_attributes"), USER_ATTRIBUTES)
    version = lake.current_version(spark, uf_ref)
    code, _, err = _run(capsys, conf)
    assert code == 1 and "attr_score" in err
    assert lake.current_version(spark, uf_ref) == version
