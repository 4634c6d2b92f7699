"""Ingest throughput: source rows/s through validation, the first load and an idempotent re-run.

Input: the generator's raw order log (text timestamps, shop column names, cancellations as
flagged rows) written once as Parquet, plus the same rows as a line-level log (each order split
into 2 lines). For each size, in one Spark session (local[2], driver 2g):

* ``validate``: map + parse + check every row + count per reject reason (the pass that runs
  before anything is written; forced by the counts);
* ``first_load``: the whole `ingest` job into an empty lakehouse (validate, then a plain Delta
  write, since nothing can match yet);
* ``rerun_merge``: the same job again: validate + MERGE that changes nothing (idempotency);
* ``line_level``: the job on the line-level log (adds the per-order checks and aggregation).

rows/s = source rows / wall seconds. Ratios within one run are comparable; absolute numbers
depend on the (shared) machine.

Run: ``.venv/bin/python -m bench.bench_ingest [--sizes 200000,2000000]``.
Prints and writes ``bench/results/ingest.json``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from bench._common import machine, timed, write_results

RESULTS = Path(__file__).resolve().parent / "results"
ORDERS_PER_USER = 4.1  # the default generator's raw order rows per user (orders + cancellations)
AS_OF = dt.date(2025, 10, 1)


def _conf(root: Path, orders: Path, line_level: bool) -> dict:
    columns = {"user_id": "customer_id", "order_id": "order_no", "order_ts": "ordered_at", "amount": "order_total",
               "quantity": "items", "category": "main_category", "discount": "discount_total",
               "is_return": "is_cancellation"}
    return {"lakehouse": {"root": str(root), "schema": "bench_" + root.name, "shared_dir": str(root / "_shared")},
            "sources": {"orders": {"format": "parquet", "path": str(orders), "columns": columns,
                                   "timestamp_format": "yyyy-MM-dd'T'HH:mm:ss", "future_rows": "defer",
                                   "line_level": line_level}}}


def _run_ingest(spark, conf: dict, run_id: str) -> dict:
    from ulv_spark.context import JobContext
    from ulv_spark.config import load_config
    from ulv_spark.ingest import job

    path = Path(conf["lakehouse"]["root"]).parent / f"{run_id}.yaml"
    path.write_text(json.dumps(conf), encoding="utf-8")
    ctx = JobContext(cfg=load_config(path), as_of=AS_OF, run_id=run_id, command="ingest")
    ctx._spark = spark
    return job.run_ingest(ctx)["tables"]["orders"]


def _validate_only(spark, conf: dict) -> int:
    from ulv_spark.config import SourceConf
    from ulv_spark.ingest.job import read_source
    from ulv_spark.ingest.mapping import map_columns, resolve_columns
    from ulv_spark.ingest.validate import prepare, reject_counts

    src = SourceConf(**conf["sources"]["orders"])
    raw, src = read_source(spark, "orders", src)
    columns, _ = resolve_columns("orders", src.columns, raw.columns)
    prep = prepare("orders", map_columns(raw, "orders", columns), rules=src, as_of=AS_OF,
                   run_id="bench", rejected_at=dt.datetime(2025, 10, 1))
    return sum(r["rows"] for r in reject_counts(prep.labelled).collect())


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200000,2000000", help="approximate source rows per run")
    parser.add_argument("--out", default=str(RESULTS / "ingest.json"))
    args = parser.parse_args(argv)

    from pyspark.sql import functions as F

    from ulv_spark.config import GenerateConf, LakehouseConf, SparkConf
    from ulv_spark.synthetic.generator import GeneratorParams, generated_table
    from ulv_spark.spark import get_spark

    work = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    spark = get_spark(SparkConf(master="local[2]", app_name="bench_ingest", shuffle_partitions=4, driver_memory="2g"),
                      LakehouseConf(root=str(work / "warehouse"), schema="bench"))
    results = {"machine": machine(),
               "command": "python -m bench.bench_ingest " + " ".join(argv or sys.argv[1:]), "runs": []}
    try:
        for size in [int(s) for s in args.sizes.split(",")]:
            users = max(100, int(size / ORDERS_PER_USER))
            params = GeneratorParams(GenerateConf(users=users, partitions=4, seed=1), truth_dates=())
            orders = work / f"orders_{size}"
            generated_table(spark, params, "orders").write.mode("overwrite").parquet(str(orders))
            rows = spark.read.parquet(str(orders)).count()
            # the same orders as a line-level log: every order split into two lines of half the value
            lines = work / f"lines_{size}"
            half = [F.col(c) / 2 for c in ("order_total", "discount_total")]
            base = spark.read.parquet(str(orders))
            (base.withColumns(dict(zip(("order_total", "discount_total"), half)))
             .unionByName(base.withColumns(dict(zip(("order_total", "discount_total"), half))))
             .write.mode("overwrite").parquet(str(lines)))
            line_rows = 2 * rows

            run = {"size": size, "source_rows": rows, "users": users}
            conf = _conf(work / f"lh_{size}", orders, line_level=False)
            seconds, counted = timed(lambda: _validate_only(spark, conf))
            run["validate"] = {"seconds": round(seconds, 2), "rows_per_s": round(counted / seconds)}
            seconds, first = timed(lambda: _run_ingest(spark, conf, f"first_{size}"))
            run["first_load"] = {"seconds": round(seconds, 2), "rows_per_s": round(rows / seconds),
                                 "inserted": first["inserted"], "deferred": first["deferred"]}
            seconds, again = timed(lambda: _run_ingest(spark, conf, f"again_{size}"))
            run["rerun_merge"] = {"seconds": round(seconds, 2), "rows_per_s": round(rows / seconds),
                                  "inserted": again["inserted"], "updated": again["updated"]}
            line_conf = _conf(work / f"lh_lines_{size}", lines, line_level=True)
            seconds, lined = timed(lambda: _run_ingest(spark, line_conf, f"lines_{size}"))
            run["line_level"] = {"seconds": round(seconds, 2), "rows_per_s": round(line_rows / seconds),
                                 "source_rows": line_rows, "orders": lined["inserted"]}
            run["ratios"] = {"first_load_over_validate_rows_per_s": round(
                run["first_load"]["rows_per_s"] / run["validate"]["rows_per_s"], 3),
                "rerun_over_first_rows_per_s": round(run["rerun_merge"]["rows_per_s"] / run["first_load"]["rows_per_s"], 3)}
            results["runs"].append(run)
            print(json.dumps(run), flush=True)
        if len(results["runs"]) >= 2:
            small, large = results["runs"][0], results["runs"][-1]
            results["scaling"] = {k: round(large[k]["rows_per_s"] / small[k]["rows_per_s"], 3)
                                  for k in ("validate", "first_load", "rerun_merge", "line_level")}
        results["machine"]["load_avg_end"] = os.getloadavg()
    finally:
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)
    return write_results(results, args.out)


if __name__ == "__main__":
    main()
