"""`make demo`: generate data, run the nightly job end to end on the embedded default, say where things are.

Steps: `ulv-spark generate` (synthetic shop with known truth) -> `ulv-spark nightly --evaluate`
(ingest, features, train, score with quality gates, learned segments, plan, backtest + HTML report) for the run date
in the conf -> a short summary of the tables, their row counts and the report's path.

The demo has no model from before the backtest origin D - H, so by default the backtest trains
one on that split's own training rows (`evaluate.model=train`) and the report compares the
model with the baselines; `--evaluate-model none` compares the baselines only (faster).
"""
from __future__ import annotations

import argparse
import glob
import os
import sys

from ulv_spark.cli import main as cli_main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--conf", default="conf/local.yaml")
    parser.add_argument("--as-of", default=None, help="run date (default: run.as_of in the conf)")
    parser.add_argument("--no-evaluate", action="store_true", help="skip the backtest and report")
    parser.add_argument("--evaluate-model", choices=["train", "latest_before_origin", "none"], default="train",
                        help="evaluate.model for the backtest (default: train one on the backtest split)")
    args = parser.parse_args(argv)
    date = ["--as-of", args.as_of] if args.as_of else []
    evaluate = [] if args.no_evaluate else ["--evaluate", "--set", f"evaluate.model={args.evaluate_model}"]
    steps = [["generate", "--conf", args.conf, *date],
             ["nightly", "--conf", args.conf, *date, *evaluate]]
    for step in steps:
        print(f"\n=== ulv-spark {' '.join(step)} ===", file=sys.stderr, flush=True)
        code = cli_main(step)
        if code != 0:
            print(f"demo: `ulv-spark {step[0]}` failed with exit code {code}", file=sys.stderr)
            return code
    return summarize(args.conf)


def summarize(conf_path: str) -> int:
    """Print the output tables (with row counts), the SQL to read them and the newest report."""
    from ulv_spark import catalog, lake
    from ulv_spark.config import load_config
    from ulv_spark.spark import get_spark

    cfg = load_config(conf_path)
    spark = get_spark(cfg.spark, cfg.lakehouse)
    lake.attach(spark, cfg.lakehouse, catalog.names(), views_for=catalog.latest_views())
    print("\n=== demo done ===")
    print(f"lakehouse: {cfg.lakehouse.root}")
    shown = [n for group in (catalog.SCORES, catalog.SEGMENTS, catalog.PLANS, catalog.FEATURES, catalog.EVALUATION)
             for n in catalog.names(group)]
    for name in (n for n in shown if n != catalog.TOKEN_VOCABULARY.name):
        ref = lake.table_ref(cfg.lakehouse, name)
        if lake.is_delta(spark, ref):
            rows = spark.table(ref.name).count()
            print(f"  {ref.name:<28} {rows:>9} rows  {ref.path}")
    schema = lake.table_ref(cfg.lakehouse, catalog.USER_VALUE.name).schema_name
    query = (f"SELECT segment, count(*) AS users FROM {schema}.latest_user_segments "
             "GROUP BY segment ORDER BY users DESC")
    if lake.is_delta(spark, lake.table_ref(cfg.lakehouse, catalog.USER_SEGMENTS.name)):
        print(f"read them with Spark SQL, e.g.:\n  {query}")
        for row in spark.sql(query).collect():  # one row per segment
            print(f"    {row['segment']:<22} {row['users']:>9}")
    profiles = lake.table_ref(cfg.lakehouse, catalog.SEGMENT_PROFILES.name)
    if lake.is_delta(spark, profiles):
        learned = (f"SELECT learned_segment, name, users FROM {schema}.latest_segment_profiles "
                   "ORDER BY learned_segment")
        print(f"learned segments:\n  {learned}")
        for row in spark.sql(learned).collect():  # one row per learned segment
            print(f"  - {row['learned_segment']:>3} {row['name']:<58} {row['users']:>9} users")
    reports = sorted(glob.glob(os.path.join(cfg.evaluate.report_dir, "*.html")), key=os.path.getmtime)
    if reports:
        print(f"backtest report (open in a browser): {reports[-1]}")
    print("exploration notebook: notebooks/explore_output_tables.ipynb")
    return 0


if __name__ == "__main__":
    sys.exit(main())
