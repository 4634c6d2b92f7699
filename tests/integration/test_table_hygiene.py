"""Output tables guard their consumers: CHECK constraints, append-only logs, producer properties;
and the JVM-free reader (delta-rs) returns the rows Spark does."""
import datetime as dt

import pandas as pd
import pytest

from ulv_spark import catalog, lake

pytestmark = pytest.mark.slow
D = dt.date(2025, 10, 1)


def _values(spark, rows):
    return spark.createDataFrame(rows, catalog.USER_VALUE.ddl())


def _row(user, p_purchase=0.5, decile=1, expected=10.0):
    return (user, D, 60, expected, p_purchase, 1.0, 20.0, decile, "m1", "run-1")


@pytest.fixture
def user_value(spark, lakehouse):
    ref = lake.table_ref(lakehouse, "user_value")
    rows = [_row("u1", 0.0, 1, 0.0), _row("u2", 1.0, 10, 3.25), _row("u3", 0.25, 5, 12.5)]
    lake.write_partition(spark, _values(spark, rows), ref, catalog.USER_VALUE, as_of=D)
    return ref


@pytest.mark.parametrize("bad, constraint", [
    (_row("u9", p_purchase=1.5), "p_purchase_range"),
    (_row("u9", decile=11), "value_decile_range"),
    (_row("u9", expected=-0.01), "expected_value_non_negative"),
])
def test_a_write_breaking_a_check_constraint_fails_before_the_table_changes(spark, user_value, bad, constraint):
    version = lake.current_version(spark, user_value)
    before = lake.read_table(spark, user_value).toPandas()
    with pytest.raises(Exception, match=constraint):
        lake.write_partition(spark, _values(spark, [_row("u1"), bad]), user_value, catalog.USER_VALUE, as_of=D)
    assert lake.current_version(spark, user_value) == version
    pd.testing.assert_frame_equal(lake.read_table(spark, user_value).toPandas(), before)


def test_tables_name_their_producer_and_logs_are_append_only(spark, user_value, lakehouse):
    props = {r[0]: r[1] for r in spark.sql(f"SHOW TBLPROPERTIES {user_value.name}").collect()}
    assert props["ulv.producer"] == "score"
    assert props["delta.constraints.p_purchase_range"] == "p_purchase >= 0 AND p_purchase <= 1"
    assert "delta.appendOnly" not in props

    metrics = lake.table_ref(lakehouse, "evaluation_metrics")
    frame = spark.createDataFrame([("d", "s", "model", "value_gini", 0.4, D, "r1")], catalog.EVALUATION_METRICS.ddl())
    lake.append(spark, frame, metrics, catalog.EVALUATION_METRICS)
    lake.append(spark, frame, metrics, catalog.EVALUATION_METRICS)
    props = {r[0]: r[1] for r in spark.sql(f"SHOW TBLPROPERTIES {metrics.name}").collect()}
    assert (props["delta.appendOnly"], props["ulv.producer"]) == ("true", "evaluate")
    with pytest.raises(Exception, match="(?i)append"):
        spark.sql(f"DELETE FROM {metrics.name} WHERE run_id = 'r1'")
    assert spark.table(metrics.name).count() == 2


def test_the_jvm_free_reader_returns_the_rows_spark_reads(spark, user_value, lakehouse):
    other = [_row("u4", 0.75, 2, 99.0)]
    later = [(u, D + dt.timedelta(days=1), *rest) for u, _, *rest in other]
    lake.write_partition(spark, _values(spark, later), user_value, catalog.USER_VALUE, as_of=D + dt.timedelta(days=1))

    by_spark = lake.read_table(spark, user_value, as_of_date=D).toPandas()
    by_rs = lake.read_without_spark(lakehouse, "user_value", as_of_date=D)
    key = ["user_id"]
    pd.testing.assert_frame_equal(by_rs.sort_values(key).reset_index(drop=True),
                                  by_spark.sort_values(key).reset_index(drop=True), check_dtype=False)
    assert len(lake.read_without_spark(lakehouse, "user_value")) == 4
    assert len(lake.read_without_spark(lakehouse, "user_value", as_of_date=D + dt.timedelta(days=2))) == 0
    assert len(lake.read_without_spark(lakehouse, "user_value", version=lake.current_version(spark, user_value) - 1)) == 3
