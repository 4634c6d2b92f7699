"""Segment quality in the backtest: how much of the users' actual future the segments explain.

On each split's test users (features at the origin E, labels of [E, E + H)), four
segmentations with the same number of segments k are compared:

* ``segments_learned``: what the nightly does (``segments/fit.py``: Spark MLlib over the model's
  embeddings + standardised predicted value, churn and best-arm uplift, k by silhouette in
  ``segments.k_min..k_max``), fitted on the test users' own scores (they are unlabelled inputs);
* ``segments_rfm_quintile``: R, F and M scored 1..5 by the test users' quintiles (R on
  ``T - recency``, as ``rfm_heuristic``), the score R + F + M cut into k quantile groups;
* ``segments_rfm_kmeans``: Spark MLlib KMeans (k) on the standardised R, F, M;
* ``segments_grid``: today's value-decile x churn-tier grid (``score/tables.SEGMENT_GRID``) on the
  model's predictions (its own number of segments, at most 6).

Metrics (rows of evaluation_metrics, method = the segmentation): ``segment_value_variance_share``
(between-segment share of the variance of the actual future value, eta squared),
``segment_churn_auc`` (ROC AUC of each user's segment-mean churn rate for the churn label) and
``segments`` (the number of non-empty segments). Measured, never asserted.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd

from ulv_spark.names import CHURN_PROBABILITY, EXPECTED_VALUE, FREQUENCY, MONETARY, RECENCY, T_AGE
from ulv_spark.schemas import LABEL_CHURNED, LABEL_VALUE, USER_ID

LEARNED, RFM_QUINTILE, RFM_KMEANS, GRID = ("segments_learned", "segments_rfm_quintile", "segments_rfm_kmeans",
                                           "segments_grid")
SEGMENTATIONS = (LEARNED, RFM_QUINTILE, RFM_KMEANS, GRID)
VARIANCE_SHARE, CHURN_AUC, N_SEGMENTS = "segment_value_variance_share", "segment_churn_auc", "segments"
SEGMENT_METRICS = (VARIANCE_SHARE, CHURN_AUC, N_SEGMENTS)
SEGMENTS_NOTE = ("How much of the test users' actual future the segments explain, at the same number of segments: "
                 "segment_value_variance_share = between-segment share of the variance of actual spend in the "
                 "horizon; segment_churn_auc = AUC of each user's segment-mean churn rate; segments = non-empty "
                 "segments (the grid has its own, at most 6). Higher is better.")


def is_segment_metric(metric: str) -> bool:
    return metric in SEGMENT_METRICS


def between_share_of_variance(labels: Sequence, values: Sequence[float]) -> Optional[float]:
    """sum_g n_g (mean_g - mean)^2 / sum_i (y_i - mean)^2; None when the values do not vary."""
    y = np.asarray(values, dtype=np.float64)
    frame = pd.DataFrame({"g": np.asarray(labels), "y": y})
    total = float(((y - y.mean()) ** 2).sum())
    if not len(y) or total <= 0:
        return None
    groups = frame.groupby("g")["y"].agg(["size", "mean"])
    between = float((groups["size"] * (groups["mean"] - y.mean()) ** 2).sum())
    return between / total


def segment_mean_auc(labels: Sequence, churned: Sequence[float]) -> Optional[float]:
    """ROC AUC of the segment-mean churn rate as each user's score; None with one class only."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(churned, dtype=np.float64)
    if len(np.unique(y)) < 2:
        return None
    score = pd.Series(y).groupby(np.asarray(labels)).transform("mean").to_numpy()
    return float(roc_auc_score(y, score))


def rfm_raw(test: pd.DataFrame) -> np.ndarray:
    """(n, 3) R (= -(T - recency): higher is better), F, M; missing values as 0."""
    num = test.loc[:, [FREQUENCY, RECENCY, T_AGE, MONETARY]].astype("float64").fillna(0.0)
    return np.column_stack([-(num[T_AGE] - num[RECENCY]).to_numpy(), num[FREQUENCY].to_numpy(),
                            num[MONETARY].to_numpy()])


def rfm_quintile_segments(test: pd.DataFrame, k: int, quantiles: int = 5) -> np.ndarray:
    """Segment 0..k-1 per user: the R + F + M quintile score cut into k quantile groups (ties together)."""
    raw = rfm_raw(test)
    probs = np.arange(1, quantiles) / quantiles
    score = np.zeros(len(test), dtype=np.int64)
    for j in range(3):
        edges = np.quantile(raw[:, j], probs) if len(raw) else np.zeros(len(probs))
        score += 1 + np.searchsorted(edges, raw[:, j], side="left")
    cuts = np.quantile(score, np.arange(1, k) / k) if len(score) else np.zeros(k - 1)
    return np.searchsorted(np.unique(cuts), score, side="left")


def grid_segments(pred: pd.DataFrame, risk_tiers: Sequence[float]) -> np.ndarray:
    """Today's grid segment per user from the model's expected value (ntile deciles) and churn tier."""
    from ulv_spark.score.tables import SEGMENT_GRID, VALUE_BANDS

    n = len(pred)
    order = pred.assign(_i=np.arange(n)).sort_values([EXPECTED_VALUE, USER_ID], ascending=[False, True])["_i"]
    rank = np.empty(n, dtype=np.int64)
    rank[order.to_numpy()] = np.arange(n)
    small, extra = divmod(n, 10)
    boundary = extra * (small + 1)
    decile = np.where(rank < boundary, rank // (small + 1) + 1,
                      extra + (rank - boundary) // max(small, 1) + 1)
    band = np.empty(n, dtype=object)
    for name, first, last in VALUE_BANDS:
        band[(decile >= first) & (decile <= last)] = name
    churn = pred[CHURN_PROBABILITY].to_numpy(dtype=np.float64)
    tier = np.where(churn < risk_tiers[0], "low", np.where(churn < risk_tiers[1], "medium", "high"))
    return np.array([SEGMENT_GRID[(b, t)] for b, t in zip(band, tier)], dtype=object)


def kmeans_segments(spark, matrix: np.ndarray, k: int, *, seed: int, max_iter: int) -> np.ndarray:
    """Spark MLlib KMeans (k) on the standardised columns of `matrix`; labels in row order."""
    from pyspark.ml.clustering import KMeans
    from pyspark.ml.feature import StandardScaler
    from pyspark.ml.linalg import Vectors

    rows = [(i, Vectors.dense([float(x) for x in row])) for i, row in enumerate(matrix)]
    df = spark.createDataFrame(rows, ["_i", "_raw"])
    scaled = StandardScaler(inputCol="_raw", outputCol="_x", withMean=True, withStd=True).fit(df).transform(df)
    model = KMeans(featuresCol="_x", predictionCol="_c", k=k, seed=seed, maxIter=max_iter).fit(scaled)
    out = model.transform(scaled).select("_i", "_c").toPandas().sort_values("_i")
    return out["_c"].to_numpy()


def learned_segments(spark, test: pd.DataFrame, pred: pd.DataFrame, embeddings: np.ndarray, conf):
    """(labels in test order, k) from the nightly segmenter fitted on these users."""
    from pyspark.ml.functions import array_to_vector

    from ulv_spark.segments import fit as segfit
    from ulv_spark.segments.contracts import BEST_UPLIFT
    from ulv_spark.segments.inputs import EMBEDDING_VECTOR

    uplift_cols = [c for c in pred.columns if c.startswith("uplift_value:")]
    best = pred[uplift_cols].max(axis=1).to_numpy(dtype=np.float64) if uplift_cols else np.zeros(len(pred))
    rows = [(str(u), [float(x) for x in e], float(v), float(c), float(b))
            for u, e, v, c, b in zip(test[USER_ID], embeddings, pred[EXPECTED_VALUE], pred[CHURN_PROBABILITY], best)]
    df = spark.createDataFrame(rows, f"{USER_ID} string, _emb array<double>, {EXPECTED_VALUE} double, "
                                     f"{CHURN_PROBABILITY} double, {BEST_UPLIFT} double")
    inputs = df.select(USER_ID, array_to_vector("_emb").alias(EMBEDDING_VECTOR), EXPECTED_VALUE, CHURN_PROBABILITY,
                       BEST_UPLIFT).cache()
    try:
        model, info = segfit.fit_segmenter(inputs, users=len(rows), conf=conf, model_version="backtest",
                                           as_of="backtest")
        got = segfit.assign(model, info, inputs).toPandas()
    finally:
        inputs.unpersist()
    by_user = dict(zip(got[USER_ID], got["learned_segment"]))
    return np.array([by_user[str(u)] for u in test[USER_ID]]), int(info.k)


def split_rows(*, dataset: str, split: str, labels_by_method: dict, test: pd.DataFrame) -> list[dict]:
    """evaluation_metrics rows (METRIC_COLUMNS) of each segmentation on one split's test users."""
    rows = []
    value = test[LABEL_VALUE].astype(float).to_numpy()
    churned = test[LABEL_CHURNED].astype(float).to_numpy()
    for method, labels in labels_by_method.items():
        metrics = {VARIANCE_SHARE: between_share_of_variance(labels, value),
                   CHURN_AUC: segment_mean_auc(labels, churned), N_SEGMENTS: float(len(pd.unique(labels)))}
        rows.extend({"dataset": dataset, "split": split, "method": method, "metric": m, "value": float(v)}
                    for m, v in metrics.items() if v is not None)
    return rows


def segment_quality(spark, result, methods, cfg, log=None) -> pd.DataFrame:
    """Segment-quality rows of every split of a backtest `result` (appended to its metrics by the caller).

    Uses the split's model (the ``model`` method: its embeddings and predictions) when it ran;
    without one only the RFM segmentations are measured, at k = segments.k_min. A split whose
    test users have no value labels (nobody bought in the window) gets no rows.
    """
    from ulv_spark.evaluate.backtest import METRIC_COLUMNS, labelled_tasks
    from ulv_spark.evaluate.baselines import VALUE
    from ulv_spark.score.predict import EMBEDDING, predict_batch

    conf = cfg.segments
    model_method = next((m for m in methods if getattr(m, "name", None) == "model"), None)
    rows: list[dict] = []
    for res in result.splits:
        test = res.test.reset_index(drop=True)
        # the backtest's own rule: without a purchase in the label window there is nothing to explain
        if len(test) < 3 or not labelled_tasks(test)[VALUE]:
            continue
        labels: dict = {}
        k = conf.k_min
        pred = res.predictions.get("model")
        if pred is not None and model_method is not None:
            try:
                method = model_method.for_split(res.split).fit()
                out = predict_batch(test, method.model_, method.meta_, device=method.device, embeddings=True)
                embeddings = np.stack(out[EMBEDDING].to_numpy())
                labels[LEARNED], k = learned_segments(spark, test, pred.reset_index(drop=True), embeddings, conf)
                labels[GRID] = grid_segments(pred.reset_index(drop=True), cfg.score.risk_tiers)
            except (ValueError, KeyError) as exc:
                res.skipped[LEARNED] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if {FREQUENCY, RECENCY, T_AGE, MONETARY} <= set(test.columns):
            labels[RFM_QUINTILE] = rfm_quintile_segments(test, k)
            labels[RFM_KMEANS] = kmeans_segments(spark, rfm_raw(test), k, seed=conf.seed, max_iter=conf.max_iter)
        rows.extend(split_rows(dataset=result.dataset, split=res.split.name, labels_by_method=labels, test=test))
        if log is not None:
            log.info("segments on %s: k=%d, %s", res.split.name, k, sorted(labels))
    return pd.DataFrame(rows, columns=list(METRIC_COLUMNS))


def segments_table(metrics: pd.DataFrame, split: str) -> str:
    """HTML table segmentation x (variance share, churn AUC, segments) for one split ('' without rows)."""
    import html

    sub = metrics[(metrics["split"] == split) & metrics["metric"].map(is_segment_metric)]
    if sub.empty:
        return ""
    wide = sub.pivot_table(index="method", columns="metric", values="value", aggfunc="first")
    head = "".join(f"<th>{html.escape(m)}</th>" for m in SEGMENT_METRICS)
    body = []
    for method in [m for m in SEGMENTATIONS if m in wide.index]:
        cells = "".join(f"<td>{'' if m not in wide.columns or pd.isna(wide.at[method, m]) else f'{wide.at[method, m]:.4g}'}"
                        f"</td>" for m in SEGMENT_METRICS)
        body.append(f'<tr><td class="name">{html.escape(method)}</td>{cells}</tr>')
    return (f'<table class="metrics segments" data-split="{html.escape(split)}"><tr><th class="name">segmentation'
            f"</th>{head}</tr>" + "".join(body) + "</table>")
