"""Exact lifetimes RFM on a tiny hand-written order log (returns, same-day orders, an order at D)."""
import datetime as dt

import pandas as pd
import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from ulv_spark.features.inputs import prepare_orders
from ulv_spark.features.rfm import user_rfm

D = dt.date(2024, 4, 1)
ORDERS = [  # user, order id, order_ts, amount, is_return
    ("single", "s1", "2024-03-20 10:00:00", 40.0, False),
    ("sameday", "a1", "2024-03-10 09:00:00", 20.0, False),
    ("sameday", "a2", "2024-03-10 18:00:00", 30.0, False),
    ("sameday", "a3", "2024-03-25 00:00:00", 15.0, False),
    ("sameday", "a4", "2024-03-28 12:00:00", -20.0, True),     # a return: not a purchase period
    ("at_d", "d1", "2024-04-01 00:00:00", 99.0, False),        # exactly at D: excluded
    ("at_d", "d2", "2024-03-31 23:59:59", 5.0, False),
    ("gaps", "g1", "2024-01-01 12:00:00", 10.0, False),
    ("gaps", "g2", "2024-01-11 12:00:00", 20.0, False),
    ("gaps", "g3", "2024-01-31 12:00:00", 60.0, False),
    ("future_only", "f1", "2024-04-01 00:00:00", 50.0, False),  # only at D: no row
    ("returns_only", "r1", "2024-03-01 00:00:00", -10.0, True),  # no purchase: no row
]


def _orders(spark, rows=ORDERS):
    df = spark.createDataFrame(rows, "user_id string, order_id string, order_ts string, amount double, is_return boolean")
    return prepare_orders(df.withColumn("order_ts", F.to_timestamp("order_ts")))


def test_user_rfm_exact_values_on_hand_written_log(spark):
    expected = spark.createDataFrame([
        # frequency, recency, T (to D - 1 day = 2024-03-31), mean of repeat-day totals
        ("single", 0.0, 0.0, 11.0, 0.0),
        ("sameday", 1.0, 15.0, 21.0, 15.0),   # 03-10 (20 + 30 = one period), 03-25
        ("at_d", 0.0, 0.0, 0.0, 0.0),         # only the 03-31 23:59:59 order counts
        ("gaps", 2.0, 30.0, 90.0, 40.0),      # (20 + 60) / 2
    ], "user_id string, frequency double, recency double, T double, monetary_value double")
    got = user_rfm(_orders(spark), as_of=D)
    assert_df_equality(got, expected, ignore_row_order=True, ignore_nullable=True)


def test_user_rfm_agrees_with_lifetimes_on_the_same_log(spark):
    from lifetimes.utils import summary_data_from_transaction_data

    log = pd.DataFrame(ORDERS, columns=["user_id", "order_id", "ts", "amount", "is_return"])
    log["ts"] = pd.to_datetime(log["ts"])
    purchases = log[~log["is_return"]]
    expected = summary_data_from_transaction_data(purchases, "user_id", "ts", monetary_value_col="amount",
                                                  observation_period_end=pd.Timestamp(D - dt.timedelta(days=1)),
                                                  freq="D").sort_index()
    got = user_rfm(_orders(spark), as_of=D).toPandas().set_index("user_id").sort_index()
    # same customers on both sides: orders at D and return-only customers appear in neither
    assert list(got.index) == list(expected.index)
    for col in ("frequency", "recency", "T", "monetary_value"):
        assert got[col].tolist() == pytest.approx(expected[col].tolist(), abs=1e-12), col
