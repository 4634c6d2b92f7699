"""The DuckDB reference (bench.duckdb_features) equals build_user_features on every covered column.

A hand-written log of a few users: same-day purchases, a return, discounts, orders without a
quantity or category, a user with only a return, one with only events, one known only from an
exposure with an observed outcome (kept) and one exposure without (dropped), rows on and
after D (ignored), an exposure whose response window is still open at D.
"""
from __future__ import annotations

import datetime as dt

import pytest

pytestmark = pytest.mark.slow

D = dt.date(2025, 3, 1)


def _ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def _orders(spark):
    rows = [  # user_id, order_id, order_ts, amount, quantity, category, discount, is_return
        ("u1", "o1", "2024-03-02 10:00:00", 20.0, 2.0, "books", None, False),
        ("u1", "o2", "2024-03-02 18:30:00", 5.5, 1.0, "toys", 0.5, False),       # same day
        ("u1", "o3", "2024-11-20 09:00:00", 31.25, None, "books", 3.0, False),   # no quantity
        ("u1", "o4", "2024-11-25 12:00:00", -31.25, -1.0, "books", None, True),  # return
        ("u1", "o5", "2025-02-20 23:59:59", 12.1, 3.0, None, 0.0, False),        # no category
        ("u1", "o6", "2025-02-28 23:59:59.999999", 7.0, 1.0, "toys", None, False),  # last instant before D
        ("u1", "o7", "2025-03-01 00:00:00", 99.0, 1.0, "toys", None, False),     # on D: ignored
        ("u2", "o8", "2025-01-10 08:00:00", 42.0, 1.0, "garden", 4.2, False),
        ("u2", "o9", "2025-02-05 08:00:00", 8.0, 2.0, "garden", None, False),    # inside the exposure window
        ("u3", "o10", "2024-12-24 15:00:00", -10.0, -1.0, "books", None, None),  # return by amount (is_return null)
        ("u5", "o11", "2025-03-02 10:00:00", 15.0, 1.0, "toys", None, False),    # after D
    ]
    return spark.createDataFrame(
        [(u, o, _ts(t), a, q, c, disc, r) for u, o, t, a, q, c, disc, r in rows],
        "user_id string, order_id string, order_ts timestamp, amount double, quantity double, category string, "
        "discount double, is_return boolean")


def _events(spark):
    rows = [("u1", "2025-02-20 10:00:00", "view"), ("u1", "2025-02-25 10:00:00", " View "),
            ("u1", "2025-02-26 10:00:00", "add_to_cart"), ("u2", "2024-06-01 10:00:00", "search"),
            ("u3", "2024-12-24 09:00:00", "view"), ("u4", "2024-09-15 10:00:00", "view"),
            ("u4", "2025-02-28 10:00:00", "login"), ("u4", "2025-03-01 00:00:00", "view")]  # the last on D
    return spark.createDataFrame([(u, f"e{i}", _ts(t), ty) for i, (u, t, ty) in enumerate(rows)],
                                 "user_id string, event_id string, event_ts timestamp, event_type string")


def _exposures(spark):
    rows = [  # user_id, campaign_id, arm, is_control, exposed_ts, window, observed_converted, observed_value
        ("u1", "c1", "treatment", False, "2024-11-15 00:00:00", 14, None, None),  # return in window: net < 0
        ("u2", "c1", "control", None, "2025-02-01 00:00:00", None, None, None),   # default 30 d: open at D
        ("u2", "c2", "treatment", False, "2025-01-05 00:00:00", 10, None, None),  # converted from orders
        ("u5", "c2", "treatment", False, "2025-01-20 00:00:00", 7, True, 12.5),   # observed: u5 is kept
        ("u6", "c2", "control", True, "2025-01-20 00:00:00", 7, None, None),      # nothing seen: dropped
        ("u1", "c3", "treatment", False, "2025-03-01 00:00:00", 7, True, 1.0),    # on D: ignored
    ]
    return spark.createDataFrame(
        [(u, c, a, ic, _ts(t), w, oc, ov) for u, c, a, ic, t, w, oc, ov in rows],
        "user_id string, campaign_id string, arm string, is_control boolean, exposed_ts timestamp, "
        "response_window_days int, observed_converted boolean, observed_value double")


def test_duckdb_reference_equals_spark_on_every_covered_column(spark, tmp_path):
    duckdb = pytest.importorskip("duckdb")
    from bench.duckdb_features import compare, covered_columns, duckdb_user_features
    from ulv_spark.config import FeaturesConf
    from ulv_spark.features.build import build_user_features

    cfg = FeaturesConf(windows_days=[7, 30, 365], event_types=["view", "add_to_cart", "search"])
    frames = {"orders": _orders(spark), "events": _events(spark), "exposures": _exposures(spark)}
    paths = {}
    for name, df in frames.items():
        df.coalesce(1).write.mode("overwrite").parquet(str(tmp_path / name))
        paths[name] = str(tmp_path / name / "*.parquet")

    expected = build_user_features(frames["orders"], frames["events"], frames["exposures"], as_of=D,
                                   features_cfg=cfg).select("user_id", "as_of_date", *covered_columns(cfg)).toPandas()
    con = duckdb.connect()
    got = duckdb_user_features(con, paths["orders"], paths["events"], paths["exposures"], as_of=D,
                               features_cfg=cfg).df()

    assert sorted(got["user_id"]) == ["u1", "u2", "u3", "u4", "u5"]
    assert list(got.columns) == ["user_id", "as_of_date", *covered_columns(cfg)]
    report = compare(expected, got, features_cfg=cfg)
    bad = {c: r for c, r in report["columns"].items() if r["mismatches"]}
    assert report["same_users"] and not bad, bad
    # the log exercises what it is meant to (not all zeros)
    u1 = got.set_index("user_id").loc["u1"]
    assert (u1["frequency"], u1["returns_total"], u1["events_view_total"], u1["campaign_responses_total"]) == \
        (3.0, 1.0, 2.0, 1.0)
    assert got.set_index("user_id").loc["u2", "campaign_responses_total"] == 1.0


def test_duckdb_reference_without_events_or_exposures(spark, tmp_path):
    duckdb = pytest.importorskip("duckdb")
    from bench.duckdb_features import compare, covered_columns, duckdb_user_features
    from ulv_spark.config import FeaturesConf
    from ulv_spark.features.build import build_user_features

    cfg = FeaturesConf()
    orders = _orders(spark)
    orders.coalesce(1).write.mode("overwrite").parquet(str(tmp_path / "orders"))
    expected = build_user_features(orders, as_of=D, features_cfg=cfg) \
        .select("user_id", *covered_columns(cfg)).toPandas()
    got = duckdb_user_features(duckdb.connect(), str(tmp_path / "orders" / "*.parquet"), as_of=D,
                               features_cfg=cfg).df()
    report = compare(expected, got, features_cfg=cfg)
    assert report["ok"], {c: r for c, r in report["columns"].items() if r["mismatches"]}
    assert sorted(got["user_id"]) == ["u1", "u2", "u3"]
