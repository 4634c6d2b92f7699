"""Leakage: data at or after D changes nothing for D; labels come only from [D_k, D_k + H)."""
import datetime as dt
import random

import pandas as pd
import pytest
from pyspark.sql import functions as F

from ulv_spark.config import FeaturesConf
from ulv_spark.features import build_training_examples, build_user_features, origins

D = dt.date(2024, 4, 1)
H = 30
CFG = FeaturesConf(sequence_length=8, training_origins=3, origin_step_days=30)
ORDER_DDL = ("user_id string, order_id string, order_ts timestamp, amount double, quantity double, "
             "category string, discount double, is_return boolean")
EVENT_DDL = "event_id string, user_id string, event_ts timestamp, event_type string, category string"
EXPOSURE_DDL = ("user_id string, campaign_id string, arm string, is_control boolean, exposed_ts timestamp, "
                "response_window_days int, observed_converted boolean, observed_value double")


def _log(seed: int, start: dt.datetime, days: int, users: list[str], n_orders: int, n_events: int, tag: str):
    rng = random.Random(seed)

    def when():
        return start + dt.timedelta(seconds=rng.randrange(days * 86400))

    orders, events = [], []
    for i in range(n_orders):
        is_return = rng.random() < 0.1
        amount = round(rng.uniform(1, 300), 2) * (-1 if is_return else 1)
        orders.append((rng.choice(users), f"{tag}o{i}", when(), amount, float(rng.randint(1, 4)),
                       rng.choice(["books", "music", "toys", None]), rng.choice([None, 0.0, 5.0]), is_return))
    for i in range(n_events):
        events.append((f"{tag}e{i}", rng.choice(users), when(), rng.choice(["view", "view", "add_to_cart", "login"]),
                       rng.choice(["books", None])))
    return orders, events


@pytest.fixture(scope="module")
def data():
    users = [f"u{i:02d}" for i in range(30)]
    past_orders, past_events = _log(1, dt.datetime(2023, 6, 1), (dt.datetime(2024, 4, 1) - dt.datetime(2023, 6, 1)).days,
                                    users, 400, 300, "p")
    # the future: from exactly D on, for known users and a new one; one order exactly at midnight D
    future_orders, future_events = _log(2, dt.datetime(2024, 4, 1), 60, users + ["new"], 120, 90, "f")
    future_orders.append(("u01", "f_at_d", dt.datetime(2024, 4, 1), 77.0, 1.0, "books", None, False))
    future_events.append(("f_at_d_e", "u02", dt.datetime(2024, 4, 1), "view", None))
    past_exposures = [
        ("u03", "c1", "coupon", False, dt.datetime(2024, 3, 10), 7, None, None),
        ("u04", "c1", "control", True, dt.datetime(2024, 3, 10), 7, None, None),
        ("u05", "c2", "coupon", False, dt.datetime(2024, 3, 28), 30, None, None),   # response window runs past D
        ("u06", "c0", "coupon", False, dt.datetime(2024, 2, 5), 10, True, 20.0),
        ("u07", "c0", "control", True, dt.datetime(2024, 1, 10), 10, None, None),
    ]
    future_exposures = [("u03", "c3", "coupon", False, dt.datetime(2024, 4, 1), 7, None, None),
                        ("new", "c3", "control", True, dt.datetime(2024, 4, 5), 7, True, 10.0)]
    future_orders += [("u05", "f_u05", dt.datetime(2024, 4, 3), 500.0, 1.0, None, None, False)]  # inside u05's window
    return {"past": (past_orders, past_events, past_exposures),
            "all": (past_orders + future_orders, past_events + future_events, past_exposures + future_exposures)}


def _frames(spark, rows):
    orders, events, exposures = rows
    return (spark.createDataFrame(orders, ORDER_DDL), spark.createDataFrame(events, EVENT_DDL),
            spark.createDataFrame(exposures, EXPOSURE_DDL))


def _rows(df):
    return sorted(tuple(tuple(v) if isinstance(v, list) else v for v in r) for r in df.collect())


def assert_same_rows(got, expected):
    """Equal rows; doubles to 1e-12 relative, because Spark's sum order follows the partition
    layout, which more input rows change (the last bits of a sum, never a feature's meaning)."""
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g[0] == e[0]
        for gv, ev in zip(g, e):
            if isinstance(ev, float):
                assert gv == pytest.approx(ev, rel=1e-12, abs=1e-12), (g[0], g, e)
            else:
                assert gv == ev, (g[0], gv, ev)


def _both(spark, data, build):
    """Build from the past only and from past + future in one Spark job; return both row lists."""
    past = build(*_frames(spark, data["past"])).select(F.lit(0).alias("variant"), "*")
    full = build(*_frames(spark, data["all"])).select(F.lit(1).alias("variant"), "*")
    rows = _rows(past.unionByName(full))
    return [r[1:] for r in rows if r[0] == 0], [r[1:] for r in rows if r[0] == 1], past.columns[1:]


def test_user_features_and_sequences_ignore_everything_at_or_after_d(spark, data):
    past, full, columns = _both(spark, data, lambda o, e, x: build_user_features(o, e, x, as_of=D, features_cfg=CFG))
    assert len(past) == 30 and "new" not in {r[0] for r in full}
    assert "seq_tokens" in columns
    assert_same_rows(full, past)


def test_training_examples_ignore_data_at_or_after_d_and_labels_use_only_their_window(spark, data):
    build = lambda o, e, x: build_training_examples(o, e, x, as_of=D, horizon_days=H, features_cfg=CFG)  # noqa: E731
    past, full, columns = _both(spark, data, build)
    assert_same_rows(full, past)

    # labels recomputed independently (pandas) from the raw past log: only [D_k, D_k + H) counts
    orders = pd.DataFrame(data["all"][0], columns=["user_id", "order_id", "ts", "amount", "q", "c", "d", "is_return"])
    examples = pd.DataFrame(past, columns=columns)
    assert sorted(examples["origin_date"].unique()) == sorted(origins(D, horizon_days=H, features_cfg=CFG))
    for origin, group in examples.groupby("origin_date"):
        start = pd.Timestamp(origin)
        window = orders[(orders["ts"] >= start) & (orders["ts"] < start + pd.Timedelta(days=H))]
        net = window.groupby("user_id")["amount"].sum().clip(lower=0)
        purchases = window[~window["is_return"]].groupby("user_id").size()
        for _, row in group.iterrows():
            assert row["label_value"] == pytest.approx(net.get(row["user_id"], 0.0), abs=1e-9)
            assert row["label_purchases"] == purchases.get(row["user_id"], 0)
            assert row["label_churned"] == int(purchases.get(row["user_id"], 0) == 0)
    # u06's exposure (02-05, 10 days) lies inside the 02-01 window: its observed outcome is the label
    u06 = examples[(examples["user_id"] == "u06") & (examples["origin_date"] == dt.date(2024, 2, 1))].iloc[0]
    assert (u06["campaign_id"], u06["label_converted"], u06["label_response_value"]) == ("c0", 1, 20.0)
