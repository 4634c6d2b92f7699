"""Evaluation speed: numpy metrics vs their scikit-learn / scipy references, and the report.

All on one seeded frame of ``--users`` users in one process, so the ratios compare like with
like on a noisy machine:

* metrics: ``evaluate.metrics`` ROC-AUC, average precision, Spearman vs scikit-learn's
  ``roc_auc_score`` / ``average_precision_score`` and scipy's ``spearmanr`` (best of
  ``--repeats``), plus normalised Gini, decile MAPE, ECE, Qini and AUUC;
* report: rendering the HTML (5 embedded PNG plots) for a backtest of four methods;
* bootstrap: the paired bootstrap of the model's margins (``evaluate.bootstrap``) with
  ``--resamples`` resamples over ``--bootstrap-users`` test users, for the demo's method set
  (the model, 3 value / churn baselines and 3 uplift baselines on 2 treatment arms).

The accuracy benchmarks (CDNOW, synthetic) are ``python -m bench.bench_accuracy``.

Run: ``.venv/bin/python -m bench.bench_evaluate [--users 1000000] [--repeats 3]``.
Prints and writes ``bench/results/evaluate_speed.json``; ``--bootstrap-only`` times the bootstrap
alone (``bench/results/evaluate_bootstrap_speed.json``).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bootstrap_seconds(users: int, resamples: int, seed: int = 0) -> dict:
    """Seconds of the paired bootstrap for a demo-like split (see the module docstring)."""
    from ulv_spark.evaluate import bootstrap as B
    from ulv_spark.evaluate.backtest import evaluate_predictions, resampled_metrics

    rng = np.random.default_rng(seed)
    n = users
    value = rng.gamma(0.3, 60, n) * (rng.random(n) < 0.35)
    arm = rng.choice(["control", "coupon_10", "free_shipping", None], n, p=[0.1, 0.1, 0.1, 0.7])
    test = pd.DataFrame({"user_id": np.arange(n).astype(str), "label_value": value,
                         "label_churned": (value == 0).astype(int), "arm": arm, "is_control": arm == "control",
                         "label_converted": (rng.random(n) < 0.2).astype(float),
                         "label_response_value": rng.gamma(1, 20, n)})
    preds = {}
    for m in ("model", "gbm", "rfm_heuristic", "bgnbd_gg"):
        preds[m] = pd.DataFrame({"user_id": test["user_id"], "expected_value": value * rng.lognormal(0, 1, n),
                                 "churn_probability": rng.random(n)})
    for m in ("model", "two_model_gbm", "x_learner", "class_transformation"):
        up = {f"uplift_{k}:{a}": rng.normal(0, 1, n) for k in ("conversion", "value")
              for a in ("coupon_10", "free_shipping")}
        preds[m] = (preds[m].assign(**up) if m in preds else pd.DataFrame({"user_id": test["user_id"], **up}))
    full = {m: evaluate_predictions(test, p, uplift_top_share=0.2) for m, p in preds.items()}
    cache: dict = {}
    start, cpu = time.perf_counter(), time.process_time()
    margins = B.paired_margins(full, lambda m, w: resampled_metrics(test, preds[m], w, cache=cache), n,
                               resamples=resamples, seed=seed)
    # CPU seconds too: on a shared machine the wall clock mostly measures the other jobs
    return {"users": n, "resamples": resamples, "methods": len(preds), "margins": len(margins),
            "seconds": round(time.perf_counter() - start, 2), "cpu_seconds": round(time.process_time() - cpu, 2)}


def main(argv=None) -> int:
    from scipy import stats
    from sklearn.metrics import average_precision_score, roc_auc_score

    from ulv_spark.evaluate import metrics as M
    from ulv_spark.evaluate.backtest import Split, run_backtest
    from ulv_spark.evaluate.report import render_report

    parser = argparse.ArgumentParser(prog="python -m bench.bench_evaluate")
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bootstrap-users", type=int, default=15_000)
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--bootstrap-only", action="store_true")
    args = parser.parse_args(argv)
    machine = {"platform": platform.platform(), "python": sys.version.split()[0], "cpus": os.cpu_count(),
               "load_average_1m": round(os.getloadavg()[0], 2)}
    if args.bootstrap_only:
        results = {"bootstrap": bootstrap_seconds(args.bootstrap_users, args.resamples), "machine": machine}
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "evaluate_bootstrap_speed.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
        print(json.dumps(results, indent=2))
        return 0

    rng = np.random.default_rng(0)
    n = args.users
    value = rng.gamma(0.3, 60, n) * (rng.random(n) < 0.35)
    pred = value * rng.lognormal(0, 0.8, n) + rng.gamma(1, 5, n)
    churned = (value == 0).astype(int)
    prob = np.clip(0.65 + 0.3 * (churned - 0.65) + rng.normal(0, 0.2, n), 0, 1)
    treated = rng.integers(0, 2, n)
    uplift = rng.normal(0, 1, n)

    pairs = {
        "roc_auc": (lambda: M.roc_auc(churned, prob), lambda: roc_auc_score(churned, prob)),
        "average_precision": (lambda: M.average_precision(churned, prob),
                              lambda: average_precision_score(churned, prob)),
        "spearman": (lambda: M.spearman(value, pred), lambda: stats.spearmanr(value, pred)),
    }
    results = {"users": n, "repeats": args.repeats, "metrics_seconds": {}, "reference_seconds": {},
               "ratio_ours_over_reference": {}}
    for name, (ours, ref) in pairs.items():
        t_ours, t_ref = best_of(ours, args.repeats), best_of(ref, args.repeats)
        results["metrics_seconds"][name] = round(t_ours, 4)
        results["reference_seconds"][name] = round(t_ref, 4)
        results["ratio_ours_over_reference"][name] = round(t_ours / t_ref, 3)
    solo = {
        "normalized_gini": lambda: M.normalized_gini(value, pred),
        "decile_mape": lambda: M.decile_mape(value, pred),
        "expected_calibration_error": lambda: M.expected_calibration_error(churned, prob),
        "qini_coefficient": lambda: M.qini_coefficient(churned, treated, uplift),
        "auuc": lambda: M.auuc(churned, treated, uplift),
    }
    for name, fn in solo.items():
        results["metrics_seconds"][name] = round(best_of(fn, args.repeats), 4)

    # report rendering for a 4-method backtest on 20k users (plots dominate)
    from ulv_spark.evaluate.baselines import RfmHeuristic

    m = 20_000
    frame = pd.DataFrame({"user_id": [f"u{i}" for i in range(m)], "origin_date": dt.date(2025, 1, 1),
                          "frequency": rng.poisson(2, m).astype(float), "recency": rng.uniform(0, 100, m),
                          "T": np.full(m, 120.0), "monetary_value": rng.gamma(2, 20, m),
                          "label_value": value[:m], "label_churned": churned[:m]})
    frame["recency"] = np.minimum(frame["recency"], frame["T"])
    methods = []
    for q in (3, 4, 5, 6):
        method = RfmHeuristic(quantiles=q)
        method.name = f"rfm_q{q}"
        methods.append(method)
    result = run_backtest(frame, [Split(dt.date(2025, 1, 1), 90, test_share=0.5)], methods, dataset="bench")
    start = time.perf_counter()
    html = render_report(result)
    results["report_seconds_20k_users_4_methods"] = round(time.perf_counter() - start, 2)
    results["report_bytes"] = len(html.encode())
    results["bootstrap"] = bootstrap_seconds(args.bootstrap_users, args.resamples)
    results["machine"] = {"platform": platform.platform(), "python": sys.version.split()[0], "cpus": os.cpu_count(),
                          "load_average_1m": round(os.getloadavg()[0], 2)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "evaluate_speed.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
