"""Text ablation: the same methods with and without the text features, on the same backtest split.

Run (from the repo root; the scratch lakehouse goes under --workdir)::

    .venv/bin/python -m bench.bench_text_ablation --prepare [--workdir /tmp/ulv_text_ablation]
        [--methods gbm,model] [--bootstrap 1000] [--users N] [--compare text|fusion] [--set KEY=VALUE ...]

``--prepare`` runs ``generate`` (conf/local.yaml: 20,000 users, ``generate.texts: true``),
``ingest`` and ``embed`` into the workdir first; without it the workdir's lakehouse is reused.
Then the product backtest (``ulv_spark.evaluate.pipeline.run_evaluation``, the code behind
``ulv-spark evaluate``) runs twice on the same split: with ``features.text: true`` and with
``features.text: false`` (the text columns left out of the examples, so every method — the
model trained per split with ``evaluate.model: train``, and the GBM baseline — sees the same
features but the text ones). The two runs score the same test users, so the difference in value
Gini and churn AUC gets a paired bootstrap interval (test users resampled with replacement,
both variants' predictions kept together). Writes ``bench/results/text_ablation.json`` and
prints it.

``--compare fusion`` keeps ``features.text: true`` in both runs and switches only
``train.text_fusion`` (the per-event product text inside the transformer; the GBM is the same in
both, so only ``model`` is worth comparing); results go to ``bench/results/text_fusion_ablation.json``.
With ``--compare text`` (the default) the model "with text" has both the text features and the
fusion (train.text_fusion defaults to true) and "without text" neither. ``--users N`` sets
``generate.users`` (use the same N for ``--prepare`` and the runs).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def paired_bootstrap(actual, pred_a, pred_b, metric, *, n: int, seed: int = 7) -> dict:
    """metric(a) - metric(b) on the same rows, with a paired bootstrap 95 % interval over the rows."""
    actual, pred_a, pred_b = (np.asarray(x, dtype=float) for x in (actual, pred_a, pred_b))
    rng = np.random.default_rng(seed)
    point = metric(actual, pred_a) - metric(actual, pred_b)
    diffs = []
    for _ in range(n):
        idx = rng.integers(0, actual.size, actual.size)
        diffs.append(metric(actual[idx], pred_a[idx]) - metric(actual[idx], pred_b[idx]))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"with_text": float(metric(actual, pred_a)), "without_text": float(metric(actual, pred_b)),
            "difference": float(point), "ci95": [float(lo), float(hi)], "outside_interval": bool(lo > 0 or hi < 0)}


def _prepare(cfg, as_of: dt.date) -> dict:
    from ulv_spark.context import JobContext
    from ulv_spark.ingest.job import run_ingest
    from ulv_spark.synthetic.job import run_generate
    from ulv_spark.text.job import run_embed

    facts = {}
    for name, stage in (("generate", run_generate), ("ingest", run_ingest), ("embed", run_embed)):
        start = time.perf_counter()
        stage(JobContext(cfg=cfg, as_of=as_of, run_id=f"ablation-{name}", command=name))
        facts[f"{name}_seconds"] = round(time.perf_counter() - start, 1)
        print(f"{name}: {facts[f'{name}_seconds']} s", file=sys.stderr)
    return facts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--conf", default=str(REPO / "conf" / "local.yaml"))
    parser.add_argument("--workdir", default="/tmp/ulv_text_ablation", help="scratch dir (relative conf paths)")
    parser.add_argument("--prepare", action="store_true", help="generate, ingest and embed into the workdir first")
    parser.add_argument("--prepare-only", action="store_true", help="stop after --prepare")
    parser.add_argument("--methods", default="gbm,model", help="comma-separated evaluate methods to compare")
    parser.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamples")
    parser.add_argument("--users", type=int, default=None, help="generate.users (default: the conf's)")
    parser.add_argument("--compare", choices=("text", "fusion"), default="text",
                        help="text: features.text on/off; fusion: train.text_fusion on/off (text features on)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)

    from ulv_spark.config import load_config
    from ulv_spark.evaluate import metrics as M
    from ulv_spark.evaluate import pipeline
    from ulv_spark.evaluate.job import read_inputs
    from ulv_spark.features.job import read_inputs as read_feature_inputs
    from ulv_spark.features.job import read_text_inputs
    from ulv_spark.runtime import get_logger
    from ulv_spark.schemas import LABEL_CHURNED, LABEL_VALUE, ORIGIN_DATE, USER_ID
    from ulv_spark.spark import get_spark

    conf = str(Path(args.conf).resolve())
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    os.chdir(args.workdir)  # conf/local.yaml's relative paths land in the workdir
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    users = [f"generate.users={args.users}"] if args.users else []
    cfg = load_config(conf, [*users, *args.overrides, f"evaluate.methods=[{','.join(methods)}]", "evaluate.model=train"])
    as_of = cfg.run_date()
    spark = get_spark(cfg.spark, cfg.lakehouse)
    facts = {"conf": conf, "workdir": args.workdir, "as_of": as_of.isoformat(), "users": cfg.generate.users,
             "methods": methods, "compare": args.compare}
    if args.prepare or args.prepare_only:
        facts.update(_prepare(cfg, as_of))
        print(json.dumps(facts), file=sys.stderr)
    if args.prepare_only:
        spark.stop()
        return 0
    splits = pipeline.splits_from_conf(as_of, horizon_days=cfg.run.horizon_days, evaluate_cfg=cfg.evaluate)
    runs = {}
    for variant, text_on in (("with_text", True), ("without_text", False)):
        features = dataclasses.replace(cfg.features, text=text_on or args.compare == "fusion")
        train = dataclasses.replace(cfg.train, text_fusion=text_on)
        vcfg = dataclasses.replace(cfg, features=features, train=train,
                                   evaluate=dataclasses.replace(cfg.evaluate,
                                                                model_dir=f"{cfg.evaluate.model_dir}/{variant}"))
        inputs = read_inputs(spark, vcfg.lakehouse)
        inputs.text, text_facts = read_text_inputs(spark, vcfg, read_feature_inputs(spark, vcfg),
                                                   run_id=f"ablation-{variant}",
                                                   history_before=min(s.origin for s in splits), store=False,
                                                   log=get_logger("ulv_spark.features"))
        start = time.perf_counter()
        result, run_facts = pipeline.run_evaluation(spark, inputs, splits=splits, cfg=vcfg,
                                                    dataset=f"text_ablation_{variant}")
        runs[variant] = result.splits[0]
        facts[variant] = {"seconds": round(time.perf_counter() - start, 1), "text": text_facts,
                          "tabular_features": run_facts["tabular features"], "skipped": result.splits[0].skipped}
        print(f"{variant}: {facts[variant]['seconds']} s, {run_facts['tabular features']} features", file=sys.stderr)
    a, b = runs["with_text"], runs["without_text"]
    keys_a = list(zip(a.test[USER_ID], a.test[ORIGIN_DATE]))
    assert keys_a == list(zip(b.test[USER_ID], b.test[ORIGIN_DATE])), "the variants scored different test rows"
    value = a.test[LABEL_VALUE].astype(float).clip(lower=0.0).to_numpy()
    churned = a.test[LABEL_CHURNED].astype(int).to_numpy()
    facts["split"] = a.split.name
    facts["test_users"] = len(a.test)
    facts["results"] = {}
    for method in methods:
        if method not in a.predictions or method not in b.predictions:
            facts["results"][method] = {"skipped": a.skipped.get(method) or b.skipped.get(method)}
            continue
        pa, pb = a.predictions[method], b.predictions[method]
        facts["results"][method] = {
            "value_gini": paired_bootstrap(value, pa["expected_value"], pb["expected_value"], M.normalized_gini,
                                           n=args.bootstrap),
            "churn_auc": paired_bootstrap(churned, pa["churn_probability"], pb["churn_probability"], M.roc_auc,
                                          n=args.bootstrap),
        }
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "text_ablation.json" if args.compare == "text" else "text_fusion_ablation.json"
    (RESULTS / name).write_text(json.dumps(facts, indent=2, default=str) + "\n")
    print(json.dumps(facts, indent=2, default=str))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
