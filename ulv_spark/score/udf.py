"""Spark wrapper around `predict_batch`: `mapInPandas` with the model loaded once per task.

The iterator form matters: Spark calls the partition function once per task with an iterator of
Arrow batches, so the model is loaded once and reused for every batch of the task (and kept in
the Python worker, which Spark reuses across tasks, so later tasks of the same model skip the
load entirely). The batch size is `spark.sql.execution.arrow.maxRecordsPerBatch`, set from
`score.batch_size` around the action with :func:`arrow_batch_size`.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Optional

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ulv_spark.schemas import SEQ_MASK, SEQ_TEXT, SEQ_TOKENS, USER_ID
from ulv_spark.score.predict import PREDICTION_SCHEMA, PREDICTION_SCHEMA_WITH_EMBEDDING, predict_batch

ARROW_BATCH_KEY = "spark.sql.execution.arrow.maxRecordsPerBatch"

# (model_dir, device) -> (model, meta); one entry, so a long-lived worker holds one model only.
_LOADED: dict = {}


def resolve_device(use_gpu: bool) -> str:
    """The torch device for this task: its Spark-assigned GPU, any GPU, or the CPU.

    A GPU is used only when asked for (score.use_gpu) and CUDA is available; on a cluster with
    GPU scheduling the task's own GPU address is taken so concurrent tasks do not share one.
    """
    if not use_gpu:
        return "cpu"
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    try:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        gpus = ctx.resources().get("gpu") if ctx is not None else None
        if gpus is not None and gpus.addresses:
            return f"cuda:{gpus.addresses[0]}"
    except Exception:  # noqa: BLE001 - resource info is optional; fall back to the default GPU
        pass
    return "cuda"


def load_model_once(model_dir: str, device: str):
    """(model, meta) for `model_dir` on `device`, loaded at most once per Python worker."""
    key = (model_dir, device)
    if key not in _LOADED:
        from ulv_spark.train.artifacts import load_model

        _LOADED.clear()
        _LOADED[key] = load_model(model_dir, device=device)
    return _LOADED[key]


def make_partition_scorer(model_dir: str, use_gpu: bool,
                          embeddings: bool = False) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """The function `mapInPandas` runs per task: load the model once, then score every batch.

    Args:
        model_dir: the model directory (on storage every executor sees).
        use_gpu: score.use_gpu.
        embeddings: also emit the pooled encoder vector (`embedding`) of each user.
    """
    def score_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        device = resolve_device(use_gpu)
        model, meta = load_model_once(model_dir, device)
        for pdf in batches:
            yield predict_batch(pdf, model, meta, device, embeddings=embeddings)

    return score_partition


def score_users(features: DataFrame, *, model_dir: str, feature_columns: list[str], use_gpu: bool = False,
                partitions: int = 0, embeddings: bool = False, text: bool = True) -> DataFrame:
    """Predictions for every row of `features` through a pandas UDF (lazy; nothing runs here).

    Grain: one output row per input row (user). Columns: `predict.PREDICTION_SCHEMA` (with
    `embedding` ARRAY<FLOAT> after them when `embeddings`).

    Args:
        features: user_features rows of one as_of_date (user_id, seq_tokens, seq_mask, features).
        model_dir: the model directory.
        feature_columns: the model's feature columns (meta.feature_columns), in its order.
        use_gpu: score.use_gpu.
        partitions: spread the users over this many tasks first; 0 keeps the table's splits.
        embeddings: add the pooled encoder vector from the same forward pass (score.write_embeddings).
        text: pass seq_text along when `features` has it (the per-event text of a model with text
            fusion; a model without ignores it); False leaves it out.
    """
    # doubles on the wire: ints with nulls and booleans would otherwise arrive as object columns
    extra = [F.col(SEQ_TEXT).cast("array<float>").alias(SEQ_TEXT)] if text and SEQ_TEXT in features.columns else []
    inputs = features.select(USER_ID, SEQ_TOKENS, SEQ_MASK, *extra,
                             *[F.col(c).cast("double").alias(c) for c in feature_columns])
    if partitions > 0:
        inputs = inputs.repartition(partitions)
    schema = PREDICTION_SCHEMA_WITH_EMBEDDING if embeddings else PREDICTION_SCHEMA
    return inputs.mapInPandas(make_partition_scorer(model_dir, use_gpu, embeddings), schema=schema)


@contextmanager
def arrow_batch_size(spark, rows: int):
    """Run the enclosed actions with Arrow batches of `rows` rows (the model's batch size)."""
    previous: Optional[str] = spark.conf.get(ARROW_BATCH_KEY, None)
    spark.conf.set(ARROW_BATCH_KEY, str(int(rows)))
    try:
        yield
    finally:
        if previous is None:
            spark.conf.unset(ARROW_BATCH_KEY)
        else:
            spark.conf.set(ARROW_BATCH_KEY, previous)
