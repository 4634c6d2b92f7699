"""Spark side of the evaluation: examples at the backtest origins, truth, the driver frame.

The backtest itself (backtest.py) runs on one pandas frame on the driver, because lifetimes
and scikit-learn are single-node. This module builds that frame with the features team's
``build_training_examples`` (the same point-in-time features and labels the model is trained
on), joins the synthetic truth when there is one, and collects only the columns the methods
need, sampling the training rows down to ``evaluate.max_train_rows``.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from ulv_spark.evaluate.backtest import Split, partition, rolling_splits
from ulv_spark.evaluate.baselines import (UPLIFT_KINDS, BgNbdGammaGamma, ClassTransformationUplift, RfmHeuristic,
                                          TabularGbm, TwoModelUplift, XLearnerUplift)
from ulv_spark.evaluate.methods import (TRUE_EXPECTED_PURCHASES, TRUE_EXPECTED_SPEND, TRUE_P_ALIVE, ModelMethod,
                                        NetworkOnlyMethod, Oracle, true_uplift_column)
from ulv_spark.runtime import get_logger
from ulv_spark.schemas import (ARM, AS_OF_DATE, CAMPAIGN_ID, IS_CONTROL, LABEL_CHURNED, LABEL_CONVERTED,
                               LABEL_PURCHASES, LABEL_RESPONSE_VALUE, LABEL_VALUE, ORIGIN_DATE, SEQ_MASK, SEQ_TEXT,
                               SEQ_TOKENS, USER_ID, feature_columns)

LABEL_COLUMNS = (LABEL_VALUE, LABEL_PURCHASES, LABEL_CHURNED, CAMPAIGN_ID, ARM, IS_CONTROL, LABEL_CONVERTED,
                 LABEL_RESPONSE_VALUE)


@dataclass
class EvaluationInputs:
    """The bronze inputs (Spark DataFrames) the examples are built from; truth on synthetic data."""

    orders: object
    events: Optional[object] = None
    exposures: Optional[object] = None
    attributes: Optional[object] = None
    truth_users: Optional[object] = None
    truth_uplift: Optional[object] = None
    text: Optional[object] = None   # features.text.TextInputs (features.job.read_text_inputs), or None


def splits_from_conf(as_of: dt.date, *, horizon_days: int, evaluate_cfg) -> list[Split]:
    """The rolling-origin splits of ``evaluate`` conf for run date ``as_of``."""
    return rolling_splits(as_of, horizon_days=horizon_days, origins=evaluate_cfg.origins,
                          step_days=evaluate_cfg.origin_step_days, train_origins=evaluate_cfg.train_origins,
                          test_share=evaluate_cfg.test_share, seed=evaluate_cfg.seed)


def needed_origins(splits: Sequence[Split]) -> list[dt.date]:
    """Every evaluation and training origin of ``splits``, oldest first."""
    return sorted({s.origin for s in splits} | {d for s in splits for d in s.train_origins})


def examples_at_origins(inputs: EvaluationInputs, *, origins: Sequence[dt.date], horizon_days: int, features_cfg):
    """Features at each origin joined with the labels of [origin, origin + H).

    Grain: one row per (user_id, origin_date) for every user seen before origin_date. Each
    origin is one ``build_training_examples`` call with as_of = origin + H and a single origin,
    so any set of origins works whatever ``features.origin_step_days`` is.
    """
    from ulv_spark.features import build_training_examples

    single = dataclasses.replace(features_cfg, training_origins=1)
    parts = [build_training_examples(inputs.orders, inputs.events, inputs.exposures, inputs.attributes,
                                     as_of=origin + dt.timedelta(days=horizon_days), horizon_days=horizon_days,
                                     features_cfg=single, text=inputs.text)
             for origin in sorted(origins)]
    return reduce(lambda a, b: a.unionByName(b), parts)


def truth_at_origins(truth_users, truth_uplift, *, origins: Sequence[dt.date], horizon_days: int):
    """The synthetic truth per (user_id, origin_date), true effects pivoted to one column per arm.

    Grain: one row per (user_id, origin_date) of truth_users at the given origins and horizon.

    Returns:
        user_id, origin_date, true_expected_spend, true_expected_purchases, true_p_alive and,
        per non-control arm, true_uplift_conversion:<arm> and true_uplift_value:<arm>.
    """
    from pyspark.sql import functions as F

    at = F.col(AS_OF_DATE).isin(list(origins))
    users = truth_users.filter(at & (F.col("horizon_days") == F.lit(horizon_days))).select(
        USER_ID, F.col(AS_OF_DATE).alias(ORIGIN_DATE),
        F.col("expected_spend").alias(TRUE_EXPECTED_SPEND),
        F.col("expected_purchases").alias(TRUE_EXPECTED_PURCHASES),
        F.col("p_alive").alias(TRUE_P_ALIVE))
    if truth_uplift is None:
        return users
    uplift = truth_uplift.filter(at)
    arms = sorted(r[0] for r in uplift.select(ARM).distinct().collect())  # a handful of names
    if not arms:
        return users
    pivoted = (uplift.groupBy(USER_ID, F.col(AS_OF_DATE).alias(ORIGIN_DATE))
               .agg(*[F.max(F.when(F.col(ARM) == F.lit(arm), F.col(f"true_uplift_{kind}")))
                      .alias(true_uplift_column(kind, arm)) for arm in arms for kind in UPLIFT_KINDS
                      if f"true_uplift_{kind}" in uplift.columns]))
    return users.join(pivoted, on=[USER_ID, ORIGIN_DATE], how="left")


def driver_frame(examples, *, eval_origins: Sequence[dt.date], truth=None, with_sequences: bool = False,
                 max_train_rows: int = 300_000, seed: int = 7, log=None) -> tuple[pd.DataFrame, list[str]]:
    """Collect the examples the backtest needs to the driver as pandas.

    Rows at the evaluation origins are all kept; the other (training-only) rows are sampled
    down to about ``max_train_rows`` with a seeded hash of user_id. Only user_id, origin_date,
    the tabular features, the labels, the truth (when given) and, for the model, the token
    sequences are collected. ``examples`` should be persisted by the caller (it is counted first).

    Returns:
        (frame, feature column names)
    """
    from pyspark.sql import functions as F

    log = log or get_logger("ulv_spark.evaluate")
    features = feature_columns(examples.schema)
    is_eval = F.col(ORIGIN_DATE).isin(list(eval_origins))
    train_rows = examples.filter(~is_eval).count()
    rows = examples
    if train_rows > max_train_rows:
        keep = int(1_000_000 * max_train_rows / train_rows)
        bucket = F.pmod(F.xxhash64(F.col(USER_ID), F.col(ORIGIN_DATE), F.lit(seed)), F.lit(1_000_000))
        rows = examples.filter(is_eval | (bucket < F.lit(keep)))
        log.info("evaluation: %d training-only rows sampled to about %d", train_rows, max_train_rows)
    sequence = [SEQ_TOKENS, SEQ_MASK] + ([SEQ_TEXT] if SEQ_TEXT in examples.columns else [])
    columns = [USER_ID, ORIGIN_DATE, *features, *LABEL_COLUMNS] + (sequence if with_sequences else [])
    rows = rows.select(*columns)
    if truth is not None:
        rows = rows.join(truth, on=[USER_ID, ORIGIN_DATE], how="left")
    frame = rows.toPandas()  # documented driver collect: evaluation only, needed columns only
    frame[ORIGIN_DATE] = pd.to_datetime(frame[ORIGIN_DATE]).dt.date
    return frame, features


def build_methods(evaluate_cfg, *, horizon_days: int, features: Sequence[str], model_root: Optional[str] = None,
                  model_by_split: Optional[dict] = None, has_truth: bool = False,
                  tree_ablation: bool = False) -> tuple[list, dict[str, str]]:
    """The method objects of ``evaluate.methods``, and why any asked-for method is left out.

    ``tree_ablation`` (train.tree_blend is on): the model also runs as ``model_network``, its
    network alone without the tree companion (the ablation row of the blend)."""
    threads = evaluate_cfg.gbm_threads or None
    gbm = dict(feature_columns=list(features), max_iter=evaluate_cfg.gbm_max_iter,
               learning_rate=evaluate_cfg.gbm_learning_rate, random_state=evaluate_cfg.seed, threads=threads)
    wanted = list(evaluate_cfg.methods)
    methods, left_out = [], {}
    if "model" in wanted:
        if evaluate_cfg.model == "none":
            left_out["model"] = "evaluate.model is none"
        elif model_by_split or model_root:
            kinds = (ModelMethod, NetworkOnlyMethod) if tree_ablation else (ModelMethod,)
            methods.extend(kind(by_split=model_by_split) if model_by_split else kind(model_root=model_root)
                           for kind in kinds)
        else:
            left_out["model"] = "no model directory"
    if "oracle" in wanted:
        if has_truth:
            methods.append(Oracle())
        else:
            left_out["oracle"] = "no truth tables (synthetic data only)"
    if "bgnbd_gg" in wanted:
        methods.append(BgNbdGammaGamma(horizon_days, penalizer=evaluate_cfg.bgnbd_penalizer,
                                       gg_penalizer=evaluate_cfg.gg_penalizer))
    if "gbm" in wanted:
        methods.append(TabularGbm(**gbm))
    if "rfm_heuristic" in wanted:
        methods.append(RfmHeuristic(quantiles=evaluate_cfg.rfm_quantiles))
    if "two_model_gbm" in wanted:
        methods.append(TwoModelUplift(**gbm))
    if "x_learner" in wanted:
        methods.append(XLearnerUplift(**gbm))
    if "class_transformation" in wanted:
        methods.append(ClassTransformationUplift(**gbm))
    return methods, left_out


def split_training_rows(spark, examples, frame: pd.DataFrame, split: Split):
    """The Spark rows a model trained for ``split`` may learn from (same rule as backtest.partition).

    Rows at the split's training origins, plus the non-test users at the evaluation origin
    when the split holds out a share of users; the test users come from the driver frame, so
    model and baselines exclude exactly the same users.
    """
    from pyspark.sql import functions as F

    past = examples.filter(F.col(ORIGIN_DATE).isin(list(split.train_origins)))
    if split.test_share >= 1:
        return past
    test_ids = partition(frame, split).test[[USER_ID]]
    tests = spark.createDataFrame(test_ids.astype({USER_ID: str}), f"{USER_ID} STRING")
    at_origin = examples.filter(F.col(ORIGIN_DATE) == F.lit(split.origin))
    return past.unionByName(at_origin.join(tests, on=USER_ID, how="left_anti"))


def train_split_models(spark, examples, frame: pd.DataFrame, splits: Sequence[Split], cfg, *, dataset: str,
                       log=None) -> dict[str, str]:
    """Train one model per split on that split's training rows (TorchDistributor, train conf).

    Models go to ``evaluate.model_dir/<dataset>`` (never to train.model_dir, so scoring never
    picks a backtest model). A model for a temporal split is recorded as trained for the
    origin; one that also learned from other users at the origin, for origin + H.

    Returns:
        split name -> model directory.
    """
    from ulv_spark.config import to_dict
    from ulv_spark.features import vocab_size, vocabulary_fingerprint
    from ulv_spark.train import fit

    log = log or get_logger("ulv_spark.evaluate")
    root = Path(cfg.evaluate.model_dir)
    train_cfg = dataclasses.replace(cfg.train, model_dir=str(root / dataset), checkpoint_dir=str(root / "_checkpoints"))
    out = {}
    for split in splits:
        rows = split_training_rows(spark, examples, frame, split)
        trained_for = split.origin if split.test_share >= 1 else split.origin + dt.timedelta(days=split.horizon_days)
        summary = fit.train_model(spark, rows, train_cfg=train_cfg, seq_len=cfg.features.sequence_length,
                                  vocab_size=vocab_size(cfg.features),
                                  vocab_fingerprint=vocabulary_fingerprint(cfg.features),
                                  horizon_days=split.horizon_days, as_of=trained_for, conf=to_dict(cfg),
                                  data_version=f"backtest:{dataset}:{split.name}")
        if summary.get("status") != "finished":
            raise ValueError(f"model training for {split.name} stopped: {summary.get('status')}")
        log.info("evaluation: trained model %s for %s (%s rows)", summary["model_dir"], split.name,
                 summary.get("rows_train"))
        out[split.name] = summary["model_dir"]
    return out


def metrics_frame(spark, metrics: pd.DataFrame, *, as_of: dt.date, run_id: str):
    """The evaluation_metrics rows (Spark) of a backtest's long metrics table."""
    from ulv_spark.catalog import EVALUATION_METRICS

    rows = metrics.assign(**{AS_OF_DATE: as_of, "run_id": run_id})[EVALUATION_METRICS.column_names]
    return spark.createDataFrame(rows.astype({"value": float}), EVALUATION_METRICS.ddl())


HEADLINE_METRICS = ("value_gini", "value_decile_mape", "value_spearman", "churn_auc", "churn_pr_auc", "churn_ece",
                    "qini_conversion", "qini_value", "value_gini_share_of_oracle", "qini_conversion_share_of_oracle")


def headline(metrics: pd.DataFrame) -> dict:
    """{split: {method: {metric: value}}} for the headline metrics (the job summary)."""
    out: dict = {}
    for row in metrics[metrics["metric"].isin(HEADLINE_METRICS)].itertuples(index=False):
        out.setdefault(row.split, {}).setdefault(row.method, {})[row.metric] = round(float(row.value), 4)
    return out


# metrics whose margin over the best other method the evaluate summary shows (all are in the table)
HEADLINE_MARGINS = ("value_gini", "value_spearman", "value_decile_mape", "value_total_ratio", "churn_auc", "churn_ece",
                    "qini_conversion", "qini_value", "uplift_at_k_conversion", "uplift_at_k_value")


def margins_headline(result) -> dict:
    """{split: {metric: {best_other, model, other, margin, lo, hi, p_not_better}}}: the model's
    margin over the best other non-oracle method on the headline metrics (the job summary)."""
    out: dict = {}
    for res in result.splits:
        for m in res.margins:
            if m.best and m.metric in HEADLINE_MARGINS:
                out.setdefault(res.split.name, {})[m.metric] = {
                    "best_other": m.other, "model": round(m.model_value, 4), "other": round(m.other_value, 4),
                    "margin": round(m.margin, 4), "lo": round(m.lo, 4), "hi": round(m.hi, 4),
                    "p_not_better": round(m.p_not_better, 3)}
    return out


def run_evaluation(spark, inputs: EvaluationInputs, *, splits: Sequence[Split], cfg, dataset: str,
                   log=None):
    """Build the examples, collect them, pick or train the models, and run the backtest.

    Args:
        spark: the session.
        inputs: bronze inputs (and truth on synthetic data).
        splits: the backtest splits (e.g. :func:`splits_from_conf`).
        cfg: the whole Config (features, train and evaluate sections are used).
        dataset: name written into the metrics.

    Returns:
        (:class:`~ulv_spark.evaluate.backtest.BacktestResult`, facts dict for the report/summary)
    """
    from pyspark import StorageLevel

    from ulv_spark.evaluate.backtest import run_backtest
    from ulv_spark.runtime import stage

    log = log or get_logger("ulv_spark.evaluate")
    ev = cfg.evaluate
    horizon = splits[0].horizon_days
    wants_model = "model" in ev.methods and ev.model != "none"
    has_truth = inputs.truth_users is not None and "oracle" in ev.methods
    examples = examples_at_origins(inputs, origins=needed_origins(splits), horizon_days=horizon,
                                   features_cfg=cfg.features).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        with stage("evaluate: examples to the driver", log) as info:
            truth = (truth_at_origins(inputs.truth_users, inputs.truth_uplift, origins=[s.origin for s in splits],
                                      horizon_days=horizon) if has_truth else None)
            frame, features = driver_frame(examples, eval_origins=[s.origin for s in splits], truth=truth,
                                           with_sequences=wants_model, max_train_rows=ev.max_train_rows,
                                           seed=ev.seed, log=log)
            info["rows"] = len(frame)
            info["features"] = len(features)
        model_by_split = None
        if wants_model and ev.model == "train":
            with stage("evaluate: train backtest models", log):
                model_by_split = train_split_models(spark, examples, frame, splits, cfg, dataset=dataset, log=log)
    finally:
        examples.unpersist()
    methods, left_out = build_methods(ev, horizon_days=horizon, features=features,
                                      model_root=cfg.train.model_dir if wants_model else None,
                                      model_by_split=model_by_split, has_truth=has_truth,
                                      tree_ablation=cfg.train.tree_blend != "none")
    with stage("evaluate: backtest", log):
        result = run_backtest(frame, splits, methods, dataset=dataset, uplift_top_share=ev.uplift_top_share,
                              bins=ev.bins, bootstrap_resamples=ev.bootstrap_resamples,
                              bootstrap_seed=ev.bootstrap_seed, log=log)
    for res in result.splits:
        res.skipped.update({m: why for m, why in left_out.items() if m not in res.skipped})
    if cfg.segments.evaluate:  # segment quality at the same k (evaluate/segments.py)
        from ulv_spark.evaluate.segments import segment_quality

        with stage("evaluate: segment quality", log):
            extra = segment_quality(spark, result, methods, cfg, log=log)
        if len(extra):
            result.metrics = pd.concat([result.metrics, extra], ignore_index=True)
    if ev.policy_evaluation:  # off-policy value of the plan's policy and its alternatives (policy_backtest.py)
        from ulv_spark.evaluate.policy_backtest import policy_evaluation

        with stage("evaluate: policy evaluation", log):
            extra = policy_evaluation(spark, result, cfg, log=log)
        if len(extra):
            result.metrics = pd.concat([result.metrics, extra], ignore_index=True)
    facts = {"dataset": dataset, "horizon_days": horizon, "splits": ", ".join(s.name for s in splits),
             "examples collected": len(frame), "tabular features": len(features),
             "methods": ", ".join(m.name for m in methods),
             "bootstrap": (f"{ev.bootstrap_resamples} paired resamples of the test users (seed {ev.bootstrap_seed})"
                           if ev.bootstrap_resamples else "off (evaluate.bootstrap_resamples = 0)")}
    return result, facts
