"""Real Delta round-trips through lake.py: contract, replaceWhere, MERGE, time travel."""
import datetime as dt

import pytest

from ulv_spark import lake
from ulv_spark.schemas import Col, TableContract

pytestmark = pytest.mark.slow

SCORES = TableContract(
    name="scores",
    comment="One row per (user_id, as_of_date); test table",
    columns=(Col("user_id", "STRING", False, "Customer id"),
             Col("as_of_date", "DATE", False, "Run date"),
             Col("score", "DOUBLE", True, "A score")),
    partition_by=("as_of_date",),
    keys=("user_id", "as_of_date"),
)
D1, D2 = dt.date(2024, 1, 1), dt.date(2024, 1, 2)


def _rows(spark, ref, **kw):
    return sorted(tuple(r) for r in lake.read_table(spark, ref, **kw).select("user_id", "as_of_date", "score").collect())


def test_write_partition_replaces_and_time_travels(spark, lakehouse):
    ref = lake.table_ref(lakehouse, "scores")
    df1 = spark.createDataFrame([("u1", D1, 1.0), ("u2", D1, 2.0)], "user_id string, as_of_date date, score double")
    lake.write_partition(spark, df1, ref, SCORES, as_of=D1)
    v_first = lake.current_version(spark, ref)

    other_day = spark.createDataFrame([("u1", D2, 5.0)], "user_id string, as_of_date date, score double")
    lake.write_partition(spark, other_day, ref, SCORES, as_of=D2)
    again = spark.createDataFrame([("u1", D1, 10.0)], "user_id string, as_of_date date, score double")
    lake.write_partition(spark, again, ref, SCORES, as_of=D1)

    # the second write of D1 replaced D1 (no duplicates) and left D2 alone
    assert _rows(spark, ref) == [("u1", D1, 10.0), ("u1", D2, 5.0)]
    assert _rows(spark, ref, as_of_date=D2) == [("u1", D2, 5.0)]
    # time travel back to the first write
    assert _rows(spark, ref, version=v_first) == [("u1", D1, 1.0), ("u2", D1, 2.0)]
    assert lake.current_version(spark, ref) == v_first + 2


def test_contract_comments_reach_the_table(spark, lakehouse):
    ref = lake.table_ref(lakehouse, "scores")
    lake.ensure_table(spark, ref, SCORES)
    described = {r["col_name"]: r["comment"] for r in spark.sql(f"DESCRIBE TABLE {ref.name}").collect()}
    assert described["score"] == "A score"
    props = {r["col_name"]: r["data_type"] for r in spark.sql(f"DESCRIBE TABLE EXTENDED {ref.name}").collect()}
    assert props.get("Comment") == SCORES.comment


def test_write_partition_rejects_rows_of_other_dates(spark, lakehouse):
    ref = lake.table_ref(lakehouse, "scores")
    lake.write_partition(spark, spark.createDataFrame([("u1", D1, 1.0)], "user_id string, as_of_date date, score double"),
                         ref, SCORES, as_of=D1)
    wrong = spark.createDataFrame([("u9", D2, 9.0)], "user_id string, as_of_date date, score double")
    with pytest.raises(Exception, match="(?i)replaceWhere|does not conform|violat"):
        lake.write_partition(spark, wrong, ref, SCORES, as_of=D1)
    assert _rows(spark, ref) == [("u1", D1, 1.0)]


def test_conform_names_missing_and_extra_columns(spark):
    df = spark.createDataFrame([("u1", 1.0)], "user_id string, score double")
    with pytest.raises(lake.SchemaMismatchError, match=r"missing column\(s\) \['as_of_date'\]"):
        lake.conform(df, SCORES)
    df2 = spark.createDataFrame([("u1", D1, 1.0, 3)], "user_id string, as_of_date date, score double, junk int")
    with pytest.raises(lake.SchemaMismatchError, match="not in the contract"):
        lake.conform(df2, SCORES)


def test_merge_is_idempotent_and_updates_changed_rows(spark, lakehouse):
    contract = TableContract(name="kv", comment="kv", keys=("k",),
                             columns=(Col("k", "STRING", False), Col("v", "DOUBLE"), Col("run_id", "STRING", False)))
    ref = lake.table_ref(lakehouse, "kv")
    batch = spark.createDataFrame([("a", 1.0, "r1"), ("b", None, "r1")], "k string, v double, run_id string")
    lake.merge(spark, batch, ref, contract)
    first = sorted(tuple(r) for r in lake.read_table(spark, ref).collect())
    metrics = lake.merge(spark, batch.withColumn("run_id", batch.run_id.substr(0, 0)), ref, contract)
    assert sorted(tuple(r) for r in lake.read_table(spark, ref).collect()) == first
    assert int(metrics.get("numTargetRowsUpdated", 0)) == 0
    changed = spark.createDataFrame([("b", 2.0, "r2"), ("c", 3.0, "r2")], "k string, v double, run_id string")
    lake.merge(spark, changed, ref, contract)
    assert sorted(tuple(r) for r in lake.read_table(spark, ref).collect()) == [
        ("a", 1.0, "r1"), ("b", 2.0, "r2"), ("c", 3.0, "r2")]


def test_merge_with_a_delete_flag_deletes_flagged_matches_and_never_inserts_flagged_rows(spark, lakehouse):
    contract = TableContract(name="kvd", comment="kvd", keys=("k",), columns=(Col("k", "STRING", False), Col("v", "DOUBLE")))
    ref = lake.table_ref(lakehouse, "kvd")
    lake.merge(spark, spark.createDataFrame([("a", 1.0), ("b", 2.0)], "k string, v double"), ref, contract)
    changes = spark.createDataFrame([("a", None, True), ("b", 5.0, False), ("c", 3.0, False), ("d", 4.0, True)],
                                    "k string, v double, gone boolean")
    metrics = lake.merge(spark, changes, ref, contract, delete_flag="gone")
    assert sorted(tuple(r) for r in lake.read_table(spark, ref).collect()) == [("b", 5.0), ("c", 3.0)]
    assert lake.read_table(spark, ref).columns == ["k", "v"]  # the flag is not written
    assert (int(metrics["numTargetRowsDeleted"]), int(metrics["numTargetRowsUpdated"]),
            int(metrics["numTargetRowsInserted"])) == (1, 1, 1)
    with pytest.raises(lake.SchemaMismatchError, match="delete flag column 'gone'"):
        lake.merge(spark, changes.drop("gone"), ref, contract, delete_flag="gone")


def test_latest_view_reads_newest_partition(spark, lakehouse):
    ref = lake.table_ref(lakehouse, "scores")
    for d, s in ((D1, 1.0), (D2, 2.0)):
        lake.write_partition(spark, spark.createDataFrame([("u1", d, s)], "user_id string, as_of_date date, score double"),
                             ref, SCORES, as_of=d)
    view = lake.create_latest_view(spark, ref)
    assert [tuple(r) for r in spark.sql(f"SELECT user_id, score FROM {view}").collect()] == [("u1", 2.0)]


def test_content_fingerprint_ignores_row_order_and_run_id_but_not_values(spark):
    schema = "user_id string, run_id string, seq array<int>, score double"
    a = spark.createDataFrame([("u1", "r1", [1, 2], 1.0), ("u2", "r1", [3], None)], schema)
    same = spark.createDataFrame([("u2", "r2", [3], None), ("u1", "r2", [1, 2], 1.0)], schema).repartition(2)
    changed = spark.createDataFrame([("u1", "r1", [2, 1], 1.0), ("u2", "r1", [3], None)], schema)
    assert lake.content_fingerprint(a) == lake.content_fingerprint(same)
    assert lake.content_fingerprint(a).startswith("2-")
    assert lake.content_fingerprint(a) != lake.content_fingerprint(changed)
    assert lake.content_fingerprint(a.limit(0)) == "0-0"


def test_an_older_table_gains_the_contracts_new_nullable_columns_and_keeps_its_rows(spark, lakehouse):
    import dataclasses

    ref = lake.table_ref(lakehouse, "scores_evolving")
    old = dataclasses.replace(SCORES, name="scores_evolving")
    lake.write_partition(spark, spark.createDataFrame([("u1", D1, 1.0)], "user_id string, as_of_date date, score double"),
                         ref, old, as_of=D1)
    new = dataclasses.replace(old, columns=old.columns + (Col("score_long", "DOUBLE", True, "A long-term score"),))
    lake.write_partition(spark, spark.createDataFrame([("u2", D2, 2.0, 20.0)],
                                                      "user_id string, as_of_date date, score double, score_long double"),
                         ref, new, as_of=D2)
    got = sorted(tuple(r) for r in lake.read_table(spark, ref).select("user_id", "score", "score_long").collect())
    assert got == [("u1", 1.0, None), ("u2", 2.0, 20.0)]
    comments = {r["col_name"]: r["comment"] for r in spark.sql(f"DESCRIBE TABLE {ref.name}").collect()}
    assert comments["score_long"] == "A long-term score"
    assert lake.add_new_columns(spark, ref, new) == []          # nothing left to add
    # a new column in the middle of the contract: added at the table's end, written by name
    cols = new.columns
    middle = dataclasses.replace(new, columns=cols[:2] + (Col("seq_extra", "STRING", True, "Inserted"),) + cols[2:])
    lake.write_partition(spark, spark.createDataFrame([("u3", D2, "x", 3.0, 30.0)], "user_id string, as_of_date date, "
                                                      "seq_extra string, score double, score_long double"),
                         ref, middle, as_of=D2)
    got = sorted(tuple(r) for r in lake.read_table(spark, ref).select("user_id", "seq_extra", "score", "score_long")
                 .collect())
    assert got == [("u1", None, 1.0, None), ("u3", "x", 3.0, 30.0)]
    # a new NOT NULL column cannot be back-filled: a clear error, the table unchanged
    strict = dataclasses.replace(old, columns=old.columns + (Col("must", "DOUBLE", False, "required"),))
    version = lake.current_version(spark, ref)
    with pytest.raises(lake.SchemaMismatchError, match=r"NOT NULL column\(s\) \['must'\]"):
        lake.ensure_table(spark, ref, strict)
    assert lake.current_version(spark, ref) == version


def test_an_older_table_gets_the_contracts_current_column_comments(spark, lakehouse):
    import dataclasses

    ref = lake.table_ref(lakehouse, "scores_commented")
    old = dataclasses.replace(SCORES, name="scores_commented",
                              columns=tuple(dataclasses.replace(c, comment="x" * 300) if c.name == "score" else c
                                            for c in SCORES.columns))
    lake.write_partition(spark, spark.createDataFrame([("u1", D1, 1.0)], "user_id string, as_of_date date, score double"),
                         ref, old, as_of=D1)
    lake._HYGIENE_CHECKED.discard((ref.name, ref.path))   # a later process, with the current contract
    new = dataclasses.replace(old, columns=tuple(dataclasses.replace(c, comment="Score, it's short") if c.name == "score"
                                                 else c for c in old.columns))
    lake.write_partition(spark, spark.createDataFrame([("u2", D2, 2.0)], "user_id string, as_of_date date, score double"),
                         ref, new, as_of=D2)
    comments = {r["col_name"]: r["comment"] for r in spark.sql(f"DESCRIBE TABLE {ref.name}").collect()}
    assert comments["score"] == "Score, it's short"
    assert lake.refresh_comments(spark, ref, new) == []    # nothing left to change
    assert sorted(r[0] for r in lake.read_table(spark, ref).select("user_id").collect()) == ["u1", "u2"]
