"""The two reference benchmarks: CDNOW (real) and synthetic data with ground truth.

Run::

    .venv/bin/python -m bench.bench_accuracy cdnow [--model train|none]
    .venv/bin/python -m bench.bench_accuracy synthetic [--users 200000] [--model train|none]

Each writes ``bench/results/evaluate_<name>.json`` (metrics per method, checks, timings,
machine), the HTML report ``bench/results/evaluate_<name>.html``, and appends its metrics to
the ``evaluation_metrics`` table of a scratch lakehouse under ``--workdir`` (a temp dir by
default, removed afterwards unless ``--keep``).

* **cdnow**: the CDNOW master order log shipped with lifetimes (23,570 customers, 1997-01 ..
  1998-06). Calibration = orders before 1997-10-01, holdout = 1997-10-01 .. 1998-06-30 (273
  days, the split of Fader, Hardie & Lee 2005). All customers were acquired in 1997 Q1, so no
  earlier origin has a 273-day label window: the supervised methods (GBM, RFM heuristic,
  model) learn from a seeded half of the customers (features before the cut, holdout labels)
  and every method is scored on the other half. BG/NBD + Gamma-Gamma is fitted on every
  customer's calibration RFM, as lifetimes is used, and the benchmark checks that its figures
  equal lifetimes run directly (``calibration_and_holdout_data`` + ``BetaGeoFitter``).
* **synthetic**: the seeded buy-till-you-die generator (ingest team) with >= 200k users; the
  oracle (truth tables) is the ceiling, and the model's Gini and Qini are reported as a share
  of the oracle's.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
CDNOW_CUT = dt.date(1997, 10, 1)
CDNOW_END = dt.date(1998, 6, 30)
CDNOW_HORIZON = (CDNOW_END - CDNOW_CUT).days + 1  # 273 days: 1997-10-01 .. 1998-06-30 inclusive


def cdnow_path() -> Path:
    """The CDNOW master file shipped inside the lifetimes wheel."""
    import lifetimes

    return Path(lifetimes.__file__).parent / "datasets" / "CDNOW_master.txt"


def cdnow_orders(spark, path: Optional[str] = None):
    """CDNOW as an orders frame: user_id, order_ts (the day, 00:00 UTC), amount.

    Grain: one row per line of the file (a customer may have several lines on one day; the
    features count purchase days, as lifetimes does).
    """
    from pyspark.sql import functions as F

    lines = spark.read.text(str(path or cdnow_path()))
    parts = F.split(F.trim(F.col("value")), r"\s+")
    rows = lines.select(parts.getItem(0).alias("user_id"), parts.getItem(1).alias("day"),
                        parts.getItem(3).alias("dollar_value"))
    return rows.filter(F.col("user_id") != F.lit("customer_id")).select(
        "user_id", F.to_timestamp("day", "yyyyMMdd").alias("order_ts"),
        F.col("dollar_value").cast("double").alias("amount"))


def lifetimes_reference(penalizer: float, gg_penalizer: float) -> pd.DataFrame:
    """lifetimes run directly on CDNOW: calibration RFM, holdout, BG/NBD + Gamma-Gamma predictions."""
    from lifetimes import BetaGeoFitter, GammaGammaFitter
    from lifetimes.utils import calibration_and_holdout_data

    tx = pd.read_csv(cdnow_path(), sep=r"\s+", dtype={"customer_id": str, "date": str})
    tx["date"] = pd.to_datetime(tx["date"], format="%Y%m%d")
    s = calibration_and_holdout_data(tx, "customer_id", "date",
                                     calibration_period_end=str(CDNOW_CUT - dt.timedelta(days=1)),
                                     observation_period_end=str(CDNOW_END), monetary_value_col="dollar_value")
    bgf = BetaGeoFitter(penalizer_coef=penalizer).fit(s["frequency_cal"], s["recency_cal"], s["T_cal"])
    rep = s[(s["frequency_cal"] > 0) & (s["monetary_value_cal"] > 0)]
    ggf = GammaGammaFitter(penalizer_coef=gg_penalizer).fit(rep["frequency_cal"], rep["monetary_value_cal"])
    out = s.copy()
    out["expected_purchases"] = bgf.conditional_expected_number_of_purchases_up_to_time(
        s["duration_holdout"], s["frequency_cal"], s["recency_cal"], s["T_cal"])
    out["p_alive"] = bgf.conditional_probability_alive(s["frequency_cal"], s["recency_cal"], s["T_cal"])
    out["expected_value"] = ggf.conditional_expected_average_profit(
        s["frequency_cal"], s["monetary_value_cal"]) * out["expected_purchases"]
    # lifetimes' monetary_value_holdout is a mean per transaction line, not per day: sum the lines
    in_holdout = (tx["date"] > pd.Timestamp(CDNOW_CUT - dt.timedelta(days=1))) & (tx["date"] <= pd.Timestamp(CDNOW_END))
    spend = tx[in_holdout].groupby("customer_id")["dollar_value"].sum()
    out["holdout_spend"] = spend.reindex(s.index).fillna(0.0)
    out.attrs["bgf_params"] = {k: float(v) for k, v in bgf.params_.items()}
    out.attrs["ggf_params"] = {k: float(v) for k, v in ggf.params_.items()}
    return out.rename_axis("user_id").reset_index()


def check_cdnow_against_lifetimes(result, reference: pd.DataFrame) -> dict:
    """How far the pipeline's CDNOW RFM, labels and BG/NBD figures are from lifetimes run directly.

    Compared on the scored (test) users: their RFM at the cut and holdout spend, and the
    BG/NBD + Gamma-Gamma predictions (fitted by the pipeline on every user's calibration RFM,
    by lifetimes on its own summary of the same file).
    """
    from ulv_spark.evaluate import metrics as M

    split = result.splits[0]
    at_cut = split.test.merge(reference, on="user_id", how="inner", validate="one_to_one")
    rfm = {c: float(np.max(np.abs(at_cut[c] - at_cut[f"{c}_cal"]))) for c in ("frequency", "recency", "T",
                                                                                 "monetary_value")}
    label_spend = float(np.max(np.abs(at_cut["label_value"] - at_cut["holdout_spend"])))
    ours = split.predictions.get("bgnbd_gg")
    check = {"test_users": int(len(split.test)), "test_users_matched": int(len(at_cut)),
             "users_in_file": int(len(reference)),
             "rfm_max_abs_diff": rfm, "holdout_spend_max_abs_diff": label_spend,
             "lifetimes_bgf_params": reference.attrs["bgf_params"],
             "lifetimes_ggf_params": reference.attrs["ggf_params"]}
    if ours is not None:
        both = ours.merge(reference, on="user_id", how="inner", suffixes=("", "_lifetimes"), validate="one_to_one")
        for col in ("expected_purchases", "p_alive", "expected_value"):
            check[f"{col}_max_rel_diff"] = float(np.max(np.abs(both[col] - both[f"{col}_lifetimes"])
                                                        / np.maximum(np.abs(both[f"{col}_lifetimes"]), 1e-12)))
        check["lifetimes_direct_metrics_on_test_users"] = {
            "value_gini": M.normalized_gini(at_cut["label_value"], at_cut["expected_value"]),
            "value_decile_mape": M.decile_mape(at_cut["label_value"], at_cut["expected_value"]),
            "value_spearman": M.spearman(at_cut["label_value"], at_cut["expected_value"]),
        }
    return check


def machine() -> dict:
    return {"platform": platform.platform(), "python": sys.version.split()[0], "cpus": os.cpu_count()}


def _session(workdir: Path):
    from ulv_spark.config import LakehouseConf, SparkConf
    from ulv_spark.spark import get_spark

    lake = LakehouseConf(root=str(workdir / "lakehouse"), schema="bench_eval", shared_dir=str(workdir / "shared"))
    # shuffle and spill files under the scratch dir, not /tmp: a long run must survive /tmp clean-ups
    extra = {"spark.local.dir": str(workdir / "spark-local")}
    return get_spark(SparkConf(master="local[2]", app_name="ulv_spark_bench_evaluate", shuffle_partitions=8,
                               driver_memory="2g", extra=extra), lake), lake


def _config(workdir: Path, overrides: dict):
    from ulv_spark.config import load_config

    return load_config(REPO / "conf" / "local.yaml", {**_config_base(workdir), **overrides})


def _config_base(workdir: Path) -> dict:
    return {"lakehouse.root": str(workdir / "lakehouse"), "lakehouse.schema": "bench_eval",
            "lakehouse.shared_dir": str(workdir / "shared"), "spark.driver_memory": "2g",
            "evaluate.report_dir": str(workdir / "reports"), "evaluate.model_dir": str(workdir / "models"),
            "train.model_dir": str(workdir / "shared" / "models"),
            "train.checkpoint_dir": str(workdir / "shared" / "checkpoints"),
            "train.petastorm_cache": str(workdir / "shared" / "petastorm"),
            "train.parquet_dir": str(workdir / "shared" / "train_feed"),
            # one OpenMP thread: on a shared 2-core machine spinning threads make GBM fits many times slower
            "evaluate.gbm_threads": 1}


def _finish(name: str, spark, cfg, result, facts: dict, extra: dict, seconds: dict, run_id: str,
            as_of: dt.date, tag: str = "") -> dict:
    from ulv_spark import lake
    from ulv_spark.evaluate import pipeline
    from ulv_spark.evaluate.report import write_report
    from ulv_spark.catalog import EVALUATION_METRICS

    ref = lake.table_ref(cfg.lakehouse, EVALUATION_METRICS.name)
    lake.append(spark, pipeline.metrics_frame(spark, result.metrics, as_of=as_of, run_id=run_id), ref,
                EVALUATION_METRICS)
    notes = [f"{k}: {json.dumps(v, default=str)}" for k, v in extra.items()]
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"evaluate_{name}" + (f"_{tag}" if tag else "")
    report = RESULTS / f"{stem}.html"
    wide = result.pivot()
    out = {"benchmark": name, "run_id": run_id, "machine": machine(), "seconds": seconds, "facts": facts,
           "checks": extra, "skipped": {s.split.name: s.skipped for s in result.splits},
           "margins": pipeline.margins_headline(result),
           "metrics": {f"{split}|{metric}": {m: (None if pd.isna(v) else float(v)) for m, v in row.items()}
                       for (split, metric), row in wide.iterrows()},
           "report": str(report.relative_to(REPO)), "metrics_table": ref.name}
    # the numbers first: a long run must not be lost to a plotting problem
    (RESULTS / f"{stem}.json").write_text(json.dumps(out, indent=2, default=str), encoding="utf-8")
    write_report(result, str(report), title=f"ulv_spark reference benchmark: {name}",
                 facts={**facts, "run_id": run_id, "variant": tag or "default"}, notes=notes)
    return out


def run_cdnow(workdir: Path, *, model: str = "train", test_share: float = 0.5, seed: int = 7,
              overrides: Optional[dict] = None, tag: str = "") -> dict:
    """The CDNOW benchmark (see the module docstring); returns what it writes to the JSON file."""
    from ulv_spark.evaluate.backtest import Split
    from ulv_spark.evaluate.pipeline import EvaluationInputs, run_evaluation
    from ulv_spark.runtime import new_run_id

    spark, _ = _session(workdir)
    cfg = _config(workdir, {"run.horizon_days": CDNOW_HORIZON, "evaluate.dataset": "cdnow",
                            "evaluate.test_share": test_share, "evaluate.train_origins": 0, "evaluate.seed": seed,
                            "evaluate.model": model, "evaluate.methods": ["model", "bgnbd_gg", "gbm", "rfm_heuristic"],
                            **(overrides or {})})
    split = Split(CDNOW_CUT, CDNOW_HORIZON, (), test_share, seed)
    seconds = {}
    start = time.perf_counter()
    result, facts = run_evaluation(spark, EvaluationInputs(orders=cdnow_orders(spark)), splits=[split], cfg=cfg,
                                   dataset="cdnow")
    seconds["evaluation"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    reference = lifetimes_reference(cfg.evaluate.bgnbd_penalizer, cfg.evaluate.gg_penalizer)
    checks = {"reproduces_lifetimes": check_cdnow_against_lifetimes(result, reference)}
    seconds["lifetimes_reference"] = round(time.perf_counter() - start, 1)
    facts.update({"calibration": f"orders before {CDNOW_CUT}", "holdout": f"{CDNOW_CUT} .. {CDNOW_END}",
                  "test users": len(result.splits[0].test)})
    return _finish("cdnow", spark, cfg, result, facts, checks, seconds, new_run_id("bench-cdnow"), CDNOW_END, tag)


SYNTHETIC_RUN_DATE = dt.date(2025, 11, 21)  # evaluation origin D - 90 = 2025-08-23, a campaign wave day


def _local_sources() -> dict:
    """The demo's source mappings (conf/local.yaml): the generator writes the files they read."""
    import yaml

    raw = yaml.safe_load((REPO / "conf" / "local.yaml").read_text(encoding="utf-8"))["sources"]
    return {table: source for table, source in raw.items() if source}


def run_synthetic(workdir: Path, *, users: int = 200_000, model: str = "train", run_date: dt.date = SYNTHETIC_RUN_DATE,
                  overrides: Optional[dict] = None, tag: str = "", reuse: bool = False) -> dict:
    """The synthetic benchmark: generate, ingest, backtest at origin run_date - H with the oracle.

    With ``reuse``, a lakehouse already generated and ingested in ``workdir`` (same users and
    conf) is used as it is.
    """
    import yaml

    from ulv_spark import lake
    from ulv_spark.cli import main as cli_main
    from ulv_spark.evaluate.pipeline import EvaluationInputs, run_evaluation, splits_from_conf
    from ulv_spark.runtime import new_run_id

    spark, _ = _session(workdir)
    raw = workdir / "raw"
    conf_overrides = {"generate.users": users, "generate.partitions": max(4, users // 50_000),
                      "generate.output_dir": str(raw), "evaluate.dataset": "synthetic", "evaluate.model": model,
                      **(overrides or {})}
    cfg = _config(workdir, conf_overrides)
    sources = {t: {**s, "path": str(raw / t)} for t, s in _local_sources().items()}
    conf_file = workdir / "synthetic.yaml"
    conf_file.write_text(yaml.safe_dump({"extends": str(REPO / "conf" / "local.yaml"), "sources": sources}),
                         encoding="utf-8")
    args = ["--conf", str(conf_file), "--as-of", run_date.isoformat()]
    for key, value in {**_config_base(workdir), **conf_overrides}.items():
        text = value if isinstance(value, str) else json.dumps(value, default=lambda d: d.isoformat())
        args += ["--set", f"{key}={text}"]
    seconds = {}
    done = reuse and lake.is_delta(spark, lake.table_ref(cfg.lakehouse, "orders"))
    for command in () if done else ("generate", "ingest"):
        start = time.perf_counter()
        if cli_main([command, *args]) != 0:
            raise RuntimeError(f"ulv-spark {command} failed")
        seconds[command] = round(time.perf_counter() - start, 1)
    tables = {key: lake.table_ref(cfg.lakehouse, name) for key, name in (
        ("orders", "orders"), ("events", "events"), ("exposures", "campaign_exposures"),
        ("attributes", "user_attributes"), ("truth_users", "truth_users"), ("truth_uplift", "truth_uplift"))}
    inputs = EvaluationInputs(**{k: lake.read_table(spark, ref) for k, ref in tables.items()})
    splits = splits_from_conf(run_date, horizon_days=cfg.run.horizon_days, evaluate_cfg=cfg.evaluate)
    start = time.perf_counter()
    result, facts = run_evaluation(spark, inputs, splits=splits, cfg=cfg, dataset="synthetic")
    seconds["evaluation"] = round(time.perf_counter() - start, 1)
    facts.update({"users generated": users, "run date": run_date, "test users": len(result.splits[0].test)})
    wide = result.pivot()
    shares = {f"{metric}": {m: float(v) for m, v in row.dropna().items()}
              for (split, metric), row in wide.iterrows() if metric.endswith("_share_of_oracle")}
    from ulv_spark.evaluate.policy_backtest import truth_coverage

    coverage = truth_coverage(result.metrics)  # the off-policy estimates against the truth tables (issue 17)
    checks = {"share_of_oracle": shares, "policy_truth_coverage": coverage,
              "policy_truth_covered": f"{sum(1 for c in coverage if c['covered'])} of {len(coverage)}"}
    return _finish("synthetic", spark, cfg, result, facts, checks, seconds,
                   new_run_id("bench-synthetic"), run_date, tag)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_accuracy", description=__doc__.splitlines()[0])
    parser.add_argument("benchmark", choices=["cdnow", "synthetic"])
    parser.add_argument("--model", choices=["train", "none"], default="train",
                        help="train the model on the benchmark's training rows, or leave it out")
    parser.add_argument("--users", type=int, default=200_000, help="synthetic: number of users")
    parser.add_argument("--workdir", default=None, help="scratch lakehouse (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch lakehouse")
    parser.add_argument("--reuse", action="store_true",
                        help="synthetic: reuse the lakehouse already generated and ingested in --workdir")
    parser.add_argument("--test-share", type=float, default=0.5,
                        help="cdnow: share of customers scored (the rest trains the supervised methods)")
    parser.add_argument("--tag", default="", help="suffix of the result files (variants: evaluate_<name>_<tag>.json)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="conf override, e.g. --set train.epochs=2")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix=f"ulv_bench_{args.benchmark}_"))
    workdir.mkdir(parents=True, exist_ok=True)
    overrides = dict(item.split("=", 1) for item in args.overrides)
    import yaml

    overrides = {k: yaml.safe_load(v) for k, v in overrides.items()}
    try:
        if args.benchmark == "cdnow":
            out = run_cdnow(workdir, model=args.model, test_share=args.test_share, overrides=overrides,
                            tag=args.tag)
        else:
            out = run_synthetic(workdir, users=args.users, model=args.model, overrides=overrides, tag=args.tag,
                                reuse=args.reuse)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
