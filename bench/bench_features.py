"""Feature job throughput (orders/s) at two sizes, and the same RFM single-node by lifetimes.

Input: a random order log (and behaviour events) synthesised with Spark SQL ``range`` +
``rand(seed)`` (independent of the project's generator): ~10 orders per user with a skewed
user distribution, timestamps over two years around the as-of date (some after it, so the
point-in-time filter has work), 5 % returns, 20 categories, discounts on 20 % of the orders.
It is written once per size to bronze Delta tables in a temporary lakehouse (not timed). For
each size, in one Spark session (local[2], driver 2g):

* ``job``: the whole `features` job (`features.job.write_feature_tables`): user_features at
  D, training_examples at 3 origins, token_vocabulary, each written to Delta;
* ``spark_rfm``: only the lifetimes RFM (`features.rfm.user_rfm`) on the same orders, run to
  a no-op sink;
* ``lifetimes_rfm``: `lifetimes.utils.summary_data_from_transaction_data(freq="D")` on the
  same purchases in pandas (single node; the Spark -> pandas transfer is not timed), and the
  largest difference between its RFM and Spark's (a correctness check, not a timing).

orders/s = orders in the log / wall seconds. The Spark phases also report CPU seconds: the
whole JVM's (driver planning and code generation, executors, JIT, GC; from /proc) and the
executors' task CPU time (from Spark's event log); lifetimes reports its process CPU seconds.
On a shared, loaded machine wall time mostly measures waiting, CPU time the work. Compare ratios
within one run; absolute numbers depend on the (shared) machine.

Run: ``.venv/bin/python -m bench.bench_features [--sizes 500000,2000000] [--events-per-order 0.5]``.
Prints and writes ``bench/results/features.json``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench._common import machine, timed, write_results

RESULTS = Path(__file__).resolve().parent / "results"
AS_OF = dt.date(2025, 10, 1)
START = dt.datetime(2023, 10, 1, tzinfo=dt.timezone.utc)
SPAN_DAYS = 745  # until mid-October 2025: ~2 % of the rows fall on or after AS_OF
ORDERS_PER_USER = 10


def synthetic_orders(spark, n: int, seed: int):
    """n random orders in the bronze `orders` contract (Spark SQL only)."""
    from pyspark.sql import functions as F

    users = max(1, n // ORDERS_PER_USER)
    start = int(START.timestamp())
    is_return = F.rand(seed + 4) < 0.05
    amount = F.round(F.exp(F.randn(seed + 3) * 0.8 + 3.5), 2)
    base = spark.range(n, numPartitions=4).select(
        F.concat(F.lit("u"), (F.pow(F.rand(seed + 1), 2) * users).cast("long")).alias("user_id"),
        F.concat(F.lit("o"), F.col("id")).alias("order_id"),
        F.timestamp_seconds(F.lit(start) + (F.rand(seed + 2) * SPAN_DAYS * 86400).cast("long")).alias("order_ts"),
        F.when(is_return, -amount).otherwise(amount).alias("amount"),
        F.when(is_return, F.lit(-1.0)).otherwise(F.lit(1.0) + (F.rand(seed + 6) * 3).cast("int")).alias("quantity"),
        F.concat(F.lit("c"), (F.rand(seed + 5) * 20).cast("int")).alias("category"),
        F.when(F.rand(seed + 7) < 0.2, F.round(amount * 0.1, 2)).alias("discount"),
        is_return.alias("is_return"))
    return base.select("user_id", "order_id", "order_ts", F.to_date("order_ts").alias("order_date"), "amount",
                       "quantity", F.lit(1).alias("n_lines"), "category", "discount", "is_return",
                       F.lit("bench").alias("run_id"))


def synthetic_events(spark, n: int, users: int, seed: int):
    """n random behaviour events in the bronze `events` contract."""
    from pyspark.sql import functions as F

    start = int(START.timestamp())
    types = F.array(*[F.lit(t) for t in ("view", "view", "view", "add_to_cart", "search")])
    ts = F.timestamp_seconds(F.lit(start) + (F.rand(seed + 2) * SPAN_DAYS * 86400).cast("long"))
    return spark.range(n, numPartitions=4).select(
        F.concat(F.lit("e"), F.col("id")).alias("event_id"),
        F.concat(F.lit("u"), (F.pow(F.rand(seed + 1), 2) * users).cast("long")).alias("user_id"),
        ts.alias("event_ts"), F.to_date(ts).alias("event_date"),
        F.element_at(types, (F.rand(seed + 3) * 5).cast("int") + 1).alias("event_type"),
        F.lit(None).cast("string").alias("product_id"),
        F.concat(F.lit("c"), (F.rand(seed + 5) * 20).cast("int")).alias("category"),
        F.lit(None).cast("string").alias("session_id"), F.lit("bench").alias("run_id"))


def _cpu_seconds_by_group(log_dir: Path) -> dict:
    """Executor CPU seconds of the finished tasks per job group, from Spark's (uncompressed) event log."""
    groups, cpu = {}, {}
    for path in sorted(log_dir.rglob("events_*")):  # skips Hadoop's .crc files and appstatus markers
        if not path.is_file() or path.name.endswith(".crc"):
            continue
        for line in path.open(encoding="utf-8"):
            if not line.strip():
                continue
            event = json.loads(line)
            if event["Event"] == "SparkListenerJobStart":
                group = (event.get("Properties") or {}).get("spark.jobGroup.id")
                for stage_id in event["Stage IDs"]:
                    groups[stage_id] = group
            elif event["Event"] == "SparkListenerTaskEnd":
                group = groups.get(event["Stage ID"])
                nanos = (event.get("Task Metrics") or {}).get("Executor CPU Time", 0)
                cpu[group] = cpu.get(group, 0.0) + nanos / 1e9
    return cpu


def _jvm_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) the Spark JVM (driver, executors, JIT, GC) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _lifetimes_rfm(purchases):
    from lifetimes.utils import summary_data_from_transaction_data

    return summary_data_from_transaction_data(purchases, "user_id", "order_ts", monetary_value_col="amount",
                                              observation_period_end=str(AS_OF - dt.timedelta(days=1)), freq="D")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500000,2000000", help="orders per run, comma separated")
    parser.add_argument("--events-per-order", type=float, default=0.5)
    parser.add_argument("--out", default=str(RESULTS / "features.json"))
    args = parser.parse_args(argv)

    import numpy as np

    from ulv_spark import lake
    from ulv_spark.config import Config, LakehouseConf, SparkConf
    from ulv_spark.features.inputs import prepare_orders
    from ulv_spark.features.job import write_feature_tables
    from ulv_spark.features.rfm import user_rfm
    from ulv_spark.catalog import EVENTS, ORDERS
    from ulv_spark.spark import get_spark

    work = Path(tempfile.mkdtemp(prefix="bench_features_"))
    log_dir = work / "eventlog"
    log_dir.mkdir()
    spark = get_spark(SparkConf(master="local[2]", app_name="bench_features", shuffle_partitions=4, driver_memory="2g",
                                extra={"spark.eventLog.enabled": "true", "spark.eventLog.dir": str(log_dir),
                                       "spark.eventLog.compress": "false"}),
                      LakehouseConf(root=str(work / "warehouse"), schema="bench"))
    sc = spark.sparkContext
    jvm_pid = int(sc._jvm.java.lang.ProcessHandle.current().pid())
    results = {"machine": machine(),
               "command": "python -m bench.bench_features " + " ".join(argv if argv is not None else sys.argv[1:]),
               "as_of": AS_OF.isoformat(), "runs": []}
    try:
        for i, size in enumerate(int(s) for s in args.sizes.split(",")):
            lh = LakehouseConf(root=str(work / f"lh_{size}"), schema=f"bench_f{i}", shared_dir=str(work / "shared"))
            cfg = Config(lakehouse=lh)
            orders_ref = lake.table_ref(lh, "orders")
            lake.append(spark, synthetic_orders(spark, size, seed=11 * (i + 1)), orders_ref, ORDERS)
            n_events = int(size * args.events_per_order)
            if n_events:
                lake.append(spark, synthetic_events(spark, n_events, max(1, size // ORDERS_PER_USER), seed=7 * (i + 1)),
                            lake.table_ref(lh, "events"), EVENTS)
            orders = lake.read_table(spark, orders_ref)
            run = {"orders": size, "events": n_events, "users": orders.select("user_id").distinct().count()}

            sc.setJobGroup(f"job_{size}", "features job")
            jvm_start = _jvm_cpu_seconds(jvm_pid)
            seconds, summary = timed(lambda: write_feature_tables(spark, cfg, as_of=AS_OF, run_id=f"bench-{size}"))
            jvm_cpu = _jvm_cpu_seconds(jvm_pid) - jvm_start
            run["job"] = {"seconds": round(seconds, 2), "orders_per_s": round(size / seconds),
                          "jvm_cpu_seconds": round(jvm_cpu, 2), "orders_per_jvm_cpu_s": round(size / jvm_cpu),
                          "rows": summary["rows"], "seconds_per_table": summary["seconds"]}

            rfm = user_rfm(prepare_orders(orders), as_of=AS_OF)
            sc.setJobGroup(f"spark_rfm_{size}", "spark rfm")
            jvm_start = _jvm_cpu_seconds(jvm_pid)
            seconds, _ = timed(lambda: rfm.write.format("noop").mode("overwrite").save())
            jvm_cpu = _jvm_cpu_seconds(jvm_pid) - jvm_start
            run["spark_rfm"] = {"seconds": round(seconds, 2), "orders_per_s": round(size / seconds),
                                "jvm_cpu_seconds": round(jvm_cpu, 2), "orders_per_jvm_cpu_s": round(size / jvm_cpu)}

            sc.setJobGroup(f"check_{size}", "not timed")
            purchases = (orders.filter(~orders["is_return"]).select("user_id", "order_ts", "amount").toPandas())
            cpu_start = time.process_time()
            seconds, expected = timed(lambda: _lifetimes_rfm(purchases))
            cpu = time.process_time() - cpu_start
            run["lifetimes_rfm"] = {"seconds": round(seconds, 2), "orders_per_s": round(size / seconds),
                                    "cpu_seconds": round(cpu, 2), "orders_per_cpu_s": round(size / cpu)}
            got = rfm.toPandas().set_index("user_id").sort_index()
            expected = expected.sort_index()
            same_users = list(got.index) == list(expected.index)
            run["lifetimes_check"] = {
                "same_customers": same_users, "customers": len(expected),
                "max_abs_diff": {c: float(np.max(np.abs(got[c].to_numpy() - expected[c].to_numpy())))
                                 for c in ("frequency", "recency", "T", "monetary_value")} if same_users else None}
            run["ratios"] = {"spark_rfm_over_lifetimes_seconds": round(run["spark_rfm"]["seconds"]
                                                                      / run["lifetimes_rfm"]["seconds"], 3),
                             "job_over_spark_rfm_seconds": round(run["job"]["seconds"] / run["spark_rfm"]["seconds"], 3)}
            results["runs"].append(run)
            print(json.dumps(run), flush=True)
        if len(results["runs"]) >= 2:
            small, large = results["runs"][0], results["runs"][-1]
            results["scaling"] = {"size_ratio": round(large["orders"] / small["orders"], 3),
                                  **{f"{k}_seconds_ratio": round(large[k]["seconds"] / small[k]["seconds"], 3)
                                     for k in ("job", "spark_rfm", "lifetimes_rfm")}}
        results["machine"]["load_avg_end"] = os.getloadavg()
    finally:
        spark.stop()
        cpu = _cpu_seconds_by_group(log_dir)
        shutil.rmtree(work, ignore_errors=True)
    for run in results["runs"]:
        run["ratios"]["spark_rfm_over_lifetimes_jvm_cpu_seconds"] = round(
            run["spark_rfm"]["jvm_cpu_seconds"] / run["lifetimes_rfm"]["cpu_seconds"], 3)
        for phase in ("job", "spark_rfm"):
            seconds = cpu.get(f"{phase}_{run['orders']}", 0.0)
            run[phase]["executor_cpu_seconds"] = round(seconds, 2)
            run[phase]["orders_per_cpu_s"] = round(run["orders"] / seconds) if seconds else None
        if run["spark_rfm"]["executor_cpu_seconds"]:
            run["ratios"]["spark_rfm_over_lifetimes_cpu_seconds"] = round(
                run["spark_rfm"]["executor_cpu_seconds"] / run["lifetimes_rfm"]["cpu_seconds"], 3)
    if len(results["runs"]) >= 2:
        small, large = results["runs"][0], results["runs"][-1]
        results["scaling"].update({f"{k}_cpu_seconds_ratio": round(
            large[k]["executor_cpu_seconds"] / small[k]["executor_cpu_seconds"], 3)
            for k in ("job", "spark_rfm") if small[k]["executor_cpu_seconds"]})
        results["scaling"].update({f"{k}_jvm_cpu_seconds_ratio": round(
            large[k]["jvm_cpu_seconds"] / small[k]["jvm_cpu_seconds"], 3) for k in ("job", "spark_rfm")})
        results["scaling"]["lifetimes_rfm_cpu_seconds_ratio"] = round(
            large["lifetimes_rfm"]["cpu_seconds"] / small["lifetimes_rfm"]["cpu_seconds"], 3)
    return write_results(results, args.out)


if __name__ == "__main__":
    main()
