"""Property test of the ingest contract on hostile CSV rows (seeded, a few hundred rows).

Whatever the rows hold (huge, NaN, infinite and negative amounts, far-past and far-future
dates, separators, quotes, control characters and non-ASCII in ids, very long strings, one key
with different values, missing and extra fields), every source row is accounted for exactly
once: loaded, rejected with a known reason, or deferred. And the features job then runs on what
was loaded, with finite features.
"""
import csv
import datetime as dt
import io
import math
import random

import pytest
from pyspark.sql import functions as F

from ulv_spark import lake
from ulv_spark.config import load_config
from ulv_spark.context import JobContext
from ulv_spark.features.job import run_features
from ulv_spark.ingest import job
from ulv_spark.ingest.validate import REASONS
from ulv_spark.schemas import feature_columns

pytestmark = pytest.mark.slow

AS_OF = dt.date(2024, 7, 1)
SEED = 20240701

HOSTILE_TEXT = ["", "   ", "a,b", "semi;colon", 'quo"te', '"', "tab\there", "ctl\x01\x07\x1b", "Müller-ø-東京-🙂",
                "x" * 5000, "NULL", "None", "17850.0", " padded ", "\\", "'single'"]
HOSTILE_NUMBERS = ["1e308", "-1e308", "NaN", "nan", "inf", "-Infinity", "1e9", "-999999999.5", "1000000001",
                   "0", "-25.5", "1,5", "abc", "", "0x10", "1e-320", "12e", "+7"]
HOSTILE_DATES = ["0001-01-01 00:00:00", "1850-06-01 00:00:00", "1899-12-31 23:59:59", "9999-12-31 23:59:59",
                 "2300-01-01 00:00:00", "2024-02-30 10:00:00", "yesterday", "", "2024-13-01 00:00:00",
                 "2024-07-02 00:00:00", "2025-01-01 12:00:00", "1700000000"]
FLAGS = ["", "yes", "no", "TRUE", "false", "maybe", "1", "x"]


def _pick(rng: random.Random, normal, hostile, p: float = 0.25):
    return rng.choice(hostile) if rng.random() < p else normal()


def _normal_ts(rng: random.Random) -> str:
    return (dt.datetime(2023, 1, 1) + dt.timedelta(seconds=rng.randrange(0, 540 * 86400))).isoformat(sep=" ")


def _csv(header: list[str], rows: list[list[str]], rng: random.Random) -> tuple[str, int]:
    """CSV text with `rows` plus a few lines with a missing or an extra field; (text, data lines)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        if rng.random() < 0.04:
            row = row + ["surplus"]
        elif rng.random() < 0.04:
            row = row[:-1]
        writer.writerow(row)
    return out.getvalue(), len(rows)


def hostile_orders(rng: random.Random, n: int = 300) -> tuple[str, int]:
    rows, seen = [], []
    for i in range(n):
        if seen and rng.random() < 0.08:  # the same key with other values
            order = rng.choice(seen)
        else:
            order = _pick(rng, lambda: f"o{i}", HOSTILE_TEXT, 0.1)
            seen.append(order)
        rows.append([_pick(rng, lambda: f"u{rng.randrange(40)}", HOSTILE_TEXT, 0.15), order,
                     _pick(rng, lambda: _normal_ts(rng), HOSTILE_DATES),
                     _pick(rng, lambda: f"{rng.uniform(-50, 300):.2f}", HOSTILE_NUMBERS),
                     _pick(rng, lambda: str(rng.randrange(1, 5)), HOSTILE_NUMBERS, 0.15),
                     _pick(rng, lambda: f"{rng.uniform(0, 5):.2f}", HOSTILE_NUMBERS, 0.1),
                     rng.choice(FLAGS), _pick(rng, lambda: rng.choice(["books", "toys"]), HOSTILE_TEXT)])
    return _csv(["cust", "order", "ts", "amount", "qty", "disc", "ret", "cat"], rows, rng)


def hostile_events(rng: random.Random, n: int = 150) -> tuple[str, int]:
    rows = [[_pick(rng, lambda: f"e{i}", HOSTILE_TEXT, 0.1), _pick(rng, lambda: f"u{rng.randrange(40)}", HOSTILE_TEXT, 0.15),
             _pick(rng, lambda: _normal_ts(rng), HOSTILE_DATES),
             _pick(rng, lambda: rng.choice(["view", "add_to_cart", "search"]), HOSTILE_TEXT)] for i in range(n)]
    return _csv(["eid", "who", "at", "kind"], rows, rng)


def hostile_exposures(rng: random.Random, n: int = 150) -> tuple[str, int]:
    rows = [[_pick(rng, lambda: f"u{rng.randrange(40)}", HOSTILE_TEXT, 0.15), rng.choice(["c1", "c2", "", "c\x01"]),
             _pick(rng, lambda: rng.choice(["control", "coupon", "coupon", ""]), HOSTILE_TEXT, 0.15),
             _pick(rng, lambda: _normal_ts(rng), HOSTILE_DATES),
             _pick(rng, lambda: str(rng.randrange(0, 40)), HOSTILE_NUMBERS + ["100000", "-1", "2.5"]),
             rng.choice(FLAGS), _pick(rng, lambda: f"{rng.uniform(0, 90):.2f}", HOSTILE_NUMBERS)] for _ in range(n)]
    return _csv(["who", "cmp", "arm", "sent", "win", "conv", "val"], rows, rng)


def test_every_hostile_row_is_loaded_rejected_or_deferred_and_the_features_job_runs(spark, lakehouse, write_conf,
                                                                                     tmp_path):
    rng = random.Random(SEED)
    files, rows_in = {}, {}
    for table, make in (("orders", hostile_orders), ("events", hostile_events),
                        ("campaign_exposures", hostile_exposures)):
        text, rows_in[table] = make(rng)
        files[table] = tmp_path / f"{table}.csv"
        files[table].write_text(text, encoding="utf-8")
    conf = write_conf(
        f"lakehouse: {{root: {lakehouse.root}, schema: {lakehouse.schema}, shared_dir: {lakehouse.shared_dir}}}\n"
        "spark: {shuffle_partitions: 2}\ningest: {max_reject_share: 1.0}\nsources:\n"
        f"  orders:\n    path: {files['orders']}\n    future_rows: defer\n"
        "    columns: {user_id: cust, order_id: order, order_ts: ts, amount: amount, quantity: qty, discount: disc,"
        " is_return: ret, category: cat}\n"
        f"  events:\n    path: {files['events']}\n"
        "    columns: {event_id: eid, user_id: who, event_ts: at, event_type: kind}\n"
        f"  campaign_exposures:\n    path: {files['campaign_exposures']}\n"
        "    columns: {user_id: who, campaign_id: cmp, arm: arm, exposed_ts: sent, response_window_days: win,"
        " observed_converted: conv, observed_value: val}\n")
    cfg = load_config(conf)
    summary = job.run_ingest(JobContext(cfg=cfg, as_of=AS_OF, run_id="fuzz", command="ingest"))["tables"]
    seen_reasons = set()
    for table, n in rows_in.items():
        facts = summary[table]
        loaded = lake.read_table(spark, lake.table_ref(lakehouse, table)).count()
        rejects = lake.read_table(spark, lake.table_ref(lakehouse, f"{table}_rejects"))
        assert facts["rows_read"] == n, table
        assert loaded + facts["rejected"] + facts["deferred"] == n, table
        assert loaded == facts["inserted"] and rejects.count() == facts["rejected"], table
        reasons = {r[0] for r in rejects.select("reject_reason").distinct().collect()}
        assert reasons <= set(REASONS) and sum(facts["reject_reasons"].values()) == facts["rejected"], table
        assert rejects.filter(F.col("raw").isNull() | (F.length("raw") < 2)).count() == 0, table
        seen_reasons |= reasons
    # the generator reaches every reason a flat CSV of these three sources can have
    assert {"malformed_row", "null_user_id", "null_order_id", "null_event_id", "null_campaign_id", "null_arm",
            "null_event_type", "null_timestamp", "bad_timestamp", "ts_out_of_range", "bad_quantity",
            "quantity_out_of_range", "bad_amount", "null_amount", "amount_out_of_range", "bad_discount", "bad_flag",
            "bad_response_window", "bad_observed_value", "after_run_date", "duplicate_key"} <= seen_reasons
    assert summary["orders"]["deferred"] > 0

    features = run_features(JobContext(cfg=cfg, as_of=AS_OF, run_id="fuzz-features", command="features"))
    table = lake.read_table(spark, lake.table_ref(lakehouse, "user_features"), as_of_date=AS_OF)
    def before(name, ts, condition=F.lit(True)):
        rows = lake.read_table(spark, lake.table_ref(lakehouse, name))
        return rows.filter((F.col(ts) < F.lit(AS_OF)) & condition).select("user_id")

    observed = F.col("observed_converted").isNotNull() | F.col("observed_value").isNotNull()
    users = before("orders", "order_ts").union(before("events", "event_ts")).union(
        before("campaign_exposures", "exposed_ts", observed)).distinct().count()
    assert features["rows"]["user_features"] == table.count() == users > 0
    cols = feature_columns(table.schema)
    worst = table.select(*[F.max(F.abs(F.col(c))).alias(c) for c in cols]).first().asDict()
    assert all(v is not None and math.isfinite(v) for v in worst.values()), {k: v for k, v in worst.items()
                                                                             if v is None or not math.isfinite(v)}
    assert features["rows"]["training_examples"] > 0
