"""user_features at D by Spark against DuckDB SQL over the same snapshot: the single-node speed reference (issue 16).

Input: the random order log and behaviour events of bench.bench_features (`synthetic_orders`,
`synthetic_events`: ~10 orders per user, skewed users, 5 % returns, 20 categories, two years
around D = 2025-10-01) plus random campaign exposures (`synthetic_exposures`), written once to
bronze Delta tables in a temporary lakehouse and exported once to Parquet (neither timed).

Timed, each `--repeats` times, alternating, in one process (Spark local[2], driver 2g, 4 shuffle
partitions; DuckDB in-process with its default threads):

* ``spark_full``: `features.build.build_user_features(orders, events, exposures, as_of=D)` over
  the bronze Delta tables, every column (the covered ones, the token sequences, the text
  columns at their defaults: no text inputs), written to Spark's no-op sink;
* ``spark_covered``: the same frame with only user_id and the covered columns
  (`bench.duckdb_features.covered_columns`), to the no-op sink;
* ``duckdb``: `bench.duckdb_features.duckdb_user_features` over the Parquet files, materialised
  as a DuckDB temporary table (CREATE OR REPLACE TEMP TABLE ... AS).

Then (not timed) the Spark covered frame and DuckDB's table are compared column by column
(`duckdb_features.compare`: whole-number columns exactly, the others within 1e-9 relative).
Wall seconds and CPU seconds are reported: the Spark JVM's (driver + executors, from /proc) and
this process's for DuckDB (its threads run in it). The machine is shared: compare the ratios.

Run: ``.venv/bin/python -m bench.bench_duckdb [--orders 500000] [--events-per-order 0.5] [--repeats 2]``.
Prints a table and writes ``bench/results/duckdb_features.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench._common import machine, timed, write_results
from bench.bench_features import (AS_OF, ORDERS_PER_USER, SPAN_DAYS, START, _jvm_cpu_seconds, synthetic_events,
                                  synthetic_orders)

RESULTS = Path(__file__).resolve().parent / "results"
CAMPAIGNS = 3
EXPOSURE_RATE = 0.3  # share of (user, campaign) pairs exposed


def synthetic_exposures(spark, users: int, seed: int):
    """Random exposures in the bronze `campaign_exposures` contract (Spark SQL only).

    Grain: one row per (user_id, campaign_id): each of `users` x CAMPAIGNS pairs with probability
    EXPOSURE_RATE; 20 % control; exposed over the order log's span (some after D); response
    window 7 or 14 days, or null (the conf default); campaign c2 has observed outcomes.
    """
    from pyspark.sql import functions as F

    start = int(START.timestamp())
    control = F.rand(seed + 2) < 0.2
    window = F.rand(seed + 4)
    observed = F.col("campaign_id") == F.lit("c2")
    converted = F.rand(seed + 5) < 0.3
    base = (spark.range(users * CAMPAIGNS, numPartitions=4)
            .filter(F.rand(seed + 1) < EXPOSURE_RATE)
            .select(F.concat(F.lit("u"), (F.col("id") / CAMPAIGNS).cast("long")).alias("user_id"),
                    F.concat(F.lit("c"), F.col("id") % CAMPAIGNS).alias("campaign_id"),
                    control.alias("is_control"),
                    F.timestamp_seconds(F.lit(start) + (F.rand(seed + 3) * SPAN_DAYS * 86400).cast("long"))
                    .alias("exposed_ts"),
                    F.when(window < 0.4, F.lit(7)).when(window < 0.8, F.lit(14)).cast("int")
                    .alias("response_window_days"),
                    converted.alias("converted")))
    return base.select(
        "user_id", "campaign_id", F.when(F.col("is_control"), F.lit("control")).otherwise(F.lit("promo")).alias("arm"),
        "is_control", "exposed_ts", "response_window_days",
        F.when(observed, F.col("converted")).alias("observed_converted"),
        F.when(observed, F.when(F.col("converted"), F.round(F.exp(F.randn(seed + 6) * 0.8 + 3.5), 2))
               .otherwise(F.lit(0.0))).alias("observed_value"),
        F.lit("bench").alias("run_id"))


def _write_inputs(spark, lh, *, orders: int, events: int, seed: int) -> dict:
    """Write the bronze orders / events / campaign_exposures Delta tables; their TableRefs by name."""
    from ulv_spark import catalog, lake

    users = max(1, orders // ORDERS_PER_USER)
    frames = {"orders": (synthetic_orders(spark, orders, seed=seed), catalog.ORDERS),
              "events": (synthetic_events(spark, events, users, seed=seed + 100), catalog.EVENTS),
              "campaign_exposures": (synthetic_exposures(spark, users, seed=seed + 200), catalog.CAMPAIGN_EXPOSURES)}
    refs = {}
    for name, (df, contract) in frames.items():
        refs[name] = lake.table_ref(lh, name)
        lake.append(spark, df, refs[name], contract)
    return refs


def _export_parquet(spark, refs: dict, folder: Path) -> dict:
    """The current snapshot of each Delta table as Parquet files; the globs by table name."""
    from ulv_spark import lake

    globs = {}
    for name, ref in refs.items():
        lake.read_table(spark, ref).write.mode("overwrite").parquet(str(folder / name))
        globs[name] = str(folder / name / "*.parquet")
    return globs


def _timed_cpu(fn, cpu_seconds) -> dict:
    """Wall and CPU seconds of `fn()` (CPU from `cpu_seconds()`, read before and after)."""
    cpu_start = cpu_seconds()
    seconds, _ = timed(fn)
    return {"seconds": round(seconds, 3), "cpu_seconds": round(cpu_seconds() - cpu_start, 3)}


def _table(results: dict) -> str:
    """The printed summary: one line per phase (best of the repeats), then the cross-check."""
    lines = [f"{'phase':<14} {'best wall s':>11} {'first wall s':>12} {'best CPU s':>10} {'rows':>8}"]
    for phase, runs in results["timings"].items():
        best = min(runs, key=lambda r: r["seconds"])
        lines.append(f"{phase:<14} {best['seconds']:>11.2f} {runs[0]['seconds']:>12.2f} "
                     f"{min(r['cpu_seconds'] for r in runs):>10.2f} {results['rows'][phase]:>8}")
    lines.append(json.dumps(results["ratios"]))
    check = results["check"]
    mismatching = [c for c, r in check["columns"].items() if r["mismatches"]]
    lines.append(f"cross-check: ok={check['ok']} users={check['users']} same_users={check['same_users']} "
                 f"columns={len(check['columns'])} mismatching={mismatching}")
    for name, r in check["columns"].items():
        lines.append(f"  {name:<28} {'exact' if r['exact'] else 'rel':<5} max_abs={r['max_abs_diff']:.3g} "
                     f"max_rel={r['max_rel_diff']:.3g} mismatches={r['mismatches']}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=500_000)
    parser.add_argument("--events-per-order", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS / "duckdb_features.json"))
    args = parser.parse_args(argv)

    import duckdb

    from bench.duckdb_features import compare, covered_columns, user_features_sql
    from ulv_spark import lake
    from ulv_spark.config import FeaturesConf, LakehouseConf, SparkConf
    from ulv_spark.features.build import build_user_features
    from ulv_spark.spark import get_spark

    work = Path(tempfile.mkdtemp(prefix="bench_duckdb_"))
    lh = LakehouseConf(root=str(work / "lakehouse"), schema="bench_duck", shared_dir=str(work / "shared"))
    spark = get_spark(SparkConf(master="local[2]", app_name="bench_duckdb", shuffle_partitions=4, driver_memory="2g"),
                      lh)
    jvm_pid = int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid())
    cfg = FeaturesConf()
    columns = covered_columns(cfg)
    results = {"machine": machine(), "as_of": AS_OF.isoformat(),
               "command": "python -m bench.bench_duckdb " + " ".join(argv if argv is not None else sys.argv[1:]),
               "duckdb_version": duckdb.__version__, "spark_version": spark.version,
               "orders": args.orders, "events": int(args.orders * args.events_per_order),
               "covered_columns": list(columns), "timings": {"spark_full": [], "spark_covered": [], "duckdb": []}}
    try:
        refs = _write_inputs(spark, lh, orders=args.orders, events=results["events"], seed=11)
        results["exposures"] = lake.read_table(spark, refs["campaign_exposures"]).count()
        globs = _export_parquet(spark, refs, work / "parquet")

        def spark_frame():
            inputs = {name: lake.read_table(spark, ref) for name, ref in refs.items()}
            return build_user_features(inputs["orders"], inputs["events"], inputs["campaign_exposures"], as_of=AS_OF,
                                       features_cfg=cfg)

        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")  # as duckdb_user_features
        duck_sql = user_features_sql(globs["orders"], globs["events"], globs["campaign_exposures"], as_of=AS_OF,
                                     features_cfg=cfg)
        phases = {
            "spark_full": lambda: spark_frame().write.format("noop").mode("overwrite").save(),
            "spark_covered": lambda: spark_frame().select("user_id", *columns).write.format("noop").mode(
                "overwrite").save(),
            "duckdb": lambda: con.execute(f"CREATE OR REPLACE TEMP TABLE duck_features AS {duck_sql}"),
        }
        cpu = {"spark_full": lambda: _jvm_cpu_seconds(jvm_pid), "spark_covered": lambda: _jvm_cpu_seconds(jvm_pid),
               "duckdb": time.process_time}
        for _ in range(args.repeats):
            for phase, fn in phases.items():
                results["timings"][phase].append(_timed_cpu(fn, cpu[phase]))
                print(phase, results["timings"][phase][-1], flush=True)

        expected = spark_frame().select("user_id", *columns).toPandas()
        got = con.sql("SELECT * FROM duck_features").df()
        results["rows"] = {"spark_full": len(expected), "spark_covered": len(expected), "duckdb": len(got)}
        results["check"] = compare(expected, got, features_cfg=cfg)
        best = {p: min(r["seconds"] for r in runs) for p, runs in results["timings"].items()}
        best_cpu = {p: min(r["cpu_seconds"] for r in runs) for p, runs in results["timings"].items()}
        results["ratios"] = {
            "spark_full_over_duckdb_wall": round(best["spark_full"] / best["duckdb"], 2),
            "spark_covered_over_duckdb_wall": round(best["spark_covered"] / best["duckdb"], 2),
            "spark_full_over_duckdb_cpu": round(best_cpu["spark_full"] / best_cpu["duckdb"], 2),
            "spark_covered_over_duckdb_cpu": round(best_cpu["spark_covered"] / best_cpu["duckdb"], 2),
            "within_5x_goal": best["spark_full"] <= 5 * best["duckdb"]}
        results["machine"]["load_avg_end"] = os.getloadavg()
    finally:
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)
    write_results(results, args.out)
    print(_table(results))
    return results


if __name__ == "__main__":
    main()
