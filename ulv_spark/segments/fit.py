"""The segmenter: a pyspark.ml PipelineModel over the clustering inputs, plus its stable ids.

Pipeline (all on executors): the three scores (expected_value, churn_probability,
best_uplift_value) assembled and standardised, then weighted by ``segments.score_weight``; the
embedding standardised per dimension; both assembled into ``segment_features`` and clustered
by KMeans (default), BisectingKMeans or GaussianMixture (``segments.method``). k is the value
in ``segments.k_min..k_max`` with the best silhouette (``ClusteringEvaluator``, squared
Euclidean) on a seeded sample of ``segments.sample_rows`` users; the winning candidate,
fitted on that sample, is the segmenter. Only k-row results (centroids, silhouettes) reach the
driver.

Saved under ``<segments.model_dir>/<model_version>/``: ``pipeline/`` (PipelineModel.save) and
``segmenter.json`` (written last: its presence marks a complete save) with the cluster label ->
segment id map and the centroids the next fit is matched to (``matching.py``).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Optional

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ulv_spark.schemas import USER_ID
from ulv_spark.segments.contracts import LEARNED_SEGMENT
from ulv_spark.segments.inputs import EMBEDDING_VECTOR, SCORE_COLUMNS
from ulv_spark.segments.matching import match_centroids

FEATURES_COL = "segment_features"
CLUSTER_COL = "_cluster"
INFO_FILE = "segmenter.json"
PIPELINE_DIR = "pipeline"


@dataclass(frozen=True)
class SegmenterInfo:
    """What segmenter.json holds."""

    model_version: str
    method: str
    k: int
    fitted_as_of: str
    sample_users: int
    silhouettes: dict            # str(k) -> silhouette of the candidate (null: could not be computed)
    label_to_id: dict            # str(cluster label) -> learned segment id
    centroids: dict              # str(segment id) -> centroid in the standardised score space
    next_id: int                 # first id a later fit may hand out to a new segment
    matched_to: Optional[str] = None  # model_version of the segmenter the ids were matched to
    conf: dict = field(default_factory=dict)

    def ids(self) -> dict[int, int]:
        return {int(k): int(v) for k, v in self.label_to_id.items()}


def build_pipeline(method: str, k: int, *, seed: int, max_iter: int, score_weight: float):
    """The unfitted pyspark.ml Pipeline for `k` clusters (see the module docstring)."""
    from pyspark.ml import Pipeline
    from pyspark.ml.clustering import BisectingKMeans, GaussianMixture, KMeans
    from pyspark.ml.feature import ElementwiseProduct, StandardScaler, VectorAssembler
    from pyspark.ml.linalg import Vectors

    scores = VectorAssembler(inputCols=list(SCORE_COLUMNS), outputCol="_scores", handleInvalid="error")
    scores_std = StandardScaler(inputCol="_scores", outputCol="_scores_std", withMean=True, withStd=True)
    weighted = ElementwiseProduct(inputCol="_scores_std", outputCol="_scores_w",
                                  scalingVec=Vectors.dense([float(score_weight)] * len(SCORE_COLUMNS)))
    embedding_std = StandardScaler(inputCol=EMBEDDING_VECTOR, outputCol="_embedding_std", withMean=True, withStd=True)
    features = VectorAssembler(inputCols=["_embedding_std", "_scores_w"], outputCol=FEATURES_COL)
    common = dict(featuresCol=FEATURES_COL, predictionCol=CLUSTER_COL, k=k, seed=seed, maxIter=max_iter)
    if method == "kmeans":
        estimator = KMeans(**common)
    elif method == "bisecting_kmeans":
        estimator = BisectingKMeans(**common)
    elif method == "gaussian_mixture":
        estimator = GaussianMixture(probabilityCol="_cluster_probability", **common)
    else:
        raise ValueError(f"segments.method must be kmeans, bisecting_kmeans or gaussian_mixture, got {method!r}")
    return Pipeline(stages=[scores, scores_std, weighted, embedding_std, features, estimator])


def silhouette(labelled: DataFrame) -> Optional[float]:
    """Silhouette of the clustering in `labelled` (None when fewer than two clusters are used)."""
    from pyspark.ml.evaluation import ClusteringEvaluator

    if labelled.select(CLUSTER_COL).distinct().limit(2).count() < 2:
        return None
    value = ClusteringEvaluator(featuresCol=FEATURES_COL, predictionCol=CLUSTER_COL, metricName="silhouette",
                                distanceMeasure="squaredEuclidean").evaluate(labelled)
    return None if value is None or math.isnan(value) else float(value)


def seeded_sample(inputs: DataFrame, users: int, rows: int, seed: int) -> DataFrame:
    """About `rows` users of `inputs` (all when there are no more), picked by a seeded hash of user_id."""
    if users <= rows:
        return inputs
    share = rows / users
    # a hash of the id rather than rand(): the same users on every run, whatever the partitioning
    bucket = F.pmod(F.xxhash64(F.col(USER_ID), F.lit(seed)), F.lit(1_000_000)) / F.lit(1_000_000.0)
    return inputs.where(bucket < F.lit(share))


def score_centroids(labelled: DataFrame, label_col: str) -> dict[int, list[float]]:
    """label -> (mean - night mean) / night std of each score column (k rows reach the driver)."""
    stats = labelled.agg(*[F.mean(c).alias(f"m_{c}") for c in SCORE_COLUMNS],
                         *[F.stddev_pop(c).alias(f"s_{c}") for c in SCORE_COLUMNS])
    rows = (labelled.groupBy(label_col).agg(*[F.mean(c).alias(c) for c in SCORE_COLUMNS])
            .crossJoin(stats)
            .select(label_col, *[((F.col(c) - F.col(f"m_{c}")) /
                                  F.when(F.col(f"s_{c}") > 0, F.col(f"s_{c}")).otherwise(F.lit(1.0))).alias(c)
                                 for c in SCORE_COLUMNS])
            .collect())
    return {int(r[label_col]): [float(r[c]) for c in SCORE_COLUMNS] for r in rows}


def fit_segmenter(inputs: DataFrame, *, users: int, conf, model_version: str, as_of: str,
                  previous: Optional[SegmenterInfo] = None, log=None):
    """Fit the candidates, keep the best k, match its clusters to `previous`; (PipelineModel, SegmenterInfo).

    Args:
        inputs: segment_inputs of the night (every user).
        users: their number.
        conf: SegmentsConf.
        model_version: the scoring model the embeddings come from.
        as_of: the night (ISO date).
        previous: the segmenter fitted before (its centroids and next_id); None: ids 0..k-1.
    """
    sample = seeded_sample(inputs, users, conf.sample_rows, conf.seed).cache()
    try:
        n_sample = sample.count()
        if n_sample < 3:
            raise ValueError(f"segments need at least 3 users to cluster, got {n_sample}")
        k_high = min(conf.k_max, n_sample - 1)
        candidates = list(range(min(conf.k_min, k_high), k_high + 1))
        scores: dict[str, Optional[float]] = {}
        best = None
        for k in candidates:
            model = build_pipeline(conf.method, k, seed=conf.seed, max_iter=conf.max_iter,
                                   score_weight=conf.score_weight).fit(sample)
            value = silhouette(model.transform(sample))
            scores[str(k)] = value
            if log is not None:
                log.info("segments: k=%d silhouette=%s", k, value)
            if value is not None and (best is None or value > best[1]):
                best = (k, value, model)
        if best is None:  # every candidate collapsed into one cluster: keep the smallest k
            k = candidates[0]
            best = (k, None, build_pipeline(conf.method, k, seed=conf.seed, max_iter=conf.max_iter,
                                            score_weight=conf.score_weight).fit(sample))
    finally:
        sample.unpersist()
    k, _, model = best
    centroids = score_centroids(model.transform(inputs), CLUSTER_COL)
    prev_centroids = {int(i): c for i, c in previous.centroids.items()} if previous else {}
    label_to_id = match_centroids(prev_centroids, centroids, next_id=previous.next_id if previous else None)
    info = SegmenterInfo(
        model_version=model_version, method=conf.method, k=k, fitted_as_of=as_of, sample_users=int(n_sample),
        silhouettes=scores, label_to_id={str(lab): i for lab, i in sorted(label_to_id.items())},
        centroids={str(label_to_id[lab]): c for lab, c in sorted(centroids.items())},
        next_id=max([*label_to_id.values(), (previous.next_id - 1) if previous else -1]) + 1,
        matched_to=previous.model_version if previous else None,
        conf={"k_min": conf.k_min, "k_max": conf.k_max, "sample_rows": conf.sample_rows, "seed": conf.seed,
              "max_iter": conf.max_iter, "score_weight": conf.score_weight})
    return model, info


def assign(model, info: SegmenterInfo, inputs: DataFrame) -> DataFrame:
    """user_id, learned_segment: the saved model's cluster of every user, mapped to its stable id."""
    ids = info.ids()
    mapping = F.create_map(*[x for label, i in sorted(ids.items()) for x in (F.lit(label), F.lit(i))])
    labelled = model.transform(inputs)
    return labelled.select(USER_ID, mapping[F.col(CLUSTER_COL).cast("int")].cast("int").alias(LEARNED_SEGMENT))


def segmenter_dir(root: str, model_version: str) -> str:
    return os.path.join(root, model_version)


def save_segmenter(model, info: SegmenterInfo, root: str) -> str:
    """Write the pipeline, then segmenter.json (last, atomically renamed); returns the directory."""
    path = segmenter_dir(root, info.model_version)
    model.write().overwrite().save(os.path.join(path, PIPELINE_DIR))
    tmp = os.path.join(path, INFO_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(asdict(info), fh, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(path, INFO_FILE))
    return path


def read_info(path: str) -> Optional[SegmenterInfo]:
    """The SegmenterInfo saved in directory `path` (None when there is no complete save)."""
    file = os.path.join(path, INFO_FILE)
    if not os.path.isfile(file):
        return None
    with open(file, encoding="utf-8") as fh:
        return SegmenterInfo(**json.load(fh))


def load_segmenter(path: str):
    """(PipelineModel, SegmenterInfo) saved in `path`, or None when there is no complete save."""
    from pyspark.ml import PipelineModel

    info = read_info(path)
    if info is None:
        return None
    return PipelineModel.load(os.path.join(path, PIPELINE_DIR)), info


def latest_other_info(root: str, model_version: str, as_of: str) -> Optional[SegmenterInfo]:
    """The most recently fitted segmenter (fitted_as_of <= as_of) of another model version, if any."""
    if not os.path.isdir(root):
        return None
    found = []
    for name in os.listdir(root):
        if name == model_version:
            continue
        info = read_info(os.path.join(root, name))
        if info is not None and info.fitted_as_of <= as_of:
            found.append((info.fitted_as_of, name, info))
    return max(found, key=lambda t: (t[0], t[1]))[2] if found else None
