"""Generator throughput: rows/s of the `generate` command (Spark, local[2]) vs the bare numpy simulation.

For each size (raw order rows; users = size / 4.1, the default population's orders per user):

* ``numpy_1proc``: the per-partition simulation and all four raw tables built in this process,
  partition after partition (one core, no Spark, no Arrow, no files);
* ``generate_job``: the whole `ulv-spark generate` job: four raw Parquet tables plus the two
  Delta truth tables for two as-of dates, one Spark task per partition (partitions = max(4,
  users / 50k)); Python workers are warmed up on a tiny run first.

rows/s counts every row written (raw + truth). Ratios within one run are comparable; absolute
numbers depend on the (shared) machine.

Run: ``.venv/bin/python -m bench.bench_generate [--sizes 200000,2000000]``.
Prints and writes ``bench/results/generate.json``.
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

from bench._common import machine, write_results

RESULTS = Path(__file__).resolve().parent / "results"
ORDERS_PER_USER = 4.1
AS_OF = dt.date(2025, 10, 1)


def _numpy_rows(params) -> tuple[float, dict]:
    from ulv_spark.synthetic.generator import TABLES, Simulation
    from ulv_spark.synthetic.job import RAW_TABLES

    rows = dict.fromkeys(RAW_TABLES, 0)
    start = time.perf_counter()
    for part in range(params.gen.partitions):
        sim = Simulation(params, part)
        for table in RAW_TABLES:
            rows[table] += len(TABLES[table][0](sim))
    return time.perf_counter() - start, rows


def _generate(spark, work: Path, users: int, partitions: int, tag: str) -> tuple[float, dict]:
    from ulv_spark.context import JobContext
    from ulv_spark.config import load_config
    from ulv_spark.synthetic import job as generate_job

    root = work / f"lh_{tag}"
    conf = {"lakehouse": {"root": str(root), "schema": f"bench_{tag}", "shared_dir": str(root / "_shared")},
            "generate": {"users": users, "partitions": partitions, "seed": 1, "output_dir": str(root / "raw"),
                         "truth_dates": ["2025-07-03", "2025-10-01"]}}
    path = work / f"{tag}.yaml"
    path.write_text(json.dumps(conf), encoding="utf-8")
    ctx = JobContext(cfg=load_config(path), as_of=AS_OF, run_id=f"bench-{tag}", command="generate")
    ctx._spark = spark
    start = time.perf_counter()
    summary = generate_job.run_generate(ctx)
    return time.perf_counter() - start, summary["rows"]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200000,2000000", help="approximate raw order rows per run")
    parser.add_argument("--out", default=str(RESULTS / "generate.json"))
    args = parser.parse_args(argv)

    from ulv_spark.config import GenerateConf, LakehouseConf, SparkConf
    from ulv_spark.synthetic.generator import GeneratorParams
    from ulv_spark.spark import get_spark

    work = Path(tempfile.mkdtemp(prefix="bench_generate_"))
    spark = get_spark(SparkConf(master="local[2]", app_name="bench_generate", shuffle_partitions=4,
                                driver_memory="2g"), LakehouseConf(root=str(work / "warehouse"), schema="bench"))
    results = {"machine": machine(),
               "command": "python -m bench.bench_generate " + " ".join(argv or sys.argv[1:]), "runs": []}
    try:
        _generate(spark, work, 200, 2, "warmup")
        for size in [int(s) for s in args.sizes.split(",")]:
            users = max(100, int(size / ORDERS_PER_USER))
            partitions = max(4, users // 50_000)
            params = GeneratorParams(GenerateConf(users=users, partitions=partitions, seed=1),
                                     truth_dates=(dt.date(2025, 7, 3), dt.date(2025, 10, 1)))
            np_seconds, np_rows = _numpy_rows(params)
            seconds, rows = _generate(spark, work, users, partitions, f"s{size}")
            raw_rows = sum(rows[t] for t in np_rows)
            run = {"size": size, "users": users, "partitions": partitions, "rows": rows,
                   "numpy_1proc": {"seconds": round(np_seconds, 2),
                                   "raw_rows_per_s": round(sum(np_rows.values()) / np_seconds),
                                   "orders_per_s": round(np_rows["orders"] / np_seconds)},
                   "generate_job": {"seconds": round(seconds, 2), "rows_per_s": round(sum(rows.values()) / seconds),
                                    "raw_rows_per_s": round(raw_rows / seconds),
                                    "orders_per_s": round(rows["orders"] / seconds)}}
            run["ratio_job_over_numpy_raw_rows_per_s"] = round(
                run["generate_job"]["raw_rows_per_s"] / run["numpy_1proc"]["raw_rows_per_s"], 3)
            results["runs"].append(run)
            print(json.dumps(run), flush=True)
            shutil.rmtree(work / f"lh_s{size}", ignore_errors=True)
        if len(results["runs"]) >= 2:
            small, large = results["runs"][0], results["runs"][-1]
            results["scaling_rows_per_s"] = {
                "generate_job": round(large["generate_job"]["rows_per_s"] / small["generate_job"]["rows_per_s"], 3),
                "numpy_1proc": round(large["numpy_1proc"]["raw_rows_per_s"] / small["numpy_1proc"]["raw_rows_per_s"], 3)}
        results["machine"]["load_avg_end"] = os.getloadavg()
    finally:
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)
    return write_results(results, args.out)


if __name__ == "__main__":
    main()
