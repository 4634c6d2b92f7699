"""Validation, quarantine, returns and line aggregation on tiny hand-written inputs (exact outputs)."""
import datetime as dt
import json

from ulv_spark.config import SourceConf
from ulv_spark.ingest.mapping import map_columns
from ulv_spark.ingest.validate import REASONS, Outcome, prepare, reject_counts

AS_OF = dt.date(2024, 2, 1)
RUN = "ingest-test"
AT = dt.datetime(2024, 2, 1, 3, 0)
TS = dt.datetime


def _prepare(spark, table, rows, schema, columns, **rules):
    raw = spark.createDataFrame(rows, schema)
    return prepare(table, map_columns(raw, table, columns), rules=SourceConf(path="<test>", **rules), as_of=AS_OF, run_id=RUN,
                   rejected_at=AT)


def _pairs(pairs):
    """(source key, reason) pairs in a stable order (None sorts first)."""
    return sorted(pairs, key=lambda p: (p[0] is not None, p[0] or "", p[1]))


def _rejects(prep, key="user_id"):
    return _pairs((json.loads(r["raw"]).get(key), r["reject_reason"]) for r in prep.rejects.collect())


def _sorted(df, *cols):
    return sorted(tuple(r) for r in df.select(*cols).collect())


ORDER_SCHEMA = "cust string, oid string, ts string, amt string, qty string, disc string, ret string"
ORDER_MAP = {"user_id": "cust", "order_id": "oid", "order_ts": "ts", "amount": "amt", "quantity": "qty",
             "discount": "disc", "is_return": "ret"}


def test_orders_every_reject_reason_and_the_good_rows(spark):
    rows = [
        ("u1", "o1", "2024-01-05 10:00:00", "10.50", "1", "0.5", ""),      # good
        (None, "o2", "2024-01-05 10:00:00", "1", "1", None, None),        # null_user_id
        ("  ", "o3", "2024-01-05 10:00:00", "1", "1", None, None),        # blank user -> null_user_id
        ("u4", " ", "2024-01-05 10:00:00", "1", "1", None, None),         # null_order_id
        ("u5", "o5", None, "1", "1", None, None),                         # null_timestamp
        ("u6", "o6", "yesterday", "1", "1", None, None),                  # bad_timestamp
        ("u7", "o7", "2024-01-05 10:00:00", "1", "two", None, None),      # bad_quantity
        ("u8", "o8", "2024-01-05 10:00:00", "ten", "1", None, None),      # bad_amount
        ("u9", "o9", "2024-01-05 10:00:00", "NaN", "1", None, None),      # NaN -> bad_amount
        ("u10", "o10", "2024-01-05 10:00:00", "", "1", None, None),       # null_amount
        ("u11", "o11", "2024-01-05 10:00:00", "1", "1", "x", None),       # bad_discount
        ("u12", "o12", "2024-01-05 10:00:00", "1", "1", None, "maybe"),   # bad_flag
        ("u13", "o13", "2024-02-02 00:00:00", "1", "1", None, None),      # after_run_date
        ("u14", "o14", "2024-02-01 23:59:59", "2", None, None, None),     # on the run date: fine
        ("u15", "o15", "2024-01-07 09:00:00", "3", "1", None, None),      # kept (earlier)
        ("u15", "o15", "2024-01-08 09:00:00", "4", "1", None, None),      # duplicate_key
        ("u16", "o16", "2023-06-01 00:00:00", "5", "1", None, "yes"),     # return by flag (late row, past date)
        ("u17", "o17", "2024-01-09 00:00:00", "7", "-1", None, None),     # return by negative quantity
        ("u18", "C18", "2024-01-10 00:00:00", "8", "2", "1", None),       # return by id prefix
    ]
    prep = _prepare(spark, "orders", rows, ORDER_SCHEMA, ORDER_MAP, return_id_prefix="C")
    assert _rejects(prep, "cust") == _pairs([
        (None, "null_user_id"), ("  ", "null_user_id"), ("u4", "null_order_id"), ("u5", "null_timestamp"),
        ("u6", "bad_timestamp"), ("u7", "bad_quantity"), ("u8", "bad_amount"), ("u9", "bad_amount"),
        ("u10", "null_amount"), ("u11", "bad_discount"), ("u12", "bad_flag"), ("u13", "after_run_date"),
        ("u15", "duplicate_key")])
    assert _sorted(prep.good, "user_id", "order_id", "order_ts", "order_date", "amount", "quantity", "n_lines",
                   "category", "discount", "is_return", "run_id") == [
        ("u1", "o1", TS(2024, 1, 5, 10), dt.date(2024, 1, 5), 10.5, 1.0, 1, None, 0.5, False, RUN),
        ("u14", "o14", TS(2024, 2, 1, 23, 59, 59), dt.date(2024, 2, 1), 2.0, None, 1, None, None, False, RUN),
        ("u15", "o15", TS(2024, 1, 7, 9), dt.date(2024, 1, 7), 3.0, 1.0, 1, None, None, False, RUN),
        ("u16", "o16", TS(2023, 6, 1), dt.date(2023, 6, 1), -5.0, -1.0, 1, None, None, True, RUN),
        ("u17", "o17", TS(2024, 1, 9), dt.date(2024, 1, 9), -7.0, -1.0, 1, None, None, True, RUN),
        ("u18", "C18", TS(2024, 1, 10), dt.date(2024, 1, 10), -8.0, -2.0, 1, None, -1.0, True, RUN),
    ]
    outcome = Outcome.from_counts([tuple(r) for r in reject_counts(prep.labelled).collect()])
    assert (outcome.rows_read, outcome.rejected_total, outcome.deferred) == (19, 13, 0)
    assert outcome.rejected["null_user_id"] == 2 and outcome.rejected["bad_amount"] == 2
    assert list(outcome.rejected)[:3] == ["null_user_id", "null_order_id", "null_timestamp"]  # REASONS order


def test_reject_rows_carry_the_source_row_reason_run_and_date(spark):
    prep = _prepare(spark, "orders", [("u6", "o6", "yesterday", "1", "1", None, None)], ORDER_SCHEMA, ORDER_MAP)
    row = prep.rejects.first()
    assert json.loads(row["raw"]) == {"cust": "u6", "oid": "o6", "ts": "yesterday", "amt": "1", "qty": "1"}
    assert (row["user_id"], row["reject_reason"], row["run_id"], row["rejected_at"], row["as_of_date"]) == \
        ("u6", "bad_timestamp", RUN, AT, AS_OF)


def test_future_rows_deferred_are_neither_loaded_nor_rejected(spark):
    rows = [("u1", "o1", "2024-01-05 10:00:00", "1", "1", None, None),
            ("u2", "o2", "2024-03-01 00:00:00", "1", "1", None, None),
            ("u3", "o3", "2024-03-01 00:00:00", "oops", "1", None, None)]
    prep = _prepare(spark, "orders", rows, ORDER_SCHEMA, ORDER_MAP, future_rows="defer")
    assert _sorted(prep.good, "order_id") == [("o1",)]
    assert _rejects(prep, "cust") == [("u3", "bad_amount")]  # a broken row is rejected whatever its date
    outcome = Outcome.from_counts([tuple(r) for r in reject_counts(prep.labelled).collect()])
    assert (outcome.rows_read, outcome.rejected_total, outcome.deferred, outcome.reject_share) == (3, 1, 1, 0.5)


def test_derived_order_ids_keep_every_row_of_a_user_and_day(spark):
    rows = [("00002", "19970112", "5", "77.00"), ("00002", "19970112", "1", "12.00"), ("00003", "19970102", "2", "20.76"),
            ("00002", "19970112", "1", "12.00")]
    prep = _prepare(spark, "orders", rows, "customer_id string, date string, n string, dollars string",
                    {"user_id": "customer_id", "order_ts": "date", "amount": "dollars", "quantity": "n"},
                    timestamp_format="yyyyMMdd", derive_order_id=True)
    assert prep.rejects.count() == 0
    assert _sorted(prep.good, "order_id", "amount", "quantity") == [
        ("00002-19970112000000-1", 12.0, 1.0), ("00002-19970112000000-2", 12.0, 1.0),
        ("00002-19970112000000-3", 77.0, 5.0), ("00003-19970102000000-1", 20.76, 2.0)]


LINE_SCHEMA = "inv string, line string, cust string, ts string, qty string, price string, cat string"
LINE_MAP = {"order_id": "inv", "line_id": "line", "user_id": "cust", "order_ts": "ts", "quantity": "qty",
            "unit_price": "price", "category": "cat"}


def test_line_level_orders_aggregate_with_returns_as_their_own_rows(spark):
    rows = [
        ("536365", "1", "17850", "2024-01-01 08:26:00", "6", "2.55", "home"),
        ("536365", "2", "17850", "2024-01-01 08:26:00", "6", "3.39", "toys"),
        ("536365", "3", "17850", "2024-01-01 08:27:00", "2", "1.00", "books"),
        ("C536379", "1", "14527", "2024-01-01 09:41:00", "-1", "27.50", "home"),   # cancellation invoice
        ("536380", "1", "14527", "2024-01-02 10:00:00", "3", "5.00", "music"),    # mixed: purchase line
        ("536380", "2", "14527", "2024-01-02 10:00:00", "-1", "4.00", None),     # ... and a returned line
    ]
    prep = _prepare(spark, "orders", rows, LINE_SCHEMA, LINE_MAP, line_level=True, return_id_prefix="C")
    assert prep.rejects.count() == 0
    got = _sorted(prep.good, "order_id", "user_id", "order_ts", "amount", "quantity", "n_lines", "category",
                  "discount", "is_return")
    assert [g[:3] + (round(g[3], 2),) + g[4:] for g in got] == [
        ("536365", "17850", TS(2024, 1, 1, 8, 26), 37.64, 14.0, 3, "toys", None, False),  # 6*2.55 + 6*3.39 + 2
        ("536380", "14527", TS(2024, 1, 2, 10), 15.0, 3.0, 1, "music", None, False),
        ("536380-R", "14527", TS(2024, 1, 2, 10), -4.0, -1.0, 1, None, None, True),
        ("C536379", "14527", TS(2024, 1, 1, 9, 41), -27.5, -1.0, 1, "home", None, True),
    ]


def test_line_level_rejects_whole_orders(spark):
    rows = [
        ("A", "1", "u1", "2024-01-01 08:00:00", "1", "2.0", None),
        ("A", "2", "u2", "2024-01-01 08:00:00", "1", "2.0", None),     # another user on the same invoice
        ("B", "1", "u3", "2024-01-01 08:00:00", "1", "oops", None),    # bad price ...
        ("B", "2", "u3", "2024-01-01 08:00:00", "1", "2.0", None),     # ... so its sibling goes too
        ("D", "1", "u4", "2024-01-01 08:00:00", "1", "2.0", None),
        ("D", "1", "u4", "2024-01-01 08:00:00", "1", "2.0", None),     # same line id twice
        ("E", "1", "u5", "2024-01-01 08:00:00", "1", "2.0", None),
    ]
    prep = _prepare(spark, "orders", rows, LINE_SCHEMA, LINE_MAP, line_level=True)
    assert _rejects(prep, "inv") == [("A", "conflicting_user_id"), ("A", "conflicting_user_id"), ("B", "bad_amount"),
                                     ("B", "rejected_sibling_line"), ("D", "duplicate_key"),
                                     ("D", "rejected_sibling_line")]
    assert _sorted(prep.good, "order_id", "amount", "n_lines") == [("E", 2.0, 1)]


def test_line_level_flags_and_line_amounts(spark):
    rows = [("X1", "u1", "2024-01-03 00:00:00", "30.0", "true"), ("X1", "u1", "2024-01-03 00:00:00", "5.0", "true"),
            ("X2", "u1", "2024-01-04 00:00:00", "12.5", "false")]
    prep = _prepare(spark, "orders", rows, "inv string, cust string, ts string, total string, cancelled string",
                    {"order_id": "inv", "user_id": "cust", "order_ts": "ts", "amount": "total", "is_return": "cancelled"},
                    line_level=True)
    assert _sorted(prep.good, "order_id", "amount", "n_lines", "is_return") == [("X1", -35.0, 2, True),
                                                                               ("X2", 12.5, 1, False)]


def test_events_reject_reasons_and_hash_ids(spark):
    schema = "uid string, who string, at string, kind string, sku string"
    mapping = {"event_id": "uid", "user_id": "who", "event_ts": "at", "event_type": "kind", "product_id": "sku"}
    rows = [("e1", "u1", "2024-01-01T10:00:00", "View", "p1"),
            ("e2", None, "2024-01-01T10:00:00", "view", None),         # null_user_id
            (None, "u3", "2024-01-01T10:00:00", "view", None),         # null_event_id
            ("e4", "u4", "2024-01-01T10:00:00", " ", None),            # null_event_type
            ("e5", "u5", "", "view", None),                            # null_timestamp
            ("e6", "u6", "01/01/2024", "view", None),                  # bad_timestamp
            ("e7", "u7", "2024-02-05T00:00:00", "view", None),         # after_run_date
            ("e1", "u8", "2024-01-02T10:00:00", "search", None)]       # duplicate_key (later e1)
    prep = _prepare(spark, "events", rows, schema, mapping)
    assert _rejects(prep, "who") == _pairs([(None, "null_user_id"), ("u3", "null_event_id"), ("u4", "null_event_type"),
                                            ("u5", "null_timestamp"), ("u6", "bad_timestamp"),
                                            ("u7", "after_run_date"), ("u8", "duplicate_key")])
    assert _sorted(prep.good, "event_id", "user_id", "event_ts", "event_date", "event_type", "product_id") == [
        ("e1", "u1", TS(2024, 1, 1, 10), dt.date(2024, 1, 1), "view", "p1")]
    # without a source id the key is a hash of the event: an exact repeat is a duplicate
    hashed = _prepare(spark, "events", [r[1:] for r in rows[:1] * 2], "who string, at string, kind string, sku string",
                      {k: v for k, v in mapping.items() if k != "event_id"})
    ids = [r["event_id"] for r in hashed.good.collect()]
    assert len(ids) == 1 and len(ids[0]) == 32 and _rejects(hashed, "who") == [("u1", "duplicate_key")]


def test_exposures_reject_reasons_and_control_arm(spark):
    schema = "who string, cmp string, variant string, sent string, win string, conv string, val string"
    mapping = {"user_id": "who", "campaign_id": "cmp", "arm": "variant", "exposed_ts": "sent",
               "response_window_days": "win", "observed_converted": "conv", "observed_value": "val"}
    rows = [("u1", "c1", "Control", "2024-01-01 08:00:00", "30", "no", "0"),
            ("u2", "c1", "coupon", "2024-01-01 08:00:00", None, "yes", "12.5"),
            ("u3", None, "coupon", "2024-01-01 08:00:00", "30", None, None),     # null_campaign_id
            ("u4", "c1", "", "2024-01-01 08:00:00", "30", None, None),           # null_arm
            ("u5", "c1", "coupon", "2024-01-01 08:00:00", "30", "perhaps", None),  # bad_flag
            ("u6", "c1", "coupon", "2024-01-01 08:00:00", "1.5", None, None),    # bad_response_window
            ("u7", "c1", "coupon", "2024-01-01 08:00:00", "30", None, "lots"),   # bad_observed_value
            ("u1", "c1", "coupon", "2024-01-02 08:00:00", "30", None, None)]     # duplicate_key
    prep = _prepare(spark, "campaign_exposures", rows, schema, mapping)
    assert _rejects(prep, "who") == _pairs([("u3", "null_campaign_id"), ("u4", "null_arm"), ("u5", "bad_flag"),
                                            ("u6", "bad_response_window"), ("u7", "bad_observed_value"),
                                            ("u1", "duplicate_key")])
    assert _sorted(prep.good, "user_id", "campaign_id", "arm", "is_control", "exposed_ts", "response_window_days",
                   "observed_converted", "observed_value") == [
        ("u1", "c1", "Control", True, TS(2024, 1, 1, 8), 30, False, 0.0),
        ("u2", "c1", "coupon", False, TS(2024, 1, 1, 8), None, True, 12.5)]


def test_user_attributes_keep_their_columns_and_reject_duplicates(spark):
    rows = [("u1", "gold", 3), ("u2", "silver", None), (None, "gold", 1), ("u1", "bronze", 9)]
    prep = _prepare(spark, "user_attributes", rows, "id string, tier string, visits int", {"user_id": "id"})
    assert prep.good.columns == ["user_id", "run_id", "tier", "visits"]
    assert _rejects(prep, "id") == [(None, "null_user_id"), ("u1", "duplicate_key")]
    # the kept one of two duplicates is chosen by a hash of the row, not by file order
    kept = _sorted(prep.good, "user_id", "tier", "visits")
    assert kept[1] == ("u2", "silver", None) and kept[0][0] == "u1"
    again = _prepare(spark, "user_attributes", rows[::-1], "id string, tier string, visits int", {"user_id": "id"})
    assert _sorted(again.good, "user_id", "tier", "visits") == kept


def test_numeric_ids_stored_as_doubles_lose_their_fraction_and_broken_ones_are_rejected(spark):
    schema = "cust double, oid double, ts string, amt double"
    mapping = {"user_id": "cust", "order_id": "oid", "order_ts": "ts", "amount": "amt"}
    rows = [(17850.0, 536365.0, "2024-01-05 10:00:00", 1.0),
            (17850.5, 536366.0, "2024-01-05 10:00:00", 1.0),             # bad_id: not a whole number
            (float("nan"), 536367.0, "2024-01-05 10:00:00", 1.0),        # bad_id
            (float("inf"), 536368.0, "2024-01-05 10:00:00", 1.0),        # bad_id
            (1e20, 536369.0, "2024-01-05 10:00:00", 1.0),                # bad_id: beyond 2**53, not exact
            (12346.0, 1.25, "2024-01-05 10:00:00", 1.0)]                 # bad_id (the order id)
    prep = _prepare(spark, "orders", rows, schema, mapping)
    assert sorted(r["reject_reason"] for r in prep.rejects.collect()) == ["bad_id"] * 5
    assert _sorted(prep.good, "user_id", "order_id") == [("17850", "536365")]


def test_text_ids_written_from_float_columns_lose_their_fraction(spark):
    """pandas writes an integer id column with gaps as floats: 17850.0 in a CSV means 17850."""
    rows = [("17850.0", "A-1.0", "2024-01-05 10:00:00", "1"), ("17850", "7.00", "2024-01-06 10:00:00", "1"),
            ("17850.5", "v1.5", "2024-01-07 10:00:00", "1"), (" 00042.0 ", "9", "2024-01-08 10:00:00", "1")]
    prep = _prepare(spark, "orders", rows, "cust string, oid string, ts string, amt string",
                    {"user_id": "cust", "order_id": "oid", "order_ts": "ts", "amount": "amt"})
    assert prep.rejects.count() == 0  # text ids are not numbers: 17850.5 stays a (strange) id
    assert _sorted(prep.good, "user_id", "order_id") == [
        ("00042", "9"), ("17850", "7"), ("17850", "A-1.0"), ("17850.5", "v1.5")]


def test_values_outside_the_sane_range_are_rejected(spark):
    rows = [
        ("u1", "o1", "2024-01-05 10:00:00", "999999999", "1", "0", ""),     # |amount| = max - 1: fine
        ("u2", "o2", "2024-01-05 10:00:00", "1e308", "1", None, None),      # amount_out_of_range
        ("u3", "o3", "2024-01-05 10:00:00", "-2000000000", "1", None, None),  # amount_out_of_range (a return)
        ("u4", "o4", "2024-01-05 10:00:00", "5", "1e12", None, None),       # quantity_out_of_range
        ("u5", "o5", "2024-01-05 10:00:00", "5", "1", "1e10", None),        # discount: amount_out_of_range
        ("u6", "o6", "1850-01-01 00:00:00", "5", "1", None, None),          # ts_out_of_range (before min_date)
        ("u7", "o7", "2300-01-01 00:00:00", "5", "1", None, None),          # ts_out_of_range, not deferred
        ("u8", "o8", "2024-03-01 00:00:00", "5", "1", None, None),          # deferred (after the run date)
        ("u9", "o9", "1900-01-01 00:00:00", "5", "1", None, None),          # on min_date: fine
    ]
    prep = _prepare(spark, "orders", rows, ORDER_SCHEMA, ORDER_MAP, future_rows="defer")
    assert _rejects(prep, "cust") == _pairs([
        ("u2", "amount_out_of_range"), ("u3", "amount_out_of_range"), ("u4", "quantity_out_of_range"),
        ("u5", "amount_out_of_range"), ("u6", "ts_out_of_range"), ("u7", "ts_out_of_range")])
    assert _sorted(prep.good, "order_id", "amount") == [("o1", 999999999.0), ("o9", 5.0)]
    outcome = Outcome.from_counts([tuple(r) for r in reject_counts(prep.labelled).collect()])
    assert (outcome.rows_read, outcome.rejected_total, outcome.deferred) == (9, 6, 1)
    # the bounds are per source
    tight = _prepare(spark, "orders", rows[:1], ORDER_SCHEMA, ORDER_MAP, max_abs_amount=100.0)
    assert _rejects(tight, "cust") == [("u1", "amount_out_of_range")]
    recent = _prepare(spark, "orders", rows[-1:], ORDER_SCHEMA, ORDER_MAP, min_date=dt.date(2000, 1, 1))
    assert _rejects(recent, "cust") == [("u9", "ts_out_of_range")]


def test_line_amounts_exposure_values_windows_and_event_dates_are_range_checked(spark):
    lines = [("A", "1", "u1", "2024-01-01 08:00:00", "1e5", "1e5", None),     # 1e10 line: amount_out_of_range
             ("A", "2", "u1", "2024-01-01 08:00:00", "1", "2", None),         # rejected_sibling_line
             ("B", "1", "u2", "2024-01-01 08:00:00", "2", "3", None)]
    prep = _prepare(spark, "orders", lines, LINE_SCHEMA, LINE_MAP, line_level=True)
    assert _rejects(prep, "cust") == [("u1", "amount_out_of_range"), ("u1", "rejected_sibling_line")]
    schema = "who string, cmp string, variant string, sent string, win string, conv string, val string"
    mapping = {"user_id": "who", "campaign_id": "cmp", "arm": "variant", "exposed_ts": "sent",
               "response_window_days": "win", "observed_converted": "conv", "observed_value": "val"}
    exposures = [("u1", "c1", "control", "2024-01-01 08:00:00", "30", "no", "1e300"),   # amount_out_of_range
                 ("u2", "c1", "coupon", "2024-01-01 08:00:00", "100000", None, None),  # bad_response_window
                 ("u3", "c1", "coupon", "0001-01-01 08:00:00", "30", None, None),       # ts_out_of_range
                 ("u4", "c1", "coupon", "2024-01-01 08:00:00", "3660", "yes", "5")]    # fine
    prep = _prepare(spark, "campaign_exposures", exposures, schema, mapping)
    assert _rejects(prep, "who") == [("u1", "amount_out_of_range"), ("u2", "bad_response_window"),
                                     ("u3", "ts_out_of_range")]
    events = [("u1", "1700-01-01T10:00:00", "view"), ("u2", "2024-01-01T10:00:00", "view")]
    prep = _prepare(spark, "events", events, "who string, at string, kind string",
                    {"user_id": "who", "event_ts": "at", "event_type": "kind"})
    assert _rejects(prep, "who") == [("u1", "ts_out_of_range")]


def test_rows_the_reader_found_malformed_are_rejected_first(spark):
    """`_corrupt_record` (Spark's PERMISSIVE mode) holds the line of a row with extra or missing fields."""
    rows = [("u1", "o1", "2024-01-05 10:00:00", "1", None), ("u2", "o2", "2024-01-05 10:00:00", None, "u2,o2,2024")]
    prep = _prepare(spark, "orders", rows, "cust string, oid string, ts string, amt string, _corrupt_record string",
                    {"user_id": "cust", "order_id": "oid", "order_ts": "ts", "amount": "amt"})
    rejected = prep.rejects.collect()
    assert [(r["user_id"], r["reject_reason"]) for r in rejected] == [("u2", "malformed_row")]
    assert json.loads(rejected[0]["raw"])["_corrupt_record"] == "u2,o2,2024"
    assert _sorted(prep.good, "order_id") == [("o1",)]
    attrs = _prepare(spark, "user_attributes", [("u1", "gold", None), ("u2", None, "u2")],
                     "id string, tier string, _corrupt_record string", {"user_id": "id"})
    assert attrs.good.columns == ["user_id", "run_id", "tier"]
    assert _rejects(attrs, "id") == [("u2", "malformed_row")]


def test_reason_list_is_complete():
    import ulv_spark.ingest.validate as validate

    assert len(REASONS) == len(set(REASONS)) == 27
    lines = validate.__doc__.splitlines()
    start, end = [i for i, line in enumerate(lines) if line.startswith("=====")][:2]
    documented = [line.split()[0] for line in lines[start + 1:end] if line.strip() and not line.startswith(" ")]
    assert sorted(documented) == sorted(REASONS)
