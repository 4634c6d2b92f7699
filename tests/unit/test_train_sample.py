"""train.max_rows: per-origin quotas and the seeded, stratified sample of training rows."""
import datetime as dt

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from ulv_spark.config import ConfigError, TrainConf
from ulv_spark.train.prepare import cap_examples, origin_quotas

D1, D2, D3 = dt.date(2024, 1, 1), dt.date(2024, 2, 1), dt.date(2024, 3, 1)


def test_origin_quotas_are_proportional_and_add_up_to_the_cap_by_largest_remainder():
    assert origin_quotas({D1: 6, D2: 3, D3: 1}, 5) == {D1: 3, D2: 2, D3: 0}   # 3.0, 1.5, 0.5: tie -> earlier
    assert origin_quotas({D1: 5, D2: 5}, 3) == {D1: 2, D2: 1}
    assert origin_quotas({D1: 2, D2: 1}, 10) == {D1: 2, D2: 1}                # under the cap: every row


def test_train_max_rows_must_be_positive():
    with pytest.raises(ConfigError, match=r"'train.max_rows' must be >= 1 when set, got 0"):
        TrainConf(max_rows=0)


def test_cap_examples_keeps_the_lowest_hashed_users_per_origin_and_says_why(spark):
    rows = [(f"u{i}", D1, float(i)) for i in range(6)] + [(f"u{i}", D2, float(10 + i)) for i in range(4)]
    examples = spark.createDataFrame(rows, "user_id string, origin_date date, x double")
    capped, facts = cap_examples(examples, rows=10, max_rows=5, seed=7)
    # independent reference: order each origin's users by Spark's xxhash64(user_id, seed) in Python
    hashed = examples.select("user_id", "origin_date", "x", F.xxhash64("user_id", F.lit(7)).alias("h")).collect()
    keep = {D1: 3, D2: 2}
    expected_rows = []
    for origin, n in keep.items():
        group = sorted((r for r in hashed if r["origin_date"] == origin), key=lambda r: (r["h"], r["user_id"]))
        expected_rows += [(r["user_id"], r["origin_date"], r["x"]) for r in group[:n]]
    expected = spark.createDataFrame(expected_rows, examples.schema)
    assert_df_equality(capped, expected, ignore_row_order=True)
    assert facts == {
        "reason": "training_examples has 10 rows, more than train.max_rows = 5: kept a seeded hash sample of users, "
                  "the same share of every origin",
        "rows_before": 10, "rows_after": 5, "max_rows": 5, "seed": 7,
        "per_origin": {"2024-01-01": {"rows": 6, "kept": 3}, "2024-02-01": {"rows": 4, "kept": 2}}}
    again, _ = cap_examples(examples, rows=10, max_rows=5, seed=7)
    assert_df_equality(again, capped, ignore_row_order=True)


def test_cap_examples_leaves_examples_under_the_cap_alone(spark):
    examples = spark.createDataFrame([("u1", D1, 1.0)], "user_id string, origin_date date, x double")
    capped, facts = cap_examples(examples, rows=1, max_rows=1, seed=7)
    assert capped is examples and facts is None
    assert cap_examples(examples, rows=1, max_rows=None, seed=7) == (examples, None)
