"""Incremental features state (user_day in Delta) equals the full recompute, to the bit."""
import datetime as dt

import pytest
from chispa import assert_df_equality

from ulv_spark import catalog, lake
from ulv_spark.features import rfm
from ulv_spark.features.inputs import history, prepare_orders
from ulv_spark.features.state import rfm_from_user_day, update_user_day, user_day_rows

pytestmark = pytest.mark.slow

SCHEMA = "user_id string, order_id string, order_ts timestamp, amount double, is_return boolean"
T = dt.datetime
NIGHT_1 = [("u1", "o1", T(2024, 1, 2, 9), 10.1, False), ("u1", "o2", T(2024, 1, 2, 18), 0.2, False),
           ("u1", "o3", T(2024, 1, 5, 8), 30.0, False), ("u1", "o4", T(2024, 1, 9, 8), 7.0, False),
           ("u2", "o5", T(2024, 1, 3, 8), 5.0, False), ("u3", "o6", T(2024, 1, 4, 8), -4.0, True)]
# night 2: a late row for a day before night 1, a return, a new user, and o4 corrected to another day
NIGHT_2 = [("u2", "o7", T(2024, 1, 1, 7), 2.5, False), ("u1", "o8", T(2024, 1, 11, 8), -30.0, True),
           ("u4", "o9", T(2024, 1, 12, 8), 1.0, False), ("u1", "o4", T(2024, 1, 10, 8), 7.0, False)]
D1, D2 = dt.date(2024, 1, 10), dt.date(2024, 1, 13)


def _bronze(spark, rows):
    """Bronze orders after MERGE on order_id (a later row of a key replaces the earlier)."""
    latest = {r[1]: r for r in rows}
    return prepare_orders(spark.createDataFrame(list(latest.values()), SCHEMA))


def _full_rfm(orders, dates):
    return rfm.purchase_periods(history(orders, "order_ts", dates)).select(
        "user_id", "as_of_date", *rfm.RFM.names(), *rfm.GAPS.names())


def test_user_day_state_updated_from_new_rows_equals_the_full_recompute(spark, lakehouse):
    ref = lake.table_ref(lakehouse, catalog.USER_DAY.name)
    first = _bronze(spark, NIGHT_1)
    update_user_day(spark, ref, catalog.USER_DAY, first, spark.createDataFrame(NIGHT_1, SCHEMA))
    state = lake.read_table(spark, ref)
    assert_df_equality(state, user_day_rows(first), ignore_row_order=True, ignore_nullable=True,
                       ignore_metadata=True)
    assert_df_equality(rfm_from_user_day(state, [D1]), _full_rfm(first, [D1]), ignore_row_order=True,
                       ignore_nullable=True, ignore_metadata=True)

    second = _bronze(spark, NIGHT_1 + NIGHT_2)
    metrics = update_user_day(spark, ref, catalog.USER_DAY, second, spark.createDataFrame(NIGHT_2, SCHEMA))
    # u1: 01-09 lost its order (deleted), 01-10 and 01-11 are new; u2: 01-01 new; u4: new; u3 untouched
    assert {k: int(metrics[k]) for k in ("numTargetRowsDeleted", "numTargetRowsInserted", "numTargetRowsUpdated")} \
        == {"numTargetRowsDeleted": 1, "numTargetRowsInserted": 4, "numTargetRowsUpdated": 0}
    state = lake.read_table(spark, ref)
    assert_df_equality(state, user_day_rows(second), ignore_row_order=True, ignore_nullable=True,
                       ignore_metadata=True)
    dates = [D1, D2, dt.date(2024, 1, 4)]
    from_state = rfm_from_user_day(state, dates)
    assert_df_equality(from_state, _full_rfm(second, dates), ignore_row_order=True, ignore_nullable=True,
                       ignore_metadata=True)
    # u1 at D2: purchase days 01-02 (10.1 + 0.2), 01-05 (30), 01-10 (7); the return does not count
    u1 = from_state.filter("user_id = 'u1' AND as_of_date = DATE'2024-01-13'").first()
    assert (u1["frequency"], u1["recency"], u1["T"], u1["monetary_value"], u1["gap_last_days"]) == \
        (2.0, 8.0, 10.0, 18.5, 5.0)
